"""Record contracts: round trips, JSON Schema validation, every decode error path, Arrow."""

from __future__ import annotations

import json

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contracts import (
    Alert,
    DeadLetter,
    FeatureContribution,
    Label,
    Reasons,
    RecordError,
    SourcePosition,
    Transaction,
    decode_label,
    decode_transaction,
    decode_transactions,
    encode,
    extra_fields,
)
from contracts.arrow import (
    ALERT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    LABEL_SCHEMA,
    TRANSACTION_SCHEMA,
    records_to_table,
    table_to_records,
)
from contracts.records import decode_alert, decode_dead_letter
from contracts.schemas import RECORD_TYPES, SCHEMA_DIR, render

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

FULL_TX = Transaction(
    transaction_id="tx1",
    account_id="A0000001",
    event_time=T0,
    amount=42.5,
    currency="EUR",
    merchant_id="M000001",
    merchant_category="grocery",
    terminal_id="T0000001",
    country="FR",
    lat=48.85,
    lon=2.35,
    channel="pos",
)
MINIMAL_TX = Transaction(transaction_id="tx2", account_id="A2", event_time=T0, amount=0.0)
LABEL = Label(transaction_id="tx1", account_id="A0000001", label="fraud", label_time=T0 + 3_600_000)
ALERT = Alert(
    alert_id="al-1",
    transaction_id="tx1",
    account_id="A0000001",
    event_time=T0,
    score=0.93,
    decision="block",
    reasons=Reasons(
        rules=["high_amount_new_device"],
        top_features=[FeatureContribution(name="amount_z", value=5.1, contribution=0.4)],
    ),
    model_versions={"fraud-classifier": "3", "fraud-online": "hst-12"},
    feature_version="1.0.0",
    ingest_time=T0 + 5,
    alert_time=T0 + 9,
    source=SourcePosition(topic="transactions", partition=2, offset=17),
)
DEAD = DeadLetter(
    key=b"A1",
    value=b'{"broken": ',
    topic="transactions",
    partition=1,
    offset=99,
    error="transaction: not valid JSON",
    failed_at=T0,
)
SAMPLES = {"transaction": [FULL_TX, MINIMAL_TX], "label": [LABEL], "alert": [ALERT], "dead_letter": [DEAD]}
DECODERS = {
    "transaction": decode_transaction,
    "label": decode_label,
    "alert": decode_alert,
    "dead_letter": decode_dead_letter,
}


def _schema(record: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{record}.schema.json").read_text())


@pytest.mark.parametrize("record", sorted(RECORD_TYPES))
def test_schema_files_match_the_records(record: str) -> None:
    assert (SCHEMA_DIR / f"{record}.schema.json").read_text() == render(record), (
        "schemas/ is stale: run `python -m contracts.schemas`"
    )


@pytest.mark.parametrize("record", sorted(SAMPLES))
def test_round_trip_and_schema_validation(record: str) -> None:
    validator = jsonschema.Draft202012Validator(_schema(record), format_checker=jsonschema.FormatChecker())
    for value in SAMPLES[record]:
        raw = encode(value)
        validator.validate(json.loads(raw))
        assert DECODERS[record](raw) == value


def test_schema_rejects_what_the_decoder_rejects() -> None:
    validator = jsonschema.Draft202012Validator(_schema("transaction"))
    bad = json.loads(encode(FULL_TX))
    bad["amount"] = -1
    assert not validator.is_valid(bad)
    del bad["amount"]
    assert not validator.is_valid(bad)


def test_rfc3339_and_epoch_ms_decode_to_the_same_time() -> None:
    as_text = decode_transaction(
        b'{"transaction_id":"t","account_id":"a","event_time":"2026-01-01T01:00:00+01:00","amount":1}'
    )
    as_ms = decode_transaction(f'{{"transaction_id":"t","account_id":"a","event_time":{T0},"amount":1}}'.encode())
    assert as_text.event_time == as_ms.event_time == T0
    label = decode_label(b'{"transaction_id":"t","account_id":"a","label":"genuine","label_time":"2026-01-01T00:00:00Z"}')
    assert label.label_time == T0


def test_unknown_fields_are_kept_not_fatal() -> None:
    raw = b'{"transaction_id":"t","account_id":"a","event_time":1767225600000,"amount":1,"mcc":"5411","risk":{"x":1}}'
    assert decode_transaction(raw).amount == 1.0
    assert extra_fields(raw) == {"mcc": "5411", "risk": {"x": 1}}


def test_encoded_transaction_omits_absent_optional_fields() -> None:
    assert json.loads(encode(MINIMAL_TX)) == {
        "transaction_id": "tx2",
        "account_id": "A2",
        "event_time": T0,
        "amount": 0.0,
    }


GOOD = {"transaction_id": "t1", "account_id": "a1", "event_time": T0, "amount": 10.0}


def _with(**changes: object) -> bytes:
    body = dict(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b'{"transaction_id": "t1", ', None, "not valid JSON"),
        (b"\xff\xfe", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'"just a string"', None, "JSON object"),
        (_with(transaction_id=_DROP), "transaction_id", "missing"),
        (_with(account_id=_DROP), "account_id", "missing"),
        (_with(event_time=_DROP), "event_time", "missing"),
        (_with(amount=_DROP), "amount", "missing"),
        (_with(amount="12.5"), "amount", "got `str`"),
        (_with(amount=-0.01), "amount", ">= 0.0"),
        (_with(amount=1e12), "amount", "<= 1000000000.0"),
        (b'{"transaction_id":"t1","account_id":"a1","event_time":1767225600000,"amount":1e400}', "amount", "range"),
        (_with(amount=None), "amount", "got `null`"),
        (_with(transaction_id=""), "transaction_id", "length >= 1"),
        (_with(account_id="x" * 129), "account_id", "length <= 128"),
        (_with(account_id=7), "account_id", "got `int`"),
        (_with(event_time=1_767_225_600), "event_time", ">= 946684800000"),
        (_with(event_time=10**16), "event_time", "<= 4102444800000"),
        (_with(event_time="2026-01-01T00:00:00"), "event_time", "timezone"),
        (_with(event_time="yesterday"), "event_time", "RFC3339"),
        (_with(event_time=1.5e12), "event_time", "got `float`"),
        (_with(currency="euro"), "currency", "capital letters"),
        (_with(currency="EURO"), "currency", "length <= 3"),
        (_with(country="FRA"), "country", "length <= 2"),
        (_with(country="fr"), "country", "capital letters"),
        (_with(lat=91.0, lon=0.0), "lat", "<= 90.0"),
        (_with(lat=0.0, lon=-181.0), "lon", ">= -180.0"),
        (_with(lat=10.0), "lat", "lat and lon"),
        (_with(merchant_category="x" * 65), "merchant_category", "length <= 64"),
    ],
)
def test_every_decode_error_names_the_field_and_fix(raw: bytes, field: str | None, words: str) -> None:
    with pytest.raises(RecordError) as info:
        decode_transaction(raw)
    error = info.value
    assert error.field == field
    assert words in str(error)
    assert "fix:" in str(error)
    if field is not None:
        assert str(error).startswith(f"transaction.{field}:")


