"""Score sources: each looks at a micro-batch and says, per row, how suspicious it is.

A source has a ``name`` (its key in ``Alert.model_versions`` and in the scorer's
state), a ``version`` (recorded on every alert), and ``process(batch)``, which
scores every row with the source's state at the batch start and then learns
the batch, if it learns at all. The :class:`~models.scoring.Scorer` fuses the
sources' answers. Today's sources:

- :class:`AnomalySource`: River Half-Space Trees, batched, calibrated to a
  percentile rank; explains its score per feature;
- :class:`RuleSource`: the configured rules; matched rules lift the score and
  the decision and are named in the alert;
- :class:`models.online.OnlineClassifierSource`: a River logistic regression
  learned from delayed labels (a :class:`LabelLearner`);
- :class:`models.batch.ClassifierSource`: a batch-trained classifier (MLflow).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt
from river.anomaly import HalfSpaceTrees

from configs import AnomalySettings, ConfigError, RuleSettings
from features import FeatureBatch, FeatureRegistry
from models.anomaly import BatchHalfSpaceTrees
from models.calibration import PercentileCalibration
from models.preprocessing import RecentMoments, RunningMinMax, signed_log1p
from models.rules import NO_ACTION, compile_rules

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
#: Saved state of a source: named arrays and JSON scalars.
SourceState: TypeAlias = dict[str, np.ndarray | int | float | bool]
#: For some rows of the batch: the registry columns a source explains, and per row a signed contribution of each.
Explanation: TypeAlias = Callable[[IntArray], tuple[IntArray, FloatArray]]

#: Recent raw anomaly scores the calibration ranks against.
CALIBRATION_SIZE = 20_000
#: Raw scores the calibration must hold before the anomaly score leaves 0 (no alerts from the model before).
WARMUP = 2_000
#: Events after which a past event weighs half in the "typical value" of explanations.
TYPICAL_HALF_LIFE = 20_000
#: Smallest standard deviation (in signed-log1p units) explanations divide by: a 10 % change.
STD_FLOOR = 0.1


def source_features(names: tuple[str, ...], registry: FeatureRegistry, key: str) -> tuple[str, ...]:
    """The features a source is configured with (empty = every registered one); ConfigError (one line
    naming ``key``, close matches and what is allowed) for a name the registry does not have."""
    for feature in names:
        if feature not in registry.names:
            close = get_close_matches(feature, registry.names, n=3)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"config error: {key}: unknown feature {feature!r}{hint}; allowed: {', '.join(registry.names)}"
            )
    return names or registry.names


@dataclass(frozen=True)
class SourceScores:
    """What one source says about each row of a micro-batch."""

    #: Suspicion in [0, 1]; fused per ``scoring.fusion`` (default: the maximum over sources).
    score: FloatArray
    #: Least decision the source demands per row (0 none, 1 review, 2 block; int8).
    action: npt.NDArray[np.int8]
    #: Named conditions (rules) that matched, with the rows they matched (rows whose action is at least review).
    matched: tuple[tuple[str, BoolArray], ...] = ()
    #: Per-feature explanation of the score, or None when the source does not explain.
    explain: Explanation | None = None


class _Learned(Protocol):
    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class ScoreSource(Protocol):
    """One input to the fused score."""

    name: str
    version: str

    def process(self, batch: FeatureBatch) -> SourceScores:
        """Score every row with the state at the batch start, then learn the batch (if this source learns)."""
        ...

    def state(self) -> SourceState:
        """Everything learned so far, to continue exactly after :meth:`restore`.

        Empty for a source that learns nothing (rules, the batch classifier):
        checkpoints then do not pin its ``version`` (``Scorer.from_state``).
        """
        ...

    def restore(self, state: SourceState) -> None:
        """Continue from a :meth:`state` of a source with the same ``version``."""
        ...


@runtime_checkable
class LabelLearner(Protocol):
    """A source that also learns from delayed labels (:meth:`models.Scorer.observe_labels` forwards to it)."""

    def observe_labels(self, transaction_ids: Sequence[str], is_fraud: Sequence[bool]) -> int:
        """Learn the labels of transactions this source scored, in the order given; how many were learned."""
        ...


class AnomalySource:
    """River Half-Space Trees over signed-log1p, min/max-scaled features; score = percentile rank of the raw score.

    The explanation of a row: per feature, how many recent standard deviations
    its signed-log1p value lies above (+) or below (-) its recent mean
    (exponentially weighted, half-life ``TYPICAL_HALF_LIFE`` events), both as
    they were at the batch start.

    >>> from configs import AnomalySettings, FeatureSettings
    >>> registry = FeatureRegistry.from_settings(FeatureSettings())
    >>> source = AnomalySource(AnomalySettings(features=("amount", "count_1h")), registry)
    >>> source.version
    'river.HalfSpaceTrees:25x8w250s1:f2-43600cee'
    >>> AnomalySource(AnomalySettings(features=("amount", "count_1hour")), registry)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: config error: scoring.anomaly.features: unknown feature 'count_1hour' (did you mean: count_1h, ...?); allowed: amount, log_amount, count_10m, ..., is_night
    """

    name = "anomaly"

    def __init__(self, settings: AnomalySettings, registry: FeatureRegistry) -> None:
        names = source_features(settings.features, registry, "scoring.anomaly.features")
        self.features = tuple(names)
        self.columns: IntArray = np.array([registry.index(n) for n in names], dtype=np.int64)
        shape = f"{settings.n_trees}x{settings.height}w{settings.window_size}s{settings.seed}"
        self.version = f"river.HalfSpaceTrees:{shape}"
        if settings.features:  # a subset: its size and a CRC of the names
            self.version += f":f{len(names)}-{zlib.crc32(','.join(names).encode()):08x}"
        self.model = BatchHalfSpaceTrees(self.features, settings.n_trees, settings.height, settings.window_size,
                                         settings.seed)
        self.scaler = RunningMinMax(len(names))
        self.calibration = PercentileCalibration(CALIBRATION_SIZE, min_count=WARMUP)
        self.typical = RecentMoments(len(names), half_life=TYPICAL_HALF_LIFE)

    def process(self, batch: FeatureBatch) -> SourceScores:
        logged = signed_log1p(batch.values[:, self.columns])
        leaves = self.model.leaves(self.scaler.transform(logged))
        complete = not self.model.first_window_
        raw = self.model.score(leaves)
        score = self.calibration.rank(raw)
        mean, std = self.typical.mean(), np.maximum(self.typical.std(), STD_FLOOR)
        columns = self.columns

        def explain(rows: IntArray) -> tuple[IntArray, FloatArray]:
            return columns, (logged[rows] - mean) / std

        self.model.learn(leaves)
        if complete:
            self.calibration.learn(raw)
        self.scaler.learn(logged)
        self.typical.learn(logged)
        return SourceScores(score, np.zeros(len(score), dtype=np.int8), explain=explain)

    def to_river(self) -> HalfSpaceTrees:
        """The River model of record, masses up to date; give it :meth:`river_features` of a row."""
        return self.model.to_river()

    def river_features(self, values: FloatArray) -> dict[str, float]:
        """One row of registry-ordered feature values as the River model sees it (for ``score_one`` in a notebook)."""
        scaled = self.scaler.transform(signed_log1p(values[self.columns])[None, :])[0]
        return dict(zip(self.features, scaled.tolist(), strict=True))

    def _parts(self) -> dict[str, _Learned]:
        return {"model": self.model, "scaler": self.scaler, "calibration": self.calibration, "typical": self.typical}

    def state(self) -> SourceState:
        return {f"{name}.{key}": value for name, part in self._parts().items() for key, value in part.state().items()}

    def restore(self, state: SourceState) -> None:
        for name, part in self._parts().items():
            part.restore({k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")})


class RuleSource:
    """The configured rules: a matched rule lifts the row's score to the rule's ``score`` and its decision to the
    rule's ``action``.

    >>> from configs import FeatureSettings, RuleSettings
    >>> registry = FeatureRegistry.from_settings(FeatureSettings())
    >>> source = RuleSource((RuleSettings(name="huge", when="amount > 5000", action="block", score=0.99),), registry)
    >>> values = np.zeros((2, len(registry))); values[1, registry.index("amount")] = 9000.0
    >>> scores = source.process(FeatureBatch(values, np.zeros(2, bool), registry.names, registry.version))
    >>> scores.score.tolist(), scores.action.tolist(), [(name, rows.tolist()) for name, rows in scores.matched]
    ([0.0, 0.99], [0, 2], [('huge', [False, True])])
    """

    name = "rules"

    def __init__(
        self,
        rules: tuple[RuleSettings, ...],
        registry: FeatureRegistry,
        where: str = "scoring.rules",
        block_threshold: float | None = None,
    ) -> None:
        """ConfigError (one line naming ``where[i]``, see :func:`~models.rules.compile_rules`) for a bad rule."""
        self.rules = compile_rules(rules, registry.names, where, block_threshold)
        text = "\n".join(f"{r.name}|{r.when}|{r.action}|{r.score!r}" for r in rules)
        self.version = f"rules-{zlib.crc32(text.encode()):08x}"

    def process(self, batch: FeatureBatch) -> SourceScores:
        values = batch.values
        score = np.zeros(len(values))
        action = np.full(len(values), NO_ACTION, dtype=np.int8)
        matched = []
        for rule in self.rules:
            hits = rule.predicate(values)
            if hits.any():
                score[hits] = np.maximum(score[hits], rule.score)
                action[hits] = np.maximum(action[hits], rule.action)
                matched.append((rule.name, hits))
        return SourceScores(score, action, tuple(matched))

    def state(self) -> SourceState:
        return {}  # rules learn nothing

    def restore(self, state: SourceState) -> None:
        if state:
            raise ValueError(f"rules keep no state, got {sorted(state)}")
