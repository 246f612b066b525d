"""Produce a generated history, consume it back through aiokafka from the real broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import msgspec
import pyarrow.compute as pc
import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2

from configs import Settings
from connectors.kafka import make_consumer
from contracts import decode_label, decode_transaction
from pipelines.produce import produce_history, read_history
from synthetic import generate, write_history

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_history(local_settings: Settings):
    spec = msgspec.structs.replace(local_settings.generator, accounts=300, days=4, seed=11, genuine_label_rate=0.2)
    return generate(spec)


async def _consume_all(settings: Settings, bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0):
    """Every record of ``topic`` as (partition, offset, key, value, timestamp)."""
    consumer = make_consumer(settings.kafka, bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, messages in batch.items():
                records.extend((tp.partition, m.offset, m.key, m.value, m.timestamp) for m in messages)
        return records
    finally:
        await consumer.stop()


def test_produce_then_consume_keys_on_stable_partitions(isolated_settings, kafka_broker: str, small_history) -> None:
    settings = isolated_settings(partitions=4)
    transactions, labels = small_history.transactions, small_history.labels
    report = asyncio.run(produce_history(transactions, labels, settings.kafka, settings.producer, kafka_broker))
    assert report.transactions == transactions.num_rows
    assert report.labels == labels.num_rows

    tx_records = asyncio.run(_consume_all(settings, kafka_broker, settings.kafka.topics.transactions.name, report.transactions))
    label_records = asyncio.run(_consume_all(settings, kafka_broker, settings.kafka.topics.labels.name, report.labels))
    assert len(tx_records) == transactions.num_rows
    assert len(label_records) == labels.num_rows

    # every record decodes, nothing lost or duplicated, ground truth never on the wire
    decoded = {}
    partition_of_account: dict[str, set[int]] = defaultdict(set)
    for partition, offset, key, value, timestamp in tx_records:
        tx = decode_transaction(value)
        assert key == tx.account_id.encode()
        body = json.loads(value)
        assert "is_fraud" not in body and "fraud_scenario" not in body
        decoded[tx.transaction_id] = (partition, offset, tx, timestamp)
        partition_of_account[tx.account_id].add(partition)
    assert set(decoded) == set(transactions.column("transaction_id").to_pylist())

    # keyed partitioning: one partition per account, the one Kafka's Java client would pick
    for account, partitions in partition_of_account.items():
        assert len(partitions) == 1
        assert partitions == {(murmur2(account.encode()) & 0x7FFFFFFF) % 4}
    assert len({p for ps in partition_of_account.values() for p in ps}) == 4

    # per partition, offsets follow the history's delivery order
    order = {tid: i for i, tid in enumerate(transactions.column("transaction_id").to_pylist())}
    by_partition = defaultdict(list)
    for partition, offset, tx, _ in decoded.values():
        by_partition[partition].append((offset, order[tx.transaction_id]))
    for rows in by_partition.values():
        rows.sort()
        assert [r[1] for r in rows] == sorted(r[1] for r in rows)

    # labels: same key and partition as their transaction, sent after it, event-time clock past label_time
    max_event_time = pc.max(transactions.column("event_time")).cast("int64").as_py()
    for partition, _offset, key, value, timestamp in label_records:
        label = decode_label(value)
        tx_partition, _, tx, tx_timestamp = decoded[label.transaction_id]
        assert key == label.account_id.encode() == tx.account_id.encode()
        assert partition == tx_partition
        assert timestamp >= tx_timestamp
        assert label.label_time > tx.event_time
    released_in_stream = sum(1 for lt in labels.column("label_time").cast("int64").to_pylist() if lt <= max_event_time)
    assert 0 < released_in_stream <= labels.num_rows


def test_target_rate_is_respected(isolated_settings, kafka_broker: str, small_history) -> None:
    settings = isolated_settings(partitions=2)
    report = asyncio.run(
        produce_history(
            small_history.transactions, None, settings.kafka, settings.producer, kafka_broker, rate=2_000, limit=3_000,
            chunk_rows=200,
        )
    )
    assert report.transactions == 3_000 and report.labels == 0
    assert 1.3 <= report.seconds <= 6.0, report.seconds


@pytest.mark.slow
def test_generate_and_produce_commands(tmp_path: Path, kafka_broker: str, isolated_settings) -> None:
    settings = isolated_settings(partitions=4)
    config = tmp_path / "test.yaml"
    config.write_text(
        json.dumps({"kafka": {"embedded": False, "topics": msgspec.to_builtins(settings.kafka.topics)}})
    )
    out_dir = tmp_path / "history"
    gen = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "generate", "--out", str(out_dir), "--accounts", "200", "--days", "3",
         "--seed", "5", "--config", str(config)],
        capture_output=True, text=True, timeout=300,
    )
    assert gen.returncode == 0, gen.stderr
    transactions, labels = read_history(out_dir)
    assert transactions.num_rows > 0 and labels is not None

    prod = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "produce", "--history", str(out_dir), "--bootstrap", kafka_broker,
         "--config", str(config)],
        capture_output=True, text=True, timeout=300,
    )
    assert prod.returncode == 0, prod.stderr
    summary = json.loads(prod.stdout.strip().splitlines()[-1])
    assert summary["transactions"] == transactions.num_rows
    assert summary["labels"] == labels.num_rows
    records = asyncio.run(_consume_all(settings, kafka_broker, settings.kafka.topics.transactions.name, transactions.num_rows))
    assert len(records) == transactions.num_rows


def test_history_round_trip_through_parquet(tmp_path: Path, small_history) -> None:
    write_history(small_history, tmp_path)
    transactions, labels = read_history(tmp_path)
    assert transactions.equals(small_history.transactions)
    assert labels is not None and labels.equals(small_history.labels)


def test_features_command_writes_the_training_table(tmp_path: Path, small_history) -> None:
    import pyarrow.parquet as pq

    write_history(small_history, tmp_path / "history")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "features", "--history", str(tmp_path / "history"),
         "--out", str(tmp_path / "train.parquet"), "--label-delay-days", "7"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    table = pq.read_table(tmp_path / "train.parquet")
    assert summary["rows"] == table.num_rows == small_history.transactions.num_rows
    assert table.schema.metadata[b"feature_version"].decode() == summary["feature_version"]
    assert {"count_24h", "terminal_fraud_rate", "label", "is_fraud"} <= set(table.column_names)
    times = table.column("event_time").cast("int64").to_pylist()
    assert times == sorted(times)
    labelled = [v for v in table.column("label").to_pylist() if v is not None]
    assert 0 < len(labelled) < table.num_rows
