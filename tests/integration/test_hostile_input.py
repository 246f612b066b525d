"""A hostile producer against the running job: every good record scored, every bad one dead-lettered.

Over 10,000 bad records of every kind a producer has sent (broken JSON, invalid UTF-8, nesting a
thousand deep, values over the size limit, wrong or missing keys, out-of-range fields, ...)
interleaved with a synthetic history's good ones, through the embedded broker and real Ray actors
(K=2 on 4 partitions). The dead-letter topic must hold exactly what status counts, each letter at
the position it came from and naming its field.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
from pathlib import Path

import jsonschema
import msgspec
import pytest

from connectors.kafka import make_producer
from contracts.records import decode_dead_letter
from synthetic import generate
from tests.integration.streamkit import consume_all, produce, wait_scored

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
T0 = 1767225600000


def _tx(n: int, account: str, **fields: object) -> dict[str, object]:
    return {"transaction_id": f"h{n}", "account_id": account, "event_time": T0 + n, "amount": 12.5, **fields}


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


def hostile_kinds(account: str, n: int) -> dict[str, tuple[bytes | None, bytes | None, str | None]]:
    """Kind -> (key, value, the field its dead letter must name) for one bad record of each kind."""
    key = account.encode()
    good = _tx(n, account)
    body = _j(good)
    without = {name: _j({k: v for k, v in good.items() if k != name}) for name in good}
    return {
        "not_json": (key, b"{not json", None),
        "empty_value": (key, b"", None),
        "null_value": (key, None, "value"),
        "json_array": (key, b"[1, 2, 3]", None),
        "json_string": (key, b'"a transaction"', None),
        "json_number": (key, b"42", None),
        "missing_amount": (key, without["amount"], "amount"),
        "missing_event_time": (key, without["event_time"], "event_time"),
        "missing_transaction_id": (key, without["transaction_id"], "transaction_id"),
        "missing_account_id": (key, without["account_id"], "account_id"),
        "amount_as_text": (key, _j({**good, "amount": "12.5"}), "amount"),
        "negative_amount": (key, _j({**good, "amount": -5}), "amount"),
        "huge_amount": (key, _j({**good, "amount": 1e300}), "amount"),
        "nan_amount": (key, body.replace(b"12.5", b"NaN"), None),
        "event_time_in_seconds": (key, _j({**good, "event_time": T0 // 1000}), "event_time"),
        "event_time_year_9999": (key, _j({**good, "event_time": "9999-12-31T23:59:59Z"}), "event_time"),
        "event_time_garbage": (key, _j({**good, "event_time": "yesterday"}), "event_time"),
        "event_time_1999": (key, _j({**good, "event_time": "1999-12-31T23:59:59Z"}), "event_time"),
        "lat_without_lon": (key, _j({**good, "lat": 10.0}), "lat"),
        "lat_out_of_range": (key, _j({**good, "lat": 200.0, "lon": 0.0}), "lat"),
        "lowercase_currency": (key, _j({**good, "currency": "eur"}), "currency"),
        "country_three_letters": (key, _j({**good, "country": "GBR"}), "country"),
        "empty_transaction_id": (key, _j({**good, "transaction_id": ""}), "transaction_id"),
        "long_transaction_id": (key, _j({**good, "transaction_id": "x" * 200}), "transaction_id"),
        "long_channel": (key, _j({**good, "channel": "c" * 100}), "channel"),
        "nested_1000_deep": (key, body[:-1] + b', "x": ' + b"[" * 1000 + b"]" * 1000 + b"}", "x"),
        "nested_just_too_deep": (key, body[:-1] + b', "x": ' + b"[" * 40 + b"]" * 40 + b"}", "x"),
        "invalid_utf8_in_id": (key, body.replace(f"h{n}".encode(), f"h{n}".encode() + b"\xff"), "transaction_id"),
        "invalid_utf8_in_extra": (key, body[:-1] + b', "note": "\xc3\x28"}', "note"),
        "lone_surrogate": (key, body.replace(f'"h{n}"'.encode(), b'"\\ud800"'), None),
        "byte_order_mark": (key, b"\xef\xbb\xbf" + body, None),
        "trailing_garbage": (key, body + b"}}", None),
        "truncated": (key, body[: len(body) // 2], None),
        "null_key": (None, body, "key"),
        "other_accounts_key": (b"not-" + key, body, "key"),
    }


def good_extremes(account: str, n: int) -> list[bytes]:
    """Valid records at the edges of the contract: they must be scored, not refused."""
    return [
        _j(_tx(n, account, amount=1e9)),
        _j(_tx(n + 1, account, amount=0, merchant_category="épicerie ☕", channel="c" * 64)),
        _j(_tx(n + 2, account, event_time="2026-01-01T01:00:00+01:00", lat=-90.0, lon=180.0)),
        _j({**_tx(n + 3, account), "transaction_id": "é" * 128, "extra": {"a": [[[[[[1]]]]]], "b": None}}),
    ]


def test_hostile_producer_loses_no_good_record_and_every_bad_one_is_dead_lettered(
    stream_settings, kafka_broker, job_factory
) -> None:
    # oversized records: above max_record_bytes (refused unparsed) and below it but above the embed size
    settings = stream_settings(max_record_bytes=300_000, dead_letter_embed_max_bytes=50_000)
    history = generate(msgspec.structs.replace(settings.generator, accounts=300, days=4, seed=21))
    accounts = sorted(set(history.transactions.column("account_id").to_pylist()))
    topic = settings.kafka.topics.transactions.name
    labels_topic = settings.kafka.topics.labels.name

    bad: list[tuple[str, str, bytes | None, bytes | None, str | None]] = []  # (topic, kind, key, value, field)
    extremes: list[tuple[bytes, bytes]] = []
    n = 0
    while len(bad) < 10_200:
        account = accounts[n % len(accounts)]
        for kind, (key, value, field) in hostile_kinds(account, n).items():
            bad.append((topic, kind, key, value, field))
        extremes.extend((account.encode(), value) for value in good_extremes(account, 10_000_000 + n * 10))
        n += 1
    for i in range(3):
        account = accounts[i].encode()
        bad.append((topic, "over_max_record_bytes", account, b'{"pad":"' + b"p" * 400_000 + b'"}', "value"))
        bad.append((topic, "large_garbage_referenced", account, b"[" + b"1," * 100_000 + b"1", None))
    label = {"transaction_id": "none", "account_id": accounts[0], "label": "fraud", "label_time": T0}
    for i in range(30):
        bad.append((labels_topic, "label_bad_value", accounts[i].encode(), _j({**label, "label": "maybe"}), "label"))
        bad.append((labels_topic, "label_wrong_key", b"nobody", _j({**label, "account_id": accounts[i]}), "key"))
        bad.append((labels_topic, "label_not_json", accounts[i].encode(), b"\x00\x01", None))

    positions: dict[tuple[str, int, int], tuple[str, str | None]] = {}

    async def send(records: list[tuple[str, str, bytes | None, bytes | None, str | None]]) -> None:
        producer = make_producer(settings.kafka, settings.producer, kafka_broker)
        await producer.start()
        try:
            futures = [(kind, field, tp, await producer.send(tp, value, key=key)) for tp, kind, key, value, field in records]
            for kind, field, tp, future in futures:
                meta = await future
                positions[(tp, meta.partition, meta.offset)] = (kind, field)
        finally:
            await producer.stop()

    async def send_good(values: list[tuple[bytes, bytes]]) -> None:
        producer = make_producer(settings.kafka, settings.producer, kafka_broker)
        await producer.start()
        try:
            for future in [await producer.send(topic, value, key=key) for key, value in values]:
                await future
        finally:
            await producer.stop()

    slices = 8
    tx = history.transactions
    step = -(-tx.num_rows // slices)
    bad_step = -(-len(bad) // slices)
    for i in range(slices):
        produce(settings, kafka_broker, tx.slice(i * step, step), None)
        asyncio.run(send(bad[i * bad_step:(i + 1) * bad_step]))
    asyncio.run(send_good(extremes))
    good_count = tx.num_rows + len(extremes)
    bad_tx = sum(1 for b in bad if b[0] == topic)
    assert bad_tx >= 10_000

    job = job_factory(settings, actors=2)
    status = wait_scored(job, good_count + bad_tx, timeout_s=300)
    totals = status.totals
    assert totals.scored == good_count
    assert totals.lag == 0 and all(p.lag == 0 for p in status.partitions.values())

    letters = [decode_dead_letter(r.value) for r in asyncio.run(
        consume_all(settings, kafka_broker, settings.kafka.topics.dead_letters.name, timeout_s=60))]
    status = job.status()
    assert status.totals.dead_letters == len(bad) == len(letters)
    found = {(d.topic, d.partition, d.offset): d for d in letters}
    assert set(found) == set(positions)  # each at the position it was read from, none twice
    schema = json.loads((SCHEMAS / "dead_letter.schema.json").read_text())
    by_kind: collections.Counter[str] = collections.Counter()
    for position, (kind, field) in positions.items():
        letter = found[position]
        by_kind[kind] += 1
        assert letter.field == field, (kind, letter.error)
        assert "(fix: " in letter.error, (kind, letter.error)
        if kind in ("over_max_record_bytes", "large_garbage_referenced"):
            assert letter.bytes_omitted and letter.value is None and letter.value_sha256 and letter.value_size > 50_000
    for letter in letters[:50] + [found[p] for p, (k, _) in positions.items() if k == "over_max_record_bytes"]:
        jsonschema.validate(json.loads(msgspec.json.encode(letter)), schema)
    print(json.dumps({"produced_good": good_count, "produced_bad": len(bad), "scored": status.totals.scored,
                      "dead_letters": len(letters), "by_kind": dict(sorted(by_kind.items())),
                      "by_field": dict(collections.Counter(str(d.field) for d in letters))}), file=sys.stderr)
    assert not any(a.error for a in status.actors), [a.error for a in status.actors]


def test_a_dead_letter_too_large_to_send_is_replaced_by_one_that_references_the_record(
    stream_settings, kafka_broker, job_factory
) -> None:
    """The 1 MB case: embedded, its dead letter (base64 + envelope) exceeds the producer's 1 MiB request limit."""
    settings = stream_settings(dead_letter_embed_max_bytes=2_000_000)
    topic = settings.kafka.topics.transactions.name
    garbage = b"{" + b"x" * 900_000
    good = [(f"A{i}".encode(), _j(_tx(i, f"A{i}"))) for i in range(40)]

    async def send() -> tuple[int, int]:
        producer = make_producer(settings.kafka, settings.producer, kafka_broker)
        await producer.start()
        try:
            for key, value in good[:20]:
                await producer.send_and_wait(topic, value, key=key)
            meta = await producer.send_and_wait(topic, garbage, key=b"A1")
            for key, value in good[20:]:
                await producer.send_and_wait(topic, value, key=key)
            return meta.partition, meta.offset
        finally:
            await producer.stop()

    partition, offset = asyncio.run(send())
    job = job_factory(settings, actors=2)
    status = wait_scored(job, len(good) + 1, timeout_s=120)
    assert status.totals.scored == len(good) and status.totals.dead_letters == 1
    letters = [decode_dead_letter(r.value) for r in asyncio.run(
        consume_all(settings, kafka_broker, settings.kafka.topics.dead_letters.name))]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.partition, letter.offset) == (partition, offset)
    assert letter.bytes_omitted and letter.value is None and letter.value_size == len(garbage)
    assert "too large to send (MessageSizeTooLargeError)" in letter.error and "not valid JSON" in letter.error
    replaced = sum(a.delivery.replaced_too_large for a in status.actors)
    assert replaced == 1 and all(a.delivery.state == "ok" for a in status.actors)
