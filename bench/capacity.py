"""Capacity: per-unit costs measured with the real code, and the plan they give (docs/capacity.md).

Everything measured runs in this process on one pinned core, with no Kafka and no Ray: a generated
history (default 20k accounts x 30 days, in event-time order) goes through the real
``PartitionProcessor`` of each of P partitions (default 8; JSON records decoded, features, scores,
alerts, labels released by the producer's rule), ``--round-events`` transactions at a time; after each
round every partition folds its terminal updates into its ``SourceShare`` and sends one ``DeltaBatch``
per stage partition (S, default 4; msgspec JSON as on ``terminal.deltas``), each ``TerminalStage``
applies them, expires and flushes a ``RiskUpdate`` (as on ``terminal.risk``), and one ``BroadcastRisk``
applies those, as every actor does. Times are CPU seconds of this process (``time.process_time``), so
other work on the machine does not inflate them; sizes are bytes.

Figures (one JSON line):

- ``workload``: the run; ``processor_events_per_s`` is the processors' own rate (decode, features,
  score, alerts, labels; no Kafka, no Ray: not the per-actor figure of bench/scaling.py).
- ``records``: mean JSON size of a transaction, a label and an alert as written to Kafka (uncompressed),
  labels (in the history; those released during the run) and alerts per transaction.
- ``world``: for terminals and each entity kind of ``features.entity_kinds``: keys per account,
  the share of transactions carrying one, and the histogram of distinct accounts per key.
- ``accounts``: account state. ``memory_bytes_per_account``: tracemalloc delta of restoring the
  checkpoint's accounts (``accounts_from_batch``, C twins) per account, what an engine holds after a
  restore (a live window keeps up to 50 % spare capacity besides); ``checkpoint_bytes_per_account``:
  the accounts Arrow IPC stream, zstd, as the checkpoint blob holds it (``..._raw_...``: uncompressed);
  ``encode_s_per_1m_accounts``: the rows copied (``account_rows``, in the loop), the record batch
  and zstd IPC (in a thread); ``restore_s_per_1m_accounts``: reading them back. Each also as
  ``*_base`` + ``*_per_event`` x events in the account's window (least squares over ``--groups``
  groups of accounts sorted by events held; the 24-hour distinct lists grow with the same activity
  and are folded in).
- ``pending``: the pending-label buffer (every scored transaction until its label, its TTL or
  eviction): memory, checkpoint bytes, encode and restore time per entry.
- ``scorer``: the scorer blob and its memory after a restore: fixed (a fresh scorer: the online
  classifier's ring is allocated whole) and per vector held (``scoring.online.buffer_max`` at most).
- ``checkpoint``: per partition the blobs ``PartitionProcessor.checkpoint()`` writes (the store writes
  them as given, one object each plus a manifest), the CPU time of ``snapshot()``, of ``blobs()`` and
  of ``PartitionProcessor.restore``. Checkpoints are full snapshots, never incremental.
- ``terminal_table``: a ``TerminalRisk`` (the broadcast table, each partition's share): memory per
  key, per hourly bucket and per day entry (tracemalloc over keys built with ``set_buckets``);
  checkpoint bytes per share entry (the terminal_* blobs, zstd); the stage's memory and checkpoint
  bytes per entry (every source's share of its keys; its blob is msgspec JSON, uncompressed).
- ``broadcast_table``, ``shares``: the simulated broadcast table and a partition's share at the end
  (keys, entries; the table's tracemalloc bytes after a rebuild) beside what :func:`table_model`
  gives for the same world.
- ``stage``: what the simulated rounds sent (delta records, entries, bytes; risk records, states,
  bytes; per transaction) and cost there (``round_*``, ``absorb``: the sources' side, ``expire``:
  the shares', stages' and table's expiry, which a round of an hour of event time runs every time and
  a live hour once); ``live_*``: the costs on live-shaped messages (a 0.5 s flush changes a key's
  current bucket and day): decode + apply per delta entry, flush + encode per state (base + per
  source holding a share of the key), decode + ``BroadcastRisk.apply`` per state on the simulated
  table, and their sizes; ``stage_us_per_record``: decode + apply of an empty DeltaBatch.
- ``controller``: at K actors of 2 partitions each, one status round's work at the controller and the
  driver (unpickling K ``ActorStatus`` replies, ``job_status``, pickling the ``JobStatus`` to the
  driver, unpickling and ``msgspec.json`` encoding it for the status file) and the file's size; a
  heartbeat's (``ActorHeartbeat``) pickling both ways.
- ``process_rss_bytes``: this process's resident memory once a scoring actor's modules are imported.
- ``inputs``: what the plan uses: ``measured`` (from the above) and ``assumptions`` (the options,
  configs/cluster.yaml's stream and topic settings, the feature and scoring settings). ``--per-actor-eps``
  (default 55,093) is bench/scaling.py's per-actor events/s (K=1, terminal alignment off, 2026-12-06); ``--ray-call-ms`` is
  assumed (Ray is not started here).
- ``plan`` (per target transactions/s over ``--accounts-target`` accounts), ``plan_without_devices``
  (``entity_kinds: [terminal, merchant]``), ``plan_at_history_activity`` (the same accounts paying as
  the generated ones do), ``fan_in`` (the terminal stage at N = 8, 64, 512, 4096 partitions),
  ``controller_limits`` and ``limits``: computed by :func:`plan`, :func:`fan_in`,
  :func:`controller_model` and :func:`limits_summary` from ``inputs`` (docs/capacity.md explains each
  rule).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import pickle
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

import actors.worker  # noqa: E402, F401  (what a scoring actor imports: counted in process_rss_bytes)
import features  # noqa: E402
from actors.controller import SUPERVISE_INTERVAL_S  # noqa: E402
from actors.messages import (  # noqa: E402
    ActorHeartbeat,
    ActorStatus,
    DeliveryOk,
    KafkaStatus,
    PartitionCounters,
    PartitionLag,
    PartitionStatus,
    Percentiles,
    PhaseFigures,
    StageStatus,
    job_status,
)
from actors.partition import PartitionProcessor  # noqa: E402
from actors.terminal_io import STAGE_FLUSH_S  # noqa: E402
from actors.terminal_stage import (  # noqa: E402
    IDLE,
    BroadcastRisk,
    DeltaBatch,
    RiskUpdate,
    TerminalDelta,
    TerminalStage,
    decode_delta_batch,
    decode_risk_update,
)
from actors.terminal_stage import encode as encode_stage_message  # noqa: E402
from bench.benchlib import generated, pin_to_one_core  # noqa: E402
from configs import Settings  # noqa: E402
from configs.settings import risk_retention_ms  # noqa: E402
from contracts.arrow import table_to_records  # noqa: E402
from contracts.partitioning import partition_for  # noqa: E402
from contracts.records import Label, Transaction, encode  # noqa: E402
from features import FeatureEngine  # noqa: E402
from features.offline import history_transactions  # noqa: E402
from features.registry import entity_kinds  # noqa: E402
from features.runtime import configure_gc_for_streaming  # noqa: E402
from features.state import (  # noqa: E402
    EngineSnapshot,
    FrozenEngine,
    account_rows,
    accounts_from_batch,
    freeze_engine,
    ipc_bytes,
    restore_engine,
    rows_to_batch,
    terminal_from_batches,
    terminal_to_batches,
)
from features.terminal import KEY_SEPARATOR  # noqa: E402
from models.checked_settings import load_settings  # noqa: E402
from models.scoring import Scorer  # noqa: E402

DAY_S = 86_400
GIB = 1024**3
MB = 1e6
#: The plan's targets (transactions/s) and the partition counts of the fan-in table.
TARGETS = (10_000, 100_000, 1_000_000)
FAN_IN_PARTITIONS = (8, 64, 512, 4096)
CONTROLLER_ACTORS = (8, 64, 512, 4096)
#: Beyond this many actors the plan gives up (the stage's fan-in grows with partitions squared).
MAX_ACTORS = 1 << 16
#: Objects a checkpoint writes per partition (five blobs and the manifest) and per stage partition.
PARTITION_CHECKPOINT_OBJECTS = 6
STAGE_CHECKPOINT_OBJECTS = 2


# ================================================================================= the plan (pure)
@dataclass(frozen=True)
class Measured:
    """The per-unit figures the plan scales (from :func:`measure`, or made up in tests)."""

    # one account: base + per event held in its window
    account_memory_base: float
    account_memory_per_event: float
    account_checkpoint_base: float
    account_checkpoint_per_event: float
    account_encode_s_base: float
    account_encode_s_per_event: float
    account_restore_s_base: float
    account_restore_s_per_event: float
    # one pending-label entry
    pending_memory: float
    pending_checkpoint: float
    pending_encode_s: float
    pending_restore_s: float
    # the scorer of one partition: fixed + per held vector
    scorer_memory_fixed: float
    scorer_memory_per_row: float
    scorer_checkpoint_fixed: float
    scorer_checkpoint_per_row: float
    # a TerminalRisk (broadcast table, shares); the stage
    table_key_bytes: float
    table_bucket_bytes: float
    table_day_bytes: float
    share_checkpoint_per_entry: float
    stage_memory_per_entry: float
    stage_checkpoint_per_entry: float
    # the world, per entity kind: keys per account, share of transactions carrying a key, and how many
    # distinct accounts use a key ([accounts, keys] pairs: each such account may sit on another partition)
    keys_per_account: dict[str, float]
    key_share: dict[str, float]
    accounts_per_key: dict[str, list[list[int]]]
    # Kafka records
    transaction_bytes: float
    label_bytes: float
    labels_per_transaction: float
    alert_bytes: float
    alerts_per_transaction: float
    delta_record_bytes: float
    delta_entry_bytes: float
    risk_record_bytes: float
    risk_state_bytes: float
    # the stage's and the broadcast's costs
    stage_s_per_record: float
    stage_s_per_entry: float
    #: flush + encode of a changed key's state: base + per source holding a share of the key
    flush_s_per_state: float
    flush_s_per_state_per_source: float
    broadcast_s_per_state: float
    #: a table's hourly expiry (the horizon moved one bucket), per key held
    expire_s_per_key: float
    # controller: one status round's work = base + per actor (of two partitions), in seconds
    status_s_base: float
    status_s_per_actor: float
    status_bytes_per_partition: float
    process_rss_bytes: float
    #: Transactions per account and day of the generated history (what a card pays there).
    history_tx_per_account_day: float


@dataclass(frozen=True)
class Assumptions:
    """What the plan is asked for and what it assumes (options, configs/cluster.yaml, feature settings)."""

    accounts: int = 10_000_000
    #: bench/scaling.py's per-actor events/s (K=1, terminal alignment off: one actor on one core).
    per_actor_eps: float = 55_093.0
    cores_per_actor: float = 1.0
    cores_per_node: int = 16
    memory_per_node: float = 64 * GIB
    #: Busy share of an actor's core the plan aims for (headroom for bursts and catch-up).
    utilization: float = 0.7
    replication: int = 3
    checkpoint_interval_s: float = 60.0
    checkpoint_interval_events: int = 500_000
    checkpoint_keep: int = 5
    #: Time a partition may take to be running again after a failure, beyond its checkpoint interval.
    recovery_headroom_s: float = 24 * 3600
    risk_retention_s: float = 45 * DAY_S
    risk_retention_min_s: float = 38 * DAY_S
    alerts_retention_s: float = 7 * DAY_S
    status_interval_s: float = 5.0
    max_batch_records: int = 1000
    ray_call_s: float = 0.001
    stage_flush_s: float = STAGE_FLUSH_S
    supervise_interval_s: float = SUPERVISE_INTERVAL_S
    # from the feature and scoring settings
    max_events_per_account: int = 2000
    longest_window_s: float = 30 * DAY_S
    pending_labels_max: int = 1_000_000
    pending_ttl_s: float = 60 * DAY_S
    buffer_max: int = 200_000
    buffer_ttl_s: float = 45 * DAY_S
    bucket_s: float = 3600.0
    #: Hourly buckets and days a table keeps per key (window + freshness + the readers' day of margin).
    kept_buckets: int = 193
    kept_days: int = 40
    #: Keys of the table: terminals (hourly buckets) and the entity kinds (days).
    kinds: tuple[str, ...] = ("terminal", "merchant", "device")
    day_kinds: tuple[str, ...] = ("terminal", "merchant", "device")


@dataclass(frozen=True)
class Inputs:
    measured: Measured
    assumptions: Assumptions = field(default_factory=Assumptions)


def power_of_two_at_least(n: float) -> int:
    """The smallest power of two >= n (>= 1).

    >>> [power_of_two_at_least(n) for n in (0, 1, 3, 8, 9)]
    [1, 1, 4, 8, 16]
    """
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _distinct(keys: float, draws: float) -> float:
    """Expected distinct keys among ``draws`` uniform draws from ``keys``."""
    return keys * -math.expm1(-draws / keys) if keys > 0 and draws > 0 else 0.0


def partitions_per_key(inputs: Inputs, kind: str, partitions: int) -> float:
    """Mean number of partitions whose accounts use a key of ``kind``: a key used by x accounts, each on a
    uniformly hashed partition of N, is in N(1 - (1 - 1/N)^x) partitions' shares (x measured per key)."""
    histogram = inputs.measured.accounts_per_key.get(kind)
    if partitions <= 1 or not histogram:
        return 1.0
    miss = math.log1p(-1 / partitions)
    keys = sum(count for _, count in histogram)
    return sum(count * partitions * -math.expm1(accounts * miss) for accounts, count in histogram) / keys


