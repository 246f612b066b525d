"""The generated period and the daily rhythm of spending.

:class:`Clock` turns ``GeneratorSettings.start`` and ``days`` into the period
in ms (relative to the start), samples event times that follow the hourly
rhythm in each city's local time with a weekend uplift, and places episodes so
they leave history before them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import numpy as np

from configs.settings import GeneratorSettings
from synthetic.places import CITY_TZ_MS
from synthetic.sampling import DAY_MS, HOUR_MS, FloatArray, IntArray, pick, to_cdf

#: Relative activity by local hour: quiet nights, a lunch and an evening peak.
_HOURLY: Final = (
    0.25, 0.15, 0.10, 0.08, 0.08, 0.15, 0.40, 0.80, 1.10, 1.20, 1.30, 1.60,
    2.00, 1.80, 1.30, 1.20, 1.30, 1.60, 1.90, 2.00, 1.70, 1.20, 0.80, 0.45,
)  # fmt: skip
_WEEKEND_UPLIFT: Final = 1.25


@dataclass(frozen=True)
class Clock:
    """The period in ms relative to ``start_ms``, and the daily rhythm sampler."""

    start_ms: int
    period_ms: int
    #: ms past UTC midnight at the start instant.
    start_of_day_ms: int
    day_cdf: FloatArray
    #: Earliest offset for episodes that need the account's history.
    history_ms: int

    @classmethod
    def of(cls, settings: GeneratorSettings) -> Clock:
        start = settings.start.astimezone(dt.UTC)
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        start_ms = (start - epoch) // dt.timedelta(milliseconds=1)
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        weekday = (start.weekday() + np.arange(settings.days)) % 7
        period_ms = settings.days * DAY_MS
        return cls(
            start_ms=start_ms,
            period_ms=period_ms,
            start_of_day_ms=(start - midnight) // dt.timedelta(milliseconds=1),
            day_cdf=to_cdf(np.where(weekday >= 5, _WEEKEND_UPLIFT, 1.0)),
            history_ms=min(DAY_MS, period_ms // 4),
        )

    def rhythm_times(self, rng: np.random.Generator, city: IntArray, day: IntArray | None = None) -> IntArray:
        """Event times (relative ms) following the daily rhythm in each city's local time.

        ``day`` fixes the local calendar day (times are then clipped into the
        period); else it is drawn with the weekend uplift and times wrap around
        the period, so they always fall inside it.
        """
        n = city.size
        fixed_day = day is not None
        if day is None:
            day = pick(self.day_cdf, rng.random(n))
        hour = pick(_HOURLY_CDF, rng.random(n))
        local_ms = ((hour + rng.random(n)) * HOUR_MS).astype(np.int64)
        t = day * DAY_MS + local_ms - CITY_TZ_MS[city] - self.start_of_day_ms
        times: IntArray = np.clip(t, 0, self.period_ms - 1) if fixed_day else np.mod(t, self.period_ms)
        return times

    def episode_starts(self, rng: np.random.Generator, n: int, duration_ms: int) -> IntArray:
        """Uniform episode start times that leave history before and ``duration_ms`` after."""
        low = self.history_ms
        span = max(self.period_ms - duration_ms - low, 1)
        return low + (rng.random(n) * span).astype(np.int64)


_HOURLY_CDF: Final = to_cdf(_HOURLY)
