"""Detection quality on generated data, beside a textbook baseline measured in the same run.

Generates a history (the configured synthetic world, its fraud labels delayed
by ``--label-delay``: ``mixed``, ``fixed:N`` days or ``chargeback``), trains the
batch classifier on the first ``--train-days`` (``fraudstream train --until``:
its own time split, label-delay gap and test period inside, and the score
fusion it learns), registers it in a throw-away MLflow store, loads it back
from the registry, and backtests the test days (``fraudstream backtest
--from``: features and models warmed up on everything before) through the
scoring code: anomaly model, online classifier, rules and the classifier, fused.
The test days start ``--gap-days`` after the training span (its last labels
arrive meanwhile) and last ``--test-days``.

Beside it, on the same days (:mod:`bench.baseline`): the 15 classic features of
Le Borgne et al., ch. 3, built from the raw history with pandas/numpy, and
scikit-learn logistic regression and random forest trained on the same span
with the labels known at its end. Prints one JSON line; progress goes to stderr.

- ``batch_ap``: average precision of the classifier alone on the test days;
- ``fused_ap``: of the fused score; ``best_source_ap``: of the best single source;
- ``recall_by_scenario``: share of the fraudulent accounts of each scenario with
  at least one alert on one of their fraudulent transactions of that scenario;
- ``alert_rate``: share of test transactions alerted (review or block);
- ``batch_ap_by_scenario``: the classifier's AP on one scenario's frauds against all genuine rows;
- ``card_precision_at_100`` (= ``fused_card_precision_at_100``): per day, the share of
  compromised cards among the 100 cards with the highest fused score that day,
  averaged over the days (and per scenario: cards compromised by that scenario);
  ``batch_card_precision_at_100``: the same for the classifier alone;
- ``baseline``: ``{"lr": {"ap", "roc_auc", "card_precision_at_100"}, "rf": {...}}``;
- ``diagnostics`` (per scenario, from the feature tables, independent of the scorer):
  ``training_frauds_known`` / ``training_frauds``: the scenario's fraud rows in the
  classifier's fit + calibration slices, and how many of them had their label by the
  start of its test period (the only ones it learns as frauds);
  ``label_delay_h_median``: median hours from a test-day fraud to its label;
  ``terminal_fraud_seen``: share of its test-day fraud rows scored with
  ``terminal_fraud_count > 0`` (a label-based terminal signal was there at all).

Targets (issues 5 and 15): the fused AP at least the best source's - 0.01, always;
``mixed``: batch_ap >= 0.7, every scenario's recall >= 0.8, alert_rate <= 0.01, and
fused AP above both baselines'; ``fixed:N`` and ``chargeback``: fused AP >= 1.1 x the
better baseline's and card precision@100 at least the better baseline's.

    python bench/quality.py [--label-delay mixed|fixed:7|chargeback] [--accounts 5000] [--days 90]
                            [--train-days 60] [--gap-days 7] [--test-days 14] [--seed 7] [--no-baseline]
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

from typing import Any

import msgspec

from bench.benchlib import generated
from configs import Settings
from models.checked_settings import load_settings
from synthetic import write_history

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


def label_delay(text: str) -> tuple[str, float | None]:
    """``--label-delay``: (profile, days of a fixed delay).

    >>> label_delay("fixed:7"), label_delay("chargeback")
    (('fixed', 7.0), ('chargeback', None))
    """
    name, _, days = text.partition(":")
    if name == "fixed" and days:
        try:
            value = float(days)
        except ValueError:
            value = 0.0
        if value > 0:
            return "fixed", value
    elif name in ("mixed", "chargeback") and not days:
        return name, None
    raise argparse.ArgumentTypeError(f"{text!r}: give mixed, chargeback or fixed:DAYS (e.g. fixed:7)")


def targets(profile: str, report: dict) -> dict[str, bool]:  # type: ignore[type-arg]
    """Which of the issue's bars the run met."""
    fused, best = report["fused_ap"] or 0.0, report["best_source_ap"] or 0.0
    met = {"fused_vs_best_source": fused >= best - 0.01}
    baseline = report.get("baseline")
    better_ap = max((b["ap"] or 0.0) for b in baseline.values()) if baseline else None
    better_cards = max((b["card_precision_at_100"] or 0.0) for b in baseline.values()) if baseline else None
    if profile == "mixed":
        met["batch_ap"] = (report["batch_ap"] or 0.0) >= TARGETS["batch_ap"]
        met["recall_by_scenario"] = all(r >= TARGETS["recall"] for r in report["recall_by_scenario"].values())
        met["alert_rate"] = report["alert_rate"] <= TARGETS["alert_rate"]
        if better_ap is not None:
            met["beats_baselines"] = fused > better_ap
    elif better_ap is not None:
        met["fused_ap_vs_baseline"] = fused >= 1.1 * better_ap
        met["card_precision_vs_baseline"] = (report["fused_card_precision_at_100"] or 0.0) >= (better_cards or 0.0)
    return met


