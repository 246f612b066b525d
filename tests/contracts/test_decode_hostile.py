"""Nothing a record's bytes hold makes the decoders raise: each bad value is that value's RecordError.

Property-based (hypothesis) over arbitrary bytes, nested JSON and mutated good records, plus the
cases a hostile producer sent in practice (deep nesting, raw invalid UTF-8, far-future times).
"""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import DecodeLimits, RecordError, decode_labels, decode_transactions
from contracts.guards import nesting_overflow, top_level_field

GOOD = {"transaction_id": "t1", "account_id": "A1", "event_time": 1767225600000, "amount": 12.5}
GOOD_BYTES = json.dumps(GOOD).encode()
LABEL = b'{"transaction_id":"t1","account_id":"A1","label":"fraud","label_time":1767225600000}'
LIMITS = DecodeLimits(max_record_bytes=20_000, max_nesting_depth=16)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _check_partition(values: list, good: list, bad: list[tuple[int, RecordError]]) -> None:
    indexes = [i for i, _ in bad]
    assert indexes == sorted(set(indexes)) and all(0 <= i < len(values) for i in indexes)
    assert len(good) + len(bad) == len(values)
    for _, error in bad:
        assert isinstance(error, RecordError) and "(fix: " in str(error)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300) | st.none(), max_size=8))
def test_arbitrary_bytes_never_raise(values: list[bytes | None]) -> None:
    for decode in (decode_transactions, decode_labels):
        good, bad = decode(values, LIMITS)
        _check_partition(values, good, bad)


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=80))
def test_nested_extra_fields_are_kept_up_to_the_limit_and_refused_past_it(extra: object, wrap: int) -> None:
    nested: object = extra
    for _ in range(wrap):
        nested = [nested]
    raw = json.dumps({**GOOD, "x": nested}).encode()
    good, bad = decode_transactions([raw], LIMITS)
    depth = 1 + _depth(nested)  # the record itself is level 1
    if depth <= LIMITS.max_nesting_depth:
        assert [t.transaction_id for t in good] == ["t1"] and not bad
    else:
        assert not good and bad[0][1].field == "x" and "nested deeper than 16" in bad[0][1].problem


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(GOOD_BYTES)), st.binary(min_size=1, max_size=12), st.booleans())
def test_mutated_good_records_never_raise(position: int, noise: bytes, replace: bool) -> None:
    tail = GOOD_BYTES[position + len(noise):] if replace else GOOD_BYTES[position:]
    raw = GOOD_BYTES[:position] + noise + tail
    good, bad = decode_transactions([raw, GOOD_BYTES], LIMITS)
    _check_partition([raw, GOOD_BYTES], good, bad)
    assert good[-1].transaction_id == "t1"  # the good record behind it is never lost


def test_the_reported_recursion_error_is_a_dead_letter_naming_the_field() -> None:
    raw = (b'{"transaction_id":"a","account_id":"b","event_time":1767225600000,"amount":1,"x":'
           + b"[" * 1000 + b"]" * 1000 + b"}")
    good, bad = decode_transactions([raw, GOOD_BYTES])
    assert [t.transaction_id for t in good] == ["t1"]
    assert bad[0][0] == 0 and bad[0][1].field == "x" and "stream.max_nesting_depth" in str(bad[0][1])


def test_deep_nesting_past_the_parsers_own_limit_is_refused_even_with_a_high_configured_limit() -> None:
    raw = b'{"transaction_id":"a","account_id":"b","event_time":1767225600000,"amount":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    good, bad = decode_transactions([raw], DecodeLimits(max_nesting_depth=10_000))
    assert not good and "RecursionError" in str(bad[0][1])


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b'{"transaction_id":"a\xff","account_id":"b","event_time":1767225600000,"amount":1}', "transaction_id", "not UTF-8"),
        (b'{"transaction_id":"a","account_id":"b","event_time":1767225600000,"amount":1,"note":"\xc3"}', "note", "not UTF-8"),
        (b'{"transaction_id":"a","account_id":"b","event_time":"9999-12-31T23:59:59Z","amount":1}', "event_time", "9999-12-31"),
        (b'{"transaction_id":"a","account_id":"b","event_time":"1999-12-31T23:59:59Z","amount":1}', "event_time", "2000-01-01"),
        (None, "value", "no value"),
        (b"x" * 20_001, "value", "20001 bytes"),
        (b'{"transaction_id":"\\ud800","account_id":"b","event_time":1767225600000,"amount":1}', None, "not valid JSON"),
        (b'{"transaction_id":"a","account_id":"b","event_time":1767225600000,"amount":NaN}', None, "not valid JSON"),
        (b'[1, 2, 3]', None, "JSON object"),
    ],
)
def test_hostile_values_name_their_field(raw: bytes | None, field: str | None, words: str) -> None:
    good, bad = decode_transactions([raw], LIMITS)
    assert not good
    error = bad[0][1]
    assert error.field == field and words in str(error), str(error)


def test_a_far_future_label_time_names_label_time() -> None:
    raw = LABEL.replace(b"1767225600000", b'"9999-12-31T23:59:59Z"')
    good, bad = decode_labels([raw, LABEL])
    assert len(good) == 1 and bad[0][1].field == "label_time"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    raw = json.dumps({**GOOD, "note": "[" * 100 + "{" * 100}).encode()
    good, bad = decode_transactions([raw], LIMITS)
    assert len(good) == 1 and not bad
    assert nesting_overflow(raw, 1) is None


def test_top_level_field_finds_the_field_holding_a_position() -> None:
    raw = b'{"a": {"b": [1, 2]}, "c": "xyz"}'
    assert top_level_field(raw, raw.index(b"2")) == "a"
    assert top_level_field(raw, raw.index(b"y")) == "c"


def test_unknown_extra_fields_are_still_kept() -> None:
    raw = msgspec.json.encode({**GOOD, "risk": {"mcc": [1, {"deep": [2]}]}, "merchant_name": "Café ☕"})
    good, bad = decode_transactions([raw], LIMITS)
    assert len(good) == 1 and not bad
