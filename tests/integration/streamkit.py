"""Helpers of the stream-job tests: produce a history, read a topic whole, wait until a job scored everything."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
import yaml
from aiokafka import TopicPartition

from actors.messages import JobStatus
from actors.partition import PartitionProcessor
from actors.terminal_stage import BroadcastRisk
from configs import Settings
from connectors.kafka import make_consumer
from features import FeatureEngine
from models.checked_settings import load_settings
from pipelines.produce import produce_history
from pipelines.stream import StreamJob


async def consume_all(settings: Settings, bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Any]:
    """Every record of ``topic`` up to its current end."""
    consumer = make_consumer(settings.kafka, bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            quiet = 0 if batch else quiet + 1
            for messages in batch.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()


def reference_run(settings: Settings, bootstrap: str) -> tuple[dict[int, str], set[str]]:
    """An uninterrupted, in-process run over every record now in the topics: entity-state digest per
    partition, alert ids."""
    topics = settings.kafka.topics
    transactions = asyncio.run(consume_all(settings, bootstrap, topics.transactions.name))
    labels = asyncio.run(consume_all(settings, bootstrap, topics.labels.name))
    table = FeatureEngine.terminal_risk_for(settings.features)
    table.publish_updates()
    broadcast = BroadcastRisk(table, topics.terminal_deltas.partitions)
    digests = {}
    alert_ids: set[str] = set()
    for partition in range(topics.transactions.partitions):
        processor = PartitionProcessor(settings, partition, broadcast)
        mine = sorted((r for r in transactions if r.partition == partition), key=lambda r: r.offset)
        out = processor.process_transactions(mine, now_ms=0)  # times of 0: alert ids are read untyped
        processor.process_labels(sorted((r for r in labels if r.partition == partition), key=lambda r: r.offset))
        digests[partition] = processor.entity_state_digest()
        alert_ids |= {msgspec.json.decode(value)["alert_id"] for _, value in out.alerts}
    return digests, alert_ids


def reference_digests(settings: Settings, bootstrap: str) -> dict[int, str]:
    """Entity state per partition of an uninterrupted, in-process run over every record now in the topics."""
    return reference_run(settings, bootstrap)[0]


def produce(settings: Settings, bootstrap: str, transactions: pa.Table, labels: pa.Table | None, rate: float = 0.0):
    return asyncio.run(produce_history(transactions, labels, settings.kafka, settings.producer, bootstrap, rate=rate))


def _json(status: JobStatus) -> str:
    return msgspec.json.encode(status).decode()


def wait_scored(job: StreamJob, expected: int, timeout_s: float = 120.0) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = job.status()
        partitions = status.partitions.values()
        done = sum(p.scored + p.dead_letters for p in partitions)
        if done >= expected and all(p.lag == 0 for p in partitions) and len(status.partitions):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {expected} records scored in {timeout_s}s: {_json(status)[:2000]}")
        time.sleep(0.5)




def wait_labels_read(job: StreamJob, timeout_s: float = 60.0) -> JobStatus:
    """Wait until every partition scored its transactions and read its labels to the end (those not due yet
    are held), in one status: the label consumer runs beside the transaction one, so scoring every transaction
    does not mean every label is in; and an actor restarted since scoring was seen done (a kill takes effect a
    moment after ``ray.kill`` returns) may have read every label while it still replays transactions."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = job.status()
        partitions = status.partitions.values()
        if partitions and all(p.lag == 0 and p.label_lag is not None and p.label_lag == p.held_labels
                              for p in partitions):  # fmt: skip
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"labels not read to the end in {timeout_s}s: {_json(status)[:2000]}")
        time.sleep(0.5)


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `fraudstream ARGS` in this process; (exit code, stdout, stderr)."""
    from pipelines.cli import main

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["fraudstream", *args])
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def job_config(
    settings: Settings, kafka_broker: str, path: Path, *, checkpoint_uri: str, status_path: str, tracking_uri: str
) -> Path:
    """The settings as a YAML file a submitted job reads: the test's broker and topics, the given checkpoints,
    status file and MLflow store (relative ones resolve in the job's working directory), no registry model,
    inline rules, half a CPU per actor."""
    kafka = msgspec.structs.replace(settings.kafka, embedded=False, bootstrap_servers=(kafka_broker,))
    stream = msgspec.structs.replace(
        settings.stream, checkpoint_uri=checkpoint_uri, status_path=status_path, status_interval_s=0.5,
        checkpoint_interval_s=2.0, actor_num_cpus=0.5, ray_address="",
    )  # fmt: skip
    classifier = msgspec.structs.replace(settings.scoring.classifier, model_uri="")  # no registry needed here
    scoring = msgspec.structs.replace(settings.scoring, classifier=classifier, rules_file="")  # rules inline
    mlflow = msgspec.structs.replace(settings.mlflow, tracking_uri=tracking_uri)
    settings = msgspec.structs.replace(settings, kafka=kafka, stream=stream, scoring=scoring, mlflow=mlflow)
    path.write_text(yaml.safe_dump(msgspec.to_builtins(settings), sort_keys=False))
    load_settings(path)  # what the job will read must load
    return path
