"""`fraudstream train`: a history -> features (the actors' code) -> time split -> classifier -> MLflow.

The training table comes from :func:`features.offline.build_feature_table`,
the offline replay of the online feature code, over every row up to
``--until`` (rows before ``--from`` warm the feature state up and are not
trained on). The span ``[--from, --until]`` is cut in event time
(:class:`models.batch.TimeSplit`): fit, calibrate, a gap of
``history.label_delay_days``, test. A row is a known fraud for training when its
fraud label arrived before the test period starts (when the model would go
live); the test period is judged on the eventual truth (``is_fraud`` when the
history has it, else the labels). With ``training.refit`` (the default) the
version registered is the same recipe fitted again as it would go live at the
span's end: on every row up to the label delay before it, with the labels known
at its end; the logged test metrics measure the recipe. With
``training.learn_fusion`` (the default) the score fusion is learned too and
registered with the version (:func:`models.fusion.learn_fusion`): the scoring
code is replayed over the span with the split's classifier
(:func:`pipelines.replay.score_features`), and the sources' scores on its calibration
slice and test period (rows it was not fitted on), against the labels known
at the span's end, fit it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from configs import ConfigError, Settings
from connectors.history import History, HistoryError
from features import FeatureRegistry, build_feature_table
from models.batch import (
    DAY_MS,
    BatchModel,
    TimeSplit,
    average_precision,
    card_precision_at_k_per_day,
    fit_classifier,
    fraud_probability,
    mean_of,
    precision_at_k_per_day,
    roc_auc,
)
from models.fusion import LearnedFusion, alternate_days, learn_fusion
from pipelines.replay import FeatureTable, score_features

#: Stages reported to ``on_stage`` (for a progress display).
Stage = Callable[[str], None]


def feature_table(
    settings: Settings, history: History, on_progress: Callable[[int], None] | None = None
) -> FeatureTable:
    """Features of every transaction of ``history`` (the offline builder, partitioned like the topic)."""
    try:
        table = build_feature_table(
            history.transactions,
            history.labels,
            settings.features,
            partitions=settings.kafka.topics.transactions.partitions,
            on_progress=on_progress,
        )
    except msgspec.ValidationError as exc:
        raise HistoryError(
            f"history: a row is not a valid transaction or label ({exc}); fix or map that column (history.columns)"
        ) from None
    registry = FeatureRegistry.from_settings(settings.features)
    times = table.column("event_time").cast(pa.int64()).to_numpy()
    label = table.column("label").fill_null(0).to_numpy().astype(bool)
    if "is_fraud" in table.column_names:
        truth, source = table.column("is_fraud").to_numpy(zero_copy_only=False).astype(bool), "is_fraud"
    elif history.labels is not None:
        truth, source = label, "labels"
    else:
        truth, source = np.zeros(table.num_rows, dtype=bool), ""
    return FeatureTable(table, registry, times, truth, source)


@dataclass
class TrainedModel:
    """A fitted classifier, what it saw, and how it did on the test period."""

    model: Any
    feature_names: tuple[str, ...]
    feature_version: str
    split: TimeSplit
    params: dict[str, Any]
    metrics: dict[str, float | None]
    #: Test-period truth and probabilities (for the PR curve).
    test_truth: np.ndarray
    test_score: np.ndarray
    input_example: Any
    daily: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The score fusion registered with the version (``training.learn_fusion``), None when none was learned.
    fusion: LearnedFusion | None = None


def classifier_features(settings: Settings, registry: FeatureRegistry) -> tuple[str, ...]:
    names = settings.training.features or registry.names
    unknown = [n for n in names if n not in registry.names]
    if unknown:
        raise ConfigError(
            f"config error: training.features: unknown feature {unknown[0]!r}; allowed: {', '.join(registry.names)}"
        )
    return tuple(names)


def train_model(settings: Settings, features: FeatureTable, from_ms: int | None = None) -> TrainedModel:
    """Split ``features`` in time (rows from ``from_ms`` on), fit, calibrate and evaluate the classifier."""
    import pandas as pd

    training = settings.training
    in_span = features.times >= from_ms if from_ms is not None else np.ones(len(features.times), dtype=bool)
    if not in_span.any():
        raise HistoryError("--from: no transactions at or after --from; move it earlier")
    times = features.times
    gap_ms = int(settings.history.label_delay_days * DAY_MS)
    try:
        split = TimeSplit.of_span(int(times[in_span].min()), int(times[in_span].max()), training.train_fraction,
                                  training.calibration_fraction, gap_ms)  # fmt: skip
    except ValueError as exc:
        raise HistoryError(f"history: {exc}") from None
    if features.table.column("label").null_count == features.table.num_rows:
        raise HistoryError(
            "history: no labels to train on; pass --labels FILE, or map a label column with history.columns.label"
        )
    label = features.table.column("label").fill_null(0).to_numpy().astype(bool)
    label_time = features.table.column("label_time").cast(pa.int64()).fill_null(2**62).to_numpy()
    known = label & (label_time <= split.test_start_ms)
    names = classifier_features(settings, features.registry)
    values = features.matrix(names)
    fit_rows, calibration_rows = split.fit_rows(times) & in_span, split.calibration_rows(times) & in_span
    test_rows = split.test_rows(times) & in_span
    try:
        model = fit_classifier(values, known, fit_rows, calibration_rows, names, training)
    except ValueError as exc:
        raise HistoryError(f"training: {exc}") from None
    test_score = fraud_probability(model, values[test_rows], names)
    fusion = None
    if training.learn_fusion:
        fusion = _learn_fusion(settings, features, BatchModel(model, names, features.registry.version, "split"),
                               calibration_rows | test_rows, label & (label_time <= split.end_ms),
                               split.end_ms - gap_ms)  # fmt: skip
    refit: dict[str, float | None] = {}
    refit_split = None
    if training.refit:
        model, refit_split, refit = _refit(values, names, features.times, in_span, label, label_time, split, settings)
    test_truth = features.truth[test_rows]
    k = settings.evaluation.top_k
    test_times = times[test_rows]
    accounts = np.array(features.table.column("account_id").to_pylist(), dtype=object)[test_rows]
    daily_precision = precision_at_k_per_day(test_times, test_truth, test_score, k)
    daily_cards = card_precision_at_k_per_day(test_times, accounts, test_truth, test_score, k)
    metrics: dict[str, float | None] = {
        "test_ap": average_precision(test_truth, test_score),
        "test_roc_auc": roc_auc(test_truth, test_score),
        f"test_precision_at_{k}": mean_of(daily_precision),
        f"test_card_precision_at_{k}": mean_of(daily_cards),
        "test_fraud_rate": float(test_truth.mean()) if len(test_truth) else None,
        "test_rows": float(test_rows.sum()),
        "test_frauds": float(test_truth.sum()),
        "fit_rows": float(fit_rows.sum()),
        "fit_frauds_known": float(known[fit_rows].sum()),
        "calibration_rows": float(calibration_rows.sum()),
        "calibration_frauds_known": float(known[calibration_rows].sum()),
        **refit,
        **({f"fusion_validation_ap_{name}": ap for name, ap in fusion.validation_ap.items()} if fusion else {}),
        **({"fusion_stacking_win_share": fusion.stacking_win_share} if fusion else {}),
    }
    params = _params(settings, features, names, split, refit_split, fusion)
    example_rows = np.flatnonzero(test_rows)[:5] if test_rows.any() else np.flatnonzero(fit_rows)[:5]
    example = pd.DataFrame(values[example_rows], columns=list(names))
    return TrainedModel(
        model=model,
        feature_names=names,
        feature_version=features.registry.version,
        split=split,
        params=params,
        metrics=metrics,
        test_truth=test_truth,
        test_score=test_score,
        input_example=example,
        daily={"precision_at_k": daily_precision, "card_precision_at_k": daily_cards},
        fusion=fusion,
    )


def _params(settings: Settings, features: FeatureTable, names: tuple[str, ...], split: TimeSplit,
            refit_split: TimeSplit | None, fusion: LearnedFusion | None) -> dict[str, Any]:  # fmt: skip
    """The parameters a trained version is registered with: the training settings, the features, the splits."""
    return {
        **{f"training.{key}": value for key, value in msgspec.structs.asdict(settings.training).items()},
        "feature_version": features.registry.version,
        "n_features": len(names),
        "history.label_delay_days": settings.history.label_delay_days,
        "evaluation.top_k": settings.evaluation.top_k,
        "truth": features.truth_source,
        **{f"split.{key}": value for key, value in split.as_iso().items()},
        **({f"refit.{key}": value for key, value in refit_split.as_iso().items()} if refit_split is not None else {}),
        **({"fusion.chosen": fusion.chosen, "fusion.stacking": msgspec.json.encode(fusion.stacking).decode()}
           if fusion else {}),
    }


def _learn_fusion(
    settings: Settings,
    features: FeatureTable,
    split_model: BatchModel,
    unseen_rows: np.ndarray,
    known: np.ndarray,
    reported_by_ms: int,
) -> LearnedFusion | None:
    """The fusion of the sources' scores on the rows the split's classifier was not fitted on (its calibration
    slice and test period), against the labels known at the span's end (``known``), over the rows up to
    ``reported_by_ms`` (one label delay before the end: later frauds are mostly not reported yet and would be
    learned as genuine, and the ones that are tend to be the siblings of frauds already reported, which the
    online classifier has learned; all of them when those are too few to choose by), every other day
    validating; None when there is nothing to learn it from."""
    if not known[unseen_rows].any():
        return None
    _, _, per_source, _ = score_features(settings, features, split_model)
    for candidates in (unseen_rows & (features.times <= reported_by_ms), unseen_rows):
        rows = np.flatnonzero(candidates)
        times = features.times[rows]
        learned = learn_fusion({name: scores[rows] for name, scores in per_source.items()}, known[rows],
                               alternate_days(times), groups=times // DAY_MS)  # fmt: skip
        if learned is not None:
            return learned
    return None


def _refit(
    values: np.ndarray,
    names: tuple[str, ...],
    times: np.ndarray,
    in_span: np.ndarray,
    label: np.ndarray,
    label_time: np.ndarray,
    split: TimeSplit,
    settings: Settings,
) -> tuple[Any, TimeSplit, dict[str, float | None]]:
    """The recipe fitted again as it would go live at the span's end: on every row up to the label delay before
    it (labels known at the end), the latest ``calibration_fraction`` calibrating. Fraud teams evaluate on a held-out
    period, then deploy the same recipe trained on the freshest labelled data."""
    training = settings.training
    gap_ms = split.test_start_ms - split.train_end_ms
    latest = TimeSplit.of_span(split.start_ms, split.end_ms, 1.0, training.calibration_fraction, gap_ms)
    known = label & (label_time <= latest.end_ms)
    fit_rows, calibration_rows = latest.fit_rows(times) & in_span, latest.calibration_rows(times) & in_span
    try:
        model = fit_classifier(values, known, fit_rows, calibration_rows, names, training)
    except ValueError as exc:
        raise HistoryError(f"training (refit on the latest data, training.refit): {exc}") from None
    metrics: dict[str, float | None] = {
        "refit_fit_rows": float(fit_rows.sum()),
        "refit_fit_frauds_known": float(known[fit_rows].sum()),
        "refit_calibration_rows": float(calibration_rows.sum()),
        "refit_calibration_frauds_known": float(known[calibration_rows].sum()),
    }
    return model, latest, metrics


def pr_curve_png(truth: np.ndarray, score: np.ndarray, path: Path, title: str) -> Path:
    """The precision-recall curve of ``score`` against ``truth`` as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    if truth.any():
        precision, recall, _ = precision_recall_curve(truth, score)
        axes.step(recall, precision, where="post", label=f"classifier (AP {average_precision(truth, score):.3f})")
        axes.axhline(truth.mean(), color="grey", linestyle="--", label=f"fraud rate {truth.mean():.2%}")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_title(title)
    axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def register(settings: Settings, trained: TrainedModel, history_source: str, client: Any) -> Any:
    """Log the run and register the version (connectors.registry); returns the RegisteredVersion."""
    import json

    from connectors.registry import log_training

    with tempfile.TemporaryDirectory(prefix="fraudstream-train-") as folder:
        plot = pr_curve_png(trained.test_truth, trained.test_score, Path(folder) / "pr_curve.png",
                            f"test period from {trained.split.as_iso()['test_start'][:10]}")  # fmt: skip
        daily = Path(folder) / "test_daily_metrics.json"
        daily.write_text(json.dumps(trained.daily, indent=1, sort_keys=True))
        return log_training(
            client,
            settings.mlflow,
            experiment=settings.training.experiment,
            registered_model=settings.training.registered_model,
            model=trained.model,
            feature_names=trained.feature_names,
            feature_version=trained.feature_version,
            params={**trained.params, "history": history_source},
            metrics=trained.metrics,
            input_example=trained.input_example,
            artifacts=(plot, daily),
            fusion=trained.fusion.stacking if trained.fusion else None,
        )
