"""What a partition does with records it must not score: wrong keys, oversized values, hostile bytes.

Pure: a PartitionProcessor fed records by hand (no Kafka, no Ray).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec
import pytest

from actors.partition import PartitionProcessor
from actors.terminal_stage import BroadcastRisk
from configs import Settings, load_settings
from contracts.records import decode_dead_letter
from features import FeatureEngine


@dataclass(frozen=True)
class _Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


def _tx(n: int, account: str = "A1") -> bytes:
    return (f'{{"transaction_id":"t{n}","account_id":"{account}","event_time":{1767225600000 + n * 1000},'
            f'"amount":{10 + n}}}').encode()


def _processor(**stream: object) -> PartitionProcessor:
    settings: Settings = load_settings()
    settings = msgspec.structs.replace(settings, stream=msgspec.structs.replace(settings.stream, **stream))
    table = FeatureEngine.terminal_risk_for(settings.features)
    table.publish_updates()
    return PartitionProcessor(settings, 0, BroadcastRisk(table, settings.kafka.topics.terminal_deltas.partitions))


def test_records_keyed_by_something_else_than_their_account_are_dead_lettered_not_scored() -> None:
    processor = _processor()
    records = [_Record(0, b"A1", _tx(0)), _Record(1, None, _tx(1)), _Record(2, b"A2", _tx(2)), _Record(3, b"A1", _tx(3))]
    out = processor.process_transactions(records, now_ms=0)
    assert out.scored == 2 and processor.counters.scored == 2
    letters = [decode_dead_letter(v) for v in out.dead_letters]
    assert [(d.offset, d.field) for d in letters] == [(1, "key"), (2, "key")]
    assert "missing (null)" in letters[0].error and "not the account_id 'A1'" in letters[1].error
    assert letters[1].value == _tx(2) and letters[1].key == b"A2"  # kept whole, to be sent again
    assert processor.counters.dead_letters == 2 and processor.next_offset == 4
    assert set(processor.engine.accounts) == {"A1"}


def test_rekey_mode_produces_the_record_again_keyed_by_its_account() -> None:
    processor = _processor(wrong_key="rekey")
    out = processor.process_transactions([_Record(0, b"x", _tx(0)), _Record(1, b"A1", _tx(1))], now_ms=0)
    assert out.scored == 1 and not out.dead_letters
    assert out.rekeyed == [("transactions", b"A1", _tx(0))]
    assert processor.counters.rekeyed == 1 and processor.counters.dead_letters == 0


def test_labels_with_a_wrong_key_or_bad_bytes_are_dead_lettered_and_the_rest_held() -> None:
    processor = _processor()
    label = b'{"transaction_id":"t9","account_id":"A1","label":"fraud","label_time":1767312000000}'
    records = [_Record(0, b"A1", b"\xff"), _Record(1, b"B", label), _Record(2, b"A1", label)]
    out = processor.process_labels(records)
    assert [decode_dead_letter(v).field for v in out.dead_letters] == [None, "key"]
    assert [offset for offset, _ in processor.held_labels] == [2]
    assert processor.next_label_offset == 2  # the held label is read again after a restore


def test_large_values_are_referenced_in_their_dead_letter_not_embedded() -> None:
    processor = _processor(dead_letter_embed_max_bytes=1_000, max_record_bytes=5_000)
    big = b'{"transaction_id":"' + b"x" * 3_000 + b'"}'
    huge = b"y" * 6_000
    out = processor.process_transactions([_Record(0, b"A1", big), _Record(1, b"A1", huge), _Record(2, b"A1", b"{")], now_ms=0)
    letters = [decode_dead_letter(v) for v in out.dead_letters]
    assert [d.bytes_omitted for d in letters] == [True, True, False]
    assert letters[0].value is None and letters[0].value_size == len(big)
    assert letters[0].value_sha256 == hashlib.sha256(big).hexdigest()
    assert letters[1].field == "value" and "6000 bytes" in letters[1].error
    assert letters[2].value == b"{" and letters[2].value_size == 1


@pytest.mark.parametrize("value", [
    b'{"transaction_id":"a","account_id":"A1","event_time":1767225600000,"amount":1,"x":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"transaction_id":"a\xed\xa0\x80","account_id":"A1","event_time":1767225600000,"amount":1}',
    None,
])
def test_one_hostile_record_never_costs_the_good_ones_around_it(value: bytes | None) -> None:
    processor = _processor()
    out = processor.process_transactions([_Record(0, b"A1", _tx(0)), _Record(1, b"A1", value), _Record(2, b"A1", _tx(2))],
                                         now_ms=0)
    assert out.scored == 2 and len(out.dead_letters) == 1 and processor.next_offset == 3
