"""Score fusion: the sources' scores of a micro-batch combined into one fused score per row (``scoring.fusion``).

Four methods, each vectorised over the batch:

- ``learned`` (default): the stacking `fraudstream train` fitted and registered
  with the served classifier version (:func:`learn_fusion`), which moves with
  the champion; ``max`` while no classifier carrying one is served;
- ``max``: the highest score of any source, rules included; exactly
  the scorer's original fusion;
- ``weighted``: the weighted mean of the fused sources' scores
  (``weights``; a source not listed weighs 1, weight 0 leaves it out; the
  weights of the sources the scorer has are renormalised to sum to 1);
- ``stacking``: a logistic model over the fused sources' scores,
  ``sigmoid(intercept + sum of coefficient x input)`` (a source not listed has
  coefficient 0; the input is the score, or its log-odds with ``inputs: logit``);
  :func:`fit_stacking` fits the coefficients on labelled per-source scores (a
  backtest's).

Under ``weighted`` and a configured ``stacking``, rules are not fused: a
matched rule lifts the fused score to at least its ``score`` afterwards (under
``max`` the same thing). Under ``learned`` the rules' score is one more input of
the stacking, weighed like any source's (a rule that flags many genuine
payments would otherwise lift them above frauds and rank the fused score below
its best source). The decision is then taken as always (a source's demanded
action, a matched rule's included, and the thresholds).

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
>>> learned = StackingSettings(coefficients={"classifier": 1.0}, inputs="logit")  # the classifier alone, as it is
>>> fusion = Fusion(FusionSettings(), names, learned, "fraud-classifier/3")
>>> fusion.fuse([anomaly, classifier, rules]).round(6).tolist(), fusion.version   # learned: the rule is an input
([0.6, 0.1, 0.0], 'learned:fraud-classifier/3:b=0,classifier=1,logit')
>>> Fusion(FusionSettings(), names).version is None  # learned, but nothing learned served: max
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from configs import ConfigError, FusionSettings, StackingSettings

FloatArray = npt.NDArray[np.float64]

#: Source names whose scores are floors applied after fusion, not inputs to it (``RuleSource.name``).
FLOORS = frozenset({"rules"})
#: Logits beyond this are clipped before the sigmoid (no overflow; the probability is 0 or 1 to float precision).
_MAX_LOGIT = 40.0
#: Scores are clipped to [_EPS, 1 - _EPS] before their log-odds are taken (``inputs: logit``).
_EPS = 1e-9


def log_odds(score: FloatArray) -> FloatArray:
    """The log-odds of scores in [0, 1], clipped to +-20.7 (scores of exactly 0 or 1 stay finite).

    >>> log_odds(np.array([0.5, 0.0, 1.0])).round(2).tolist()
    [0.0, -20.72, 20.72]
    """
    clipped = np.clip(score, _EPS, 1.0 - _EPS)
    return np.log(clipped / (1.0 - clipped))


def _number(value: float) -> str:
    return repr(float(value)).removesuffix(".0")


def _stacking_version(stacking: StackingSettings) -> str:
    given = ",".join(f"{name}={_number(c)}" for name, c in sorted(stacking.coefficients.items()))
    return f"b={_number(stacking.intercept)},{given}" + (",logit" if stacking.inputs == "logit" else "")


class Fusion:
    """The fusion of one scorer: ``settings`` applied to the scores of the sources ``names`` (in that order).

    ``learned`` is the stacking registered with the served classifier (``learned_from``, its version), used by
    method ``learned``. ConfigError when ``weighted`` gives every fused source of this scorer weight 0.
    """

    def __init__(
        self,
        settings: FusionSettings,
        names: Sequence[str],
        learned: StackingSettings | None = None,
        learned_from: str = "",
    ) -> None:
        self.method = settings.method
        stacking = settings.stacking
        if self.method == "learned":
            self.method, stacking = ("stacking", learned) if learned is not None else ("max", stacking)
        self.names = tuple(names)
        # rules are a floor, unless an input: always under learned, when given a coefficient under stacking
        inputs = set(stacking.coefficients) if self.method == "stacking" else set()
        floors = frozenset() if settings.method == "learned" else FLOORS - inputs
        fused = [i for i, name in enumerate(self.names) if name not in floors]
        self._floors = [i for i, name in enumerate(self.names) if name in floors]
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
            coefficients = stacking.coefficients
            self._coefficients = np.array([coefficients.get(self.names[i], 0.0) for i in fused], dtype=np.float64)
            self._intercept = float(stacking.intercept)
        self._logit = self.method == "stacking" and stacking.inputs == "logit"
        #: What alerts record as ``model_versions["fusion"]`` (None for ``max``, which records nothing).
        self.version: str | None = None
        if self.method == "weighted":
            given = ",".join(f"{name}={_number(w)}" for name, w in sorted(settings.weights.items()))
            self.version = f"weighted:{given or 'equal'}"
        elif self.method == "stacking":
            learned_here = settings.method == "learned"
            self.version = (f"learned:{learned_from}:" if learned_here else "stacking:") + _stacking_version(stacking)

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
                    logit += coefficient * (log_odds(scores[i]) if self._logit else scores[i])
            fused = 1.0 / (1.0 + np.exp(-np.clip(logit, -_MAX_LOGIT, _MAX_LOGIT)))
        for i in self._floors:
            fused = np.maximum(fused, scores[i])
        return fused


def fit_stacking(
    scores: Mapping[str, FloatArray],
    is_fraud: npt.NDArray[np.bool_],
    regularization: float = 1.0,
    inputs: Literal["score", "logit"] = "score",
    floors: frozenset[str] = FLOORS,
) -> StackingSettings:
    """Stacking coefficients fitted on per-source scores and their labels (e.g. a backtest's ``sources``).

    An L2-regularised logistic regression (scikit-learn, ``C = 1 / regularization``)
    of the fraud label on the fused sources' scores, or their log-odds with
    ``inputs="logit"`` (``floors`` are left out: by default ``rules``, a floor
    of a configured stacking); the result goes under ``scoring.fusion.stacking``.
    """
    from sklearn.linear_model import LogisticRegression

    names = sorted(name for name in scores if name not in floors)
    if not names:
        raise ValueError("fit_stacking needs the scores of at least one fused source (anomaly, online, classifier)")
    labels = np.asarray(is_fraud, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError("fit_stacking needs fraud and genuine rows; the labels given are all one class")
    columns = [np.asarray(scores[name], dtype=np.float64) for name in names]
    matrix = np.column_stack([log_odds(c) for c in columns] if inputs == "logit" else columns)
    model = LogisticRegression(C=1.0 / regularization, max_iter=1_000).fit(matrix, labels)
    return StackingSettings(
        intercept=round(float(model.intercept_[0]), 6),
        coefficients={name: round(float(c), 6) for name, c in zip(names, model.coef_[0].tolist(), strict=True)},
        inputs=inputs,
    )


@dataclass(frozen=True)
class LearnedFusion:
    """What :func:`learn_fusion` chose, and why."""

    #: The fusion to register (``scoring.fusion.method: learned`` uses it).
    stacking: StackingSettings
    #: ``stacking``, or the name of the single source that ranked better on its own.
    chosen: str
    #: Average precision of every candidate on the validation rows.
    validation_ap: dict[str, float | None]
    fit_rows: int
    validation_rows: int
    #: Share of bootstrap resamples in which the stacking ranked better than the best single source (None: no fit).
    stacking_win_share: float | None = None


def _ap(truth: npt.NDArray[np.bool_], score: FloatArray) -> float | None:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(truth, score)) if 0 < truth.sum() < len(truth) else None


def alternate_days(event_time_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Rows of odd-numbered UTC days (since the epoch): a validation half spread over the whole period, so it holds
    known frauds whenever the period does (a later half would hold the least-reported days under a label delay).

    >>> alternate_days(np.array([0, 86_400_000, 2 * 86_400_000 + 5])).tolist()
    [False, True, False]
    """
    odd: npt.NDArray[np.bool_] = (np.asarray(event_time_ms) // 86_400_000) % 2 == 1
    return odd


def win_share(
    truth: npt.NDArray[np.bool_],
    challenger: FloatArray,
    incumbent: FloatArray,
    groups: npt.NDArray[np.int64],
    resamples: int = 200,
    seed: int = 0,
) -> float:
    """Share of bootstrap resamples of ``groups`` (e.g. days, drawn with replacement) in which ``challenger`` ranks
    with a higher average precision than ``incumbent``: how sure the rows are that it is better.

    >>> rng = np.random.default_rng(1)
    >>> fraud = rng.random(30_000) < 0.05
    >>> good, bad = np.where(fraud, rng.beta(4, 2, 30_000), rng.beta(2, 4, 30_000)), rng.random(30_000)
    >>> days = np.arange(30_000) // 1_000
    >>> win_share(fraud, good, bad, days), win_share(fraud, bad, good, days)
    (1.0, 0.0)
    """
    rng = np.random.default_rng(seed)
    labels, groups = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(groups == g) for g in range(len(labels))]
    wins = counted = 0
    for _ in range(resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        new, old = _ap(truth[rows], challenger[rows]), _ap(truth[rows], incumbent[rows])
        if new is None or old is None:
            continue
        counted += 1
        wins += new > old
    return wins / counted if counted else 0.0


def learn_fusion(
    scores: Mapping[str, FloatArray],
    is_fraud: npt.NDArray[np.bool_],
    validation: npt.NDArray[np.bool_],
    regularization: float = 1.0,
    groups: npt.NDArray[np.int64] | None = None,
    min_win_share: float = 0.9,
) -> LearnedFusion | None:
    """A fusion that ranks no worse than its best source: logistic stacking of the sources' log-odds (rules
    included: under ``learned`` they are an input, not a floor), fitted on the
    rows outside ``validation`` and kept only when, on the ``validation`` rows, it ranks better than the best single
    source there in at least ``min_win_share`` of bootstrap resamples of their ``groups`` (e.g. days; default: each
    row its own): a stacking that is better only by the luck of the draw is not kept. Otherwise the best source
    alone (coefficient 1 on its log-odds: exactly its own score). A kept stacking is refitted on every row. None
    when the validation rows hold no fraud or nothing else (nothing to choose by).

    >>> rng = np.random.default_rng(0)
    >>> fraud = rng.random(20_000) < 0.02
    >>> strong, noise = np.where(fraud, rng.beta(5, 2, 20_000), rng.beta(1, 8, 20_000)), rng.random(20_000)
    >>> scores = {"classifier": strong, "anomaly": noise, "rules": np.zeros(20_000)}
    >>> learned = learn_fusion(scores, fraud, np.arange(20_000) % 2 == 1)
    >>> learned.chosen in ("stacking", "classifier"), sorted(learned.validation_ap)
    (True, ['anomaly', 'classifier', 'rules', 'stacking'])
    >>> learned.validation_ap["stacking"] >= learned.validation_ap["classifier"] or learned.chosen == "classifier"
    True
    >>> learn_fusion(scores, np.zeros(20_000, bool), np.arange(20_000) % 2 == 1) is None
    True
    """
    names = sorted(scores)
    labels = np.asarray(is_fraud, dtype=bool)
    check = np.asarray(validation, dtype=bool)
    fit = ~check
    truth = labels[check]
    if not 0 < truth.sum() < len(truth):
        return None
    singles = {name: StackingSettings(coefficients={name: 1.0}, inputs="logit") for name in names}
    candidates: dict[str, StackingSettings] = dict(singles)
    if 0 < labels[fit].sum() < fit.sum():
        candidates["stacking"] = fit_stacking({n: scores[n][fit] for n in names}, labels[fit], regularization, "logit",
                                              floors=frozenset())
    validation_ap: dict[str, float | None] = {}
    fused_scores: dict[str, FloatArray] = {}
    for name, stacking in candidates.items():
        fused = Fusion(FusionSettings(method="learned"), names, stacking)
        fused_scores[name] = fused.fuse([np.asarray(scores[n], dtype=np.float64)[check] for n in names])
        validation_ap[name] = _ap(truth, fused_scores[name])
    best_single = max(singles, key=lambda name: validation_ap[name] or -1.0)
    chosen, share = best_single, None
    if validation_ap.get("stacking") is not None:
        days = np.asarray(groups)[check] if groups is not None else np.arange(len(truth))
        share = win_share(truth, fused_scores["stacking"], fused_scores[best_single], days)
        if share >= min_win_share:
            chosen = "stacking"
            candidates["stacking"] = fit_stacking({n: scores[n] for n in names}, labels, regularization, "logit",
                                                  floors=frozenset())
    return LearnedFusion(candidates[chosen], chosen, validation_ap, int(fit.sum()), int(check.sum()), share)