def table_model(inputs: Inputs, tps: float, sources: int = 1) -> dict[str, float]:
    """Keys, entries and memory of a TerminalRisk: the broadcast table (``sources`` = 1), or one partition's
    share when the traffic comes from ``sources`` partitions. Keys are uniform in popularity within a kind;
    a key is shared by the partitions of the accounts using it (:func:`partitions_per_key`); a (key,
    partition) pair holds the buckets and days in which it saw a transaction, within what a table keeps."""
    m, a = inputs.measured, inputs.assumptions
    keys = entries = memory = 0.0
    for kind in a.kinds:
        population = m.keys_per_account.get(kind, 0.0) * a.accounts
        if population <= 0:
            continue
        spread = partitions_per_key(inputs, kind, sources)
        pair_rate = tps * m.key_share.get(kind, 0.0) / population / spread  # transactions/s of a (key, partition)
        pairs = population * spread * -math.expm1(-pair_rate * a.kept_days * DAY_S)
        days = max(1.0, a.kept_days * -math.expm1(-pair_rate * DAY_S)) if kind in a.day_kinds else 0.0
        buckets = a.kept_buckets * -math.expm1(-pair_rate * a.bucket_s) if kind == "terminal" else 0.0
        keys += pairs
        entries += pairs * (days + buckets)
        memory += pairs * (m.table_key_bytes + days * m.table_day_bytes + buckets * m.table_bucket_bytes)
    return {"keys": keys / sources, "entries": entries / sources, "memory_bytes": memory / sources}


def _stage_traffic(inputs: Inputs, tps: float, partitions: int, stages: int) -> dict[str, float]:
    """Records, entries and states per second through the terminal stage, live (every source flushes every
    stage_flush_s and its progress moves each time, so it sends one record to every stage partition); an
    entry or a state is a key that changed in the flush interval (distinct among the draws of uniform keys)."""
    m, a = inputs.measured, inputs.assumptions
    flush = a.stage_flush_s
    entries_per_flush = states_per_flush = flush_work = 0.0
    for kind in a.kinds:
        population = m.keys_per_account.get(kind, 0.0) * a.accounts
        draws = tps * m.key_share.get(kind, 0.0) * flush
        spread = partitions_per_key(inputs, kind, partitions)
        entries_per_flush += partitions * _distinct(population * spread / partitions, draws / partitions)
        states = _distinct(population, draws)
        states_per_flush += states
        flush_work += states * (m.flush_s_per_state + spread * m.flush_s_per_state_per_source)
    delta_records = partitions * stages / flush
    entries, states = entries_per_flush / flush, states_per_flush / flush
    risk_records = stages / flush
    return {
        "delta_records_per_s": delta_records,
        "delta_entries_per_s": entries,
        "delta_bytes_per_s": delta_records * m.delta_record_bytes + entries * m.delta_entry_bytes,
        "risk_records_per_s": risk_records,
        "risk_states_per_s": states,
        "risk_bytes_per_s": risk_records * m.risk_record_bytes + states * m.risk_state_bytes,
        "stage_cores": delta_records * m.stage_s_per_record + entries * m.stage_s_per_entry + flush_work / flush,
        #: every actor applies every state
        "broadcast_core_share": states * m.broadcast_s_per_state,
    }


def _partition_state(inputs: Inputs, tps: float, partitions: int) -> dict[str, float]:
    """One partition's state at ``tps`` over ``partitions``: accounts, pending labels, scorer, share."""
    m, a = inputs.measured, inputs.assumptions
    partition_tps = tps / partitions
    accounts = a.accounts / partitions
    window_events = min(a.max_events_per_account, tps / a.accounts * a.longest_window_s)
    pending = min(a.pending_labels_max, partition_tps * a.pending_ttl_s * max(0.0, 1 - m.labels_per_transaction))
    rows = min(a.buffer_max, partition_tps * a.buffer_ttl_s)
    share = table_model(inputs, tps, sources=partitions)
    return {
        "accounts": accounts,
        "window_events_per_account": window_events,
        "pending_entries": pending,
        "scorer_rows": rows,
        "share_entries": share["entries"],
        "accounts_memory": accounts * (m.account_memory_base + m.account_memory_per_event * window_events),
        "pending_memory": pending * m.pending_memory,
        "scorer_memory": m.scorer_memory_fixed + rows * m.scorer_memory_per_row,
        "share_memory": share["memory_bytes"],
        "accounts_checkpoint": accounts * (m.account_checkpoint_base + m.account_checkpoint_per_event * window_events),
        "pending_checkpoint": pending * m.pending_checkpoint,
        "scorer_checkpoint": m.scorer_checkpoint_fixed + rows * m.scorer_checkpoint_per_row,
        "share_checkpoint": share["entries"] * m.share_checkpoint_per_entry,
        "encode_s": accounts * (m.account_encode_s_base + m.account_encode_s_per_event * window_events)
        + pending * m.pending_encode_s,
        "restore_s": accounts * (m.account_restore_s_base + m.account_restore_s_per_event * window_events)
        + pending * m.pending_restore_s,
    }