def test_seconds_instead_of_milliseconds_gets_a_hint() -> None:
    with pytest.raises(RecordError, match="not seconds"):
        decode_transaction(_with(event_time=1_767_225_600))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"transaction_id":"t","account_id":"a","label":"maybe","label_time":1767225600000}', "label"),
        (b'{"transaction_id":"t","account_id":"a","label":"fraud"}', "label_time"),
        (b'{"transaction_id":"t","label":"fraud","label_time":1767225600000}', "account_id"),
    ],
)
def test_label_decode_errors(raw: bytes, field: str) -> None:
    with pytest.raises(RecordError) as info:
        decode_label(raw)
    assert info.value.field == field


def test_nested_alert_error_names_the_nested_field() -> None:
    body = json.loads(encode(ALERT))
    body["reasons"]["top_features"][0]["value"] = "high"
    with pytest.raises(RecordError) as info:
        decode_alert(json.dumps(body))
    assert info.value.field == "reasons.top_features[0].value"


def test_batch_decode_separates_good_from_bad_without_losing_any() -> None:
    values = [encode(FULL_TX), b"{oops", _with(amount="x"), encode(MINIMAL_TX)]
    good, bad = decode_transactions(values)
    assert good == [FULL_TX, MINIMAL_TX]
    assert [(index, error.field) for index, error in bad] == [(1, None), (2, "amount")]


@pytest.mark.parametrize(
    ("records", "schema", "record_type"),
    [
        ([FULL_TX, MINIMAL_TX], TRANSACTION_SCHEMA, Transaction),
        ([LABEL], LABEL_SCHEMA, Label),
        ([ALERT], ALERT_SCHEMA, Alert),
        ([DEAD], DEAD_LETTER_SCHEMA, DeadLetter),
    ],
)
def test_arrow_and_parquet_round_trip(records: list, schema: pa.Schema, record_type: type, tmp_path) -> None:
    table = records_to_table(records, schema)
    assert table.schema.equals(schema)
    path = tmp_path / "records.parquet"
    pq.write_table(table, path)
    back = pq.read_table(path)
    assert back.schema.equals(schema)
    assert table_to_records(back, record_type) == records


def test_arrow_schema_matches_record_fields() -> None:
    assert TRANSACTION_SCHEMA.names == list(Transaction.__struct_fields__)
    assert LABEL_SCHEMA.names == list(Label.__struct_fields__)
    assert ALERT_SCHEMA.names == list(Alert.__struct_fields__)
    assert DEAD_LETTER_SCHEMA.names == list(DeadLetter.__struct_fields__)
