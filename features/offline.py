"""The offline builder: a Parquet history -> a training table, through the online code.

Rows are replayed in event-time order (or, with ``order="delivery"``, in the
history's row order, which is what a consumer of the topic saw) through one
:class:`~features.engine.FeatureEngine` per Kafka partition, keyed exactly as
Kafka's default partitioner keys the topic, with one terminal risk table shared
by all of them. Labels join the stream as the producer releases them: after the
transaction that moves the event-time clock past their ``label_time``
(:func:`features.labels.interleave`: the rule the producer and the scoring
partitions apply too). So every feature uses only what was known at its event
time, and the table equals what the scoring actors computed, row for row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import pyarrow as pa

from configs import FeatureSettings
from contracts import Label, Transaction
from contracts.arrow import table_to_records
from contracts.partitioning import partition_for
from features._impl import FeatureEngine
from features.labels import interleave
from features.runtime import configure_gc_for_streaming, freeze_long_lived_state


class PartitionedFeatures:
    """One engine per partition and a shared terminal table: the whole topic in one process."""

    def __init__(self, settings: FeatureSettings, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions
        self.terminal_risk = FeatureEngine.terminal_risk_for(settings)
        self.engines = [FeatureEngine(settings, self.terminal_risk) for _ in range(partitions)]
        self._partition_cache: dict[str, int] = {}
        self._sweep_interval_ms = settings.sweep_interval_s * 1000
        self._retention_ms = self.engines[0].terminal_retention_ms
        self._last_shared_sweep = -(2**62)

    def partition_of(self, account_id: str) -> int:
        partition = self._partition_cache.get(account_id)
        if partition is None:
            partition = self._partition_cache[account_id] = partition_for(account_id.encode(), self.partitions)
        return partition

    @property
    def registry(self):  # type: ignore[no-untyped-def]
        return self.engines[0].registry

    def transform_one(self, tx: Transaction) -> tuple[int, list[float], bool]:
        """(partition, feature vector, late) for one transaction, routed to its partition."""
        partition = self.partition_of(tx.account_id)
        values, late = self.transform_routed(partition, tx)
        return partition, values, late

    def transform_routed(self, partition: int, tx: Transaction) -> tuple[list[float], bool]:
        """(feature vector, late) for a transaction already routed, as a partition's consumer receives it."""
        engine = self.engines[partition]
        result: tuple[list[float], bool] = engine.transform_one(tx)
        if engine.watermark_ms - self._last_shared_sweep >= self._sweep_interval_ms:
            self.expire_shared()
        return result

    def observe_label(self, label: Label) -> bool:
        return bool(self.engines[self.partition_of(label.account_id)].observe_label(label))

    def expire_shared(self) -> None:
        """Expire the shared terminal table behind the slowest partition's watermark."""
        active = [engine.watermark_ms for engine in self.engines if engine.stats.events]
        if not active:
            return
        slowest = min(active)
        if slowest - self._last_shared_sweep >= self._sweep_interval_ms:
            self._last_shared_sweep = slowest - slowest % self._sweep_interval_ms
            self.terminal_risk.expire(slowest - self._retention_ms)
            freeze_long_lived_state()


def history_transactions(table: pa.Table, order: Literal["event_time", "delivery"] = "event_time") -> pa.Table:
    """The history's rows in replay order (stable: ties keep their row order)."""
    if order == "delivery":
        return table
    times = table.column("event_time").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()
    return table.take(pa.array(np.argsort(times, kind="stable")))


def build_feature_table(
    transactions: pa.Table,
    labels: pa.Table | None,
    settings: FeatureSettings,
    partitions: int = 1,
    label_delay_ms: int | None = None,
    order: Literal["event_time", "delivery"] = "event_time",
    chunk_rows: int = 100_000,
    on_progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """The training table: ids, event time, partition, late flag, features, labels.

    ``label`` is 1 (fraud) / 0 (genuine) when a label arrived within
    ``label_delay_ms`` of the event time (any time when None), else null.
    Ground-truth columns of a synthetic history (``is_fraud``,
    ``fraud_scenario``) are carried through for evaluation only.
    """
    ordered = history_transactions(transactions, order)
    label_records = table_to_records(labels, Label) if labels is not None and labels.num_rows else []
    known = {label.transaction_id: label for label in label_records}
    configure_gc_for_streaming()
    topic = PartitionedFeatures(settings, partitions)
    names = topic.registry.names

    def records() -> Iterator[Transaction]:
        for batch in ordered.to_batches(max_chunksize=chunk_rows):
            yield from table_to_records(pa.Table.from_batches([batch]), Transaction)

    chunks: list[pa.Table] = []
    scored: list[Transaction] = []
    rows: list[list[float]] = []
    late: list[bool] = []
    parts: list[int] = []

    def flush() -> None:
        start = sum(chunk.num_rows for chunk in chunks)
        truth = ordered.slice(start, len(scored))
        chunks.append(_chunk_table(truth, scored, rows, late, parts, names, known, label_delay_ms))
        scored.clear()
        rows.clear()
        late.clear()
        parts.clear()
        if on_progress is not None:
            on_progress(start + truth.num_rows)

    for event in interleave(records(), label_records):
        if isinstance(event, Label):
            topic.observe_label(event)
            continue
        partition, values, is_late = topic.transform_one(event)
        scored.append(event)
        rows.append(values)
        late.append(is_late)
        parts.append(partition)
        if len(scored) >= chunk_rows:
            flush()
    if scored or not chunks:
        flush()
    schema_meta = {b"feature_version": topic.registry.version.encode(), b"partitions": str(partitions).encode()}
    return pa.concat_tables(chunks).replace_schema_metadata(schema_meta)


def _chunk_table(
    batch: pa.Table,
    records: list[Transaction],
    rows: list[list[float]],
    late: list[bool],
    parts: list[int],
    names: tuple[str, ...],
    known: dict[str, Label],
    label_delay_ms: int | None,
) -> pa.Table:
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    label_values: list[int | None] = []
    label_times: list[int | None] = []
    for tx in records:
        label = known.get(tx.transaction_id)
        if label is not None and (label_delay_ms is None or label.label_time <= tx.event_time + label_delay_ms):
            label_values.append(1 if label.label == "fraud" else 0)
            label_times.append(label.label_time)
        else:
            label_values.append(None)
            label_times.append(None)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "transaction_id": pa.array([tx.transaction_id for tx in records], pa.string()),
        "account_id": pa.array([tx.account_id for tx in records], pa.string()),
        "event_time": pa.array([tx.event_time for tx in records], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "partition": pa.array(parts, pa.int32()),
        "late": pa.array(late, pa.bool_()),
    }
    for position, name in enumerate(names):
        columns[name] = pa.array(matrix[:, position])
    columns["label"] = pa.array(label_values, pa.int8())
    columns["label_time"] = pa.array(label_times, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    for truth in ("is_fraud", "fraud_scenario"):
        if truth in batch.schema.names:
            columns[truth] = batch.column(truth)
    return pa.table(columns)
