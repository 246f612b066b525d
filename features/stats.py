"""Running amount statistics: count, mean, variance (Welford) and an EWMA.

>>> stats = RunningStats(alpha=0.5)
>>> for amount in (10.0, 20.0, 30.0):
...     stats.update(amount)
>>> stats.n, stats.mean, round(stats.std(), 4), stats.ewma
(3, 20.0, 10.0, 22.5)
>>> other = RunningStats(alpha=0.5)
>>> other.update(40.0)
>>> stats += other          # two partial statistics merge (Chan et al.)
>>> stats.n, stats.mean
(4, 25.0)
"""

from __future__ import annotations

import math


class RunningStats:
    """Mean and variance of every amount seen, plus an exponentially weighted mean."""

    __slots__ = ("alpha", "ewma", "m2", "mean", "n")

    def __init__(self, alpha: float, n: int = 0, mean: float = 0.0, m2: float = 0.0, ewma: float = 0.0) -> None:
        self.alpha = alpha
        self.n = n
        self.mean = mean
        self.m2 = m2
        self.ewma = ewma

    def update(self, x: float) -> None:
        n = self.n + 1
        delta = x - self.mean
        self.mean += delta / n
        self.m2 += delta * (x - self.mean)
        self.ewma = x if n == 1 else self.ewma + self.alpha * (x - self.ewma)
        self.n = n

    def std(self) -> float:
        """Sample standard deviation (0 with fewer than two values)."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def __iadd__(self, other: RunningStats) -> RunningStats:
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean, self.m2, self.ewma = other.n, other.mean, other.m2, other.ewma
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.mean += delta * other.n / n
        self.ewma = other.ewma  # the later stream's recent level
        self.n = n
        return self
