"""The ``compromised_terminal`` scenario: every payment at a terminal is fraud while it is compromised.

Unlike the other scenarios it adds no rows: it picks genuine rows to convert.
"""

from __future__ import annotations

import numpy as np

from synthetic.clock import Clock
from synthetic.rows import Rows
from synthetic.sampling import DAY_MS, IntArray
from synthetic.scenarios.episodes import greedy_fill
from synthetic.world import World


def compromised_terminal(
    rng: np.random.Generator, world: World, clock: Clock, rows: Rows, target: float
) -> tuple[IntArray, IntArray]:
    """Terminals compromised for 7–28 days: every payment there in the window is fraud.

    As in Le Borgne et al.'s simulator (*Reproducible Machine Learning for
    Credit Card Fraud Detection*, scenario 2: 28 days), a compromise lasts
    weeks, so the reports of its first victims can mark the terminal while it is
    still compromised. Candidates are ordinary shops (terminals between the
    median and the 80th percentile of traffic, a few payments a day), so one
    scenario budget spreads over several episodes.

    Converts genuine rows in place (amounts inflated); returns the converted
    row indices and their episode (0-based within this scenario).
    """
    traffic = np.bincount(rows.terminal[rows.terminal >= 0], minlength=world.terminals)
    active = np.flatnonzero(traffic > 0)
    if active.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    low, high = np.quantile(traffic[active], [0.5, 0.8])
    busy = active[(traffic[active] >= low) & (traffic[active] <= high)]
    per_window = traffic[busy].mean() / (clock.period_ms / DAY_MS) * 17.5
    n_cand = min(busy.size, int(target / max(per_window, 1.0) * 4) + 16)
    candidates = rng.permutation(busy)[:n_cand]
    length = np.minimum(((7.0 + 21.0 * rng.random(n_cand)) * DAY_MS).astype(np.int64), clock.period_ms)
    span = np.maximum(clock.period_ms - length - clock.history_ms, 1)
    start = np.where(
        clock.period_ms - length > clock.history_ms,
        clock.history_ms + (rng.random(n_cand) * span).astype(np.int64),
        0,
    )
    # Rows at candidate terminals, sorted by (terminal, time).
    sub = np.flatnonzero(np.isin(rows.terminal, candidates))
    sub = sub[np.lexsort((rows.time_ms[sub], rows.terminal[sub]))]
    sub_terminal, sub_time = rows.terminal[sub], rows.time_ms[sub]
    hits: list[IntArray] = []
    for c in range(n_cand):
        lo, hi = (
            np.searchsorted(sub_terminal, candidates[c], "left"),
            np.searchsorted(sub_terminal, candidates[c], "right"),
        )
        t = sub_time[lo:hi]
        a, b = np.searchsorted(t, start[c], "left"), np.searchsorted(t, start[c] + length[c], "left")
        hits.append(sub[lo + a : lo + b])
    sizes = np.array([h.size for h in hits], dtype=np.int64)
    chosen = greedy_fill(sizes, target)
    index = np.concatenate([hits[c] for c in chosen]) if chosen.size else np.empty(0, dtype=np.int64)
    episode = np.repeat(np.arange(chosen.size, dtype=np.int64), sizes[chosen])
    return index, episode
