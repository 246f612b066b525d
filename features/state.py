"""Feature state to and from Arrow record batches (the checkpoint format).

A snapshot of a :class:`~features.engine.FeatureEngine` is three parts: one row
per account, one row per pending label, and a small metadata mapping (watermark,
sweep position, counters, feature version). Restoring gives an engine that
computes exactly what the original would have computed.

The layout of the account rows follows the feature version: a snapshot whose
``feature_version`` is not the configured one is refused (:class:`SnapshotMismatch`)
before any row is read, so a checkpoint taken before a layout change (e.g.
before the account known-fraud columns ``fraud_times`` / ``fraud_known_at``,
null for an account with no known fraud) is never misread.

>>> from configs import FeatureSettings
>>> from contracts import Transaction
>>> engine = FeatureEngine(FeatureSettings())
>>> _ = engine.transform_one(Transaction(transaction_id="t1", account_id="A1",
...                                      event_time=1_767_225_600_000, amount=12.0, country="FR"))
>>> snapshot = take_snapshot(engine)
>>> snapshot.accounts.num_rows, snapshot.meta["max_event_time_ms"]
(1, 1767225600000)
>>> restored = restore_engine(FeatureSettings(), EngineSnapshot.from_bytes(snapshot.to_bytes()))
>>> restored.accounts["A1"].window.amounts
[12.0]
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from configs import FeatureSettings
from features._impl import (
    AccountState,
    EngineStats,
    EventWindow,
    FeatureEngine,
    LocationTrail,
    NoveltyFilter,
    PendingLabels,
    RecentDistinct,
    RunningStats,
    TerminalRisk,
)

ACCOUNT_STATE_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("times", pa.list_(pa.int64())),
        pa.field("amounts", pa.list_(pa.float64())),
        pa.field("n", pa.int64()),
        pa.field("mean", pa.float64()),
        pa.field("m2", pa.float64()),
        pa.field("ewma", pa.float64()),
        pa.field("trail_times", pa.list_(pa.int64())),
        pa.field("trail_lats", pa.list_(pa.float64())),
        pa.field("trail_lons", pa.list_(pa.float64())),
        pa.field("seen", pa.binary()),
        pa.field("recent_times", pa.list_(pa.int64())),
        pa.field("recent_merchants", pa.list_(pa.uint32())),
        pa.field("recent_countries", pa.list_(pa.uint32())),
        pa.field("last_seen_ms", pa.int64()),
        # known frauds of the account (event time, label time), sorted; null when none
        pa.field("fraud_times", pa.list_(pa.int64())),
        pa.field("fraud_known_at", pa.list_(pa.int64())),
    ]
)

PENDING_LABELS_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        #: where the transaction's fraud counts: its terminal, then its other entities' keys (null when late)
        pa.field("entity_keys", pa.list_(pa.string())),
        pa.field("event_time_ms", pa.int64()),
    ]
)

TERMINAL_BUCKETS_SCHEMA = pa.schema(
    [pa.field("terminal_id", pa.string()), pa.field("bucket", pa.int64()), pa.field("count", pa.int64())]
)
TERMINAL_FRAUDS_SCHEMA = pa.schema(
    [pa.field("terminal_id", pa.string()), pa.field("bucket", pa.int64()), pa.field("known_at_ms", pa.int64())]
)
#: Transactions per day of every key (terminals and the other entities' keys): the delay-aware windows.
TERMINAL_DAYS_SCHEMA = pa.schema(
    [pa.field("terminal_id", pa.string()), pa.field("day", pa.int64()), pa.field("count", pa.int64())]
)

#: (key, bucket counts, frauds, day counts) of one key of a risk table.
TerminalCopy = tuple[str, dict[int, int], list[tuple[int, int]], dict[int, int]]


def _account_row(account_id: str, s: AccountState) -> tuple[Any, ...]:
    """One account's state as copies (bytes of the C twins' arrays, else lists), in schema order."""
    window, recent, trail, stats = s.window, s.recent, s.trail, s.stats
    if hasattr(window, "times_bytes"):
        times: Any = window.times_bytes()
        amounts: Any = window.amounts_bytes()
    else:
        times, amounts = list(window.times), list(window.amounts)
    if hasattr(recent, "times_bytes"):
        r_times: Any = recent.times_bytes()
        r_merchants: Any = recent.merchants_bytes()
        r_countries: Any = recent.countries_bytes()
    else:
        r_times, r_merchants, r_countries = list(recent.times), list(recent.merchants), list(recent.countries)
    frauds = s.frauds
    if frauds is None:
        fraud_times: list[int] | None = None
        fraud_known: list[int] | None = None
    else:
        fraud_times, fraud_known = [f[0] for f in frauds], [f[1] for f in frauds]
    return (account_id, times, amounts, stats.n, stats.mean, stats.m2, stats.ewma, list(trail.times),
            list(trail.lats), list(trail.lons), bytes(s.seen.bits), r_times, r_merchants, r_countries, s.last_seen_ms,
            fraud_times, fraud_known)


def account_rows(accounts: dict[str, AccountState]) -> list[tuple[Any, ...]]:
    """Copies of every account's state: cheap (no Arrow), so a snapshot can be taken between batches
    and turned into a record batch (:func:`rows_to_batch`) in another thread while scoring goes on."""
    return [_account_row(account_id, state) for account_id, state in accounts.items()]


_NUMPY = {pa.int64(): np.int64, pa.float64(): np.float64, pa.uint32(): np.uint32}


def _list_column(values: list[Any], arrow: pa.DataType) -> pa.Array:
    """A list column from per-row copies: raw bytes (C twins) joined as they are, or Python lists (None: null)."""
    if not values or not isinstance(values[0], bytes):
        return pa.array(values, pa.list_(arrow))
    dtype = _NUMPY[arrow]
    width = np.dtype(dtype).itemsize
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(np.fromiter((len(v) // width for v in values), dtype=np.int32, count=len(values)), out=offsets[1:])
    flat = np.frombuffer(b"".join(values), dtype=dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, arrow))


def rows_to_batch(rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    """The accounts record batch (ACCOUNT_STATE_SCHEMA) of :func:`account_rows` output."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in ACCOUNT_STATE_SCHEMA]
    arrays = []
    for values, field in zip(columns, ACCOUNT_STATE_SCHEMA, strict=True):
        if pa.types.is_list(field.type):
            arrays.append(_list_column(list(values), field.type.value_type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=ACCOUNT_STATE_SCHEMA)


def accounts_to_batch(accounts: dict[str, AccountState]) -> pa.RecordBatch:
    """One row per account (column order of ACCOUNT_STATE_SCHEMA)."""
    return rows_to_batch(account_rows(accounts))


def accounts_from_batch(batch: pa.RecordBatch | pa.Table, settings: FeatureSettings) -> dict[str, AccountState]:
    """Rebuild account states from :func:`accounts_to_batch` output."""
    c = {name: batch.column(name).to_pylist() for name in ACCOUNT_STATE_SCHEMA.names}
    accounts = {}
    for i, account_id in enumerate(c["account_id"]):
        fraud_times = c["fraud_times"][i]
        frauds = list(zip(fraud_times, c["fraud_known_at"][i], strict=True)) if fraud_times else None
        accounts[account_id] = AccountState(
            EventWindow(c["times"][i], c["amounts"][i]),
            RunningStats(settings.ewma_alpha, c["n"][i], c["mean"][i], c["m2"][i], c["ewma"][i]),
            LocationTrail(settings.location_trail, c["trail_times"][i], c["trail_lats"][i], c["trail_lons"][i]),
            NoveltyFilter(settings.novelty_bits, bytearray(c["seen"][i])),
            RecentDistinct(c["recent_times"][i], c["recent_merchants"][i], c["recent_countries"][i]),
            c["last_seen_ms"][i],
            frauds,
        )
    return accounts


def terminal_copies(risk: TerminalRisk) -> list[TerminalCopy]:
    """(key, bucket counts, frauds, day counts) copies of a table: cheap, for :func:`terminal_copies_to_batches`."""
    return [
        (terminal_id, dict(counts.buckets), list(counts.frauds), dict(counts.days))
        for terminal_id, counts in risk.terminals.items()
    ]


def terminal_to_batches(risk: TerminalRisk) -> tuple[pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
    """(bucket counts, known frauds, day counts) of a risk table."""
    return terminal_copies_to_batches(terminal_copies(risk))


def terminal_copies_to_batches(copies: list[TerminalCopy]) -> tuple[pa.RecordBatch, pa.RecordBatch, pa.RecordBatch]:
    """(bucket counts, known frauds, day counts) record batches of :func:`terminal_copies` output, by key
    (the same table gives the same batches, whatever order its keys were created in)."""
    buckets: dict[str, list[Any]] = {"terminal_id": [], "bucket": [], "count": []}
    frauds: dict[str, list[Any]] = {"terminal_id": [], "bucket": [], "known_at_ms": []}
    days: dict[str, list[Any]] = {"terminal_id": [], "day": [], "count": []}
    for terminal_id, terminal_buckets, terminal_frauds, terminal_days in sorted(copies, key=lambda copy: copy[0]):
        for bucket, count in terminal_buckets.items():
            buckets["terminal_id"].append(terminal_id)
            buckets["bucket"].append(bucket)
            buckets["count"].append(count)
        for bucket, known_at in terminal_frauds:
            frauds["terminal_id"].append(terminal_id)
            frauds["bucket"].append(bucket)
            frauds["known_at_ms"].append(known_at)
        for day, count in terminal_days.items():
            days["terminal_id"].append(terminal_id)
            days["day"].append(day)
            days["count"].append(count)
    return (
        pa.RecordBatch.from_pydict(buckets, schema=TERMINAL_BUCKETS_SCHEMA),
        pa.RecordBatch.from_pydict(frauds, schema=TERMINAL_FRAUDS_SCHEMA),
        pa.RecordBatch.from_pydict(days, schema=TERMINAL_DAYS_SCHEMA),
    )


def terminal_from_batches(
    settings: FeatureSettings, buckets: pa.RecordBatch, frauds: pa.RecordBatch, days: pa.RecordBatch
) -> TerminalRisk:
    risk = FeatureEngine.terminal_risk_for(settings)
    bucket_size = risk.bucket_ms
    for terminal_id, bucket, count in zip(*(buckets.column(i).to_pylist() for i in range(3)), strict=True):
        risk.record_transaction(terminal_id, bucket * bucket_size, count)
    for terminal_id, bucket, known_at in zip(*(frauds.column(i).to_pylist() for i in range(3)), strict=True):
        risk.record_fraud(terminal_id, bucket * bucket_size, known_at)
    for key, day, count in zip(*(days.column(i).to_pylist() for i in range(3)), strict=True):
        risk.record_day(key, day * 86_400_000, count)
    return risk


def ipc_bytes(batch: pa.RecordBatch, compression: str | None) -> bytes:
    """One record batch as an Arrow IPC stream (the checkpoint encoding)."""
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


@dataclass
class EngineSnapshot:
    """An engine's state: accounts, pending labels and metadata."""

    accounts: pa.RecordBatch
    pending: pa.RecordBatch
    meta: dict[str, Any]

    def to_bytes(self, compression: str | None = "zstd") -> bytes:
        """One self-describing blob (JSON header + two Arrow IPC streams)."""
        accounts = ipc_bytes(self.accounts, compression)
        pending = ipc_bytes(self.pending, compression)
        header = json.dumps({**self.meta, "_sizes": [len(accounts), len(pending)]}).encode()
        return len(header).to_bytes(4, "big") + header + accounts + pending

    @classmethod
    def from_bytes(cls, data: bytes) -> EngineSnapshot:
        size = int.from_bytes(data[:4], "big")
        meta = json.loads(data[4 : 4 + size])
        accounts_size, pending_size = meta.pop("_sizes")
        start = 4 + size
        accounts = read_ipc_batch(data[start : start + accounts_size], ACCOUNT_STATE_SCHEMA)
        pending = read_ipc_batch(data[start + accounts_size : start + accounts_size + pending_size], PENDING_LABELS_SCHEMA)
        return cls(accounts, pending, meta)


def read_ipc_batch(data: bytes, schema: pa.Schema) -> pa.RecordBatch:
    """The one record batch of an Arrow IPC stream written by :func:`ipc_bytes` (empty: ``schema``)."""
    table = pa.ipc.open_stream(io.BytesIO(data)).read_all().combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=schema)


@dataclass
class FrozenEngine:
    """Copies of an engine's state taken between micro-batches (cheap: no Arrow);
    :meth:`snapshot` builds the record batches, safely in another thread."""

    accounts: list[tuple[Any, ...]]
    pending: PendingLabels
    meta: dict[str, Any]

    def snapshot(self) -> EngineSnapshot:
        ids, keys, times = self.pending.columns()
        pending = pa.RecordBatch.from_arrays(
            [pa.array(ids, pa.string()), pa.array(keys, pa.list_(pa.string())), pa.array(times, pa.int64())],
            schema=PENDING_LABELS_SCHEMA,
        )
        return EngineSnapshot(rows_to_batch(self.accounts), pending, self.meta)


def freeze_engine(engine: FeatureEngine) -> FrozenEngine:
    """The engine's state as copies (see :class:`FrozenEngine`); the terminal table is separate."""
    meta = {
        "feature_version": engine.registry.version,
        "max_event_time_ms": engine.max_event_time_ms,
        "last_sweep_ms": engine._last_sweep,
        "stats": dataclasses.asdict(engine.stats),
        "pending_evicted": engine.pending.evicted,
        "pending_expired": engine.pending.expired,
    }
    return FrozenEngine(account_rows(engine.accounts), engine.pending.copy(), meta)


def take_snapshot(engine: FeatureEngine) -> EngineSnapshot:
    """The engine's state as Arrow batches plus metadata (the terminal table is separate)."""
    return freeze_engine(engine).snapshot()


class SnapshotMismatch(ValueError):
    """A snapshot taken with another feature layout cannot be restored."""


def restore_engine(
    settings: FeatureSettings, snapshot: EngineSnapshot, terminal_risk: TerminalRisk | None = None
) -> FeatureEngine:
    """An engine in exactly the state the snapshot recorded."""
    engine = FeatureEngine(settings, terminal_risk)
    if snapshot.meta["feature_version"] != engine.registry.version:
        raise SnapshotMismatch(
            f"snapshot has feature version {snapshot.meta['feature_version']} but the configured features are "
            f"{engine.registry.version}; restore with the settings it was taken with, or start without it"
        )
    engine.accounts = accounts_from_batch(snapshot.accounts, settings)
    engine.max_event_time_ms = snapshot.meta["max_event_time_ms"]
    engine._last_sweep = snapshot.meta["last_sweep_ms"]
    engine.stats = EngineStats(**snapshot.meta["stats"])
    for transaction_id, keys, event_time in zip(
        *(snapshot.pending.column(i).to_pylist() for i in range(3)), strict=True
    ):
        engine.pending.add(transaction_id, None if keys is None else tuple(keys), event_time)
    engine.pending.evicted = snapshot.meta["pending_evicted"]
    engine.pending.expired = snapshot.meta["pending_expired"]
    return engine
