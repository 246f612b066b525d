"""What every fraud scenario builder shares: victims' genuine history, the account pool, episode arithmetic.

:class:`GenuineHistory` answers history questions about a victim (how many
rows, merchants already used, median amount); :class:`AccountPool` hands out
victims so that each account suffers one fraud per round; the functions size
scenario budgets into episodes and lay out rows within an episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.rows import Rows
from synthetic.sampling import BoolArray, FloatArray, IntArray


def episode_count(sizes: IntArray, target: float) -> int:
    """How many of the candidate episodes (in order) bring the row count closest to ``target`` (>= 1).

    >>> episode_count(np.array([3, 3, 3]), 7.0)
    2
    """
    if sizes.size == 0:
        return 0
    cum = np.cumsum(sizes)
    return int(np.argmin(np.abs(cum - target))) + 1


def greedy_fill(sizes: IntArray, target: float) -> IntArray:
    """Indices of non-empty candidates, in order, skipping those that would overshoot ``target`` by > 10 %.

    Stops once within 10 % below the target; takes the smallest candidate when none fits.

    >>> greedy_fill(np.array([5, 20, 4, 3]), 10.0).tolist()
    [0, 2]
    """
    chosen: list[int] = []
    total = 0
    for i, size in enumerate(sizes.tolist()):
        if total >= 0.9 * target:
            break
        if size > 0 and total + size <= 1.1 * target:
            chosen.append(i)
            total += size
    if not chosen and np.any(sizes > 0):
        useful = np.flatnonzero(sizes > 0)
        chosen.append(int(useful[np.argmin(sizes[useful])]))
    return np.array(chosen, dtype=np.int64)


def segments(sizes: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """(episode of each row, position within the episode, first row of each episode).

    >>> [a.tolist() for a in segments(np.array([2, 3]))]
    [[0, 0, 1, 1, 1], [0, 1, 0, 1, 2], [0, 2]]
    """
    first = np.cumsum(sizes) - sizes
    episode = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    return episode, np.arange(episode.size, dtype=np.int64) - first[episode], first


def offsets(gaps_ms: IntArray, first: IntArray, episode: IntArray) -> IntArray:
    """Within-episode cumulative offsets: the first row of every episode is at 0.

    >>> episode, _, first = segments(np.array([2, 3]))
    >>> offsets(np.array([5, 7, 9, 4, 6]), first, episode).tolist()
    [0, 7, 0, 4, 10]
    """
    gaps_ms = gaps_ms.copy()
    gaps_ms[first] = 0
    cum = np.cumsum(gaps_ms)
    return cum - cum[first][episode]


@dataclass(frozen=True)
class GenuineHistory:
    """Genuine rows grouped by account (contiguous), for history look-ups."""

    rows: Rows
    #: Row range of every account: rows[first[a]:first[a + 1]].
    first: IntArray

    @classmethod
    def of(cls, rows: Rows, accounts: int) -> GenuineHistory:
        return cls(rows, np.searchsorted(rows.account, np.arange(accounts + 1)).astype(np.int64))

    def count(self, account: IntArray) -> IntArray:
        return self.first[account + 1] - self.first[account]

    def used(self, account: IntArray, merchant: IntArray) -> BoolArray:
        """Whether each account already paid at the paired merchant (one check per episode: cheap)."""
        rows = self.rows.merchant
        return np.array(
            [
                m in rows[self.first[a] : self.first[a + 1]]
                for a, m in zip(account.tolist(), merchant.tolist(), strict=True)
            ],
            dtype=bool,
        )

    def median_amount(self, account: IntArray) -> FloatArray:
        """Each account's median genuine amount (a few hundred accounts: a loop is cheap)."""
        amount = self.rows.amount
        return np.array([np.median(amount[self.first[a] : self.first[a + 1]]) for a in account.tolist()])


class AccountPool:
    """Accounts available to fraud episodes, in a random order.

    Each eligible account serves one episode per round; when a scenario needs
    more accounts than are left (very high fraud rates), a new round starts
    and accounts may suffer a second fraud.
    """

    def __init__(self, rng: np.random.Generator, eligible: BoolArray) -> None:
        self._eligible = eligible.copy()
        self._order = rng.permutation(np.flatnonzero(eligible))
        self._free = eligible.copy()

    @property
    def free(self) -> BoolArray:
        """Mask of accounts still available in this round."""
        return self._free

    def candidates(self, ok: BoolArray | None = None) -> IntArray:
        """Available accounts (with ``ok`` set, when given) in the pool's random order; none marked."""
        order: IntArray = self._order[self._free[self._order]]
        chosen: IntArray = order if ok is None else order[ok[order]]
        return chosen

    def take(self, k: int, ok: BoolArray | None = None) -> IntArray:
        """Up to ``k`` distinct accounts, marked used (starting a new round if this one runs out)."""
        chosen = self.candidates(ok)[:k]
        self.mark(chosen)
        if chosen.size < k:
            self.new_round(exclude=chosen)
            more = self.candidates(ok)[: k - chosen.size]
            self.mark(more)
            chosen = np.concatenate([chosen, more])
        return chosen

    def mark(self, accounts: IntArray) -> None:
        self._free[accounts] = False

    def new_round(self, exclude: IntArray) -> None:
        """Make every eligible account available again, except ``exclude``."""
        self._free = self._eligible.copy()
        self._free[exclude] = False
