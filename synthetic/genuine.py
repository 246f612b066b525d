"""Genuine spending: each account's daily purchases, and trips away from home.

:func:`genuine_rows` draws purchases at the account's usual merchants (or, less
often, any merchant of a preferred category), in the daily rhythm, online or at
a terminal; :func:`apply_travel` sends a few accounts on a trip, with flights
long enough that geographic novelty alone is never impossible.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from synthetic.categories import CATEGORY_ECOM, amounts
from synthetic.clock import Clock
from synthetic.places import CITY_CDF, CITY_COUNTRY, CITY_KM, CITY_LAT, CITY_LON, TRIP_CDF
from synthetic.rows import Rows
from synthetic.sampling import DAY_MS, HOUR_MS, BoolArray, FloatArray, IntArray, jitter, pick, pick_rows, to_cdf
from synthetic.world import MAX_USUAL, World

#: Share of purchases made at one of the account's usual merchants.
_P_USUAL: Final = 0.75
#: Chance per account and day of leaving on a trip; flights take distance / speed + 1.5 h.
_TRIP_RATE_PER_DAY: Final = 0.0015
_FLIGHT_KMH: Final = 800.0

#: Zipf-like weights over the usual-merchant slots, one CDF per number of usual merchants.
_USUAL_CDF: Final = {k: to_cdf(1.0 / np.arange(1, k + 1, dtype=np.float64)) for k in range(8, MAX_USUAL + 1)}


def _p_ecom(world: World, cat: IntArray, account: IntArray) -> FloatArray:
    return CATEGORY_ECOM[cat] * np.minimum(1.0, 2.0 * world.ecom_propensity[account])


def genuine_rows(rng: np.random.Generator, world: World, clock: Clock, days: int) -> Rows:
    counts = rng.poisson(world.rate_per_day * days)
    account = np.repeat(np.arange(world.accounts, dtype=np.int64), counts)
    n = account.size
    home = world.home_city[account]
    time_ms = clock.rhythm_times(rng, home)

    merchant = np.empty(n, dtype=np.int64)
    cat = np.empty(n, dtype=np.int64)
    usual = rng.random(n) < _P_USUAL
    iu, io = np.flatnonzero(usual), np.flatnonzero(~usual)
    au, ao = account[iu], account[io]
    slot = np.empty(iu.size, dtype=np.int64)
    k_of_row = world.usual_count[au]
    u = rng.random(iu.size)
    for k, cdf in _USUAL_CDF.items():
        rows = k_of_row == k
        slot[rows] = pick(cdf, u[rows])
    merchant[iu] = world.usual[au, slot]
    cat[iu] = world.merchant_cat[merchant[iu]]
    cat[io] = pick_rows(world.pref_cdf, ao, rng.random(io.size))

    ecom = rng.random(n) < _p_ecom(world, cat, account)
    # Other merchants: anywhere when paid online, else in the home city.
    city_o = np.where(ecom[io], pick(CITY_CDF, rng.random(io.size)), world.home_city[ao])
    merchant[io] = world.merchant_in(rng, city_o, cat[io])

    amount = amounts(rng, cat, world.wealth[account])
    terminal = np.where(ecom, -1, world.terminal_of(rng, merchant))
    device = np.where(ecom, world.device_of(rng, account), -1)
    ip_lat, ip_lon = jitter(rng, world.home_lat[account], world.home_lon[account], 0.15)
    lat = np.where(ecom, ip_lat, world.merchant_lat[merchant])
    lon = np.where(ecom, ip_lon, world.merchant_lon[merchant])
    country = np.where(ecom, CITY_COUNTRY[home], CITY_COUNTRY[world.merchant_city[merchant]])
    return Rows(
        account=account,
        time_ms=time_ms,
        amount=amount,
        merchant=merchant,
        terminal=terminal,
        device=device,
        ecom=ecom,
        lat=lat,
        lon=lon,
        country=country,
        scenario=np.full(n, -1, dtype=np.int64),
        episode=np.full(n, -1, dtype=np.int64),
    )


def apply_travel(rng: np.random.Generator, world: World, clock: Clock, rows: Rows) -> tuple[Rows, BoolArray]:
    """Send a few accounts on a trip; returns the new rows and the traveller mask.

    While away, POS spending happens at merchants of the destination city and
    online spending geolocates there; no spending happens during the flights,
    which take long enough that the implied speed stays below 1,000 km/h.
    """
    p_trip = 1.0 - math.exp(-_TRIP_RATE_PER_DAY * clock.period_ms / DAY_MS)
    traveller = rng.random(world.accounts) < p_trip
    trips = np.flatnonzero(traveller)
    n_trips = trips.size
    depart = (rng.random(n_trips) * max(clock.period_ms - DAY_MS, 1)).astype(np.int64)
    length = ((2.0 + 5.0 * rng.random(n_trips)) * DAY_MS).astype(np.int64)
    dest = pick_rows(TRIP_CDF, world.home_city[trips], rng.random(n_trips))
    flight = ((CITY_KM[world.home_city[trips], dest] / _FLIGHT_KMH + 1.5) * HOUR_MS).astype(np.int64)

    trip_of = np.full(world.accounts, -1, dtype=np.int64)
    trip_of[trips] = np.arange(n_trips)
    idx = np.flatnonzero(trip_of[rows.account] >= 0)
    trip = trip_of[rows.account[idx]]
    rel = rows.time_ms[idx] - depart[trip]
    flying = ((rel >= 0) & (rel < flight[trip])) | ((rel >= length[trip]) & (rel < length[trip] + flight[trip]))
    away = (rel >= flight[trip]) & (rel < length[trip])

    moved = idx[away]
    city = dest[trip[away]]
    pos = ~rows.ecom[moved]
    cat = world.merchant_cat[rows.merchant[moved]]
    new_merchant = world.merchant_in(rng, city, cat)
    new_terminal = world.terminal_of(rng, new_merchant)
    ip_lat, ip_lon = jitter(rng, CITY_LAT[city], CITY_LON[city], 0.15)
    rows.merchant[moved] = np.where(pos, new_merchant, rows.merchant[moved])
    rows.terminal[moved] = np.where(pos, new_terminal, -1)
    rows.lat[moved] = np.where(pos, world.merchant_lat[new_merchant], ip_lat)
    rows.lon[moved] = np.where(pos, world.merchant_lon[new_merchant], ip_lon)
    rows.country[moved] = CITY_COUNTRY[city]  # the merchant's country, or the geo-IP's

    keep = np.ones(rows.size, dtype=bool)
    keep[idx[flying]] = False
    return rows.take(keep), traveller
