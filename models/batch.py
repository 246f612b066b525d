"""The batch classifier: event-time split, training, ranking metrics, and the trained model as a score source.

Pure code: no MLflow, Kafka, Ray or clock (the MLflow adapter is
``connectors/registry.py``). Fraud teams split by time, never at random: a
model is fitted on one period and judged on a later one, with a gap between
them as long as the label delay (the labels of the last training days must
have arrived before the model goes live). Frauds are rare, so the classifier
(scikit-learn ``HistGradientBoostingClassifier``) weighs them up
(``class_weight="balanced"``) and its scores are then calibrated into
probabilities on a slice that comes after the fitted rows in time.

Metrics follow the fraud-detection practice of an alert budget
(Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud
Detection*): per day, investigators check the ``k`` most suspicious
transactions (precision@k) or cards (card precision@k: cards ranked by their
highest score of the day; a card counts when it had a fraud that day), and the
daily precisions are averaged. Both divide by ``k``, the budget, even on a day
with fewer than ``k`` candidates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from configs import ScoringSettings, StackingSettings, TrainingSettings
from features import FeatureBatch, FeatureRegistry
from models.calibration import ProbabilityScale
from models.sources import SourceScores, SourceState

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

DAY_MS = 86_400_000

#: scikit-learn classes a trained classifier holds that skops must be told to trust when it is saved and loaded.
TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",  # training.calibration: sigmoid
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


# ------------------------------------------------------------------------------------------------ time split
@dataclass(frozen=True)
class TimeSplit:
    """Train, gap and test periods of a span of event time (epoch ms; each period starts inclusive).

    ``[start, calibration_start)`` is fitted, ``[calibration_start, train_end)``
    calibrates, ``[train_end, test_start)`` is the gap, ``[test_start, end]`` is the test period.

    >>> split = TimeSplit.of_span(0, 100 * DAY_MS, train_fraction=0.7, calibration_fraction=0.25, gap_ms=16 * DAY_MS)
    >>> [round(t / DAY_MS, 2) for t in (split.calibration_start_ms, split.train_end_ms, split.test_start_ms)]
    [44.1, 58.8, 74.8]
    >>> split.test_rows(np.array([0, 60 * DAY_MS, 80 * DAY_MS])).tolist()
    [False, False, True]
    """

    start_ms: int
    calibration_start_ms: int
    train_end_ms: int
    test_start_ms: int
    end_ms: int

    @classmethod
    def of_span(
        cls, start_ms: int, end_ms: int, train_fraction: float, calibration_fraction: float, gap_ms: int
    ) -> TimeSplit:
        """Cut ``[start_ms, end_ms]``; ValueError when the gap leaves no room for a train and a test period."""
        usable = end_ms - start_ms - gap_ms
        if usable <= 0:
            raise ValueError(
                f"the history spans {(end_ms - start_ms) / DAY_MS:.1f} days, not more than the "
                f"{gap_ms / DAY_MS:g}-day gap between train and test (history.label_delay_days); "
                "use a longer history or a shorter delay"
            )
        train_end = start_ms + int(usable * train_fraction)
        calibration_start = train_end - int((train_end - start_ms) * calibration_fraction)
        return cls(start_ms, calibration_start, train_end, train_end + gap_ms, end_ms)

    def fit_rows(self, times_ms: IntArray) -> BoolArray:
        return (times_ms >= self.start_ms) & (times_ms < self.calibration_start_ms)

    def calibration_rows(self, times_ms: IntArray) -> BoolArray:
        return (times_ms >= self.calibration_start_ms) & (times_ms < self.train_end_ms)

    def test_rows(self, times_ms: IntArray) -> BoolArray:
        return (times_ms >= self.test_start_ms) & (times_ms <= self.end_ms)

    def as_iso(self) -> dict[str, str]:
        """The boundaries as ISO 8601 UTC strings (for logs and run parameters)."""
        return {
            name: iso_utc(getattr(self, f"{name}_ms"))
            for name in ("start", "calibration_start", "train_end", "test_start", "end")
        }


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC (``Z``), to the second.

    >>> iso_utc(1767225600000)
    '2026-01-01T00:00:00Z'
    """
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------- training
#: Known frauds the calibration slice needs at least.
MIN_CALIBRATION_FRAUDS = 2

