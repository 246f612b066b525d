"""The ``bust_out`` scenario: an account ramps up its spending for days, maxes out, then goes silent."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import numpy as np

from synthetic.categories import CATEGORY_ECOM, category_codes, round_amounts
from synthetic.clock import Clock
from synthetic.places import CITY_CDF, CITY_COUNTRY
from synthetic.rows import Rows, fraud_rows
from synthetic.sampling import DAY_MS, HOUR_MS, FloatArray, IntArray, jitter, pick, to_cdf
from synthetic.scenarios.episodes import AccountPool, GenuineHistory, episode_count
from synthetic.world import World

_RAMP_MAX_DAYS: Final = 12
#: What ramp and max-out purchases buy, and how often each.
_RAMP_CATEGORIES: Final = category_codes("retail", "electronics", "restaurant", "entertainment", "travel", "jewelry")
_RAMP_CDF: Final = to_cdf([0.35, 0.2, 0.15, 0.1, 0.1, 0.1])
_MAXOUT_CATEGORIES: Final = category_codes("electronics", "jewelry", "travel")
_MAXOUT_CDF: Final = to_cdf([0.5, 0.3, 0.2])


@dataclass(frozen=True)
class _Plan:
    """Candidate bust-outs, index-aligned, drawn before their accounts are chosen."""

    ramp_days: IntArray
    max_days: IntArray
    #: Purchases on each ramp day, shape (candidates, _RAMP_MAX_DAYS); 0 past the ramp.
    ramp_counts: IntArray
    #: Purchases of the max-out.
    maxout: IntArray
    #: Calendar day (from the start) of the first ramp purchase.
    first_day: IntArray

    def head(self, k: int) -> _Plan:
        """The first ``k`` candidates."""
        return _Plan(**{f.name: getattr(self, f.name)[:k] for f in fields(self)})


@dataclass(frozen=True)
class _Purchases:
    """Purchases of one phase (ramp or max-out), index-aligned; amounts not yet rounded."""

    episode: IntArray
    time_ms: IntArray
    cat: IntArray
    amount: FloatArray


def bust_out(
    rng: np.random.Generator, world: World, clock: Clock, genuine: GenuineHistory, pool: AccountPool, target: float
) -> tuple[Rows, IntArray, IntArray]:
    """An account ramps its spending over 5–12 days, then maxes out in 1–2 days.

    Returns the fraud rows, the accounts and when each goes silent (right
    after its last max-out purchase).
    """
    n_cand = int(target / 30.0 * 1.5) + 4
    plan = _plan(rng, clock.period_ms // DAY_MS, n_cand)
    k = episode_count(plan.ramp_counts.sum(1) + plan.maxout, target)
    account = _victims(world, genuine, pool, plan.first_day, k)
    k = account.size
    plan = plan.head(k)
    usual = genuine.median_amount(account)
    ramp = _ramp(rng, world, clock, account, usual, plan)
    maxout = _maxout(rng, clock, usual, plan, ramp)

    episode = np.concatenate([ramp.episode, maxout.episode])
    cat = np.concatenate([ramp.cat, maxout.cat])
    n = episode.size
    acc = account[episode]
    ecom = rng.random(n) < np.maximum(CATEGORY_ECOM[cat], 0.3)
    city = np.where(ecom, pick(CITY_CDF, rng.random(n)), world.home_city[acc])
    merchant = world.merchant_in(rng, city, cat)
    ip_lat, ip_lon = jitter(rng, world.home_lat[acc], world.home_lon[acc], 0.15)
    rows = fraud_rows(
        scenario="bust_out",
        episode=episode,
        account=acc,
        time_ms=np.minimum(np.concatenate([ramp.time_ms, maxout.time_ms]), clock.period_ms - 1),
        amount=round_amounts(np.concatenate([ramp.amount, maxout.amount]), cat),
        merchant=merchant,
        terminal=np.where(ecom, -1, world.terminal_of(rng, merchant)),
        device=np.where(ecom, world.device_of(rng, acc), -1),
        lat=np.where(ecom, ip_lat, world.merchant_lat[merchant]),
        lon=np.where(ecom, ip_lon, world.merchant_lon[merchant]),
        country=np.where(ecom, CITY_COUNTRY[world.home_city[acc]], CITY_COUNTRY[world.merchant_city[merchant]]),
    )
    last_event = np.zeros(k, dtype=np.int64)
    np.maximum.at(last_event, episode, rows.time_ms)
    return rows, account, last_event + 1


def _plan(rng: np.random.Generator, days: int, n_cand: int) -> _Plan:
    """Draw ``n_cand`` candidate bust-outs that fit in ``days``: ramp of 5–12 days, max-out of 1–2."""
    max_days = rng.integers(1, 3, n_cand)
    ramp_days = np.clip(rng.integers(5, _RAMP_MAX_DAYS + 1, n_cand), 1, np.maximum(1, days - 1 - max_days))
    day = np.arange(_RAMP_MAX_DAYS)[None, :]
    progress = (day + 1) / ramp_days[:, None]
    ramp_counts = np.where(day < ramp_days[:, None], rng.poisson(1.0 + 3.0 * np.minimum(progress, 1.0)), 0)
    maxout = rng.integers(5, 16, n_cand)
    span = np.maximum(days - ramp_days - max_days, 1)
    first_day = np.minimum(1 + (rng.random(n_cand) * (span - 1)).astype(np.int64), max(days - 1, 0))
    return _Plan(ramp_days=ramp_days, max_days=max_days, ramp_counts=ramp_counts, maxout=maxout, first_day=first_day)


def _victims(world: World, genuine: GenuineHistory, pool: AccountPool, first_day: IntArray, k: int) -> IntArray:
    """Up to ``k`` accounts, marked used, the ``i``-th with 3+ genuine rows before ``first_day[i]``.

    Takes them in the pool's order, starting one new round if this one runs out.
    """
    chosen: list[int] = []
    with_history = genuine.count(np.arange(world.accounts)) >= 5
    for round_ in range(2):
        for a in pool.candidates(ok=with_history).tolist():
            if len(chosen) == k:
                break
            times = genuine.rows.time_ms[genuine.first[a] : genuine.first[a + 1]]
            if int(np.count_nonzero(times < first_day[len(chosen)] * DAY_MS)) >= 3:
                chosen.append(a)
        pool.mark(np.array(chosen, dtype=np.int64))
        if len(chosen) == k or round_ == 1:
            break
        pool.new_round(exclude=np.array(chosen, dtype=np.int64))
    return np.array(chosen, dtype=np.int64)


def _ramp(
    rng: np.random.Generator, world: World, clock: Clock, account: IntArray, usual: FloatArray, plan: _Plan
) -> _Purchases:
    """Ramp purchases: more transactions, rising amounts, on the usual devices and in the home city."""
    ep_day = np.repeat(np.arange(account.size * _RAMP_MAX_DAYS), plan.ramp_counts.ravel())
    ramp_ep, ramp_day = ep_day // _RAMP_MAX_DAYS, ep_day % _RAMP_MAX_DAYS
    home = world.home_city[account]
    ramp_time = clock.rhythm_times(rng, home[ramp_ep], (plan.first_day[ramp_ep] + ramp_day))
    ramp_progress = (ramp_day + 1) / plan.ramp_days[ramp_ep]
    ramp_cat = _RAMP_CATEGORIES[pick(_RAMP_CDF, rng.random(ramp_ep.size))]
    ramp_amount = usual[ramp_ep] * np.maximum(1.5 + 2.5 * ramp_progress + rng.normal(0, 0.3, ramp_ep.size), 1.5)
    return _Purchases(episode=ramp_ep, time_ms=ramp_time, cat=ramp_cat, amount=ramp_amount)


def _maxout(rng: np.random.Generator, clock: Clock, usual: FloatArray, plan: _Plan, ramp: _Purchases) -> _Purchases:
    """Max-out purchases: 5–15 big purchases within 1–2 days after the ramp."""
    max_ep = np.repeat(np.arange(plan.maxout.size), plan.maxout)
    max_start = (plan.first_day + plan.ramp_days) * DAY_MS  # after the last ramp purchase, whatever the time zone
    np.maximum.at(max_start, ramp.episode, ramp.time_ms + HOUR_MS)
    max_span = np.maximum(np.minimum(plan.max_days * DAY_MS, clock.period_ms - 1 - max_start), 1)
    max_time = max_start[max_ep] + (rng.random(max_ep.size) * max_span[max_ep]).astype(np.int64)
    max_cat = _MAXOUT_CATEGORIES[pick(_MAXOUT_CDF, rng.random(max_ep.size))]
    max_amount = usual[max_ep] * (8.0 + 17.0 * rng.random(max_ep.size))
    return _Purchases(episode=max_ep, time_ms=max_time, cat=max_cat, amount=max_amount)
