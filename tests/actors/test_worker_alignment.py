"""The scoring loop's liveness with terminal alignment: what waits for the table moves on without new records.

A ScoringWorker on an in-memory stand-in for Kafka (no broker, no Ray): one actor owns every
partition and every stage partition, so its own terminal updates come back to it, as in a job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import TopicPartition

import actors.terminal_io as terminal_io_module
from actors.terminal_stage import IDLE, decode_delta_batch
from actors.worker import ScoringWorker
from configs import Settings, TopicSettings, TopicsSettings, load_settings
from connectors.checkpoint import CheckpointStore
from contracts.records import Transaction, encode

START = 1_767_225_600_000
MINUTE = 60_000


@dataclass(frozen=True)
class _Record:
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int


class _Kafka:
    """Partitioned logs; ``lose`` decides which appended records a reader never sees (the embedded broker
    skips a record for a reader now and then while two producers append to one partition)."""

    def __init__(self, lose: Callable[[str, int, bytes], bool] = lambda topic, partition, value: False) -> None:
        self.logs: dict[TopicPartition, list[_Record]] = {}
        self.unseen: set[tuple[TopicPartition, int]] = set()
        self.lose = lose

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        tp = TopicPartition(topic, partition)
        log = self.logs.setdefault(tp, [])
        if self.lose(topic, partition, value):
            self.unseen.add((tp, len(log)))
        log.append(_Record(len(log), key, value, START))


class _Consumer:
    def __init__(self, kafka: _Kafka) -> None:
        self.kafka = kafka
        self.positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = {tp: self.positions.get(tp, 0) for tp in tps}

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.kafka.logs.get(tp, []))

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return int(time.time() * 1000)

    def pause(self, tp: TopicPartition) -> None:
        self._paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self._paused.discard(tp)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def getmany(self, timeout_ms: int = 0, max_records: int = 1_000) -> dict[TopicPartition, list[_Record]]:
        polled: dict[TopicPartition, list[_Record]] = {}
        for tp, position in self.positions.items():
            if tp in self._paused or max_records <= 0:
                continue
            records = self.kafka.logs.get(tp, [])[position:position + max_records]
            if records:
                self.positions[tp] = records[-1].offset + 1
                max_records -= len(records)
                seen = [r for r in records if (tp, r.offset) not in self.kafka.unseen]
                if seen:
                    polled[tp] = seen
        if not polled:  # as a broker holds a fetch that finds nothing
            await asyncio.sleep(timeout_ms / 1000)
        return polled

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        pass


class _Producer:
    def __init__(self, kafka: _Kafka) -> None:
        self.kafka = kafka
        self.sent: list[tuple[str, int | None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> Any:
        self.sent.append((topic, partition))
        self.kafka.append(topic, partition or 0, key, value)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _settings(tmp_path: Path, **stream: Any) -> Settings:
    settings = load_settings()
    topics = TopicsSettings(
        transactions=TopicSettings(name="tx", partitions=2), labels=TopicSettings(name="labels", partitions=2),
        alerts=TopicSettings(name="alerts", partitions=2), dead_letters=TopicSettings(name="dlq", partitions=1),
        terminal_deltas=TopicSettings(name="deltas", partitions=2), terminal_risk=TopicSettings(name="risk", partitions=2),
    )
    options = {"checkpoint_uri": str(tmp_path), "checkpoint_interval_s": 3600.0, "checkpoint_interval_events": 10**9,
               "terminal_alignment": True, **stream}
    classifier = msgspec.structs.replace(settings.scoring.classifier, model_uri="")
    return msgspec.structs.replace(
        settings, kafka=msgspec.structs.replace(settings.kafka, topics=topics),
        stream=msgspec.structs.replace(settings.stream, **options),
        scoring=msgspec.structs.replace(settings.scoring, classifier=classifier))


def _backlog(kafka: _Kafka) -> int:
    """Six hours of transactions on each of the two partitions, at shared terminals: each partition's
    later transactions wait for the other's earlier ones."""
    n = 0
    for partition in (0, 1):
        for i in range(72):
            account = f"acct-{partition}-{i % 5}"
            tx = Transaction(transaction_id=f"tx-{partition}-{i}", account_id=account,
                             event_time=START + i * 5 * MINUTE + partition * MINUTE, amount=10.0 + i % 7,
                             terminal_id=f"T-{i % 3}", country="FR")
            kafka.append("tx", partition, account.encode(), encode(tx))
            n += 1
    return n