def _layout(actors: int) -> tuple[int, int]:
    """(partitions, stage partitions) for K actors: the smallest power of two >= 2K, so K can double once
    without adding partitions (keys would move away from their state); terminal.deltas and terminal.risk
    get half as many (at least one per actor)."""
    partitions = power_of_two_at_least(2 * actors)
    return partitions, max(1, partitions // 2)


def _actor_memory(inputs: Inputs, tps: float, actors: int) -> dict[str, float]:
    """What one of K actors holds (bytes): its partitions' accounts, pending labels, scorers and shares, its
    stage partitions, the whole broadcast table and the process."""
    m = inputs.measured
    partitions, stages = _layout(actors)
    state = _partition_state(inputs, tps, partitions)
    per_actor = partitions / actors
    stage_entries = partitions * state["share_entries"] / stages
    parts = {
        "accounts": per_actor * state["accounts_memory"],
        "pending": per_actor * state["pending_memory"],
        "scorer": per_actor * state["scorer_memory"],
        "shares": per_actor * state["share_memory"],
        "stage": stages / actors * stage_entries * m.stage_memory_per_entry,
        "broadcast": table_model(inputs, tps)["memory_bytes"],
        "process": m.process_rss_bytes,
    }
    return {**parts, "total": sum(parts.values())}


def _cpu_actors(inputs: Inputs, tps: float) -> tuple[int | None, str | None]:
    """K for the CPU (scoring, the stage and checkpoints shared out, the broadcast on every actor), or None and
    why no K does."""
    a = inputs.assumptions
    scoring_cores = tps / a.per_actor_eps
    actors = max(1, math.ceil(scoring_cores / (a.utilization * a.cores_per_actor)))
    for _ in range(64):  # the stage, checkpoints and broadcast depend on the layout, which depends on K
        partitions, stages = _layout(actors)
        traffic = _stage_traffic(inputs, tps, partitions, stages)
        state = _partition_state(inputs, tps, partitions)
        interval = min(a.checkpoint_interval_s, a.checkpoint_interval_events / (tps / partitions))
        checkpoint_cores = partitions * state["encode_s"] / interval
        # every actor's core: its share of scoring, stage and checkpoints, plus the whole broadcast
        budget = a.utilization * a.cores_per_actor - traffic["broadcast_core_share"]
        if budget <= 0:
            return None, (
                f"broadcast CPU: every actor applies {traffic['risk_states_per_s']:,.0f} risk states/s "
                f"({traffic['broadcast_core_share']:.2f} cores) against {a.utilization * a.cores_per_actor:.2f}"
            )
        wanted = max(actors, math.ceil((scoring_cores + traffic["stage_cores"] + checkpoint_cores) / budget))
        if wanted == actors:
            return actors, None
        if wanted > MAX_ACTORS:  # each actor more adds more stage work than it carries (N x S delta records)
            return None, (
                f"stage fan-in: at {partitions:,} partitions the stage needs {traffic['stage_cores']:,.0f} cores "
                f"for {traffic['delta_records_per_s']:,.0f} delta records/s; more actors make it worse"
            )
        actors = wanted
    return actors, None


def plan(inputs: Inputs, tps: float) -> dict[str, Any]:
    """What ``tps`` transactions/s over ``assumptions.accounts`` accounts need (see docs/capacity.md).

    K is sized for the CPU first; when an actor then does not fit a node's memory, K doubles (up to 64 times
    as many) until one does, if it can: more actors share out the accounts, shares and stage partitions, but
    each still holds the whole broadcast table and two partitions' pending labels and scorers.
    """
    m, a = inputs.measured, inputs.assumptions
    limits: list[str] = []
    cpu_actors, why = _cpu_actors(inputs, tps)
    if why is not None:
        limits.append(why)
    actors = cpu_actors or max(1, math.ceil(tps / a.per_actor_eps / (a.utilization * a.cores_per_actor)))
    memory = _actor_memory(inputs, tps, actors)
    fixed = memory["broadcast"] + memory["process"] + memory["pending"] + memory["scorer"]  # K does not shrink it
    if cpu_actors is not None and fixed < a.memory_per_node:
        for _ in range(6):
            if memory["total"] <= a.memory_per_node:
                break
            actors, memory = 2 * actors, _actor_memory(inputs, tps, 2 * actors)
    slots = int(a.cores_per_node // a.cores_per_actor)
    per_node = min(slots, int(a.memory_per_node // memory["total"]))
    if per_node < 1:
        limits.append(
            f"memory: one actor needs {memory['total'] / GIB:,.1f} GiB at least, a node has "
            f"{a.memory_per_node / GIB:,.0f} GiB (broadcast table {memory['broadcast'] / GIB:,.1f} GiB)"
        )
    elif per_node < slots:
        limits.append(f"memory: {per_node} of {slots} actors fit a node")
    feasible = cpu_actors is not None and per_node >= 1
    partitions, stages = _layout(actors)
    traffic = _stage_traffic(inputs, tps, partitions, stages)
    state = _partition_state(inputs, tps, partitions)
    table = table_model(inputs, tps)
    share = table_model(inputs, tps, sources=partitions)
    interval = min(a.checkpoint_interval_s, a.checkpoint_interval_events / (tps / partitions))
    stage_entries = partitions * state["share_entries"] / stages
    # keys the actor's tables hold: the broadcast table, its partitions' shares, its stage partitions
    actor_keys = table["keys"] + partitions / actors * share["keys"] + table["keys"] / actors
    partition_checkpoint = (state["accounts_checkpoint"] + state["pending_checkpoint"] + state["scorer_checkpoint"]
                            + state["share_checkpoint"])  # fmt: skip
    checkpoint_round = partitions * partition_checkpoint + stages * stage_entries * m.stage_checkpoint_per_entry
    tx_retention = interval + a.recovery_headroom_s
    kafka = {
        "transactions": {"partitions": partitions, "mb_per_s": tps * m.transaction_bytes / MB,
                         "retention_h": tx_retention / 3600},
        "labels": {"partitions": partitions, "mb_per_s": tps * m.labels_per_transaction * m.label_bytes / MB,
                   "retention_h": tx_retention / 3600},
        "alerts": {"partitions": max(1, partitions // 2),
                   "mb_per_s": tps * m.alerts_per_transaction * m.alert_bytes / MB,
                   "retention_h": a.alerts_retention_s / 3600},
        "terminal_deltas": {"partitions": stages, "mb_per_s": traffic["delta_bytes_per_s"] / MB,
                            "retention_h": tx_retention / 3600},
        "terminal_risk": {"partitions": stages, "mb_per_s": traffic["risk_bytes_per_s"] / MB,
                          "retention_h": a.risk_retention_s / 3600},
    }  # fmt: skip
    for topic in kafka.values():
        topic["disk_tb"] = topic["mb_per_s"] * MB * topic["retention_h"] * 3600 * a.replication / 1e12
    ingress = sum(t["mb_per_s"] for t in kafka.values())
    risk_retained = traffic["risk_states_per_s"] * a.risk_retention_s
    gib = {name: round(value / GIB, 2) for name, value in memory.items()}
    return {
        "tps": tps,
        "accounts": a.accounts,
        "tx_per_account_per_day": round(tps / a.accounts * DAY_S, 2),
        "feasible": feasible,
        # for the CPU (None: no number of actors carries the broadcast or the stage), and for the memory too
        "cpu_actors": cpu_actors,
        "actors": actors if cpu_actors is not None else None,
        "partitions": partitions,
        "stage_partitions": stages,
        "nodes": math.ceil(actors / per_node) if feasible else None,
        "actors_per_node": per_node,
        "cpu": {
            "scoring_cores": round(tps / a.per_actor_eps, 2),
            "stage_cores": round(traffic["stage_cores"], 3),
            "checkpoint_cores": round(partitions * state["encode_s"] / interval, 3),
            "broadcast_core_share_per_actor": round(traffic["broadcast_core_share"], 3),
        },
        "memory": {
            "window_events_per_account": round(state["window_events_per_account"], 1),
            "bytes_per_account": round(state["accounts_memory"] / state["accounts"], 1),
            "accounts_per_actor": round(a.accounts / actors),
            "accounts_gib_total": round(partitions * state["accounts_memory"] / GIB, 2),
            "pending_entries_per_partition": round(state["pending_entries"]),
            "broadcast_keys": round(table["keys"]),
            **{f"{name}_gib_per_actor": value for name, value in gib.items() if name != "total"},
            "gib_per_actor": gib["total"],
            "total_gib": round(actors * memory["total"] / GIB, 1),
        },
        "checkpoint": {
            "kind": "full",
            "interval_s": round(interval, 1),
            "gb_per_round": round(checkpoint_round / 1e9, 2),
            "mb_per_partition": round(partition_checkpoint / MB, 1),
            "s3_mb_per_s": round(checkpoint_round / interval / MB, 1),
            "s3_puts_per_s": round(
                (partitions * PARTITION_CHECKPOINT_OBJECTS + stages * STAGE_CHECKPOINT_OBJECTS) / interval, 1
            ),
            "s3_stored_tb": round(a.checkpoint_keep * checkpoint_round / 1e12, 2),
            "restore_s_per_partition": round(state["restore_s"], 1),
        },
        "kafka": {
            "topics": {name: {k: round(v, 3) for k, v in t.items()} for name, t in kafka.items()},
            "ingress_mb_per_s": round(ingress, 2),
            "replicated_write_mb_per_s": round(ingress * a.replication, 2),
            "terminal_risk_egress_mb_per_s": round(actors * traffic["risk_bytes_per_s"] / MB, 2),
            "disk_tb": round(sum(t["disk_tb"] for t in kafka.values()), 2),
            # transactions, labels, alerts, terminal.deltas, terminal.risk and a one-partition dead-letter topic
            "partition_replicas": a.replication * (2 * partitions + max(1, partitions // 2) + 2 * stages + 1),
        },
        "stage": {k: round(v, 3) for k, v in traffic.items()},
        "actor_start": {
            "terminal_risk_records": round(risk_retained),
            "terminal_risk_replay_h": round(risk_retained * m.broadcast_s_per_state / 3600, 2),
        },
        # once per terminal bucket (an hour) each actor's loop scans its tables' keys to expire them
        "hourly_expiry_pause_s": round(actor_keys * m.expire_s_per_key, 2),
        "limits": limits,
    }


def fan_in(inputs: Inputs, tps: float, partitions: int) -> dict[str, float]:
    """The terminal stage at N partitions (K = N/2 actors, N/2 stage partitions) and ``tps``."""
    actors = max(1, partitions // 2)
    stages = max(1, partitions // 2)
    traffic = _stage_traffic(inputs, tps, partitions, stages)
    return {
        "tps": tps,
        "partitions": partitions,
        "actors": actors,
        "delta_records_per_s": round(traffic["delta_records_per_s"]),
        "delta_mb_per_s": round(traffic["delta_bytes_per_s"] / MB, 2),
        "records_per_s_per_stage_partition": round(traffic["delta_records_per_s"] / stages),
        "entries_per_s_per_stage_partition": round(traffic["delta_entries_per_s"] / stages),
        "stage_cores": round(traffic["stage_cores"], 3),
        "stage_core_share_per_actor": round(traffic["stage_cores"] / actors, 4),
        "risk_states_per_s": round(traffic["risk_states_per_s"]),
        "risk_mb_per_s_per_actor": round(traffic["risk_bytes_per_s"] / MB, 3),
        "broadcast_core_share_per_actor": round(traffic["broadcast_core_share"], 3),
        "terminal_risk_egress_mb_per_s": round(actors * traffic["risk_bytes_per_s"] / MB, 1),
    }


def controller_model(inputs: Inputs, actors: int, partitions_per_actor: int = 2) -> dict[str, float]:
    """The controller at K actors. A supervision tick calls ``ensure`` on the actors one after another; each call
    is a Ray call that the actor serves when its event loop is free: at once when live, after half a scoring
    step on average in a backlog (a step scores ``max_batch_records`` at ``per_actor_eps``). A status round
    calls the K actors in parallel, then does the measured work at the controller and the driver."""
    m, a = inputs.measured, inputs.assumptions
    step_s = a.max_batch_records / a.per_actor_eps
    live_round = actors * a.ray_call_s
    backlog_round = actors * (a.ray_call_s + step_s / 2)
    partitions = actors * partitions_per_actor
    status_work = m.status_s_base + actors * m.status_s_per_actor * partitions_per_actor / 2
    return {
        "actors": actors,
        "heartbeat_round_s_live": round(live_round, 3),
        "heartbeat_round_s_backlog": round(backlog_round, 3),
        "tick_period_s_backlog": round(a.supervise_interval_s + backlog_round, 3),
        "ensure_calls_per_s_live": round(actors / (a.supervise_interval_s + live_round), 1),
        "status_calls_per_s": round(actors / a.status_interval_s, 1),
        "status_round_s": round(a.ray_call_s + step_s + status_work, 4),
        "status_work_s": round(status_work, 4),
        "status_file_mb": round(partitions * m.status_bytes_per_partition / MB, 2),
    }


def without_devices(inputs: Inputs) -> Inputs:
    """The same, with ``features.entity_kinds: [terminal, merchant]`` (no device keys in the tables)."""
    a = inputs.assumptions
    return replace(
        inputs,
        assumptions=replace(
            a,
            kinds=tuple(k for k in a.kinds if k != "device"),
            day_kinds=tuple(k for k in a.day_kinds if k != "device"),
        ),
    )


def _accounts_where_table_fills(inputs: Inputs, memory: float) -> int | None:
    """The fewest accounts (paying as the generated ones do) whose broadcast table needs more than ``memory``."""
    rate = inputs.measured.history_tx_per_account_day / DAY_S

    def table(accounts: float) -> float:
        at = replace(inputs, assumptions=replace(inputs.assumptions, accounts=round(accounts)))
        return table_model(at, accounts * rate)["memory_bytes"]

    low, high = 1.0, 1e10
    if table(high) <= memory:
        return None
    for _ in range(100):
        mid = math.sqrt(low * high)
        low, high = (low, mid) if table(mid) > memory else (mid, high)
    return round(high)


def limits_summary(inputs: Inputs) -> dict[str, Any]:
    """Where it stops scaling, in numbers: the broadcast's CPU and memory, the controller's rounds."""
    m, a = inputs.measured, inputs.assumptions
    keys_per_tx = sum(m.key_share.get(kind, 0.0) for kind in a.kinds)  # upper bound: no two share a key
    share = a.memory_per_node / (a.cores_per_node // a.cores_per_actor)
    step_s = a.max_batch_records / a.per_actor_eps
    status = [controller_model(inputs, k)["status_work_s"] for k in (1, 2)]
    history_rate = m.history_tx_per_account_day / DAY_S
    lean = without_devices(inputs)
    return {
        "keys_per_transaction": round(keys_per_tx, 3),
        # every actor applies every risk state: the transactions/s at which that alone fills a core
        "broadcast_tps_at_full_core": round(1 / (keys_per_tx * m.broadcast_s_per_state)),
        "broadcast_tps_at_utilization": round(
            a.utilization * a.cores_per_actor / (keys_per_tx * m.broadcast_s_per_state)
        ),
        "memory_share_per_actor_gib": round(share / GIB, 2),
        "history_tx_per_account_day": round(m.history_tx_per_account_day, 2),
        # the broadcast table at the target's accounts, paying as the generated ones do, with and without devices
        "broadcast_gib_at_history_activity": round(
            table_model(inputs, a.accounts * history_rate)["memory_bytes"] / GIB, 2
        ),
        "broadcast_gib_at_history_activity_without_devices": round(
            table_model(lean, a.accounts * history_rate)["memory_bytes"] / GIB, 2
        ),
        "accounts_where_table_fills_actor_share": _accounts_where_table_fills(inputs, share),
        "accounts_where_table_fills_actor_share_without_devices": _accounts_where_table_fills(lean, share),
        # the heartbeat round takes longer than the tick's own 1 s sleep beyond these
        "controller_actors_live": math.floor(a.supervise_interval_s / a.ray_call_s),
        "controller_actors_backlog": math.floor(a.supervise_interval_s / (a.ray_call_s + step_s / 2)),
        # the status round's own work fills the status interval beyond this
        "controller_actors_status": math.floor((a.status_interval_s - status[0]) / max(status[1] - status[0], 1e-12)),
    }


def report(inputs: Inputs, targets: tuple[float, ...] = TARGETS) -> dict[str, Any]:
    """The plan of every target (as configured and without device keys) and at the generated history's activity,
    the fan-in table, the controller table and the limits."""
    history_tps = inputs.assumptions.accounts * inputs.measured.history_tx_per_account_day / DAY_S
    return {
        "plan": {str(int(t)): plan(inputs, t) for t in targets},
        # the same accounts paying as the generated ones do (a card's few payments a day)
        "plan_at_history_activity": plan(inputs, history_tps),
        "plan_without_devices": {str(int(t)): plan(without_devices(inputs), t) for t in targets},
        "fan_in": [fan_in(inputs, t, n) for t in targets for n in FAN_IN_PARTITIONS],
        "controller_limits": [controller_model(inputs, k) for k in CONTROLLER_ACTORS],
        "limits": limits_summary(inputs),
    }


# ================================================================================= measurement
@dataclass(slots=True)
class _Record:
    """A consumed Kafka record as the processor reads it."""

    offset: int
    key: bytes
    value: bytes
    timestamp: int


@dataclass
class _Timer:
    """CPU seconds of this process (``time.process_time``: other work on the machine does not count)."""

    seconds: float = 0.0

    def add(self, started: float) -> None:
        self.seconds += time.process_time() - started


def _rss_bytes() -> int:
    """This process's resident set size."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak (KiB on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def traced_bytes(build: Callable[[], Any]) -> tuple[int, Any]:
    """(bytes ``build()``'s result holds, by tracemalloc, once the temporaries are gone; the result)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = build()
        gc.collect(0)  # the young temporaries (a full pass under tracemalloc walks every module's objects slowly)
        return tracemalloc.get_traced_memory()[0] - before, result
    finally:
        tracemalloc.stop()


def _fit(accounts: list[float], events: list[float], values: list[float]) -> tuple[float, float]:
    """(per account, per event) of ``values`` = a x accounts + b x events, least squares over groups."""
    coefficients, *_ = np.linalg.lstsq(np.column_stack([accounts, events]), np.asarray(values), rcond=None)
    return float(coefficients[0]), float(coefficients[1])


def _timed(run: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """(the fastest of ``repeat`` runs in CPU seconds of this process, the last result)."""
    best, result = math.inf, None
    for _ in range(repeat):
        started = time.process_time()
        result = run()
        best = min(best, time.process_time() - started)
    return best, result


def _kind_of(key: str) -> str:
    """The entity kind of a table key (terminals are keyed by their id alone)."""
    return key.split(KEY_SEPARATOR, 1)[0] if KEY_SEPARATOR in key else "terminal"


@dataclass
class _Simulation:
    """The processors, stages and broadcast table after the run, and what went through the stage."""

    processors: list[PartitionProcessor]
    stages: list[TerminalStage]
    broadcast: BroadcastRisk
    counts: dict[str, int]
    timers: dict[str, _Timer]
    record_bytes: dict[str, int]


def simulate(settings: Settings, history: Any, partitions: int, stages: int, round_events: int,
             progress: Callable[[int, int], None] | None = None) -> _Simulation:  # fmt: skip
    """Run the history through real partition processors, stages and a broadcast table (see the docstring)."""
    transactions = history_transactions(history.transactions)
    labels = history.labels.sort_by("label_time")
    label_ms = labels.column("label_time").cast(pa.int64()).to_numpy()
    table = FeatureEngine.terminal_risk_for(settings.features)
    table.publish_updates()
    broadcast = BroadcastRisk(table, stages)
    processors = [PartitionProcessor(settings, p, broadcast) for p in range(partitions)]
    stage_list = [TerminalStage(partitions) for _ in range(stages)]
    retention_ms = max(settings.features.allowed_lateness_s * 1000, 86_400_000)  # as actors.terminal_io
    route: dict[str, int] = {}
    offsets = [0] * partitions
    label_offsets = [0] * partitions
    counts = dict.fromkeys(("transactions", "labels", "alerts", "delta_records", "delta_entries", "risk_records",
                            "risk_states", "rounds"), 0)  # fmt: skip
    counts["labels_in_history"] = labels.num_rows
    record_bytes = {"transactions": 0, "labels": 0, "alerts": 0, "delta": 0, "risk": 0}
    timers = {name: _Timer() for name in ("score", "labels", "expire", "absorb", "stage", "flush", "broadcast")}
    next_label = 0
    rows = transactions.num_rows
    total_rounds = math.ceil(rows / round_events)

    def partition_of(account_id: str) -> int:
        p = route.get(account_id)
        if p is None:
            p = route[account_id] = partition_for(account_id.encode(), partitions)
        return p

    for number, start in enumerate(range(0, rows, round_events)):
        txs = table_to_records(transactions.slice(start, round_events), Transaction)
        batches: list[list[_Record]] = [[] for _ in range(partitions)]
        for tx in txs:
            p = partition_of(tx.account_id)
            value = encode(tx)
            record_bytes["transactions"] += len(value)
            batches[p].append(_Record(offsets[p], tx.account_id.encode(), value, tx.event_time))
            offsets[p] += 1
        now_ms = txs[-1].event_time
        for p, records in enumerate(batches):
            started = time.process_time()
            out = processors[p].process_transactions(records, now_ms=now_ms)
            timers["score"].add(started)
            counts["alerts"] += len(out.alerts)
            record_bytes["alerts"] += sum(len(v) for _, v in out.alerts)
        counts["transactions"] += len(txs)
        # the labels released by now (the producer's rule: once the clock passed their label time)
        end = int(np.searchsorted(label_ms, now_ms, side="right"))
        if end > next_label:
            label_batches: list[list[_Record]] = [[] for _ in range(partitions)]
            for label in table_to_records(labels.slice(next_label, end - next_label), Label):
                p = partition_of(label.account_id)
                value = encode(label)
                record_bytes["labels"] += len(value)
                label_batches[p].append(_Record(label_offsets[p], label.account_id.encode(), value, label.label_time))
                label_offsets[p] += 1
            counts["labels"] += end - next_label
            next_label = end
            for p, records in enumerate(label_batches):
                started = time.process_time()
                processors[p].process_labels(records)
                timers["labels"].add(started)
        # every partition's deltas to every stage partition, as terminal.deltas carries them
        for processor in processors:
            # the share's expiry (which terminal_deltas runs first) apart: it scans the share whenever the
            # horizon moves a bucket, which a round of event time does every time and a live hour once
            started = time.process_time()
            engine = processor.engine
            processor.share.table.expire(engine.watermark_ms - max(engine.terminal_retention_ms, 0))
            timers["expire"].add(started)
            started = time.process_time()
            deltas = processor.terminal_deltas(processor.progress_ms(False, False), stages)
            raws = [encode_stage_message(batch) for batch in deltas]
            timers["absorb"].add(started)
            for destination, raw in enumerate(raws):
                counts["delta_records"] += 1
                record_bytes["delta"] += len(raw)
                started = time.process_time()
                batch = decode_delta_batch(raw)
                stage_list[destination].apply(batch)
                timers["stage"].add(started)
                counts["delta_entries"] += len(batch.deltas)
        # each stage publishes what changed; every actor's broadcast table applies it
        for number_stage, stage in enumerate(stage_list):
            started = time.process_time()
            complete = stage.complete_through_ms
            if complete < IDLE:
                stage.expire(*table.horizon(complete - retention_ms))
            timers["expire"].add(started)
            started = time.process_time()
            raw = encode_stage_message(stage.flush(number_stage))
            timers["flush"].add(started)
            started = time.process_time()
            update = decode_risk_update(raw)
            broadcast.apply(update)
            timers["broadcast"].add(started)
            counts["risk_records"] += 1
            counts["risk_states"] += len(update.states)
            record_bytes["risk"] += len(raw)
        started = time.process_time()
        table.expire(min(p.engine.watermark_ms for p in processors) - retention_ms)
        timers["expire"].add(started)
        counts["rounds"] += 1
        if progress is not None:
            progress(number + 1, total_rounds)
    return _Simulation(processors, stage_list, broadcast, counts, timers, record_bytes)


#: The history column of each key kind's id.
_KEY_COLUMNS = {"terminal": "terminal_id", "merchant": "merchant_id", "device": "device_id"}


def _world(settings: Settings, history: Any) -> dict[str, Any]:
    """For the terminal buckets and each configured entity kind: keys per account, the share of transactions
    carrying a key, and the histogram of distinct accounts per key ([accounts, keys] pairs)."""
    table = history.transactions
    accounts = pc.count_distinct(table.column("account_id")).as_py()
    keys, share, spread = {}, {}, {}
    for kind in dict.fromkeys(("terminal", *entity_kinds(settings.features))):
        column = _KEY_COLUMNS[kind]
        keys[kind] = pc.count_distinct(table.column(column)).as_py() / accounts
        share[kind] = 1 - table.column(column).null_count / table.num_rows
        used = table.select([column, "account_id"]).filter(pc.is_valid(table.column(column)))
        per_key = used.group_by(column).aggregate([("account_id", "count_distinct")]).column(1).to_numpy()
        values, counts = np.unique(per_key, return_counts=True)
        spread[kind] = [[int(v), int(c)] for v, c in zip(values, counts)]
    mean = {kind: round(sum(v * c for v, c in h) / sum(c for _, c in h), 2) for kind, h in spread.items()}
    return {"accounts": accounts, "keys_per_account": keys, "transactions_with_key": share,
            "mean_accounts_per_key": mean, "accounts_per_key": spread}  # fmt: skip


def _accounts_figures(settings: Settings, sim: _Simulation, groups: int) -> dict[str, Any]:
    """Account state per account and per window event: memory after a restore, checkpoint bytes (zstd IPC),
    the time to encode them (rows copied, batch built, zstd IPC) and to restore them."""
    batches = [take_accounts(p) for p in sim.processors]
    accounts = pa.Table.from_batches([b for b in batches if b.num_rows]).combine_chunks()
    events = pc.list_value_length(accounts.column("times")).fill_null(0).to_numpy()
    order = np.argsort(events, kind="stable")
    n, e, memory, checkpoint, raw, encode_s, restore_s = [], [], [], [], [], [], []
    for chunk in np.array_split(order, groups):
        group = accounts.take(pa.array(chunk)).to_batches()[0]
        restore, state = _timed(lambda group=group: accounts_from_batch(group, settings.features), repeat=2)
        del state
        size, state = traced_bytes(lambda group=group: accounts_from_batch(group, settings.features))
        encoded, blob = _timed(lambda state=state: ipc_bytes(rows_to_batch(account_rows(state)), "zstd"), repeat=2)
        n.append(float(len(chunk)))
        e.append(float(events[chunk].sum()))
        memory.append(float(size))
        checkpoint.append(float(len(blob)))
        raw.append(float(len(ipc_bytes(group, None))))
        encode_s.append(encoded)
        restore_s.append(restore)
        del state
    total_accounts, total_events = sum(n), sum(e)
    figures: dict[str, Any] = {
        "accounts": int(total_accounts),
        "window_events_per_account": round(total_events / total_accounts, 1),
        "memory_bytes_per_account": round(sum(memory) / total_accounts, 1),
        "checkpoint_bytes_per_account": round(sum(checkpoint) / total_accounts, 1),
        "checkpoint_raw_bytes_per_account": round(sum(raw) / total_accounts, 1),
        "encode_s_per_1m_accounts": round(sum(encode_s) / total_accounts * 1e6, 2),
        "restore_s_per_1m_accounts": round(sum(restore_s) / total_accounts * 1e6, 2),
    }
    for name, values in (("memory", memory), ("checkpoint", checkpoint), ("encode_s", encode_s),
                         ("restore_s", restore_s)):  # fmt: skip
        base, per_event = _fit(n, e, values)
        figures[f"{name}_base"] = base
        figures[f"{name}_per_event"] = per_event
    return figures


def take_accounts(processor: PartitionProcessor) -> pa.RecordBatch:
    """The partition's accounts record batch, as its checkpoint holds it."""
    return rows_to_batch(account_rows(processor.engine.accounts))


def _pending_figures(settings: Settings, sim: _Simulation) -> dict[str, Any]:
    """The pending-label buffer per entry: memory after a restore, checkpoint bytes, encode and restore time."""
    processor = max(sim.processors, key=lambda p: len(p.engine.pending))
    engine = processor.engine
    meta = freeze_engine(engine).meta
    encode_s, blob = _timed(lambda: FrozenEngine([], engine.pending.copy(), meta).snapshot().to_bytes(), repeat=2)
    empty = FrozenEngine([], type(engine.pending)(1, 1), meta).snapshot()
    snapshot = EngineSnapshot.from_bytes(blob)
    restore_s, _ = _timed(lambda: restore_engine(settings.features, snapshot), repeat=2)
    base, _ = traced_bytes(lambda: restore_engine(settings.features, empty))
    full, _ = traced_bytes(lambda: restore_engine(settings.features, snapshot))
    entries = len(engine.pending)
    empty_blob = len(empty.to_bytes())
    return {
        "entries": entries,
        "memory_bytes_per_entry": round((full - base) / entries, 1),
        "checkpoint_bytes_per_entry": round((len(blob) - empty_blob) / entries, 1),
        "encode_s_per_1m_entries": round(encode_s / entries * 1e6, 2),
        "restore_s_per_1m_entries": round(restore_s / entries * 1e6, 2),
    }


def _scorer_figures(settings: Settings, sim: _Simulation) -> dict[str, Any]:
    """The scorer's blob and its memory after a restore: a fresh scorer's, and per held vector."""
    processor = max(sim.processors, key=lambda p: p.counters.scored)
    registry = processor.engine.registry
    fresh = PartitionProcessor(settings, 0, BroadcastRisk(FeatureEngine.terminal_risk_for(settings.features), 1))
    empty_blob, blob = fresh.scorer.state_bytes(), processor.scorer.state_bytes()
    rows = sum(len(source.buffer) for source in processor.scorer.sources if hasattr(source, "buffer"))
    empty_memory, _ = traced_bytes(lambda: Scorer.from_state(settings.scoring, registry, empty_blob))
    memory, _ = traced_bytes(lambda: Scorer.from_state(settings.scoring, registry, blob))
    return {
        "rows": rows,
        "memory_fixed_bytes": empty_memory,
        "memory_bytes_per_row": round((memory - empty_memory) / max(rows, 1), 1),
        "checkpoint_fixed_bytes": len(empty_blob),
        "checkpoint_bytes_per_row": round((len(blob) - len(empty_blob)) / max(rows, 1), 1),
        "buffer_max": settings.scoring.online.buffer_max if settings.scoring.online.enabled else 0,
    }


def _table_entries(table: Any) -> dict[str, int]:
    """Keys (by kind), hourly bucket entries, day entries and frauds of a TerminalRisk."""
    counts = {"keys": 0, "bucket_entries": 0, "day_entries": 0, "frauds": 0}
    kinds: dict[str, int] = {}
    for key, entry in table.terminals.items():
        counts["keys"] += 1
        counts["bucket_entries"] += len(entry.buckets)
        counts["day_entries"] += len(entry.days)
        counts["frauds"] += len(entry.frauds)
        kinds[_kind_of(key)] = kinds.get(_kind_of(key), 0) + 1
    return {**counts, **{f"{kind}_keys": n for kind, n in sorted(kinds.items())}}


def _table_figures(
    settings: Settings, sim: _Simulation, terminal_ids: list[str], checkpoint: dict[str, Any]
) -> dict[str, Any]:
    """Memory of a TerminalRisk per key, hourly bucket and day (keys built with set_buckets), checkpoint bytes
    per share entry, and the stage's memory and checkpoint bytes per entry."""
    keys = terminal_ids[:4000]

    def build(days: int, buckets: int) -> Any:
        table = FeatureEngine.terminal_risk_for(settings.features)
        for key in keys:
            table.set_buckets(
                key, [(b, 3) for b in range(1000, 1000 + buckets)], None, [(d, 5) for d in range(20_000, 20_000 + days)]
            )
        return table

    one_day, _ = traced_bytes(lambda: build(1, 0))
    many_days, _ = traced_bytes(lambda: build(31, 0))
    with_buckets, _ = traced_bytes(lambda: build(1, 168))
    day_bytes = (many_days - one_day) / (len(keys) * 30)
    bucket_bytes = (with_buckets - one_day) / (len(keys) * 168)
    share_entries = 0
    for processor in sim.processors:
        entries = _table_entries(processor.share.table)
        share_entries += entries["bucket_entries"] + entries["day_entries"] + entries["frauds"]
    blobs = checkpoint["blob_bytes_per_partition"]
    share_bytes = len(sim.processors) * sum(
        blobs[name] for name in ("terminal_buckets", "terminal_frauds", "terminal_days")
    )
    stage = max(sim.stages, key=lambda s: len(s.terminals))
    stage_blob = stage.to_bytes()
    stage_entries = sum(len(v) for shares in stage.terminals.values()
                        for part in (shares.buckets, shares.days, shares.frauds) for v in part.values())  # fmt: skip
    stage_memory, _ = traced_bytes(lambda: TerminalStage.from_bytes(stage_blob, stage.sources))
    return {
        "key_bytes": round(one_day / len(keys) - day_bytes, 1),
        "day_entry_bytes": round(day_bytes, 1),
        "bucket_entry_bytes": round(bucket_bytes, 1),
        "share_checkpoint_bytes_per_entry": round(share_bytes / max(share_entries, 1), 2),
        "share_entries": share_entries,
        "stage_entries": stage_entries,
        "stage_memory_bytes_per_entry": round(stage_memory / max(stage_entries, 1), 1),
        "stage_checkpoint_bytes_per_entry": round(len(stage_blob) / max(stage_entries, 1), 1),
    }


def _checkpoint_figures(settings: Settings, sim: _Simulation) -> dict[str, Any]:
    """Per partition: the blobs a checkpoint writes, the snapshot and encode times, the restore time."""
    sizes: dict[str, int] = {}
    snapshot_s = blobs_s = restore_s = 0.0
    accounts = 0
    for processor in sim.processors:
        started = time.process_time()
        snapshot = processor.snapshot()
        snapshot_s += time.process_time() - started
        started = time.process_time()
        blobs = snapshot.blobs()
        blobs_s += time.process_time() - started
        for name, blob in blobs.items():
            sizes[name] = sizes.get(name, 0) + len(blob)
        broadcast = BroadcastRisk(FeatureEngine.terminal_risk_for(settings.features), len(sim.stages))
        started = time.process_time()
        PartitionProcessor.restore(settings, processor.partition, broadcast, blobs, snapshot.meta)
        restore_s += time.process_time() - started
        accounts += len(processor.engine.accounts)
    count = len(sim.processors)
    return {
        "kind": "full",
        "blob_bytes_per_partition": {name: round(size / count) for name, size in sizes.items()},
        "bytes_per_partition": round(sum(sizes.values()) / count),
        "bytes_per_account_all_blobs": round(sum(sizes.values()) / accounts, 1),
        "snapshot_s_per_partition": round(snapshot_s / count, 4),
        "blobs_s_per_partition": round(blobs_s / count, 4),
        "restore_s_per_partition": round(restore_s / count, 4),
        "accounts_per_partition": round(accounts / count),
    }


def _live_deltas(keys: list[str], bucket: int, day: int, with_days: set[str]) -> list[TerminalDelta]:
    """What a source sends for these keys in a live flush: one bucket (terminals) and one day changed."""
    return [
        TerminalDelta(key, [(bucket, 3)] if _kind_of(key) == "terminal" else [], None,
                      [(day, 7)] if _kind_of(key) in with_days else [])
        for key in keys
    ]  # fmt: skip


def _live_costs(settings: Settings, sim: _Simulation) -> dict[str, float]:
    """The stage's and the broadcast's costs on live-shaped messages (a flush of 0.5 s changes a key's current
    bucket and day; the simulated rounds cover an hour of event time each): decode + apply per delta entry;
    flush + encode per state, at 1 and 32 sources per key (it sums every source's share of a changed key);
    decode + ``BroadcastRisk.apply`` per state, on the simulated broadcast table."""
    table = sim.broadcast.table
    keys = sorted(table.terminals)
    now = max(p.engine.max_event_time_ms for p in sim.processors)
    bucket, day = now // table.bucket_ms, now // 86_400_000
    with_days = set(entity_kinds(settings.features))
    deltas = _live_deltas(keys, bucket, day, with_days)
    raws = [encode_stage_message(DeltaBatch(source=0, through_ms=now, deltas=deltas[i : i + 500]))
            for i in range(0, len(deltas), 500)]  # fmt: skip
    apply_s, _ = _timed(lambda: [TerminalStage(8).apply(decode_delta_batch(raw)) for raw in raws], repeat=3)
    flush: dict[int, float] = {}
    some = keys[:4000]
    for sources in (1, 32):
        stage = TerminalStage(sources)
        for source in range(sources):
            stage.apply(
                DeltaBatch(source=source, through_ms=now, deltas=_live_deltas(some, bucket - 1, day - 1, with_days))
            )
        best = math.inf
        for _ in range(3):
            stage.apply(DeltaBatch(source=0, through_ms=now, deltas=_live_deltas(some, bucket, day, with_days)))
            started = time.process_time()
            update = encode_stage_message(stage.flush(0))
            best = min(best, time.process_time() - started)
        flush[sources] = best / len(some)
    stage = TerminalStage(1)
    stage.apply(DeltaBatch(source=0, through_ms=now, deltas=deltas))
    update = encode_stage_message(stage.flush(0))
    broadcast_s, _ = _timed(lambda: sim.broadcast.apply(decode_risk_update(update)), repeat=3)
    per_source = (flush[32] - flush[1]) / 31
    # the hourly expiry of a table (actors.terminal_io: the broadcast table, behind the slowest watermark)
    margin = max(settings.features.allowed_lateness_s * 1000, 86_400_000)
    copy = terminal_from_batches(settings.features, *terminal_to_batches(table))
    copy.expire(now - margin)  # what the simulated table had not dropped yet
    started = time.process_time()
    copy.expire(now - margin + table.bucket_ms)
    expire_s = time.process_time() - started
    return {
        "live_stage_us_per_entry": round(apply_s / len(keys) * 1e6, 3),
        "live_flush_us_per_state": round((flush[1] - per_source) * 1e6, 3),
        "live_flush_us_per_state_per_source": round(per_source * 1e6, 4),
        "live_broadcast_us_per_state": round(broadcast_s / len(keys) * 1e6, 3),
        "live_expire_us_per_key": round(expire_s / max(len(copy.terminals), 1) * 1e6, 3),
        "live_delta_entry_bytes": round(sum(len(r) for r in raws) / len(keys), 1),
        "live_risk_state_bytes": round(len(update) / len(keys), 1),
        "broadcast_keys": len(keys),
    }


def _stage_figures(settings: Settings, sim: _Simulation, world: dict[str, Any]) -> dict[str, Any]:
    """What went through the simulated stage, per transaction, what each step cost there, and the live costs."""
    counts, timers, sizes = sim.counts, sim.timers, sim.record_bytes
    empty = encode_stage_message(DeltaBatch(source=0, through_ms=1_767_225_600_000, deltas=[]))
    stage = TerminalStage(len(sim.processors))
    reps = 20_000
    per_record, _ = _timed(lambda: [stage.apply(decode_delta_batch(empty)) for _ in range(reps)], repeat=3)
    per_record /= reps
    entries = max(counts["delta_entries"], 1)
    stage_s_per_entry = max(0.0, timers["stage"].seconds - counts["delta_records"] * per_record) / entries
    txs = counts["transactions"]
    return {
        "rounds": counts["rounds"],
        "delta_records": counts["delta_records"],
        "delta_entries": counts["delta_entries"],
        "delta_bytes": sizes["delta"],
        "risk_records": counts["risk_records"],
        "risk_states": counts["risk_states"],
        "risk_bytes": sizes["risk"],
        "keys_per_transaction": round(sum(world["transactions_with_key"].values()), 3),
        "delta_entries_per_transaction": round(counts["delta_entries"] / txs, 3),
        "risk_states_per_transaction": round(counts["risk_states"] / txs, 3),
        "delta_record_bytes_empty": len(empty),
        "risk_record_bytes_empty": len(
            encode_stage_message(RiskUpdate(partition=0, complete_through_ms=1_767_225_600_000, states=[]))
        ),
        "round_delta_entry_bytes": round((sizes["delta"] - counts["delta_records"] * len(empty)) / entries, 1),
        "round_risk_state_bytes": round(sizes["risk"] / max(counts["risk_states"], 1), 1),
        "absorb_us_per_transaction": round(timers["absorb"].seconds / txs * 1e6, 3),
        # expiry of the shares, the stages and the table, per round (an hour of event time here)
        "expire_ms_per_round": round(timers["expire"].seconds / counts["rounds"] * 1e3, 2),
        "stage_us_per_record": round(per_record * 1e6, 3),
        "round_stage_us_per_entry": round(stage_s_per_entry * 1e6, 3),
        "round_flush_us_per_state": round(timers["flush"].seconds / max(counts["risk_states"], 1) * 1e6, 3),
        "round_broadcast_us_per_state": round(timers["broadcast"].seconds / max(counts["risk_states"], 1) * 1e6, 3),
        **_live_costs(settings, sim),
    }  # fmt: skip


def _partition_status(p: int) -> PartitionStatus:
    counters = PartitionCounters(scored=12_345_678, alerts=61_728, dead_letters=3, labels_applied=1_234_567,
                                 labels_learned=123_456, terminal_stale=12)  # fmt: skip
    return PartitionStatus(
        next_offset=98_765_432 + p, highwater=98_765_500 + p, lag=68, last_known_lag=68, lag_s=0.02,
        undelivered=0, fetch_age_s=0.01, next_label_offset=1_234_567, label_lag=0, held_labels=12,
        held_transactions=0, watermark_ms=1_767_225_600_000, checkpoint_seq=1234, checkpoint_age_s=31.5,
        restored_from=1200, late_events=7, accounts=80_000, **asdict(counters),
    )  # fmt: skip


def _actor_status(index: int, partitions: list[int]) -> ActorStatus:
    phases = {name: PhaseFigures(p50=1.25, p99=12.5, max=40.0, samples=1000)
              for name in ("poll", "stage", "score", "terminal", "ack", "commit", "checkpoint")}  # fmt: skip
    return ActorStatus(
        actor=f"scoring-0-{index}", pid=10_000 + index, partitions={str(p): _partition_status(p) for p in partitions},
        events_per_s=5_000.0, batches=100_000, latency_ms=Percentiles(p50=20.1, p95=34.4, p99=40.1, samples=5000),
        fetch_delay_ms=Percentiles(p50=5.1, p95=9.4, p99=12.1, samples=5000), phase_ms=phases, running=True,
        kafka=KafkaStatus(state="ok", last_fetch_age_s=0.01, outages=0),
        delivery=DeliveryOk(replaced_too_large=0, retried=0), uptime_s=3600.0, first_poll_wall=1.0,
        last_commit_wall=2.0, stages={str(p): StageStatus(next_offset=5, complete_through_ms=1_767_225_600_000,
                                                          terminals=100_000) for p in partitions[:1]},
        broadcast_complete_through_ms=1_767_225_600_000, rules_version="r-1234", restarted=False,
        node="10.0.0.1", node_id="f" * 56,
    )  # fmt: skip


def _controller_figures(actor_counts: tuple[int, ...] = CONTROLLER_ACTORS, per_actor: int = 2) -> dict[str, Any]:
    """One status round's work at K actors (see the docstring) and a heartbeat's serialization."""
    rounds: dict[str, Any] = {}
    for k in actor_counts:
        replies = [pickle.dumps(_actor_status(i, list(range(i * per_actor, (i + 1) * per_actor)))) for i in range(k)]
        plan = [list(range(i * per_actor, (i + 1) * per_actor)) for i in range(k)]

        def status_round(replies: list[bytes] = replies, plan: list[list[int]] = plan) -> int:
            actors = [pickle.loads(r) for r in replies]
            status = job_status(actors, plan=plan, stage_plan=plan, events=[], now=time.time())
            at_driver = pickle.loads(pickle.dumps(status, protocol=5))
            return len(msgspec.json.encode(at_driver))

        seconds, size = _timed(status_round, repeat=3 if k <= 512 else 1)
        rounds[str(k)] = {"partitions": k * per_actor, "status_round_ms": round(seconds * 1e3, 3),
                          "status_file_bytes": size}  # fmt: skip
    ks = [float(k) for k in actor_counts]
    times = [rounds[str(k)]["status_round_ms"] / 1e3 for k in actor_counts]
    slope, intercept = np.polyfit(ks, times, 1)
    beat = ActorHeartbeat(
        pid=1234,
        restarted=False,
        running=True,
        lags={p: PartitionLag(records=68, seconds=0.02, next_offset=98_765_432) for p in range(2)},
    )
    heartbeat_s, _ = _timed(lambda: [pickle.loads(pickle.dumps(beat, protocol=5)) for _ in range(1000)], repeat=3)
    sizes = [rounds[str(k)]["status_file_bytes"] / (k * per_actor) for k in actor_counts]
    return {
        "rounds": rounds,
        "status_s_base": max(0.0, float(intercept)),
        "status_s_per_actor": float(slope),
        "status_bytes_per_partition": round(float(np.mean(sizes)), 1),
        "heartbeat_us": round(heartbeat_s / 1000 * 1e6, 2),
    }


def _cluster_assumptions(args: argparse.Namespace, settings: Settings) -> Assumptions:
    """The plan's assumptions: the options, the production stream settings of configs/cluster.yaml and the
    feature and scoring settings."""
    cluster = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
    stream, topics = cluster["stream"], cluster["kafka"]["topics"]
    f, online = settings.features, settings.scoring.online
    table = FeatureEngine.terminal_risk_for(f)
    margin_ms = max(f.allowed_lateness_s * 1000, 86_400_000)  # the readers' expiry (actors.terminal_io)
    now = 1_800_000_000_000
    oldest_bucket, oldest_day, _ = table.horizon(now - margin_ms)
    kept_days = now // 86_400_000 - oldest_day if table.day_windows else 0
    return Assumptions(
        accounts=args.accounts_target,
        per_actor_eps=args.per_actor_eps,
        cores_per_actor=args.cores_per_actor,
        cores_per_node=args.cores_per_node,
        memory_per_node=args.memory_per_node_gib * GIB,
        utilization=args.utilization,
        replication=args.replication,
        checkpoint_interval_s=float(args.checkpoint_interval_s or stream["checkpoint_interval_s"]),
        checkpoint_interval_events=int(stream["checkpoint_interval_events"]),
        checkpoint_keep=int(stream["checkpoint_keep"]),
        recovery_headroom_s=args.recovery_headroom_h * 3600,
        risk_retention_s=int(topics["terminal_risk"]["configs"]["retention.ms"]) / 1000,
        risk_retention_min_s=risk_retention_ms(f) / 1000,
        alerts_retention_s=int(topics["alerts"]["configs"]["retention.ms"]) / 1000,
        status_interval_s=float(stream["status_interval_s"]),
        max_batch_records=int(stream["max_batch_records"]),
        ray_call_s=args.ray_call_ms / 1000,
        max_events_per_account=f.max_events_per_account,
        longest_window_s=float(max(f.windows_s)),
        pending_labels_max=f.pending_labels_max,
        pending_ttl_s=f.pending_labels_ttl_days * DAY_S,
        buffer_max=online.buffer_max if online.enabled else 0,
        buffer_ttl_s=online.buffer_ttl_days * DAY_S,
        bucket_s=float(f.terminal_bucket_s),
        kept_buckets=int(now // table.bucket_ms - oldest_bucket),
        kept_days=int(kept_days),
        kinds=tuple(dict.fromkeys(("terminal", *entity_kinds(f)))),
        day_kinds=tuple(entity_kinds(f)),
    )


def measured_from(figures: dict[str, Any]) -> Measured:
    """The plan's per-unit inputs from the measured figures."""
    acc, pend, sc, tab, st = (figures[k] for k in ("accounts", "pending", "scorer", "terminal_table", "stage"))
    rec, world, ctl = figures["records"], figures["world"], figures["controller"]
    return Measured(
        account_memory_base=acc["memory_base"], account_memory_per_event=acc["memory_per_event"],
        account_checkpoint_base=acc["checkpoint_base"], account_checkpoint_per_event=acc["checkpoint_per_event"],
        account_encode_s_base=acc["encode_s_base"], account_encode_s_per_event=acc["encode_s_per_event"],
        account_restore_s_base=acc["restore_s_base"], account_restore_s_per_event=acc["restore_s_per_event"],
        pending_memory=pend["memory_bytes_per_entry"], pending_checkpoint=pend["checkpoint_bytes_per_entry"],
        pending_encode_s=pend["encode_s_per_1m_entries"] / 1e6, pending_restore_s=pend["restore_s_per_1m_entries"] / 1e6,
        scorer_memory_fixed=sc["memory_fixed_bytes"], scorer_memory_per_row=sc["memory_bytes_per_row"],
        scorer_checkpoint_fixed=sc["checkpoint_fixed_bytes"], scorer_checkpoint_per_row=sc["checkpoint_bytes_per_row"],
        table_key_bytes=tab["key_bytes"], table_bucket_bytes=tab["bucket_entry_bytes"],
        table_day_bytes=tab["day_entry_bytes"], share_checkpoint_per_entry=tab["share_checkpoint_bytes_per_entry"],
        stage_memory_per_entry=tab["stage_memory_bytes_per_entry"],
        stage_checkpoint_per_entry=tab["stage_checkpoint_bytes_per_entry"],
        keys_per_account=world["keys_per_account"], key_share=world["transactions_with_key"],
        accounts_per_key=world["accounts_per_key"],
        transaction_bytes=rec["transaction_bytes"], label_bytes=rec["label_bytes"],
        labels_per_transaction=rec["labels_per_transaction"], alert_bytes=rec["alert_bytes"],
        alerts_per_transaction=rec["alerts_per_transaction"],
        delta_record_bytes=st["delta_record_bytes_empty"], delta_entry_bytes=st["live_delta_entry_bytes"],
        risk_record_bytes=st["risk_record_bytes_empty"], risk_state_bytes=st["live_risk_state_bytes"],
        stage_s_per_record=st["stage_us_per_record"] / 1e6, stage_s_per_entry=st["live_stage_us_per_entry"] / 1e6,
        flush_s_per_state=st["live_flush_us_per_state"] / 1e6,
        flush_s_per_state_per_source=st["live_flush_us_per_state_per_source"] / 1e6,
        broadcast_s_per_state=st["live_broadcast_us_per_state"] / 1e6,
        expire_s_per_key=st["live_expire_us_per_key"] / 1e6,
        status_s_base=ctl["status_s_base"], status_s_per_actor=ctl["status_s_per_actor"],
        status_bytes_per_partition=ctl["status_bytes_per_partition"],
        process_rss_bytes=figures["process_rss_bytes"],
        history_tx_per_account_day=figures["workload"]["transactions"] / figures["workload"]["accounts"]
        / figures["workload"]["days"],
    )  # fmt: skip


def measure(settings: Settings, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Every measured figure of the docstring (one core, the real code, no Kafka, no Ray)."""
    rss = _rss_bytes()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"generating {args.accounts:,} accounts × {args.days} days", total=None)
        history = generated(settings, args.accounts, args.days, args.seed)
        world = _world(settings, history)
        terminal_ids = pc.unique(history.transactions.column("terminal_id").drop_null()).to_pylist()
        bar.update(task, description=f"{history.transactions.num_rows:,} transactions through {args.partitions} "
                                     f"partitions, {args.stage_partitions} stage partitions")  # fmt: skip
        configure_gc_for_streaming()
        started = time.perf_counter()
        sim = simulate(
            settings,
            history,
            args.partitions,
            args.stage_partitions,
            args.round_events,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        run_s = time.perf_counter() - started
        del history
        gc.collect()
        figures: dict[str, Any] = {}
        broadcast_bytes, _ = traced_bytes(
            lambda: terminal_from_batches(settings.features, *terminal_to_batches(sim.broadcast.table))
        )
        figures["broadcast_table"] = {**_table_entries(sim.broadcast.table), "memory_bytes": broadcast_bytes}
        shares = [_table_entries(p.share.table) for p in sim.processors]
        figures["shares"] = {name: round(sum(s.get(name, 0) for s in shares) / len(shares))
                             for name in ("keys", "bucket_entries", "day_entries")}  # fmt: skip
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("accounts", lambda: _accounts_figures(settings, sim, args.groups)),
            ("pending", lambda: _pending_figures(settings, sim)),
            ("scorer", lambda: _scorer_figures(settings, sim)),
            ("checkpoint", lambda: _checkpoint_figures(settings, sim)),
            ("terminal_table", lambda: _table_figures(settings, sim, terminal_ids, figures["checkpoint"])),
            ("stage", lambda: _stage_figures(settings, sim, world)),
            ("controller", lambda: _controller_figures(tuple(args.controller_actors))),
        ]
        task = bar.add_task("measuring", total=len(steps))
        for name, step in steps:
            bar.update(task, description=f"measuring: {name}")
            figures[name] = step()
            bar.advance(task)
    counts, sizes, timers = sim.counts, sim.record_bytes, sim.timers
    txs = counts["transactions"]
    figures["workload"] = {
        "accounts": args.accounts, "days": args.days, "seed": args.seed, "transactions": txs,
        "labels": counts["labels"], "partitions": args.partitions, "stage_partitions": args.stage_partitions,
        "round_events": args.round_events, "run_s": round(run_s, 1),
        "processor_events_per_s": round(txs / (timers["score"].seconds + timers["labels"].seconds)),
    }  # fmt: skip
    figures["records"] = {
        "transaction_bytes": round(sizes["transactions"] / txs, 1),
        "label_bytes": round(sizes["labels"] / max(counts["labels"], 1), 1),
        # every label the history has (most arrive days to weeks late: the run releases those due by its end)
        "labels_per_transaction": round(counts["labels_in_history"] / txs, 4),
        "labels_released_per_transaction": round(counts["labels"] / txs, 4),
        "alert_bytes": round(sizes["alerts"] / max(counts["alerts"], 1), 1),
        "alerts_per_transaction": round(counts["alerts"] / txs, 5),
    }
    figures["world"] = world
    figures["process_rss_bytes"] = rss
    return figures


def _machine() -> dict[str, Any]:
    return {
        "date": dt.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "compiled_kernel": features.COMPILED,
    }


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=20_000, help="accounts of the generated history")
    parser.add_argument("--days", type=int, default=30, help="days of the generated history")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=8, help="simulated partitions of transactions")
    parser.add_argument("--stage-partitions", type=int, default=4, help="simulated terminal.deltas partitions")
    parser.add_argument(
        "--round-events",
        type=int,
        default=10_000,
        help="transactions per simulated round (a stage flush covers one round)",
    )
    parser.add_argument("--groups", type=int, default=8, help="groups of accounts for the per-event fits")
    parser.add_argument("--accounts-target", type=int, default=10_000_000, help="accounts the plan is for")
    parser.add_argument(
        "--per-actor-eps",
        type=float,
        default=55_093.0,
        help="events/s one actor scores (bench/scaling.py's per-actor figure: K=1, alignment off)",
    )
    parser.add_argument("--cores-per-actor", type=float, default=1.0)
    parser.add_argument("--cores-per-node", type=int, default=16)
    parser.add_argument("--memory-per-node-gib", type=float, default=64.0)
    parser.add_argument("--utilization", type=float, default=0.7, help="busy share of an actor's core aimed for")
    parser.add_argument("--replication", type=int, default=3, help="Kafka replication factor")
    parser.add_argument(
        "--checkpoint-interval-s",
        type=float,
        default=None,
        help="stream.checkpoint_interval_s (default: configs/cluster.yaml's)",
    )
    parser.add_argument(
        "--recovery-headroom-h",
        type=float,
        default=24.0,
        help="transactions kept beyond the checkpoint interval, for recovery",
    )
    parser.add_argument("--ray-call-ms", type=float, default=1.0, help="one Ray actor call (assumed, not measured)")
    parser.add_argument(
        "--replan",
        metavar="FILE",
        default=None,
        help="measure nothing: plan again from the figures of a previous run's JSON line (other options apply)",
    )
    parser.add_argument(
        "--controller-actors",
        type=lambda text: [int(k) for k in text.split(",")],
        default=list(CONTROLLER_ACTORS),
        help="K of the measured status rounds, comma-separated",
    )
    return parser.parse_args(argv)


#: The measured sections of the JSON line (what ``--replan`` reads back).
MEASURED = ("workload", "records", "world", "accounts", "pending", "scorer", "checkpoint", "terminal_table",
            "broadcast_table", "shares", "stage", "controller", "process_rss_bytes")  # fmt: skip


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """The measured figures (or, with ``--replan``, a previous run's), the inputs they give the plan, and the
    plan: the JSON line."""
    settings = load_settings()
    if args.replan is not None:
        previous = json.loads(Path(args.replan).read_text())
        figures = {name: previous[name] for name in MEASURED}
        machine = {**previous["machine"], "replanned": dt.date.today().isoformat()}
    else:
        figures = measure(settings, args, console)
        machine = _machine()
    inputs = Inputs(measured_from(figures), _cluster_assumptions(args, settings))
    measured = {k: v for k, v in asdict(inputs.measured).items() if k != "accounts_per_key"}  # in "world"
    output = {"machine": machine, **figures,
              "inputs": {"assumptions": asdict(inputs.assumptions), "measured": measured}}  # fmt: skip
    output.update(report(inputs))
    # the table model on the simulated world (its accounts, its event-time rate, at most its days kept)
    workload = figures["workload"]
    simulated = replace(
        inputs.assumptions,
        accounts=workload["accounts"],
        kept_days=min(inputs.assumptions.kept_days, workload["days"]),
    )
    simulated_inputs = replace(inputs, assumptions=simulated)
    rate = workload["transactions"] / (workload["days"] * DAY_S)
    output["broadcast_table"].update({f"model_{k}": round(v) for k, v in table_model(simulated_inputs, rate).items()})
    share = table_model(simulated_inputs, rate, sources=workload["partitions"])
    output["shares"].update({f"model_{k}": round(v) for k, v in share.items()})
    return output


def main() -> None:
    args = arguments()
    pin_to_one_core()
    print(msgspec.json.encode(run(args, Console(stderr=True))).decode())


if __name__ == "__main__":
    main()
