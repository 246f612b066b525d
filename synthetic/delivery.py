"""Delivery order: which rows arrive out of order or late, without changing event times."""

from __future__ import annotations

import math

import numpy as np

from configs.settings import GeneratorSettings
from synthetic.sampling import IntArray


def delivery_order(rng: np.random.Generator, time_ms: IntArray, settings: GeneratorSettings) -> IntArray | None:
    """Row order by delivery time (ties by index), or None when every row is delivered on time.

    ``out_of_order_rate`` of rows are delayed by (0, max_disorder_s], ``late_rate``
    of rows by (max_disorder_s, max_late_s]; event times never change.
    """
    if settings.out_of_order_rate <= 0 and settings.late_rate <= 0:
        return None
    n = time_ms.size
    disorder_ms = max(math.floor(settings.max_disorder_s * 1000.0), 1)
    late_ms = max(math.floor(settings.max_late_s * 1000.0), disorder_ms + 1)
    u = rng.random(n)
    ooo = u < settings.out_of_order_rate
    late = ~ooo & (u < settings.out_of_order_rate + settings.late_rate)
    v = 1.0 - rng.random(n)  # (0, 1]
    delay = np.zeros(n, dtype=np.int64)
    delay[ooo] = np.clip(np.ceil(v[ooo] * disorder_ms), 1, disorder_ms).astype(np.int64)
    delay[late] = disorder_ms + np.clip(np.ceil(v[late] * (late_ms - disorder_ms)), 1, late_ms - disorder_ms).astype(
        np.int64
    )
    return np.argsort(time_ms + delay, kind="stable").astype(np.int64)
