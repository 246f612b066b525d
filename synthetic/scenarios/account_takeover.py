"""The ``account_takeover`` scenario: a new device abroad buys expensive things online, on and off for days."""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from synthetic.categories import category_codes, round_amounts
from synthetic.clock import Clock
from synthetic.places import CITY_CDF, CITY_COUNTRY, CITY_LAT, CITY_LON, FOREIGN_CDF
from synthetic.rows import Rows, fraud_rows
from synthetic.sampling import DAY_MS, MINUTE_MS, jitter, pick, pick_rows, to_cdf
from synthetic.scenarios.episodes import AccountPool, GenuineHistory, episode_count, offsets, segments
from synthetic.world import World

#: An account takeover: the takeover session, then the fraudster returns every 1–4 days while it lasts.
_ATO_DAYS: Final = (10.0, 18.0)
_ATO_RETURN_DAYS: Final = (1.0, 4.0)
_ATO_SESSIONS: Final = 1 + math.ceil(_ATO_DAYS[1] / _ATO_RETURN_DAYS[0])
#: What the fraudster buys, and how often each.
_BIG_CATEGORIES: Final = category_codes("electronics", "jewelry", "travel", "retail")
_BIG_CDF: Final = to_cdf([0.4, 0.2, 0.2, 0.2])


def account_takeover(
    rng: np.random.Generator,
    world: World,
    clock: Clock,
    genuine: GenuineHistory,
    pool: AccountPool,
    target: float,
    next_device: int,
) -> tuple[Rows, int]:
    """A new device abroad buys expensive things online, on and off for 10–18 days.

    The takeover session buys 2–4 things within hours; the fraudster then comes
    back every 1–4 days for 1–2 more, until the episode ends (about two weeks,
    so a label arriving a week later still finds the card being abused) or the
    period does. Episodes start so as to fit in the period when they can.
    """
    n_cand = int(target / 5.0) + 8
    duration = ((_ATO_DAYS[0] + (_ATO_DAYS[1] - _ATO_DAYS[0]) * rng.random(n_cand)) * DAY_MS).astype(np.int64)
    room = np.maximum(clock.period_ms - clock.history_ms - duration, 0)
    start = clock.history_ms + (rng.random(n_cand) * room).astype(np.int64)
    low, high = _ATO_RETURN_DAYS
    returns = ((low + (high - low) * rng.random((n_cand, _ATO_SESSIONS))) * DAY_MS).astype(np.int64)
    returns[:, 0] = 0
    session_at = np.cumsum(returns, axis=1)  # offset of every session from the takeover
    live = (session_at <= duration[:, None]) & (start[:, None] + session_at < clock.period_ms)
    buys = rng.integers(1, 3, (n_cand, _ATO_SESSIONS))
    buys[:, 0] = rng.integers(2, 5, n_cand)
    buys[~live] = 0
    k = episode_count(buys.sum(1), target)
    account = pool.take(k, ok=genuine.count(np.arange(world.accounts)) >= 3)
    k = account.size
    usual = genuine.median_amount(account)
    city_ep = pick_rows(FOREIGN_CDF, world.home_city[account], rng.random(k))
    device_ep = next_device + np.arange(k, dtype=np.int64)

    # One segment per (episode, session) with purchases; purchases minutes apart within a session.
    per_session = buys[:k].ravel()
    sessions = np.flatnonzero(per_session)
    segment, _, first = segments(per_session[sessions])
    episode, session = sessions[segment] // _ATO_SESSIONS, sessions[segment] % _ATO_SESSIONS
    n = episode.size
    gaps = (5 * MINUTE_MS + rng.exponential(45 * MINUTE_MS, n)).astype(np.int64)
    time_ms = start[episode] + session_at[episode, session] + offsets(gaps, first, segment)
    cat = _BIG_CATEGORIES[pick(_BIG_CDF, rng.random(n))]
    merchant = world.merchant_in(rng, pick(CITY_CDF, rng.random(n)), cat)
    amount = round_amounts(usual[episode] * (5.0 + 15.0 * rng.random(n)), cat)
    city = city_ep[episode]
    lat, lon = jitter(rng, CITY_LAT[city], CITY_LON[city], 0.1)
    rows = fraud_rows(
        scenario="account_takeover",
        episode=episode,
        account=account[episode],
        time_ms=time_ms,
        amount=amount,
        merchant=merchant,
        terminal=np.full(n, -1, dtype=np.int64),
        device=device_ep[episode],
        lat=lat,
        lon=lon,
        country=CITY_COUNTRY[city],
    )
    return rows, next_device + k
