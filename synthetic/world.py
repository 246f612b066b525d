"""The generated world: accounts, merchants, terminals and devices.

:func:`build_world` draws accounts (home, wealth, category preferences,
activity rate, e-commerce habit, usual merchants, devices) and merchants in
every (city, category) cell with their terminals; :class:`World` holds them as
index-aligned arrays and picks merchants, terminals and devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from synthetic.categories import CATEGORIES
from synthetic.places import CITIES, CITY_LAT, CITY_LON, HOME_CDF, home_weights
from synthetic.sampling import FloatArray, IntArray, jitter, pick, pick_rows, to_cdf

#: Most usual merchants an account has (each has 8 to MAX_USUAL).
MAX_USUAL: Final = 12
_MERCHANT_SKEW: Final = 1.5  # u ** skew: lower-indexed merchants of a cell are busier


@dataclass(frozen=True)
class World:
    """Accounts, merchants, terminals and devices as index-aligned arrays."""

    home_city: IntArray
    home_lat: FloatArray
    home_lon: FloatArray
    wealth: FloatArray
    #: Per-account cumulative category preferences, shape (accounts, categories).
    pref_cdf: FloatArray
    rate_per_day: FloatArray
    ecom_propensity: FloatArray
    #: Usual merchants, shape (accounts, MAX_USUAL); only the first ``usual_count`` are used.
    usual: IntArray
    usual_count: IntArray
    device_start: IntArray
    device_count: IntArray
    merchant_city: IntArray
    merchant_cat: IntArray
    merchant_lat: FloatArray
    merchant_lon: FloatArray
    terminal_start: IntArray
    terminal_count: IntArray
    #: First merchant and number of merchants of every (city, category) cell.
    cell_start: IntArray
    cell_count: IntArray

    @property
    def accounts(self) -> int:
        return int(self.home_city.size)

    @property
    def account_devices(self) -> int:
        return int(self.device_count.sum())

    @property
    def terminals(self) -> int:
        return int(self.terminal_count.sum())

    def merchant_in(self, rng: np.random.Generator, city: IntArray, cat: IntArray) -> IntArray:
        """A merchant of each (city, category), busier merchants more often."""
        cell = city * len(CATEGORIES) + cat
        u = rng.random(cell.size) ** _MERCHANT_SKEW
        merchant: IntArray = self.cell_start[cell] + (u * self.cell_count[cell]).astype(np.int64)
        return merchant

    def terminal_of(self, rng: np.random.Generator, merchant: IntArray) -> IntArray:
        """One of each merchant's terminals."""
        u = rng.random(merchant.size)
        return self.terminal_start[merchant] + (u * self.terminal_count[merchant]).astype(np.int64)

    def device_of(self, rng: np.random.Generator, account: IntArray) -> IntArray:
        """One of each account's own devices, the first (the phone) most often."""
        u = rng.random(account.size) ** 2
        return self.device_start[account] + (u * self.device_count[account]).astype(np.int64)


def build_world(rng: np.random.Generator, n: int) -> World:
    n_city, n_cat = len(CITIES), len(CATEGORIES)
    home_city = pick(HOME_CDF, rng.random(n))
    home_lat, home_lon = jitter(rng, CITY_LAT[home_city], CITY_LON[home_city], 0.08)
    wealth = rng.lognormal(0.0, 0.45, n)
    prefs = rng.gamma(np.array([c.share for c in CATEGORIES]) * 8.0, 1.0, (n, n_cat)) + 1e-12
    pref_cdf = to_cdf(prefs)
    rate = rng.lognormal(math.log(2.5), 0.5, n)
    ecom_propensity = rng.beta(2.0, 2.5, n)

    # Merchants: at least one per (city, category) cell, about one per ten accounts.
    home_w = home_weights() / home_weights().sum()
    city_w = 0.85 * home_w + 0.15 / n_city
    cell_w = (city_w[:, None] * np.array([c.merchants for c in CATEGORIES])[None, :]).ravel()
    n_cells = n_city * n_cat
    n_merchants = max(n_cells, round(n / 10))
    cell_count = 1 + rng.multinomial(n_merchants - n_cells, cell_w / cell_w.sum()).astype(np.int64)
    cell_start = np.cumsum(cell_count) - cell_count
    merchant_cell = np.repeat(np.arange(n_cells, dtype=np.int64), cell_count)
    merchant_city, merchant_cat = merchant_cell // n_cat, merchant_cell % n_cat
    merchant_lat, merchant_lon = jitter(rng, CITY_LAT[merchant_city], CITY_LON[merchant_city], 0.06)
    terminal_count = rng.integers(1, 6, n_merchants).astype(np.int64)
    terminal_start = np.cumsum(terminal_count) - terminal_count

    # Usual merchants in the home city, chosen by the account's category preferences.
    usual_count = rng.integers(8, MAX_USUAL + 1, n).astype(np.int64)
    usual = np.empty((n, MAX_USUAL), dtype=np.int64)
    accounts = np.arange(n, dtype=np.int64)
    for slot in range(MAX_USUAL):
        cat = pick_rows(pref_cdf, accounts, rng.random(n))
        cell = home_city * n_cat + cat
        u = rng.random(n) ** _MERCHANT_SKEW
        usual[:, slot] = cell_start[cell] + (u * cell_count[cell]).astype(np.int64)

    device_count = 1 + pick(to_cdf([0.5, 0.35, 0.15]), rng.random(n))
    device_start = np.cumsum(device_count) - device_count
    return World(
        home_city=home_city,
        home_lat=home_lat,
        home_lon=home_lon,
        wealth=wealth,
        pref_cdf=pref_cdf,
        rate_per_day=rate,
        ecom_propensity=ecom_propensity,
        usual=usual,
        usual_count=usual_count,
        device_start=device_start,
        device_count=device_count,
        merchant_city=merchant_city,
        merchant_cat=merchant_cat,
        merchant_lat=merchant_lat,
        merchant_lon=merchant_lon,
        terminal_start=terminal_start,
        terminal_count=terminal_count,
        cell_start=cell_start,
        cell_count=cell_count,
    )