def fit_classifier(
    values: FloatArray,
    target: BoolArray,
    fit_rows: BoolArray,
    calibration_rows: BoolArray,
    feature_names: Sequence[str],
    settings: TrainingSettings,
) -> Any:
    """A class-weighted HistGradientBoostingClassifier fitted on ``fit_rows``, calibrated on ``calibration_rows``.

    ``values`` holds the columns ``feature_names`` (in that order). Returns a
    scikit-learn ``CalibratedClassifierCV`` that takes a DataFrame with those
    columns; ``predict_proba(X)[:, 1]`` is the fraud probability. ValueError
    (naming the fix) when a slice has no fraud to learn or calibrate on.
    """
    import pandas as pd
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator

    frauds_fit, frauds_calibration = int(target[fit_rows].sum()), int(target[calibration_rows].sum())
    if frauds_fit == 0 or frauds_fit == int(fit_rows.sum()):
        raise ValueError(
            f"the fitting period has {frauds_fit} known frauds among {int(fit_rows.sum())} transactions; "
            "both classes are needed (use a longer history, more labels, or a larger training.train_fraction)"
        )
    if frauds_calibration < MIN_CALIBRATION_FRAUDS:
        raise ValueError(
            f"the calibration slice (latest training.calibration_fraction of the train period) has "
            f"{frauds_calibration} known frauds, fewer than {MIN_CALIBRATION_FRAUDS}; use a longer history "
            "or a larger training.calibration_fraction"
        )
    columns = list(feature_names)
    booster = HistGradientBoostingClassifier(
        max_iter=settings.max_iter,
        learning_rate=settings.learning_rate,
        max_leaf_nodes=settings.max_leaf_nodes,
        min_samples_leaf=settings.min_samples_leaf,
        l2_regularization=settings.l2_regularization,
        class_weight="balanced" if settings.class_weight == "balanced" else None,
        random_state=settings.seed,
    )
    booster.fit(pd.DataFrame(values[fit_rows], columns=columns), target[fit_rows].astype(np.int8))
    # frozen + ensemble=False: one calibrator on all the slice's predictions (the folds only split the slice)
    calibrated = CalibratedClassifierCV(FrozenEstimator(booster), method=settings.calibration, cv=2, ensemble=False)
    calibrated.fit(pd.DataFrame(values[calibration_rows], columns=columns), target[calibration_rows].astype(np.int8))
    return calibrated


def fraud_probability(model: Any, values: FloatArray, feature_names: Sequence[str]) -> FloatArray:
    """``model``'s fraud probability for each row of ``values`` (columns ``feature_names``), on one thread.

    scikit-learn's OpenMP threads cost more than they save on a micro-batch,
    and on a busy machine they wait for each other (measured: 5 ms for 500 rows
    on one thread, 400 ms with two threads on two loaded cores).
    """
    import pandas as pd

    if not len(values):
        return np.zeros(0)
    with _one_thread():
        proba = model.predict_proba(pd.DataFrame(values, columns=list(feature_names)))
    return np.asarray(proba, dtype=np.float64)[:, 1]


_CONTROLLER: Any = None


