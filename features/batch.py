"""Plain values the feature engine hands out: counters and micro-batch results.

Kept out of the compiled kernel so that the pure-Python and compiled engines
share these classes (a snapshot of one restores into the other).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EngineStats:
    """Counters an operator wants to see (all monotonic)."""

    events: int = 0
    late_events: int = 0
    labels: int = 0
    labels_unmatched: int = 0
    expired_accounts: int = 0
    truncated_events: int = 0


@dataclass
class FeatureBatch:
    """Feature vectors of a micro-batch, rows in input order."""

    values: np.ndarray
    late: np.ndarray
    names: tuple[str, ...]
    version: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)
