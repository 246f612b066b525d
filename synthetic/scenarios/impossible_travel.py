"""The ``impossible_travel`` scenario: POS payments 3,000+ km away minutes after a genuine one at home."""

from __future__ import annotations

from typing import Final

import numpy as np

from synthetic.categories import category_codes, round_amounts
from synthetic.clock import Clock
from synthetic.places import CITY_COUNTRY, FAR_CDF
from synthetic.rows import Rows, fraud_rows
from synthetic.sampling import HOUR_MS, MINUTE_MS, pick, pick_rows, to_cdf
from synthetic.scenarios.episodes import AccountPool, GenuineHistory, episode_count, offsets, segments
from synthetic.world import World

#: What the card buys far away, and how often each.
_SHOP_CATEGORIES: Final = category_codes("retail", "electronics", "jewelry", "restaurant", "fuel", "cash")
_SHOP_CDF: Final = to_cdf([0.3, 0.25, 0.1, 0.1, 0.1, 0.15])


def impossible_travel(
    rng: np.random.Generator, world: World, clock: Clock, genuine: GenuineHistory, pool: AccountPool, target: float
) -> Rows:
    """Minutes after a genuine POS payment at home, 1–3 POS payments 3,000+ km away."""
    n_cand = int(target / 2.0 * 1.5) + 4
    sizes = rng.integers(1, 4, n_cand)
    k = episode_count(sizes, target)
    g = genuine.rows
    # Anchors: a random genuine POS row of the account after the history period.
    possible = ~g.ecom & (g.time_ms >= clock.history_ms) & (g.time_ms < clock.period_ms - 4 * HOUR_MS)
    possible_count = np.bincount(g.account[possible], minlength=world.accounts)
    account = pool.take(k, ok=possible_count > 0)
    rank = (rng.random(account.size) * possible_count[account]).astype(np.int64)
    possible_cum = np.cumsum(possible)
    first_row = genuine.first[account]
    before = np.where(first_row > 0, possible_cum[np.maximum(first_row - 1, 0)], 0)
    anchors = np.searchsorted(possible_cum, before + rank + 1, side="left").astype(np.int64)
    k = anchors.size
    sizes = sizes[:k]
    usual = genuine.median_amount(account)
    city_ep = pick_rows(FAR_CDF, world.home_city[account], rng.random(k))

    episode, position, first = segments(sizes)
    n = episode.size
    gaps = np.where(
        position == 0,
        (5 * MINUTE_MS + rng.random(n) * 85 * MINUTE_MS).astype(np.int64),
        (10 * MINUTE_MS + rng.random(n) * 50 * MINUTE_MS).astype(np.int64),
    )
    time_ms = g.time_ms[anchors][episode] + gaps[first][episode] + offsets(gaps, first, episode)
    cat = _SHOP_CATEGORIES[pick(_SHOP_CDF, rng.random(n))]
    merchant = world.merchant_in(rng, city_ep[episode], cat)
    return fraud_rows(
        scenario="impossible_travel",
        episode=episode,
        account=account[episode],
        time_ms=time_ms,
        amount=round_amounts(usual[episode] * (1.0 + 5.0 * rng.random(n)), cat),
        merchant=merchant,
        terminal=world.terminal_of(rng, merchant),
        device=np.full(n, -1, dtype=np.int64),
        lat=world.merchant_lat[merchant],
        lon=world.merchant_lon[merchant],
        country=CITY_COUNTRY[city_ep[episode]],
    )