def _one_thread() -> Any:
    """A context limiting OpenMP to one thread (the controller is built once: ~40 us per use instead of ~7 ms)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="openmp")


# -------------------------------------------------------------------------------------------------- metrics
def average_precision(truth: BoolArray, score: FloatArray) -> float | None:
    """Average precision (area under the precision-recall curve); None without any fraud.

    >>> average_precision(np.array([False, True, False, True]), np.array([0.1, 0.9, 0.2, 0.8]))
    1.0
    """
    from sklearn.metrics import average_precision_score

    if not truth.any():
        return None
    return float(average_precision_score(truth, score))


def roc_auc(truth: BoolArray, score: FloatArray) -> float | None:
    """ROC AUC; None when only one class is present.

    >>> roc_auc(np.array([False, True, False, True]), np.array([0.1, 0.9, 0.95, 0.8]))
    0.5
    """
    from sklearn.metrics import roc_auc_score

    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, score))


def _days(event_time_ms: IntArray) -> IntArray:
    return np.floor_divide(event_time_ms, DAY_MS).astype(np.int64)


def _daily_top_k(days: IntArray, score: FloatArray, hit: BoolArray, k: int) -> dict[str, float]:
    """Per day: hits among the ``k`` highest scores, over ``k`` (ties broken by position)."""
    order = np.lexsort((np.arange(len(score)), -score, days))
    ordered_days = days[order]
    starts = np.flatnonzero(np.r_[True, ordered_days[1:] != ordered_days[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    top = order[rank < k]
    result: dict[str, float] = {}
    for day in np.unique(days).tolist():
        result[iso_utc(day * DAY_MS)[:10]] = float(hit[top][days[top] == day].sum()) / k
    return result


def precision_at_k_per_day(event_time_ms: IntArray, truth: BoolArray, score: FloatArray, k: int) -> dict[str, float]:
    """Per UTC day: share of frauds among the day's ``k`` highest-scored transactions (divided by ``k``).

    >>> t = np.array([0, 1, 2, DAY_MS, DAY_MS + 1])
    >>> precision_at_k_per_day(t, np.array([1, 0, 1, 0, 0], bool), np.array([0.9, 0.8, 0.1, 0.5, 0.4]), k=2)
    {'1970-01-01': 0.5, '1970-01-02': 0.0}
    """
    return _daily_top_k(_days(event_time_ms), score, truth, k)


def card_precision_at_k_per_day(
    event_time_ms: IntArray, account: npt.NDArray[Any], truth: BoolArray, score: FloatArray, k: int
) -> dict[str, float]:
    """Per UTC day: share of compromised cards among the ``k`` cards with the highest score that day.

    A card's score for a day is its highest transaction score that day; it is
    compromised that day when it had a fraudulent transaction that day.

    >>> t = np.array([0, 1, 2, 3])
    >>> cards = np.array(["a", "a", "b", "c"])
    >>> card_precision_at_k_per_day(t, cards, np.array([0, 1, 0, 0], bool), np.array([0.9, 0.1, 0.8, 0.2]), k=2)
    {'1970-01-01': 0.5}
    """
    days = _days(event_time_ms)
    _, card = np.unique(account, return_inverse=True)
    key = days * (int(card.max()) + 1 if len(card) else 1) + card
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]]) if len(key) else np.zeros(0, np.int64)
    card_score = np.maximum.reduceat(score[order], starts) if len(key) else np.zeros(0)
    card_hit = np.logical_or.reduceat(truth[order], starts) if len(key) else np.zeros(0, bool)
    card_day = days[order][starts]
    return _daily_top_k(card_day, card_score, card_hit, k)


def mean_of(per_day: dict[str, float]) -> float | None:
    """Mean of daily values; None for no days."""
    return float(np.mean(list(per_day.values()))) if per_day else None


def recall_by_scenario(
    account: npt.NDArray[Any], scenario: npt.NDArray[Any], is_fraud: BoolArray, alerted: BoolArray
) -> dict[str, dict[str, float | int]]:
    """Per fraud scenario: fraudulent accounts, how many were caught, and the share (``recall``).

    An account belongs to a scenario when it has a fraudulent transaction of
    that scenario; it is caught when at least one of those transactions was alerted.

    >>> recall_by_scenario(np.array(["a", "a", "b", "c"]), np.array(["x", "x", "x", None], object),
    ...                    np.array([1, 1, 1, 0], bool), np.array([0, 1, 0, 1], bool))
    {'x': {'accounts': 2, 'caught': 1, 'recall': 0.5}}
    """
    result: dict[str, dict[str, float | int]] = {}
    names = sorted({s for s in scenario[is_fraud].tolist() if s is not None})
    for name in names:
        rows = is_fraud & (scenario == name)
        accounts = set(account[rows].tolist())
        caught = set(account[rows & alerted].tolist())
        result[name] = {"accounts": len(accounts), "caught": len(caught), "recall": len(caught) / len(accounts)}
    return result


# ----------------------------------------------------------------------------------------- as a score source
class ProbabilisticClassifier(Protocol):
    """Anything with scikit-learn's ``predict_proba`` (column 1 = fraud)."""

    def predict_proba(self, X: Any) -> Any: ...


