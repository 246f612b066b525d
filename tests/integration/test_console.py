"""`fraudstream console` against the real embedded broker: alerts from the topic reach the page (its API and
its event stream) within 2 s, and a verdict becomes a label on the labels topic, keyed and partitioned by account."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from aiokafka import TopicPartition

from configs import ConsoleSettings, Settings
from connectors.kafka import make_consumer, make_producer
from contracts import Alert, decode_label, encode
from contracts.partitioning import partition_for
from pipelines.console.kafka_io import KafkaLabelSink, alerts_feed
from pipelines.console.verdicts import ANALYST_HEADER, SOURCE_HEADER
from tests.pipelines.console.consolekit import Clock, alert, serving

pytestmark = pytest.mark.integration


def _with_console(settings: Settings, tmp_path: Path, **console: object) -> Settings:
    options = {"audit_path": str(tmp_path / "verdicts.jsonl"), "status_interval_s": 0.2, **console}
    stream = msgspec.structs.replace(settings.stream, status_path=str(tmp_path / "status.json"))
    return msgspec.structs.replace(settings, console=ConsoleSettings(**options), stream=stream)  # type: ignore[arg-type]


def _produce(settings: Settings, broker: str, *alerts: Alert) -> dict[str, int]:
    """Send the alerts keyed by account (as the scoring job does); the partition each went to, by alert id."""

    async def run() -> dict[str, int]:
        producer = make_producer(settings.kafka, settings.producer, broker)
        await producer.start()
        try:
            sent = {}
            for item in alerts:
                meta = await producer.send_and_wait(settings.kafka.topics.alerts.name, encode(item),
                                                    key=item.account_id.encode())  # fmt: skip
                sent[item.alert_id] = meta.partition
            return sent
        finally:
            await producer.stop()

    return asyncio.run(run())


def _read_labels(settings: Settings, broker: str, wanted: int, timeout_s: float = 10.0) -> list[object]:
    async def run() -> list[object]:
        topic = settings.kafka.topics.labels
        consumer = make_consumer(settings.kafka, broker, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic.name, p) for p in range(topic.partitions)])
            found: list[object] = []
            deadline = time.monotonic() + timeout_s
            while len(found) < wanted and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                found += [record for records in batch.values() for record in records]
            return found
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _wait(condition: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_alerts_on_the_topic_reach_the_page_and_a_verdict_is_a_label_keyed_by_account(
    isolated_settings: Callable[..., Settings], kafka_broker: str, tmp_path: Path
) -> None:
    settings = _with_console(isolated_settings(), tmp_path)  # no users: the local analyst
    now_ms = int(time.time() * 1000)
    before = msgspec.structs.replace(alert(1, "acc-before"), alert_time=now_ms)
    _produce(settings, kafka_broker, before)  # written before the console starts: inside console.backfill_s
    sink = KafkaLabelSink(settings, kafka_broker)
    with serving(settings, sink=sink, feed=alerts_feed(settings, kafka_broker), clock=Clock(time.time()),
                 on_shutdown=sink.stop) as console:  # fmt: skip
        client = console.client()
        client.csrf = client.get("/api/session").body["csrf"]
        _wait(lambda: console.service.queue.get("alert-1") is not None, timeout_s=10.0)
        with client.events("/api/events?account=acc-9") as events:
            assert events.next()[0] == "status"
            later = [msgspec.structs.replace(alert(2, "acc-8"), alert_time=now_ms + 2),
                     msgspec.structs.replace(alert(3, "acc-9", decision="block"), alert_time=now_ms + 3)]  # fmt: skip
            partitions = _produce(settings, kafka_broker, *later)
            start = time.monotonic()
            name, data = events.next()
            while name == "status":
                name, data = events.next()
            assert (name, data["alert_id"]) == ("alert", "alert-3")  # the filter left alert-2 out
            assert time.monotonic() - start < 2.0
        listed = client.get("/api/alerts").body["alerts"]
        assert [row["alert_id"] for row in listed] == ["alert-3", "alert-2", "alert-1"]

        given = client.post("/api/alerts/alert-3/verdict", {"verdict": "fraud"})
        assert given.status == 200, given.body
        assert client.post("/api/alerts/alert-3/verdict", {"verdict": "genuine"}).status == 409

    records = _read_labels(settings, kafka_broker, wanted=1)
    assert len(records) == 1
    record = records[0]
    label = decode_label(record.value)  # type: ignore[attr-defined]
    assert record.key == b"acc-9"  # type: ignore[attr-defined]
    assert (label.transaction_id, label.account_id, label.label) == ("tx-3", "acc-9", "fraud")
    # the partition that scored the account's transactions (labels are partitioned like transactions)
    assert record.partition == partition_for(b"acc-9", settings.kafka.topics.labels.partitions)  # type: ignore[attr-defined]
    assert record.partition == partitions["alert-3"]  # type: ignore[attr-defined]
    headers = dict(record.headers)  # type: ignore[attr-defined]
    assert headers[SOURCE_HEADER] == b"console" and headers[ANALYST_HEADER] == b"local"


def test_the_backfill_window_leaves_out_older_alerts_and_without_it_the_whole_topic_is_read(
    isolated_settings: Callable[..., Settings], kafka_broker: str, tmp_path: Path
) -> None:
    settings = _with_console(isolated_settings(), tmp_path, backfill_s=2.0)
    _produce(settings, kafka_broker, alert(1, "acc-old"))
    time.sleep(3.0)
    _produce(settings, kafka_broker, alert(2, "acc-new"))
    with serving(settings, feed=alerts_feed(settings, kafka_broker)) as console:
        _wait(lambda: console.service.queue.get("alert-2") is not None, timeout_s=10.0)
        time.sleep(0.5)
        assert console.service.queue.get("alert-1") is None
    whole = msgspec.structs.replace(settings, console=msgspec.structs.replace(settings.console, backfill_s=None))
    with serving(whole, feed=alerts_feed(whole, kafka_broker)) as console:
        _wait(lambda: len(console.service.queue) == 2, timeout_s=10.0)
