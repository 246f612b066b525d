"""Raw anomaly scores to [0, 1]: the percentile rank among the most recent raw scores.

Half-Space Trees scores are not probabilities and their scale moves with the
window masses, so thresholds are set on ranks: a calibrated score of 0.99 means
"at least as unusual as 99 % of the last ``size`` events". The recent scores
live in a ring buffer (bounded, deterministic); ranks are looked up in a sorted
copy that is refreshed once ``refresh`` new scores came in, so tiny micro-batches
stay cheap.

>>> import numpy as np
>>> calibration = PercentileCalibration(size=100, min_count=10)
>>> calibration.rank(np.array([0.5])).tolist()  # nothing learned yet
[0.0]
>>> calibration.learn(np.linspace(0.0, 1.0, 100))
>>> calibration.rank(np.array([-1.0, 0.5, 0.995, 2.0])).round(2).tolist()
[0.0, 0.5, 0.99, 1.0]

Classifiers give probabilities instead; :class:`ProbabilityScale` puts them on
the fused scale (shared by the batch classifier and the online classifier).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.rules import BLOCK, NO_ACTION, REVIEW

FloatArray = npt.NDArray[np.float64]


class PercentileCalibration:
    """Share of the last ``size`` learned raw scores that are at most a given raw score.

    Ranks are 0 until ``min_count`` scores were learned (too few to rank against).
    """

    def __init__(self, size: int, min_count: int, refresh: int = 1_000) -> None:
        self.size = size
        self.min_count = min_count
        self.refresh = refresh
        self.ring_: FloatArray = np.zeros(size)
        self.filled_ = 0
        self.position_ = 0
        self.since_sort_ = 0
        self.sorted_: FloatArray | None = None

    def rank(self, raw: FloatArray) -> FloatArray:
        if self.filled_ < self.min_count:
            return np.zeros(len(raw))
        if self.sorted_ is None or self.since_sort_ >= self.refresh:
            self.sorted_ = np.sort(self.ring_[: self.filled_])
            self.since_sort_ = 0
        ranks: FloatArray = np.searchsorted(self.sorted_, raw, side="right") / len(self.sorted_)
        return ranks

    def learn(self, raw: FloatArray) -> None:
        recent = raw[-self.size :]
        self.ring_[(self.position_ + np.arange(len(recent))) % self.size] = recent
        self.position_ = (self.position_ + len(recent)) % self.size
        self.filled_ = min(self.size, self.filled_ + len(recent))
        self.since_sort_ += len(recent)

    def state(self) -> dict[str, Any]:
        """The ring, its position and the sorted copy ranks are looked up in (so a restore ranks identically)."""
        return {
            "ring": self.ring_,
            "sorted": self.sorted_ if self.sorted_ is not None else np.empty(0),
            "filled": self.filled_,
            "position": self.position_,
            "since_sort": self.since_sort_,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.ring_ = np.asarray(state["ring"], dtype=np.float64)
        snapshot = np.asarray(state["sorted"], dtype=np.float64)
        self.sorted_ = snapshot if len(snapshot) else None
        self.filled_ = int(state["filled"])
        self.position_ = int(state["position"])
        self.since_sort_ = int(state["since_sort"])


class ProbabilityScale:
    """A fraud probability ``p`` on the fused scale, and the action it demands.

    Piecewise linear through (0, 0), (``review_probability``, ``review_threshold``),
    (``block_probability``, ``block_threshold``) and (1, 1) (points that do not move
    right are dropped, the map never decreases), so a probability at or above
    ``review_probability`` reaches the review threshold and demands a review, one
    at or above ``block_probability`` a block, whatever the other sources say.

    >>> scale = ProbabilityScale(0.5, 0.9, review_threshold=0.995, block_threshold=0.9995)
    >>> p = np.array([0.0, 0.25, 0.5, 0.7, 0.9, 1.0])
    >>> scale.score(p).round(6).tolist(), scale.action(p).tolist()
    ([0.0, 0.4975, 0.995, 0.99725, 0.9995, 1.0], [0, 0, 1, 1, 2, 2])
    """

    def __init__(
        self, review_probability: float, block_probability: float, review_threshold: float, block_threshold: float
    ) -> None:
        points = [(0.0, 0.0), (review_probability, review_threshold), (block_probability, block_threshold), (1.0, 1.0)]
        kept: list[tuple[float, float]] = []
        for x, y in points:
            if not kept or x > kept[-1][0]:
                kept.append((x, max(y, kept[-1][1]) if kept else y))
        self._xp = np.array([x for x, _ in kept])
        self._fp = np.array([y for _, y in kept])
        self.review_probability = review_probability
        self.block_probability = block_probability

    def score(self, p: FloatArray) -> FloatArray:
        """``p`` mapped onto the fused scale."""
        result: FloatArray = np.interp(p, self._xp, self._fp)
        return result

    def action(self, p: FloatArray) -> npt.NDArray[np.int8]:
        """``NO_ACTION``, ``REVIEW`` or ``BLOCK`` (of ``models.rules``) per probability."""
        level = np.where(p >= self.block_probability, BLOCK, np.where(p >= self.review_probability, REVIEW, NO_ACTION))
        return level.astype(np.int8)
