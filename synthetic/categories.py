"""Merchant categories and the amounts paid in them.

Owns the category table (purchase share, amount median and spread, online
propensity, merchant density), and the lognormal amount draw and rounding
(cents; cash in tens) that genuine spending and every scenario use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from synthetic.sampling import FloatArray, IntArray


@dataclass(frozen=True)
class Category:
    name: str
    #: Mean share of an account's purchases (Dirichlet mean of preferences).
    share: float
    #: Median amount for a wealth factor of 1, and the log-sd around it.
    median: float
    sigma: float
    #: Propensity to be paid online (0: never).
    ecom: float
    #: Relative number of merchants.
    merchants: float


CATEGORIES: Final = (
    Category("grocery", 0.22, 35.0, 0.7, 0.08, 1.6),
    Category("restaurant", 0.16, 28.0, 0.6, 0.05, 1.8),
    Category("fuel", 0.08, 45.0, 0.4, 0.0, 0.6),
    Category("retail", 0.12, 50.0, 0.9, 0.35, 1.6),
    Category("electronics", 0.03, 180.0, 1.0, 0.55, 0.5),
    Category("travel", 0.02, 300.0, 0.9, 0.7, 0.4),
    Category("online_services", 0.12, 15.0, 0.8, 1.0, 0.6),
    Category("entertainment", 0.06, 30.0, 0.7, 0.45, 0.8),
    Category("health", 0.05, 40.0, 0.8, 0.15, 0.7),
    Category("jewelry", 0.01, 250.0, 1.0, 0.25, 0.3),
    Category("utilities", 0.05, 80.0, 0.5, 0.8, 0.2),
    Category("cash", 0.08, 100.0, 0.6, 0.0, 0.6),
)

#: Code of each category by name: its index in CATEGORIES.
CATEGORY_INDEX: Final = {c.name: i for i, c in enumerate(CATEGORIES)}

_CAT_LOG_MEDIAN: Final = np.log([c.median for c in CATEGORIES])
_CAT_SIGMA: Final = np.array([c.sigma for c in CATEGORIES])
CATEGORY_ECOM: Final = np.array([c.ecom for c in CATEGORIES])
_CASH: Final = CATEGORY_INDEX["cash"]


def round_amounts(x: FloatArray, cat: IntArray) -> FloatArray:
    """Cents, cash to multiples of 10, within [0.01, 1e6]."""
    x = np.clip(x, 0.01, 1e6)
    return np.where(cat == _CASH, np.maximum(10.0, np.round(x / 10.0) * 10.0), np.round(x, 2))


def amounts(rng: np.random.Generator, cat: IntArray, scale: FloatArray) -> FloatArray:
    """Lognormal amounts by category, scaled by the account's wealth."""
    x = scale * np.exp(_CAT_LOG_MEDIAN[cat] + _CAT_SIGMA[cat] * rng.standard_normal(cat.size))
    return round_amounts(x, cat)


def category_codes(*names: str) -> IntArray:
    """The codes of the named categories, in the order given.

    >>> category_codes("grocery", "cash").tolist()
    [0, 11]
    """
    return np.array([CATEGORY_INDEX[name] for name in names], dtype=np.int64)
