"""Streaming, vectorised input preparation for the anomaly model and its explanations.

Amounts, sums, counts, distances and speeds are heavy-tailed, so every feature
first goes through a signed ``log1p`` (:func:`signed_log1p`; a no-op in shape
for 0/1 flags and small counts). :class:`RunningMinMax` then maps each logged
feature to [0, 1] with the minimum and maximum learned so far, as Half-Space
Trees expect; :class:`RecentMoments` keeps an exponentially weighted mean and
variance per logged feature, the "typical value" alerts are explained against.
Both learn a whole micro-batch at once and are exactly reproducible from their
state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def signed_log1p(x: FloatArray) -> FloatArray:
    """``sign(x) * log(1 + |x|)``: compresses heavy tails, keeps sign and order.

    >>> signed_log1p(np.array([-9.0, 0.0, 1.0, 1e6])).round(3).tolist()
    [-2.303, 0.0, 0.693, 13.816]
    """
    result: FloatArray = np.copysign(np.log1p(np.abs(x)), x)
    return result


class RunningMinMax:
    """Per column: (x - min) / (max - min) over everything learned so far, clipped to [0, 1].

    A column with fewer than two distinct learned values maps to 0.5.

    >>> scaler = RunningMinMax(2)
    >>> scaler.learn(np.array([[0.0, 5.0], [10.0, 5.0]]))
    >>> scaler.transform(np.array([[2.5, 7.0], [20.0, 1.0]])).tolist()
    [[0.25, 0.5], [1.0, 0.5]]
    """

    def __init__(self, width: int) -> None:
        self.low_: FloatArray = np.full(width, np.inf)
        self.high_: FloatArray = np.full(width, -np.inf)

    def transform(self, x: FloatArray) -> FloatArray:
        span = self.high_ - self.low_
        known = span > 0  # False for inf - inf (nothing learned) and for constant columns
        low = np.where(known, self.low_, 0.0)
        # a division, not a multiplication by 1 / span: a subnormal span would make that inf and 0 * inf nan
        scaled: FloatArray = np.clip(np.where(known, (x - low) / np.where(known, span, 1.0), 0.5), 0.0, 1.0)
        return scaled

    def learn(self, x: FloatArray) -> None:
        if len(x):
            self.low_ = np.minimum(self.low_, x.min(axis=0))
            self.high_ = np.maximum(self.high_, x.max(axis=0))

    def state(self) -> dict[str, Any]:
        return {"low": self.low_, "high": self.high_}

    def restore(self, state: dict[str, Any]) -> None:
        self.low_ = np.asarray(state["low"], dtype=np.float64)
        self.high_ = np.asarray(state["high"], dtype=np.float64)


class RecentMoments:
    """Exponentially weighted mean and standard deviation per column (weight halves every ``half_life`` rows).

    Learning a batch gives the same result as learning its rows one by one (a
    weighted merge of the batch's own moments, numerically stable).

    >>> moments = RecentMoments(1, half_life=1e9)
    >>> moments.learn(np.array([[1.0], [2.0], [3.0]]))
    >>> moments.mean().round(6).tolist(), moments.std().round(6).tolist()
    ([2.0], [0.816497])
    """

    def __init__(self, width: int, half_life: float) -> None:
        self.decay = 0.5 ** (1.0 / half_life)
        self.weight_ = 0.0
        self.mean_: FloatArray = np.zeros(width)
        self.m2_: FloatArray = np.zeros(width)

    def learn(self, x: FloatArray) -> None:
        n = len(x)
        if not n:
            return
        weights = self.decay ** np.arange(n - 1, -1, -1, dtype=np.float64)[:, None]  # newest row weighs 1
        batch_weight = float(weights.sum())
        batch_mean = (weights * x).sum(axis=0) / batch_weight
        batch_m2 = (weights * (x - batch_mean) ** 2).sum(axis=0)
        carried = self.decay**n * self.weight_
        total = carried + batch_weight
        delta = batch_mean - self.mean_
        self.mean_ = self.mean_ + delta * (batch_weight / total)
        self.m2_ = self.decay**n * self.m2_ + batch_m2 + delta * delta * (carried * batch_weight / total)
        self.weight_ = total

    def mean(self) -> FloatArray:
        return self.mean_.copy()

    def std(self) -> FloatArray:
        result: FloatArray = np.sqrt(self.m2_ / self.weight_) if self.weight_ else np.zeros_like(self.m2_)
        return result

    def state(self) -> dict[str, Any]:
        return {"weight": self.weight_, "mean": self.mean_, "m2": self.m2_}

    def restore(self, state: dict[str, Any]) -> None:
        self.weight_ = float(state["weight"])
        self.mean_ = np.asarray(state["mean"], dtype=np.float64)
        self.m2_ = np.asarray(state["m2"], dtype=np.float64)
