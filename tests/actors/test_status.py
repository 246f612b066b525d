"""What an actor's status says about its partitions, its errors and Kafka (no broker, no Ray)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
from aiokafka import TopicPartition

from actors.delivery import Outgoing
from actors.worker import ScoringWorker
from connectors.checkpoint import CheckpointStore
from tests.actors.fakes import FakeConsumer, FakeProducer, small_settings


def _worker(tmp_path: Path) -> tuple[ScoringWorker, FakeConsumer]:
    settings = small_settings(tmp_path, kafka_wait_grace_s=30.0)
    consumer = FakeConsumer()
    worker = ScoringWorker(settings, None, "actor-0")
    worker.consumer, worker.producer = consumer, FakeProducer()
    worker.store = CheckpointStore(settings.stream.checkpoint_uri)
    asyncio.run(worker.assign([0, 1], [1]))
    return worker, consumer


def test_each_partition_shows_its_position_lag_and_checkpoint(tmp_path: Path) -> None:
    worker, consumer = _worker(tmp_path)
    worker.processors[0].next_offset, worker.processors[0].next_label_offset = 40, 3
    consumer.highwaters = {TopicPartition("tx", 0): 100, TopicPartition("labels", 0): 5}
    asyncio.run(worker.checkpoint_all())
    status = worker.status()
    assert list(status.partitions) == ["0", "1"] and status.actor == "actor-0"
    zero = status.partitions["0"]
    assert (zero.next_offset, zero.highwater, zero.lag, zero.last_known_lag) == (40, 100, 60, 60)
    assert (zero.next_label_offset, zero.label_lag, zero.restored_from) == (3, 2, None)
    assert zero.checkpoint_seq == worker.checkpoints.last_checkpoint[0][2] >= 0 and zero.checkpoint_age_s < 60
    assert status.partitions["1"].lag is None  # no fetch has reported a high watermark yet
    assert msgspec.to_builtins(status.stages) == {
        "1": {"next_offset": 0, "complete_through_ms": worker.stages[1].complete_through_ms, "terminals": 0}}
    assert status.error is None and status.kafka.state == "ok" and not status.running
    assert status.rules_version == worker.processors[0].scorer.model_versions.get("rules")


def test_a_lag_read_from_a_fetch_older_than_the_grace_is_unknown_and_kafka_is_waited_for(tmp_path: Path) -> None:
    worker, consumer = _worker(tmp_path)
    consumer.highwaters = {TopicPartition("tx", 0): 100}
    consumer.fetched_ms = int((time.time() - 120.0) * 1000)
    status = worker.status()
    zero = status.partitions["0"]
    assert zero.lag is None and zero.last_known_lag == 100 and zero.fetch_age_s >= 120.0
    assert status.kafka.state == "waiting" and status.error.startswith("waiting for Kafka")


def test_what_is_wrong_now_joins_every_part_and_the_latest_error_stays_after_it_cleared(tmp_path: Path) -> None:
    worker, _ = _worker(tmp_path)
    worker.errors.set("commit", "offset commit failed: KafkaError")
    worker.delivery.pending = [Outgoing("alerts", b"{}", owner=1)]
    worker.delivery.since, worker.delivery.last_error = time.time(), "KafkaTimeoutError"
    error = worker.error
    assert error is not None and error.startswith("offset commit failed")
    assert "1 outputs of partitions [1] not delivered" in error
    assert worker.status().partitions["1"].undelivered == 1

    worker.errors.clear("commit")
    worker.delivery.pending, worker.delivery.since = [], None
    status = worker.status()
    assert status.error is None and status.errors == {}
    assert status.last_error is not None and "not delivered" in status.last_error.error
