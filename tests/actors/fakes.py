"""Stand-ins for the worker's parts' Kafka clients (no broker, no Ray), small settings to run them with, and
statuses as the actors report them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from actors.checkpointing import Checkpointer
from actors.clients import Clients
from actors.messages import (
    ActorStatus,
    DeliveryOk,
    KafkaStatus,
    PartitionCounters,
    PartitionStatus,
    Percentiles,
    PhaseFigures,
)
from actors.ownership import Ownership
from actors.reloads import Reloads
from actors.serving import ClassifierServing
from actors.stats import ErrorLog
from actors.terminal_stage import BroadcastRisk
from configs import Settings, TopicSettings, TopicsSettings, load_settings
from connectors.checkpoint import CheckpointStore
from features import FeatureEngine


@dataclass(frozen=True)
class FakeRecord:
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int


class FakeConsumer:
    """The consumer calls the parts make, recorded; logs start at ``starts`` and end at ``highwaters``;
    ``getmany`` returns what ``logs`` holds from each position on."""

    def __init__(self) -> None:
        self.logs: dict[TopicPartition, list[FakeRecord]] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.starts: dict[TopicPartition, int] = {}
        self.highwaters: dict[TopicPartition, int] = {}
        #: Wall time (ms) of every partition's latest fetch (None: now).
        self.fetched_ms: int | None = None
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.fail_commits = False

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = {tp: self.positions.get(tp, 0) for tp in tps}

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.starts.get(tp, 0) for tp in tps}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return int(time.time() * 1000) if self.fetched_ms is None else self.fetched_ms

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    async def getmany(self, timeout_ms: int = 0, max_records: int = 1_000) -> dict[TopicPartition, list[FakeRecord]]:
        polled: dict[TopicPartition, list[FakeRecord]] = {}
        for tp, position in self.positions.items():
            records = [] if tp in self.paused else self.logs.get(tp, [])[position:position + max_records]
            if records:
                self.positions[tp] = records[-1].offset + 1
                polled[tp] = records
        if not polled:  # as a broker holds a fetch that finds nothing
            await asyncio.sleep(timeout_ms / 1000)
        return polled

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commits:
            raise KafkaError("no coordinator")
        self.commits.append(dict(offsets))

    async def stop(self) -> None:
        pass


class FakeProducer:
    """Acknowledges every send at once and keeps what was sent: (topic, partition, key, value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None, bytes | None, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> Any:
        self.sent.append((topic, partition, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def stop(self) -> None:
        pass


class FakeGroup:
    """A consumer group's committed offsets, as a transaction's commit leaves them (shared by the consumer's
    coordinator, which reads them, and the transactional producer, which writes them)."""

    def __init__(self) -> None:
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}

    async def fetch_committed_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        return {tp: self.offsets[tp] for tp in tps if tp in self.offsets}


class FakeTransactionalProducer(FakeProducer):
    """A transactional producer: what a transaction sent and its offsets become visible at its commit only
    (``committed``, ``group``); ``fail_next`` makes the next send's acknowledgement fail."""

    def __init__(self, group: FakeGroup, committed: list[tuple[str, int | None, bytes | None, bytes]]) -> None:
        super().__init__()
        self.group = group
        self.committed = committed
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self.in_transaction = False
        self.fail_next = False
        self.aborts = 0

    async def begin_transaction(self) -> None:
        assert not self.in_transaction
        self.in_transaction, self.sent, self.offsets = True, [], {}

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> Any:
        assert self.in_transaction
        future = await super().send(topic, value, key, partition)
        if self.fail_next:
            self.fail_next = False
            future = asyncio.get_running_loop().create_future()
            future.set_exception(KafkaError("broker went away"))
        return future

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, OffsetAndMetadata], group_id: str) -> None:
        assert self.in_transaction
        self.offsets.update(offsets)

    async def commit_transaction(self) -> None:
        self.committed.extend(self.sent)
        self.group.offsets.update(self.offsets)
        self.in_transaction = False

    async def abort_transaction(self) -> None:
        self.aborts += 1
        self.in_transaction = False


def small_settings(tmp_path: Path, **stream: Any) -> Settings:
    """Two partitions of every topic but the dead letters, checkpoints under ``tmp_path``, no timers due,
    no served classifier; ``stream`` overrides stream settings."""
    settings = load_settings()
    topics = TopicsSettings(
        transactions=TopicSettings(name="tx", partitions=2), labels=TopicSettings(name="labels", partitions=2),
        alerts=TopicSettings(name="alerts", partitions=2), dead_letters=TopicSettings(name="dlq", partitions=1),
        terminal_deltas=TopicSettings(name="deltas", partitions=2), terminal_risk=TopicSettings(name="risk", partitions=2),
    )
    options = {"checkpoint_uri": str(tmp_path), "checkpoint_interval_s": 3600.0, "checkpoint_interval_events": 10**9,
               **stream}
    classifier = msgspec.structs.replace(settings.scoring.classifier, model_uri="")
    return msgspec.structs.replace(
        settings, kafka=msgspec.structs.replace(settings.kafka, topics=topics),
        stream=msgspec.structs.replace(settings.stream, **options),
        scoring=msgspec.structs.replace(settings.scoring, classifier=classifier))


def make_ownership(settings: Settings, name: str = "actor-0", consumer: FakeConsumer | None = None) -> Ownership:
    """One actor's ownership (and the checkpointer, reloads and broadcast table it works with) on a fake consumer
    and the local checkpoint store of ``settings`` (shared by every actor built on the same settings)."""
    clients = Clients(consumer=consumer or FakeConsumer(), store=CheckpointStore(settings.stream.checkpoint_uri))

    async def before_snapshot(partition: int) -> None:
        pass

    checkpoints = Checkpointer(settings, name, clients, ErrorLog(), before_snapshot)
    broadcast = BroadcastRisk(FeatureEngine.terminal_risk_for(settings.features), 2)
    reloads = Reloads(settings, name, ClassifierServing(settings), clients)
    return Ownership(settings, name, clients, checkpoints, broadcast, reloads)


def partition_status(next_offset: int, lag: int | None, scored: int) -> PartitionStatus:
    """A partition's status (``lag`` None: unknown): one alert, one late event, two accounts, no checkpoint."""
    return PartitionStatus(
        next_offset=next_offset, highwater=None if lag is None else next_offset + lag, lag=lag, last_known_lag=lag,
        undelivered=0, next_label_offset=0, held_labels=0, held_transactions=0, watermark_ms=0, checkpoint_seq=-1,
        checkpoint_age_s=0.5, late_events=1, accounts=2, **vars(PartitionCounters(scored=scored, alerts=1)),
    )  # fmt: skip


def actor_status(name: str, partitions: dict[str, PartitionStatus]) -> ActorStatus:
    """A live actor's status with these partitions (delivery ok, Kafka answering)."""
    return ActorStatus(
        actor=name, pid=1234, partitions=partitions, events_per_s=10.04, batches=3,
        latency_ms=Percentiles(p50=1.0, p95=2.0, p99=3.0, samples=3),
        phase_ms={"poll": PhaseFigures(p50=1.0, p99=2.0, max=3.0, samples=3)},
        kafka=KafkaStatus(state="ok", outages=0), delivery=DeliveryOk(replaced_too_large=0, retried=1),
        restarted=False, node="127.0.0.1", restarts=0,
    )  # fmt: skip
