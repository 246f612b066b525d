"""Score fusion: the sources' scores of a micro-batch combined into one fused score per row (``scoring.fusion``).

Three methods, each vectorised over the batch:

- ``max`` (default): the highest score of any source, rules included; exactly
  the scorer's original fusion;
- ``weighted``: the weighted mean of the fused sources' scores
  (``weights``; a source not listed weighs 1, weight 0 leaves it out; the
  weights of the sources the scorer has are renormalised to sum to 1);
- ``stacking``: a logistic model over the fused sources' scores,
  ``sigmoid(intercept + sum of coefficient x score)`` (a source not listed has
  coefficient 0); :func:`fit_stacking` fits the coefficients on labelled
  per-source scores (a backtest's).

Rules are not fused: a matched rule lifts the fused score to at least its
``score`` afterwards (under ``max`` the same thing), and the decision is then
taken as always (a source's demanded action, the thresholds).

>>> from configs import FusionSettings, StackingSettings
>>> anomaly, classifier, rules = np.array([0.2, 0.9, 0.0]), np.array([0.6, 0.1, 0.0]), np.array([0.0, 0.0, 0.97])
>>> names = ("anomaly", "classifier", "rules")
>>> Fusion(FusionSettings(), names).fuse([anomaly, classifier, rules]).tolist()
[0.6, 0.9, 0.97]
>>> weighted = Fusion(FusionSettings(method="weighted", weights={"anomaly": 3.0}), names)
>>> weighted.fuse([anomaly, classifier, rules]).round(6).tolist()  # (3 a + 1 c) / 4, then the rule
[0.3, 0.7, 0.97]
>>> stacking = FusionSettings(method="stacking", stacking=StackingSettings(intercept=-4.0,
...                                                                       coefficients={"anomaly": 5.0}))
>>> Fusion(stacking, names).fuse([anomaly, classifier, rules]).round(4).tolist()  # sigmoid(-4 + 5 a), the rule
[0.0474, 0.6225, 0.97]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from configs import ConfigError, FusionSettings, StackingSettings

FloatArray = npt.NDArray[np.float64]

#: Source names whose scores are floors applied after fusion, not inputs to it (``RuleSource.name``).
FLOORS = frozenset({"rules"})
#: Logits beyond this are clipped before the sigmoid (no overflow; the probability is 0 or 1 to float precision).
_MAX_LOGIT = 40.0


def _number(value: float) -> str:
    return repr(float(value)).removesuffix(".0")


class Fusion:
    """The fusion of one scorer: ``settings`` applied to the scores of the sources ``names`` (in that order).

    ConfigError when ``weighted`` gives every fused source of this scorer weight 0.
    """

    def __init__(self, settings: FusionSettings, names: Sequence[str]) -> None:
        self.method = settings.method
        self.names = tuple(names)
        fused = [i for i, name in enumerate(self.names) if name not in FLOORS]
        self._floors = [i for i, name in enumerate(self.names) if name in FLOORS]
        self._fused = fused
        if self.method == "weighted":
            weights = np.array([settings.weights.get(self.names[i], 1.0) for i in fused], dtype=np.float64)
            if fused and not weights.sum() > 0.0:
                raise ConfigError(
                    f"config error: scoring.fusion.weights: every fused source of this scorer "
                    f"({', '.join(self.names[i] for i in fused)}) weighs 0; give one a weight above 0"
                )
            self._coefficients = weights / weights.sum() if fused else weights
            self._intercept = 0.0
        elif self.method == "stacking":
            coefficients = settings.stacking.coefficients
            self._coefficients = np.array([coefficients.get(self.names[i], 0.0) for i in fused], dtype=np.float64)
            self._intercept = float(settings.stacking.intercept)
        #: What alerts record as ``model_versions["fusion"]`` (None for ``max``, which records nothing).
        self.version: str | None = None
        if self.method == "weighted":
            given = ",".join(f"{name}={_number(w)}" for name, w in sorted(settings.weights.items()))
            self.version = f"weighted:{given or 'equal'}"
        elif self.method == "stacking":
            given = ",".join(f"{name}={_number(c)}" for name, c in sorted(settings.stacking.coefficients.items()))
            self.version = f"stacking:b={_number(settings.stacking.intercept)},{given}"

    def fuse(self, scores: Sequence[FloatArray]) -> FloatArray:
        """The fused score per row, from each source's score per row (sources in the order of ``names``)."""
        if len(scores) != len(self.names):
            raise ValueError(f"fusion of {len(self.names)} sources got {len(scores)} score arrays")
        rows = len(scores[0]) if len(scores) else 0
        fused = np.zeros(rows)
        if self.method == "max":
            for score in scores:  # every source, rules included: the original fusion, bit for bit
                fused = np.maximum(fused, score)
            return fused
        if self.method == "weighted":
            for weight, i in zip(self._coefficients.tolist(), self._fused, strict=True):
                if weight:
                    fused += weight * scores[i]
            fused = np.clip(fused, 0.0, 1.0)  # a mean of scores in [0, 1], up to rounding
        else:  # stacking
            logit = np.full(rows, self._intercept)
            for coefficient, i in zip(self._coefficients.tolist(), self._fused, strict=True):
                if coefficient:
                    logit += coefficient * scores[i]
            fused = 1.0 / (1.0 + np.exp(-np.clip(logit, -_MAX_LOGIT, _MAX_LOGIT)))
        for i in self._floors:
            fused = np.maximum(fused, scores[i])
        return fused


def fit_stacking(
    scores: Mapping[str, FloatArray], is_fraud: npt.NDArray[np.bool_], regularization: float = 1.0
) -> StackingSettings:
    """Stacking coefficients fitted on per-source scores and their labels (e.g. a backtest's ``sources``).

    An L2-regularised logistic regression (scikit-learn, ``C = 1 / regularization``)
    of the fraud label on the fused sources' scores (``rules`` is left out: it is a
    floor); the result goes under ``scoring.fusion.stacking``.
    """
    from sklearn.linear_model import LogisticRegression

    names = sorted(name for name in scores if name not in FLOORS)
    if not names:
        raise ValueError("fit_stacking needs the scores of at least one fused source (anomaly, online, classifier)")
    labels = np.asarray(is_fraud, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError("fit_stacking needs fraud and genuine rows; the labels given are all one class")
    matrix = np.column_stack([np.asarray(scores[name], dtype=np.float64) for name in names])
    model = LogisticRegression(C=1.0 / regularization, max_iter=1_000).fit(matrix, labels)
    return StackingSettings(
        intercept=round(float(model.intercept_[0]), 6),
        coefficients={name: round(float(c), 6) for name, c in zip(names, model.coef_[0].tolist(), strict=True)},
    )