def arguments() -> argparse.Namespace:
    """The command line, checked: the train, gap and test days fit in the generated days."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-delay", type=label_delay, default=("mixed", None),
                        help="Label-delay profile of the generated world: mixed, chargeback or fixed:DAYS.")  # fmt: skip
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--train-days", type=int, default=60, help="Days the classifier is trained on.")
    parser.add_argument("--gap-days", type=int, default=7, help="Days between the training span and the test days.")
    parser.add_argument("--test-days", type=int, default=14, help="Days scored and measured.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", type=Path, default=None, help="Settings YAML (default configs/local.yaml).")
    parser.add_argument("--no-baseline", action="store_true", help="Skip the textbook baseline (minutes on 5k x 90).")
    args = parser.parse_args()
    if min(args.train_days, args.test_days) <= 0 or args.gap_days < 0:
        parser.error("--train-days and --test-days must be above 0, --gap-days at least 0")
    if args.train_days + args.gap_days + args.test_days > args.days:
        parser.error("--train-days + --gap-days + --test-days must fit in --days")
    return args


def run_settings(args: argparse.Namespace, root: Path) -> Settings:
    """The configured settings with a throw-away MLflow store and the run's label-delay profile.

    A fixed delay is known to whoever trains: the train/test gap and the baseline's windows follow it (and so
    do the delay-aware entity windows: features.label_delay_days).
    """
    profile, fixed_days = args.label_delay
    settings = load_settings(args.config)
    replace = msgspec.structs.replace
    return replace(
        settings,
        mlflow=replace(settings.mlflow, tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db"),
        evaluation=replace(settings.evaluation, top_k=100),
        generator=replace(settings.generator, label_delay=profile,
                          label_delay_days=fixed_days or settings.generator.label_delay_days),
        history=replace(settings.history, label_delay_days=fixed_days) if fixed_days else settings.history,
        features=replace(settings.features, label_delay_days=fixed_days) if fixed_days else settings.features,
    )  # fmt: skip


class Run(msgspec.Struct, kw_only=True):
    """What one run measured, for the report."""

    trained: Any
    train_features: Any
    features: Any
    result: Any
    baseline: dict[str, Any] | None
    from_ms: int


def train_and_backtest(args: argparse.Namespace, settings: Settings, root: Path) -> Run:
    """Generate, train and register on the training days, backtest the test days, and the baseline beside."""
    from bench.baseline import run_baselines
    from connectors.history import read_history
    from connectors.registry import connect, load_batch_model
    from pipelines.backtest import backtest
    from pipelines.train import feature_table, register, train_model

    profile, fixed_days = args.label_delay
    log(f"generating {args.accounts:,} accounts x {args.days} days (seed {args.seed}, labels {profile}"
        f"{f' {fixed_days:g} d' if fixed_days else ''})")
    write_history(generated(settings, args.accounts, args.days, args.seed), root / "history")
    start = settings.generator.start
    until = start + dt.timedelta(days=args.train_days)
    test_from = until + dt.timedelta(days=args.gap_days)
    test_until = test_from + dt.timedelta(days=args.test_days)
    until_ms, from_ms = int(until.timestamp() * 1000) - 1, int(test_from.timestamp() * 1000)
    test_until_ms = int(test_until.timestamp() * 1000)

    log(f"train on {start:%Y-%m-%d} .. {until:%Y-%m-%d} (exclusive)")
    train_features = feature_table(settings, read_history(root / "history", settings.history, until_ms=until_ms))
    trained = train_model(settings, train_features)
    client = connect(settings.mlflow)
    version = register(settings, trained, str(root / "history"), client)
    model = load_batch_model(client, version.uri)
    chosen = trained.fusion.chosen if trained.fusion else "none"
    log(f"registered {version.uri}: test AP {trained.metrics['test_ap']:.3f} (its own test period), fusion {chosen}")

    log(f"backtest {test_from:%Y-%m-%d} .. {test_until:%Y-%m-%d} (exclusive; warmed up on everything before)")
    full = read_history(root / "history", settings.history, until_ms=test_until_ms - 1)
    features = feature_table(settings, full)
    result = backtest(settings, full, features, model, from_ms=from_ms)
    baseline = None
    if not args.no_baseline:
        delay_days = settings.history.label_delay_days
        log(f"textbook baseline (book ch. 3 features, terminal windows ending {delay_days:g} d before): LR, RF")
        baseline = run_baselines(full, int(start.timestamp() * 1000), until_ms + 1, from_ms, test_until_ms,
                                 delay_days=delay_days, k=100)  # fmt: skip
    return Run(trained=trained, train_features=train_features, features=features, result=result,
               baseline=baseline, from_ms=from_ms)  # fmt: skip


def report_of(args: argparse.Namespace, run: Run, seconds: float) -> dict[str, Any]:
    """The JSON line: the run's figures, the baseline's and which targets were met."""
    profile, fixed_days = args.label_delay
    metrics = run.result.metrics
    scenarios = metrics.get("scenarios", {})
    sources_ap = {name: s["ap"] for name, s in metrics["sources"].items()}
    classifier = metrics["sources"]["classifier"]
    trained = run.trained
    report = {
        "label_delay": f"fixed:{fixed_days:g}" if fixed_days else profile,
        "accounts": args.accounts,
        "days": args.days,
        "train_days": args.train_days,
        "gap_days": args.gap_days,
        "test_days": args.test_days,
        "test_from": metrics["from"],
        "test_until": metrics["until"],
        "seed": args.seed,
        "backtest_rows": metrics["rows"],
        "backtest_frauds": metrics["frauds"],
        "batch_ap": classifier["ap"],
        "batch_roc_auc": classifier["roc_auc"],
        "batch_test_ap_in_training": round(trained.metrics["test_ap"] or 0.0, 6),
        "fused_ap": metrics["ap"],
        "fused_roc_auc": metrics["roc_auc"],
        "best_source_ap": max((ap for ap in sources_ap.values() if ap is not None), default=None),
        "fusion": metrics["model_versions"].get("fusion", "max"),
        "fusion_validation_ap": trained.fusion.validation_ap if trained.fusion else None,
        "recall_by_scenario": metrics.get("recall_by_scenario", {}),
        "alert_rate": metrics["alert_rate"],
        "alert_precision": metrics["alert_precision"],
        "card_precision_at_100": metrics["card_precision_at_k"],
        "fused_card_precision_at_100": metrics["card_precision_at_k"],
        "batch_card_precision_at_100": classifier["card_precision_at_k"],
        "card_precision_at_100_by_scenario": {name: s["card_precision_at_k"] for name, s in scenarios.items()},
        "fraud_accounts_by_scenario": {name: s["accounts"] for name, s in scenarios.items()},
        "batch_ap_by_scenario": {name: s["ap_by_source"].get("classifier") for name, s in scenarios.items()},
        "sources_ap": sources_ap,
        "baseline": run.baseline,
        "diagnostics": diagnostics(run.train_features, trained.split, run.features, run.from_ms),
        "seconds": round(seconds, 1),
    }
    report["targets_met"] = targets(profile, report)
    return report


def main() -> None:
    args = arguments()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fraudstream-quality-") as folder:
        root = Path(folder)
        run = train_and_backtest(args, run_settings(args, root), root)
    print(json.dumps(report_of(args, run, time.perf_counter() - started)))


if __name__ == "__main__":
    main()
