"""The ``card_testing`` scenario: bursts of tiny amounts at new merchants, then a few real purchases."""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from synthetic.categories import CATEGORY_INDEX, category_codes, round_amounts
from synthetic.clock import Clock
from synthetic.places import CITY_CDF, CITY_COUNTRY, CITY_LAT, CITY_LON
from synthetic.rows import Rows, fraud_rows
from synthetic.sampling import HOUR_MS, MINUTE_MS, BoolArray, IntArray, jitter, pick, to_cdf
from synthetic.scenarios.episodes import AccountPool, GenuineHistory, episode_count, offsets, segments
from synthetic.world import World

#: Categories where stolen cards are tested, and how often each.
_TEST_CATEGORIES: Final = category_codes("online_services", "entertainment", "retail", "electronics")
_TEST_CDF: Final = to_cdf([0.5, 0.2, 0.2, 0.1])


def card_testing(
    rng: np.random.Generator,
    world: World,
    clock: Clock,
    genuine: GenuineHistory,
    pool: AccountPool,
    target: float,
    next_device: int,
) -> tuple[Rows, int]:
    """Bursts of tiny amounts within minutes at new merchants, sometimes followed by real purchases.

    Mostly online from a fraud ring's devices (a few devices test many cards),
    sometimes with a cloned card at terminals of the fraudster's city.
    """
    n_cand = int(target / 15.0 * 1.5) + 4
    tests = rng.integers(5, 26, n_cand)
    follow = pick(to_cdf([0.6, 0.25, 0.15]), rng.random(n_cand))
    k = episode_count(tests + follow, target)
    account = pool.take(k)
    k = account.size
    tests, follow = tests[:k], follow[:k]
    ecom_ep = rng.random(k) < 0.9
    city_ep = pick(CITY_CDF, rng.random(k))
    ring = max(1, math.ceil(k / 4))
    device_ep = next_device + rng.integers(0, ring, k)
    n_merchants = rng.integers(1, 4, k)
    merchants_ep = _test_merchants(rng, world, genuine, account, ecom_ep, city_ep)
    start = clock.episode_starts(rng, k, 3 * HOUR_MS)

    episode, position, first = segments(tests + follow)
    n = episode.size
    is_test = position < tests[episode]
    gaps = np.where(
        is_test,
        (1_000 + rng.exponential(20_000, n)).astype(np.int64),
        (5 * MINUTE_MS + rng.exponential(20 * MINUTE_MS, n)).astype(np.int64),
    )
    time_ms = start[episode] + offsets(gaps, first, episode)
    ecom = ecom_ep[episode]
    buy_cat = np.where(rng.random(n) < 0.6, CATEGORY_INDEX["electronics"], CATEGORY_INDEX["retail"])
    buy_city = np.where(ecom, pick(CITY_CDF, rng.random(n)), city_ep[episode])
    merchant = np.where(
        is_test,
        merchants_ep[episode, position % n_merchants[episode]],
        world.merchant_in(rng, buy_city, buy_cat),
    )
    tiny = np.round(0.01 + rng.random(n) * 1.99, 2)
    amount = np.where(is_test, tiny, round_amounts(rng.lognormal(math.log(250.0), 0.6, n), buy_cat))
    terminal = np.where(ecom, -1, world.terminal_of(rng, merchant))
    ip_lat, ip_lon = jitter(rng, CITY_LAT[city_ep[episode]], CITY_LON[city_ep[episode]], 0.15)
    rows = fraud_rows(
        scenario="card_testing",
        episode=episode,
        account=account[episode],
        time_ms=time_ms,
        amount=amount,
        merchant=merchant,
        terminal=terminal,
        device=np.where(ecom, device_ep[episode], -1),
        lat=np.where(ecom, ip_lat, world.merchant_lat[merchant]),
        lon=np.where(ecom, ip_lon, world.merchant_lon[merchant]),
        country=np.where(ecom, CITY_COUNTRY[city_ep[episode]], CITY_COUNTRY[world.merchant_city[merchant]]),
    )
    return rows, next_device + ring


def _test_merchants(
    rng: np.random.Generator,
    world: World,
    genuine: GenuineHistory,
    account: IntArray,
    ecom_ep: BoolArray,
    city_ep: IntArray,
) -> IntArray:
    """Three merchants per episode to test the card at, each new to the account (known ones are redrawn).

    Online episodes test anywhere, the others in the fraudster's city.
    """
    k = account.size
    merchants_ep = np.empty((k, 3), dtype=np.int64)
    for j in range(3):
        # Merchants new to the account: redraw the few it already knows.
        redraw = np.arange(k)
        for _ in range(10):
            cat = _TEST_CATEGORIES[pick(_TEST_CDF, rng.random(redraw.size))]
            city = np.where(ecom_ep[redraw], pick(CITY_CDF, rng.random(redraw.size)), city_ep[redraw])
            merchants_ep[redraw, j] = world.merchant_in(rng, city, cat)
            redraw = redraw[genuine.used(account[redraw], merchants_ep[redraw, j])]
            if redraw.size == 0:
                break
    return merchants_ep
