"""The console's Kafka edges: the alerts reader that fills its queue, and the producer of verdict labels.

The reader assigns every partition of ``kafka.topics.alerts`` by hand (no
consumer group, nothing committed, like `fraudstream alerts tail`), so it
never disturbs downstream consumers. It starts ``console.backfill_s`` back
(the broker's offsets for that time; the whole topic without a window, or
where the broker cannot look offsets up by time), and leaves out records
older than the window by their Kafka timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from configs import KafkaSettings, Settings
from connectors.kafka import KafkaSetupError, make_consumer, start_producer, wait_until_ready
from contracts.errors import RecordError
from contracts.records import Alert
from pipelines.alerts import read_alert, topic_partitions
from pipelines.console.service import ConsoleService
from pipelines.console.web import Feed

log = logging.getLogger("fraudstream.console")
#: Seconds between two tries to read the alerts topic while it or the broker is not there.
RETRY_S = 5.0


async def _seek_to_window(consumer: AIOKafkaConsumer, tps: list[TopicPartition], from_ms: int | None) -> None:
    """Place every partition at its first record at or after ``from_ms`` (None: the beginning)."""
    if from_ms is None:
        await consumer.seek_to_beginning(*tps)
        return
    try:
        found = await consumer.offsets_for_times(dict.fromkeys(tps, from_ms))
    except (KafkaError, OSError, ValueError) as exc:  # a broker without timestamp lookups: read all, filter by time
        log.warning("cannot look up alert offsets by time (%r): reading the alerts topic from the beginning", exc)
        await consumer.seek_to_beginning(*tps)
        return
    later = [tp for tp in tps if found.get(tp) is None]  # nothing that recent: only new alerts
    if later:
        await consumer.seek_to_end(*later)
    for tp, position in found.items():
        if position is not None:
            consumer.seek(tp, position.offset)


async def read_alerts(kafka: KafkaSettings, bootstrap: str | None, topic: str, *, backfill_s: float | None,
                      on_alert: Callable[[Alert], None], stop: asyncio.Event,
                      report: Callable[[str], None] = log.warning, clock: Callable[[], float] = time.time,
                      poll_ms: int = 200, fetch_max_wait_ms: int = 500) -> None:  # fmt: skip
    """Read ``topic`` until ``stop`` is set, giving each alert to ``on_alert``; ``report`` says what was skipped.

    ``fetch_max_wait_ms`` is how long the broker may hold a fetch that finds nothing (the scoring job's
    ``stream.fetch_max_wait_ms``): a broker that does not answer early when records arrive (the embedded one)
    holds each new alert up to that long before the page sees it."""
    isolation = "read_committed" if kafka.exactly_once else "read_uncommitted"
    consumer = make_consumer(kafka, bootstrap, auto_offset_reset="earliest", isolation_level=isolation,
                             fetch_max_wait_ms=fetch_max_wait_ms)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(kafka, bootstrap, topic, consumer)]
        consumer.assign(tps)
        from_ms = None if backfill_s is None else int((clock() - backfill_s) * 1000)
        await _seek_to_window(consumer, tps, from_ms)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=poll_ms, max_records=2_000)
            for tp in sorted(batch, key=lambda tp: tp.partition):
                for record in batch[tp]:
                    if from_ms is not None and record.timestamp < from_ms:
                        continue
                    try:
                        alert = read_alert(record.value)
                    except RecordError as exc:
                        report(f"{topic} partition {tp.partition} offset {record.offset}: not an alert, skipped: {exc}")
                        continue
                    on_alert(alert)
    finally:
        await consumer.stop()


def alerts_feed(settings: Settings, bootstrap: str | None) -> Feed:
    """The feed :func:`~pipelines.console.web.create_app` runs: the alerts topic into the service's queue."""

    async def feed(service: ConsoleService, stop: asyncio.Event) -> None:
        said = None
        while not stop.is_set():
            try:
                await wait_until_ready(settings.kafka, bootstrap)
                await read_alerts(settings.kafka, bootstrap, settings.kafka.topics.alerts.name,
                                  backfill_s=settings.console.backfill_s, stop=stop, on_alert=service.ingest,
                                  fetch_max_wait_ms=settings.stream.fetch_max_wait_ms)  # fmt: skip
            except KafkaSetupError as exc:  # no broker yet, or no alerts topic until the job creates it: wait
                if str(exc) != said:
                    log.warning("%s; trying again every %.0f s", exc, RETRY_S)
                    service.hub.publish("feed", {"error": f"{exc}; trying again"})
                    said = str(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)

    return feed


class KafkaLabelSink:
    """Writes verdict labels to ``kafka.topics.labels`` (key = account id), each acknowledged before it returns."""

    def __init__(self, settings: Settings, bootstrap: str | None) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topic = settings.kafka.topics.labels.name
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # acks=all, no waiting to fill a batch: a verdict is one record an analyst waits for
        options = msgspec.structs.replace(self.settings.producer, acks="all", linger_ms=0)
        self.producer = await start_producer(self.settings.kafka, options, self.bootstrap)

    async def send(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self.producer is None:
            await self.start()
        assert self.producer is not None
        await self.producer.send_and_wait(self.topic, value, key=key, headers=headers)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