async def _run(worker: ScoringWorker, expected: int, steps: int = 400) -> int:
    if not worker.processors:
        await worker.assign([0, 1], [0, 1])
    for _ in range(steps):
        await worker.step()
        if sum(p.counters.scored for p in worker.processors.values()) >= expected:
            break
    for task in list(worker.checkpoints.saving.values()) + list(worker.checkpoints.saving_stages.values()):
        await task
    return sum(p.counters.scored for p in worker.processors.values())


def _worker(settings: Settings, kafka: _Kafka) -> ScoringWorker:
    worker = ScoringWorker(settings, None, "test")
    worker.consumer, worker.producer = _Consumer(kafka), _Producer(kafka)
    worker.store = CheckpointStore(settings.stream.checkpoint_uri)
    return worker


@pytest.fixture
def short_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's timers shortened (each step still takes less than a timer's period, and the ones that
    poll nothing wait 20 ms, as a broker holding an empty fetch)."""
    monkeypatch.setattr(terminal_io_module, "STAGE_FLUSH_S", 0.05)
    monkeypatch.setattr(terminal_io_module, "RESEND_S", 0.1)


def test_an_aligned_backlog_is_scored_whole_and_never_stale(tmp_path: Path, short_timers: None) -> None:
    kafka = _Kafka()
    expected = _backlog(kafka)
    worker = _worker(_settings(tmp_path), kafka)
    assert asyncio.run(_run(worker, expected)) == expected
    assert sum(p.counters.terminal_stale for p in worker.processors.values()) == 0
    assert not any(p.held for p in worker.processors.values())


def test_a_progress_that_never_reached_its_stage_is_sent_again_from_quiet_steps(tmp_path: Path, short_timers: None) -> None:
    # every progress partition 1 sends stage partition 0 is lost for the stage's reader the first time:
    # it gets there only when sent again. Partition 1's progress (its first held transaction) does not
    # change until the table moves, and once every partition waits every poll finds nothing, so only a
    # step that polled nothing can send it again
    sent: set[tuple[int, int]] = set()

    def lose(topic: str, partition: int, value: bytes) -> bool:
        if topic != "deltas" or partition != 0:
            return False
        batch = decode_delta_batch(value)
        first = batch.source == 1 and (batch.source, batch.through_ms) not in sent
        sent.add((batch.source, batch.through_ms))
        return first

    kafka = _Kafka(lose)
    expected = _backlog(kafka)
    worker = _worker(_settings(tmp_path), kafka)
    assert asyncio.run(_run(worker, expected)) == expected
    assert len(kafka.unseen) > 1 and sum(p.counters.terminal_stale for p in worker.processors.values()) == 0


def test_without_alignment_quiet_steps_send_nothing_once_the_table_is_complete(tmp_path: Path) -> None:
    kafka = _Kafka()
    expected = _backlog(kafka)
    worker = _worker(_settings(tmp_path, terminal_alignment=False), kafka)

    async def scored_then_quiet() -> tuple[int, int]:
        scored = await _run(worker, expected)
        for _ in range(200):  # the table completes (every partition caught up, the stage flushes on its timer)
            await worker.step()
            if worker.broadcast.complete_through_ms == IDLE:
                break
        before = len(worker.producer.sent)
        for _ in range(60):  # past both timers: nothing is left to send, nothing is sent again
            await worker.step()
        return scored, len(worker.producer.sent) - before

    assert asyncio.run(scored_then_quiet()) == (expected, 0)
    assert worker.broadcast.complete_through_ms == IDLE
