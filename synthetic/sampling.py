"""Shared numeric building blocks: array types, time units and the vectorised random draws.

Inverse-CDF sampling (:func:`to_cdf`, :func:`pick`, :func:`pick_rows`) and
location jitter, used by every other module of the generator; no state, no
world knowledge.

>>> to_cdf([1.0, 1.0, 2.0]).tolist()
[0.25, 0.5, 1.0]
>>> pick(to_cdf([1.0, 1.0, 2.0]), np.array([0.1, 0.3, 0.9])).tolist()
[0, 1, 2]
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000


def to_cdf(weights: npt.ArrayLike) -> FloatArray:
    """Cumulative distribution of non-negative weights along the last axis, ending at exactly 1."""
    w = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(w, axis=-1)
    cdf /= cdf[..., -1:]
    cdf[..., -1] = 1.0
    return cdf


def pick(cdf: FloatArray, u: FloatArray) -> IntArray:
    """Inverse-CDF draw from one distribution for every uniform in ``u``."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1).astype(np.int64)


def pick_rows(cdfs: FloatArray, rows: IntArray, u: FloatArray) -> IntArray:
    """Inverse-CDF draw where draw ``i`` uses distribution ``cdfs[rows[i]]``."""
    out = np.zeros(u.size, dtype=np.int64)
    for j in range(cdfs.shape[1] - 1):
        out += u >= cdfs[rows, j]
    return out


def jitter(rng: np.random.Generator, lat: FloatArray, lon: FloatArray, sd_deg: float) -> tuple[FloatArray, FloatArray]:
    """Positions moved by Gaussian noise of ``sd_deg`` degrees, kept within valid latitudes and longitudes."""
    return (
        np.clip(lat + rng.normal(0.0, sd_deg, lat.size), -90.0, 90.0),
        np.clip(lon + rng.normal(0.0, sd_deg, lon.size), -180.0, 180.0),
    )