@dataclass(frozen=True)
class BatchModel:
    """A trained classifier and the feature layout it was trained on."""

    model: ProbabilisticClassifier
    #: Columns the model takes, in order (names of the feature registry).
    feature_names: tuple[str, ...]
    #: ``FeatureRegistry.version`` of the features it was trained on.
    feature_version: str
    #: What alerts record, e.g. ``fraud-classifier/3``.
    version: str
    #: The score fusion registered with this version (``scoring.fusion.method: learned``), if one was learned.
    fusion: StackingSettings | None = None


class ClassifierSource:
    """A batch-trained classifier as a score source: its calibrated fraud probability, mapped onto the fused scale.

    The probability ``p`` maps piecewise-linearly through
    ``scoring.classifier.review_probability`` -> ``review_threshold`` and
    ``block_probability`` -> ``block_threshold``; ``p`` at or above them
    demands a review or a block. It learns nothing while scoring.

    >>> from configs import FeatureSettings, ScoringSettings
    >>> registry = FeatureRegistry.from_settings(FeatureSettings())
    >>> class Fixed:
    ...     def predict_proba(self, X):
    ...         p = np.clip(X["amount"].to_numpy() / 1000, 0, 1)
    ...         return np.column_stack([1 - p, p])
    >>> model = BatchModel(Fixed(), ("amount",), registry.version, "fraud-classifier/1")
    >>> source = ClassifierSource(model, registry, ScoringSettings())
    >>> values = np.zeros((3, len(registry))); values[:, 0] = [100.0, 500.0, 950.0]
    >>> scores = source.process(FeatureBatch(values, np.zeros(3, bool), registry.names, registry.version))
    >>> scores.score.round(4).tolist(), scores.action.tolist()
    ([0.199, 0.995, 0.9998], [0, 1, 2])
    """

    name = "classifier"

    def __init__(self, model: BatchModel, registry: FeatureRegistry, scoring: ScoringSettings) -> None:
        if model.feature_version != registry.version:
            raise ValueError(
                f"classifier {model.version} was trained on features {model.feature_version}, the config gives "
                f"{registry.version}; retrain it with `fraudstream train` or restore the feature settings it was "
                "trained with"
            )
        unknown = [name for name in model.feature_names if name not in registry.names]
        if unknown:
            raise ValueError(f"classifier {model.version} needs features the registry lacks: {', '.join(unknown)}")
        self.model = model
        self.version = model.version
        #: The fusion learned with this version (the scorer fuses with it under ``scoring.fusion.method: learned``).
        self.fusion = model.fusion
        self.columns: IntArray = np.array([registry.index(n) for n in model.feature_names], dtype=np.int64)
        settings = scoring.classifier
        self._scale = ProbabilityScale(settings.review_probability, settings.block_probability,
                                       scoring.review_threshold, scoring.block_threshold)  # fmt: skip

    def probability(self, batch: FeatureBatch) -> FloatArray:
        """The model's fraud probability per row."""
        return fraud_probability(self.model.model, batch.values[:, self.columns], self.model.feature_names)

    def process(self, batch: FeatureBatch) -> SourceScores:
        p = self.probability(batch)
        return SourceScores(self._scale.score(p), self._scale.action(p))

    def state(self) -> SourceState:
        return {}  # the classifier does not learn while scoring

    def restore(self, state: SourceState) -> None:
        if state:
            raise ValueError(f"the batch classifier keeps no state, got {sorted(state)}")
