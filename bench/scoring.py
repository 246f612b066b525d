"""Scorer throughput against the reference workload's per-event River model.

On a generated stream (default 5k accounts × 30 days) in event-time order, one core:
- scorer_per_s: the partition pipeline's scorer (models.pipeline.PartitionPipeline,
  what the actors and the backtest run) on micro-batches (default 1000 rows) of the
  real feature vectors the offline builder computes for the stream (features
  are computed before timing), bundled defaults (anomaly model, online classifier
  and rules), from an empty scorer: score, fuse, explain the alerted rows, learn;
  after each batch, the labels whose label_time the stream has reached are learned
  (timed too: the online classifier learns them);
- reference_model_per_s: ../shared/bench/reference_workload.py's reference_model()
  (MinMaxScaler | HalfSpaceTrees(25 trees, height 8, window 250)), score_one then
  learn_one per event on the dicts its update_features returns for the same
  events (the dicts are built before timing), in the same run;
- alert_rate: share of events with a decision (review or block).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "bench"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import reference_workload  # noqa: E402
from benchlib import generated, ordered_transactions, pin_to_one_core  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

from configs import Settings  # noqa: E402
from features import FeatureBatch, FeatureRegistry, release_order  # noqa: E402
from features.offline import build_feature_table  # noqa: E402
from models.checked_settings import load_settings  # noqa: E402
from models.online import EVENT_TIME, TRANSACTION_ID, OnlineClassifierSource  # noqa: E402
from models.pipeline import PartitionPipeline, new_scorer  # noqa: E402


class Stream(NamedTuple):
    """The generated stream, its feature rows in micro-batches and its labels, ready before timing."""

    batches: list[FeatureBatch]
    transactions: list[Any]
    ids: np.ndarray
    is_fraud: np.ndarray
    label_ms: np.ndarray
    known: np.ndarray  # rows with a label, in the order they are released


def prepare(settings: Settings, registry: FeatureRegistry, args: argparse.Namespace, console: Console) -> Stream:
    """Generate the history and compute its features (offline builder), in micro-batches of ``args.batch``."""
    with console.status(f"generating {args.accounts:,} accounts × {args.days} days and their features"):
        history = generated(settings, args.accounts, args.days, args.seed)
        table = build_feature_table(history.transactions, history.labels, settings.features, partitions=1)
        values = np.column_stack([table.column(name).to_numpy() for name in registry.names]).astype(np.float64)
        transactions = ordered_transactions(history)
    n = len(values)
    assert len(transactions) == n
    ids = np.array(table.column("transaction_id").to_pylist(), dtype=object)
    times = table.column("event_time").cast(pa.int64()).to_numpy()
    is_fraud = table.column("label").fill_null(0).to_numpy().astype(bool)
    label_ms = table.column("label_time").cast(pa.int64()).fill_null(0).to_numpy()
    known = np.flatnonzero(table.column("label").is_valid().to_numpy(zero_copy_only=False))
    known = known[release_order(label_ms[known], ids[known].tolist())]
    batches = [
        FeatureBatch(values[i : i + args.batch], np.zeros(len(values[i : i + args.batch]), dtype=bool),
                     registry.names, registry.version,
                     {TRANSACTION_ID: ids[i : i + args.batch], EVENT_TIME: times[i : i + args.batch]})
        for i in range(0, n, args.batch)
    ]  # fmt: skip
    return Stream(batches, transactions, ids, is_fraud, label_ms, known)


def time_scorer(pipeline: PartitionPipeline[int], stream: Stream, console: Console) -> tuple[float, int, int]:
    """Seconds spent scoring and learning the due labels (timed), alerts and labels learned."""
    n = sum(len(batch.values) for batch in stream.batches)
    pipeline.labels.extend(stream.label_ms[stream.known].tolist(), stream.known.tolist())  # released by the clock
    alerts = labels_learned = 0
    scorer_s = 0.0
    gc.collect()
    gc.freeze()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"scorer on {n:,} events", total=n)
        for batch in stream.batches:
            started = time.perf_counter()
            scored = pipeline.score(batch)
            due = pipeline.due_labels()
            labels_learned += pipeline.learn_labels(stream.ids[due].tolist(), stream.is_fraud[due].tolist())
            scorer_s += time.perf_counter() - started
            alerts += sum(decision is not None for decision in scored.decision)
            progress.advance(task, len(batch.values))
    gc.unfreeze()
    return scorer_s, alerts, labels_learned


def time_reference(transactions: list[Any], batch: int, console: Console) -> float:
    """Seconds the reference model spends scoring then learning each event (its features built untimed)."""
    with console.status("reference features for the same events (not timed)"):
        states: dict[str, dict[str, Any]] = {}
        rows = []
        for tx in transactions:
            event = {"account_id": tx.account_id, "event_time": tx.event_time / 1000.0, "amount": tx.amount,
                     "lat": tx.lat, "lon": tx.lon}
            rows.append(reference_workload.update_features(states.setdefault(tx.account_id, {}), event))
        del states
    model = reference_workload.reference_model()
    n = len(rows)
    reference_s = 0.0
    gc.collect()
    gc.freeze()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"reference model on {n:,} events", total=n)
        for start in range(0, n, batch):
            chunk = rows[start : start + batch]
            started = time.perf_counter()
            for x in chunk:
                model.score_one(x)
                model.learn_one(x)
            reference_s += time.perf_counter() - started
            progress.advance(task, len(chunk))
    return reference_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()
    pin_to_one_core()
    console = Console(stderr=True)

    settings = load_settings()
    registry = FeatureRegistry.from_settings(settings.features)
    stream = prepare(settings, registry, args, console)
    n = len(stream.transactions)
    pipeline: PartitionPipeline[int] = PartitionPipeline(new_scorer(settings.scoring, registry))
    scorer_s, alerts, labels_learned = time_scorer(pipeline, stream, console)
    reference_s = time_reference(stream.transactions, args.batch, console)
    scorer = pipeline.scorer
    print(json.dumps({
        "scorer_per_s": round(n / scorer_s),
        "reference_model_per_s": round(n / reference_s),
        "ratio_to_reference": round(reference_s / scorer_s, 2),
        "scorer_us_per_event": round(scorer_s / n * 1e6, 2),
        "alert_rate": round(alerts / n, 5),
        "events": n,
        "batch": args.batch,
        "features": len(registry),
        "labels_learned": labels_learned,
        "online": next((s.counters() for s in scorer.sources if isinstance(s, OnlineClassifierSource)), None),
        "scorer_state_bytes": len(scorer.state_bytes()),
        "model_versions": scorer.model_versions,
    }))


if __name__ == "__main__":
    main()
