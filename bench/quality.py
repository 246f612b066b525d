"""Detection quality on generated data: train on the first period, backtest on the held-out later one.

Generates a history (the configured synthetic world), trains the batch
classifier on the days up to ``--train-days`` (``fraudstream train --until``:
its own time split, label-delay gap and test period inside), registers it in a
throw-away MLflow store, loads it back from the registry, and backtests the
remaining days (``fraudstream backtest --from``: features and models warmed up
on everything before) through the scoring code: anomaly model, rules and the
classifier, fused. Prints one JSON line; progress goes to stderr.

- ``batch_ap``: average precision of the classifier alone on the backtest period;
- ``recall_by_scenario``: share of the fraudulent accounts of each scenario with
  at least one alert on one of their fraudulent transactions of that scenario;
- ``alert_rate``: share of backtest transactions alerted (review or block);
- ``batch_ap_by_scenario``: the classifier's AP on one scenario's frauds against all genuine rows;
- ``card_precision_at_100``: per day, the share of compromised cards among the
  100 cards with the highest score that day, averaged over the days (and per
  scenario: cards compromised by that scenario).
- ``diagnostics`` (per scenario, from the feature tables, independent of the scorer):
  ``training_frauds_known`` / ``training_frauds``: the scenario's fraud rows in the
  classifier's fit + calibration slices, and how many of them had their label by the
  start of its test period (the only ones it learns as frauds);
  ``label_delay_h_median``: median hours from a backtest fraud to its label;
  ``terminal_fraud_seen``: share of its backtest fraud rows scored with
  ``terminal_fraud_count > 0`` (a label-based terminal signal was there at all).

Targets (issue 5): batch_ap >= 0.7, every scenario's recall >= 0.8, alert_rate <= 0.01.

    python bench/quality.py [--accounts 5000] [--days 60] [--train-days 40] [--seed 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from bench.benchlib import generated  # noqa: E402
from configs import load_settings  # noqa: E402
from pipelines.synthetic import write_history  # noqa: E402

TARGETS = {"batch_ap": 0.7, "recall": 0.8, "alert_rate": 0.01}


def log(message: str) -> None:
    print(f"[quality] {message}", file=sys.stderr, flush=True)


def diagnostics(train_features, split, features, from_ms: int) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Per scenario: what the classifier could learn, how late labels came, whether terminals showed fraud."""
    import numpy as np
    import pyarrow as pa

    def column(table: pa.Table, name: str) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False)

    def label_times(table: pa.Table) -> np.ndarray:
        return table.column("label_time").cast(pa.int64()).fill_null(2**62).to_numpy()

    out: dict[str, dict[str, float]] = {}
    if train_features.scenario is None or features.scenario is None:
        return out
    fit = train_features.times < split.train_end_ms
    known = (column(train_features.table, "label") == 1) & (label_times(train_features.table) <= split.test_start_ms)
    later = features.times >= from_ms
    seen = column(features.table, "terminal_fraud_count") > 0
    delay_h = (label_times(features.table) - features.times) / 3_600_000
    for name in sorted({s for s in features.scenario if s}):
        train_rows = fit & (train_features.scenario == name)
        rows = later & (features.scenario == name)
        labelled = rows & (delay_h < 2**40)
        out[name] = {
            "training_frauds": int(train_rows.sum()),
            "training_frauds_known": int((train_rows & known).sum()),
            "label_delay_h_median": round(float(np.median(delay_h[labelled])), 1) if labelled.any() else None,
            "terminal_fraud_seen": round(float(seen[rows].mean()), 4) if rows.any() else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--train-days", type=int, default=40, help="Days the classifier is trained on.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", type=Path, default=None, help="Settings YAML (default configs/local.yaml).")
    args = parser.parse_args()
    if not 0 < args.train_days < args.days:
        parser.error("--train-days must lie between 0 and --days")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from pipelines.backtest import backtest
    from pipelines.history import read_history
    from pipelines.registry import connect, load_batch_model
    from pipelines.train import feature_table, register, train_model

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fraudstream-quality-") as folder:
        root = Path(folder)
        settings = load_settings(args.config)
        mlflow_settings = msgspec.structs.replace(settings.mlflow, tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db")
        evaluation = msgspec.structs.replace(settings.evaluation, top_k=100)
        settings = msgspec.structs.replace(settings, mlflow=mlflow_settings, evaluation=evaluation)
        log(f"generating {args.accounts:,} accounts x {args.days} days (seed {args.seed})")
        history = generated(settings, args.accounts, args.days, args.seed)
        write_history(history, root / "history")
        start = settings.generator.start
        until = start + dt.timedelta(days=args.train_days)
        until_ms, from_ms = int(until.timestamp() * 1000) - 1, int(until.timestamp() * 1000)

        log(f"train on {start:%Y-%m-%d} .. {until:%Y-%m-%d} (exclusive)")
        train_history = read_history(root / "history", settings.history, until_ms=until_ms)
        train_features = feature_table(settings, train_history)
        trained = train_model(settings, train_features)
        client = connect(settings.mlflow)
        version = register(settings, trained, str(root / "history"), client)
        model = load_batch_model(client, version.uri)
        log(f"registered {version.uri}: test AP {trained.metrics['test_ap']:.3f} (its own test period)")

        log(f"backtest from {until:%Y-%m-%d} (warmed up on everything before)")
        full = read_history(root / "history", settings.history)
        features = feature_table(settings, full)
        result = backtest(settings, full, features, model, from_ms=from_ms)
    metrics = result.metrics
    scenarios = metrics.get("scenarios", {})
    recall = metrics.get("recall_by_scenario", {})
    report = {
        "accounts": args.accounts,
        "days": args.days,
        "train_days": args.train_days,
        "seed": args.seed,
        "backtest_rows": metrics["rows"],
        "backtest_frauds": metrics["frauds"],
        "batch_ap": metrics["sources"]["classifier"]["ap"],
        "batch_roc_auc": metrics["sources"]["classifier"]["roc_auc"],
        "batch_test_ap_in_training": round(trained.metrics["test_ap"] or 0.0, 6),
        "fused_ap": metrics["ap"],
        "recall_by_scenario": recall,
        "alert_rate": metrics["alert_rate"],
        "alert_precision": metrics["alert_precision"],
        "card_precision_at_100": metrics["card_precision_at_k"],
        "card_precision_at_100_by_scenario": {name: s["card_precision_at_k"] for name, s in scenarios.items()},
        "fraud_accounts_by_scenario": {name: s["accounts"] for name, s in scenarios.items()},
        "batch_ap_by_scenario": {name: s["ap_by_source"].get("classifier") for name, s in scenarios.items()},
        "sources_ap": {name: s["ap"] for name, s in metrics["sources"].items()},
        "diagnostics": diagnostics(train_features, trained.split, features, from_ms),
        "targets_met": {
            "batch_ap": (metrics["sources"]["classifier"]["ap"] or 0.0) >= TARGETS["batch_ap"],
            "recall_by_scenario": all(r >= TARGETS["recall"] for r in recall.values()),
            "alert_rate": metrics["alert_rate"] <= TARGETS["alert_rate"],
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
