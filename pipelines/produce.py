"""Stream a Parquet history to the ``transactions`` and ``labels`` topics.

Transactions go out in the history's row (delivery) order, keyed by account_id,
at a target rate or as fast as possible. Labels are released once the stream's
event-time clock (the latest event time sent) passes their ``label_time``, in
label-time order, ties by transaction id (:class:`features.labels.LabelQueue`,
the rule the offline builder and the scoring partitions apply too), so a label
never arrives before the transaction it labels; labels still pending when the
history ends are sent last. Ground-truth columns never leave this module.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from configs import KafkaSettings, ProducerSettings
from connectors.kafka import start_producer
from contracts.arrow import table_to_records
from contracts.records import Label, Transaction, encode
from features.labels import LabelQueue, release_order


@dataclass
class ProduceReport:
    """What a produce run sent, with the partition every send landed on."""

    transactions: int = 0
    labels: int = 0
    seconds: float = 0.0
    transactions_per_partition: Counter[int] = field(default_factory=Counter)
    labels_per_partition: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0


def read_history(path: str | Path) -> tuple[pa.Table, pa.Table | None]:
    """Transactions and labels of a history directory (or a single transactions file)."""
    path = Path(path)
    if path.is_dir():
        tx_path, label_path = path / "transactions.parquet", path / "labels.parquet"
    else:
        tx_path, label_path = path, path.with_name("labels.parquet")
    if not tx_path.is_file():
        raise FileNotFoundError(f"no transactions at {tx_path}; create a history with `fraudstream generate --out DIR`")
    labels = pq.read_table(label_path) if label_path.is_file() else None
    return pq.read_table(tx_path), labels


def encode_transactions(batch: pa.Table | pa.RecordBatch) -> tuple[list[bytes], list[bytes], list[int]]:
    """(keys, values, event times) for a batch of history rows; ground truth dropped."""
    records = table_to_records(_as_table(batch), Transaction)
    return [tx.account_id.encode() for tx in records], [encode(tx) for tx in records], [
        tx.event_time for tx in records
    ]


def encode_labels(batch: pa.Table | pa.RecordBatch) -> tuple[list[bytes], list[bytes], list[int]]:
    """(keys, values, label times) for a batch of label rows."""
    records = table_to_records(_as_table(batch), Label)
    return [lb.account_id.encode() for lb in records], [encode(lb) for lb in records], [
        lb.label_time for lb in records
    ]


def _as_table(batch: pa.Table | pa.RecordBatch) -> pa.Table:
    return batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])


def _label_queue(
    transactions: pa.Table, labels: pa.Table | None, limited: bool
) -> tuple[list[bytes], list[bytes], LabelQueue[int]]:
    """The labels' keys and values, and a queue of their positions released by the event time sent.

    ``limited``: only the labels of ``transactions`` (a slice of the history) are kept.
    """
    queue: LabelQueue[int] = LabelQueue()
    if labels is None or not labels.num_rows:
        return [], [], queue
    if limited:
        sent_ids = pa.chunked_array(transactions.column("transaction_id"))
        labels = labels.filter(pa.compute.is_in(labels.column("transaction_id"), value_set=sent_ids.combine_chunks()))
    label_keys, label_values, label_times = encode_labels(labels)
    order = release_order(label_times, labels.column("transaction_id").to_pylist()).tolist()
    queue.extend([label_times[i] for i in order], order)
    return label_keys, label_values, queue


async def produce_history(
    transactions: pa.Table,
    labels: pa.Table | None,
    kafka: KafkaSettings,
    producer_settings: ProducerSettings,
    bootstrap_servers: str | None = None,
    rate: float | None = None,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = 2_000,
    pace: Callable[[int], Awaitable[None]] | None = None,
) -> ProduceReport:
    """Send a history; returns once every send is acknowledged.

    ``rate`` (transactions/s, 0 = unlimited) overrides ``producer_settings.rate``;
    ``on_progress(transactions, labels)`` is called after each chunk. ``pace``,
    when given, replaces the rate: it is awaited after each chunk with the
    transactions sent so far and returns when the next chunk may go (a rate
    that changes, a pause until consumers catch up).
    """
    target_rate = producer_settings.rate if rate is None else rate
    if limit is not None:
        transactions = transactions.slice(0, limit)
    label_keys, label_values, queue = _label_queue(transactions, labels, limited=limit is not None)

    report = ProduceReport()
    # idempotent where the brokers give producer ids: a retried batch is never written twice
    producer = await start_producer(kafka, producer_settings, bootstrap_servers)
    tx_topic, label_topic = kafka.topics.transactions.name, kafka.topics.labels.name
    pending: list[tuple[bool, asyncio.Future[object]]] = []

    async def settle() -> None:
        for is_label, future in pending:
            metadata = await future
            counter = report.labels_per_partition if is_label else report.transactions_per_partition
            counter[metadata.partition] += 1  # type: ignore[attr-defined]
        pending.clear()

    async def send_labels(due: list[int]) -> None:
        for i in due:
            pending.append((True, await producer.send(label_topic, label_values[i], key=label_keys[i])))
        report.labels += len(due)

    started = time.perf_counter()
    try:
        for batch in transactions.to_batches(max_chunksize=chunk_rows):
            keys, values, times = encode_transactions(batch)
            for key, value, event_time in zip(keys, values, times, strict=True):
                pending.append((False, await producer.send(tx_topic, value, key=key)))
                due = queue.advance(event_time)
                if due:
                    await send_labels(due)
            report.transactions += len(values)
            if len(pending) >= producer_settings.max_in_flight:
                await settle()
            if pace is not None:
                await pace(report.transactions)
            elif target_rate > 0:
                ahead = report.transactions / target_rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if on_progress is not None:
                on_progress(report.transactions, report.labels)
        await send_labels(queue.release_all())
        await producer.flush()
        await settle()
        if on_progress is not None:
            on_progress(report.transactions, report.labels)
    finally:
        report.seconds = time.perf_counter() - started
        await producer.stop()
    return report
