"""A synthetic card-payment world with injected, labelled fraud.

Deterministic by seed (same settings, byte-identical tables), vectorised numpy
throughout, and pure: no Kafka, no clock, no files except in :func:`write_history`.

The world: ~30 real cities in 13 countries (most accounts live in a few home
markets), accounts with a home, devices, a wealth factor, category preferences,
an activity rate, an e-commerce habit and a set of usual merchants; merchants
in every (city, category) cell, each with 1–5 terminals. Genuine spending
follows a daily rhythm in the home time zone with a weekend uplift; a few
accounts travel (POS spending moves to another city, with a plausible flight
in between, so geographic novelty alone is not fraud).

Five fraud scenarios are injected, budgeted so the fraud share of all
transactions is close to ``settings.fraud_rate`` and split by
``settings.scenario_weights``: ``card_testing``, ``account_takeover``,
``impossible_travel``, ``compromised_terminal`` and ``bust_out``. Every
fraudulent row gets a delayed ``fraud`` label (each victim reports a day's fraud at once);
a share of genuine rows get a delayed ``genuine`` label. How late follows
``settings.label_delay``: ``mixed`` calls and chargebacks, a ``fixed`` delay per
transaction, or ``chargeback`` reports only (see :func:`_label_times`); the
transactions are the same whatever the profile.

>>> from configs.settings import GeneratorSettings
>>> history = generate(GeneratorSettings(accounts=300, days=7, seed=1))
>>> history.transactions.schema.equals(HISTORY_SCHEMA), history.labels.schema.equals(LABEL_SCHEMA)
(True, True)
>>> history.transactions.equals(generate(GeneratorSettings(accounts=300, days=7, seed=1)).transactions)
True
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from configs.settings import SCENARIOS, GeneratorSettings
from contracts.arrow import HISTORY_SCHEMA, LABEL_SCHEMA, TIME

__all__ = ["SyntheticHistory", "generate", "write_history"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

# ----------------------------------------------------------------------------- the fixed world tables


@dataclass(frozen=True)
class _City:
    name: str
    country: str
    lat: float
    lon: float
    #: Population in millions (drives merchants, destinations and home choice).
    population: float
    currency: str
    #: Standard-time UTC offset in hours (no daylight saving).
    utc_offset_h: float


_CITIES: Final = (
    _City("New York", "US", 40.7128, -74.0060, 8.3, "USD", -5),
    _City("Los Angeles", "US", 34.0522, -118.2437, 3.9, "USD", -8),
    _City("Chicago", "US", 41.8781, -87.6298, 2.7, "USD", -6),
    _City("Houston", "US", 29.7604, -95.3698, 2.3, "USD", -6),
    _City("San Francisco", "US", 37.7749, -122.4194, 0.8, "USD", -8),
    _City("Miami", "US", 25.7617, -80.1918, 0.45, "USD", -5),
    _City("London", "GB", 51.5074, -0.1278, 9.0, "GBP", 0),
    _City("Manchester", "GB", 53.4808, -2.2426, 0.55, "GBP", 0),
    _City("Edinburgh", "GB", 55.9533, -3.1883, 0.5, "GBP", 0),
    _City("Paris", "FR", 48.8566, 2.3522, 2.1, "EUR", 1),
    _City("Lyon", "FR", 45.7640, 4.8357, 0.52, "EUR", 1),
    _City("Marseille", "FR", 43.2965, 5.3698, 0.87, "EUR", 1),
    _City("Berlin", "DE", 52.5200, 13.4050, 3.7, "EUR", 1),
    _City("Munich", "DE", 48.1351, 11.5820, 1.5, "EUR", 1),
    _City("Hamburg", "DE", 53.5511, 9.9937, 1.8, "EUR", 1),
    _City("Madrid", "ES", 40.4168, -3.7038, 3.3, "EUR", 1),
    _City("Barcelona", "ES", 41.3874, 2.1686, 1.6, "EUR", 1),
    _City("Rome", "IT", 41.9028, 12.4964, 2.8, "EUR", 1),
    _City("Milan", "IT", 45.4642, 9.1900, 1.4, "EUR", 1),
    _City("Amsterdam", "NL", 52.3676, 4.9041, 0.9, "EUR", 1),
    _City("Sao Paulo", "BR", -23.5505, -46.6333, 12.3, "BRL", -3),
    _City("Rio de Janeiro", "BR", -22.9068, -43.1729, 6.7, "BRL", -3),
    _City("Lagos", "NG", 6.5244, 3.3792, 15.4, "NGN", 1),
    _City("Mumbai", "IN", 19.0760, 72.8777, 12.5, "INR", 5.5),
    _City("Delhi", "IN", 28.7041, 77.1025, 16.8, "INR", 5.5),
    _City("Tokyo", "JP", 35.6762, 139.6503, 14.0, "JPY", 9),
    _City("Osaka", "JP", 34.6937, 135.5023, 2.7, "JPY", 9),
    _City("Sydney", "AU", -33.8688, 151.2093, 5.3, "AUD", 10),
    _City("Melbourne", "AU", -37.8136, 144.9631, 5.1, "AUD", 10),
    _City("Toronto", "CA", 43.6532, -79.3832, 2.9, "CAD", -5),
    _City("Vancouver", "CA", 49.2827, -123.1207, 0.7, "CAD", -8),
)

#: How strongly each country is a home market of the issuer (times population).
_HOME_MARKET: Final = (
    ("US", 1.0), ("GB", 1.2), ("FR", 1.0), ("DE", 0.9), ("ES", 0.5), ("IT", 0.4), ("NL", 0.6),
    ("CA", 0.5), ("BR", 0.05), ("NG", 0.03), ("IN", 0.02), ("JP", 0.05), ("AU", 0.1),
)  # fmt: skip


@dataclass(frozen=True)
class _Category:
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


_CATEGORIES: Final = (
    _Category("grocery", 0.22, 35.0, 0.7, 0.08, 1.6),
    _Category("restaurant", 0.16, 28.0, 0.6, 0.05, 1.8),
    _Category("fuel", 0.08, 45.0, 0.4, 0.0, 0.6),
    _Category("retail", 0.12, 50.0, 0.9, 0.35, 1.6),
    _Category("electronics", 0.03, 180.0, 1.0, 0.55, 0.5),
    _Category("travel", 0.02, 300.0, 0.9, 0.7, 0.4),
    _Category("online_services", 0.12, 15.0, 0.8, 1.0, 0.6),
    _Category("entertainment", 0.06, 30.0, 0.7, 0.45, 0.8),
    _Category("health", 0.05, 40.0, 0.8, 0.15, 0.7),
    _Category("jewelry", 0.01, 250.0, 1.0, 0.25, 0.3),
    _Category("utilities", 0.05, 80.0, 0.5, 0.8, 0.2),
    _Category("cash", 0.08, 100.0, 0.6, 0.0, 0.6),
)

#: Relative activity by local hour: quiet nights, a lunch and an evening peak.
_HOURLY: Final = (
    0.25, 0.15, 0.10, 0.08, 0.08, 0.15, 0.40, 0.80, 1.10, 1.20, 1.30, 1.60,
    2.00, 1.80, 1.30, 1.20, 1.30, 1.60, 1.90, 2.00, 1.70, 1.20, 0.80, 0.45,
)  # fmt: skip
_WEEKEND_UPLIFT: Final = 1.25

_CHANNELS: Final = ("pos", "ecom")
_MAX_USUAL: Final = 12
_P_USUAL: Final = 0.75
_MERCHANT_SKEW: Final = 1.5  # u ** skew: lower-indexed merchants of a cell are busier
_TRIP_RATE_PER_DAY: Final = 0.0015
_FLIGHT_KMH: Final = 800.0

_CAT = {c.name: i for i, c in enumerate(_CATEGORIES)}
_SCENARIO = {name: i for i, name in enumerate(SCENARIOS)}
_COUNTRIES: Final = tuple(sorted({c.country for c in _CITIES}))
_CURRENCY_OF_COUNTRY: Final = tuple(next(c.currency for c in _CITIES if c.country == k) for k in _COUNTRIES)

_CITY_LAT: Final = np.array([c.lat for c in _CITIES])
_CITY_LON: Final = np.array([c.lon for c in _CITIES])
_CITY_POP: Final = np.array([c.population for c in _CITIES])
_CITY_COUNTRY: Final = np.array([_COUNTRIES.index(c.country) for c in _CITIES], dtype=np.int64)
_CITY_TZ_MS: Final = np.array([round(c.utc_offset_h * HOUR_MS) for c in _CITIES], dtype=np.int64)
_CAT_LOG_MEDIAN: Final = np.log([c.median for c in _CATEGORIES])
_CAT_SIGMA: Final = np.array([c.sigma for c in _CATEGORIES])
_CAT_ECOM: Final = np.array([c.ecom for c in _CATEGORIES])
_CASH: Final = _CAT["cash"]


def _haversine_km(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    """Great-circle distance in km (vectorised)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


_CITY_KM: Final = _haversine_km(_CITY_LAT[:, None], _CITY_LON[:, None], _CITY_LAT[None, :], _CITY_LON[None, :])


def _cdf(weights: npt.ArrayLike) -> FloatArray:
    """Cumulative distribution of non-negative weights along the last axis, ending at exactly 1."""
    w = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(w, axis=-1)
    cdf /= cdf[..., -1:]
    cdf[..., -1] = 1.0
    return cdf


def _pick(cdf: FloatArray, u: FloatArray) -> IntArray:
    """Inverse-CDF draw from one distribution for every uniform in ``u``."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1).astype(np.int64)


def _pick_rows(cdfs: FloatArray, rows: IntArray, u: FloatArray) -> IntArray:
    """Inverse-CDF draw where draw ``i`` uses distribution ``cdfs[rows[i]]``."""
    out = np.zeros(u.size, dtype=np.int64)
    for j in range(cdfs.shape[1] - 1):
        out += u >= cdfs[rows, j]
    return out


def _home_weights() -> FloatArray:
    market = dict(_HOME_MARKET)
    return _CITY_POP * np.array([market[c.country] for c in _CITIES])


_HOME_CDF: Final = _cdf(_home_weights())
_CITY_CDF: Final = _cdf(_CITY_POP)
_SAME_COUNTRY: Final = _CITY_COUNTRY[:, None] == _CITY_COUNTRY[None, :]


def _trip_weights() -> FloatArray:
    """Trip destinations by home city: half domestic (when there is another city), half abroad."""
    domestic = (_SAME_COUNTRY & ~np.eye(len(_CITIES), dtype=bool)) * _CITY_POP
    abroad = ~_SAME_COUNTRY * _CITY_POP
    domestic_total = domestic.sum(1, keepdims=True)
    share = np.divide(domestic, domestic_total, out=np.zeros_like(domestic), where=domestic_total > 0)
    return 0.5 * share + 0.5 * abroad / abroad.sum(1, keepdims=True)


_TRIP_CDF: Final = _cdf(_trip_weights())
#: Cities in another country than the home city (account takeover), by population.
_FOREIGN_CDF: Final = _cdf(~_SAME_COUNTRY * _CITY_POP)
#: Cities at least 3,000 km away (impossible travel), by population.
_FAR_CDF: Final = _cdf((_CITY_KM >= 3000.0) * _CITY_POP)


# ----------------------------------------------------------------------------- internal values


@dataclass(frozen=True)
class _World:
    """Accounts, merchants, terminals and devices as index-aligned arrays."""

    home_city: IntArray
    home_lat: FloatArray
    home_lon: FloatArray
    wealth: FloatArray
    #: Per-account cumulative category preferences, shape (accounts, categories).
    pref_cdf: FloatArray
    rate_per_day: FloatArray
    ecom_propensity: FloatArray
    #: Usual merchants, shape (accounts, _MAX_USUAL); only the first ``usual_count`` are used.
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
        cell = city * len(_CATEGORIES) + cat
        u = rng.random(cell.size) ** _MERCHANT_SKEW
        return self.cell_start[cell] + (u * self.cell_count[cell]).astype(np.int64)

    def terminal_of(self, rng: np.random.Generator, merchant: IntArray) -> IntArray:
        """One of each merchant's terminals."""
        u = rng.random(merchant.size)
        return self.terminal_start[merchant] + (u * self.terminal_count[merchant]).astype(np.int64)

    def device_of(self, rng: np.random.Generator, account: IntArray) -> IntArray:
        """One of each account's own devices, the first (the phone) most often."""
        u = rng.random(account.size) ** 2
        return self.device_start[account] + (u * self.device_count[account]).astype(np.int64)


@dataclass(frozen=True)
class _Clock:
    """The period in ms relative to ``start_ms``, and the daily rhythm sampler."""

    start_ms: int
    period_ms: int
    #: ms past UTC midnight at the start instant.
    start_of_day_ms: int
    day_cdf: FloatArray
    #: Earliest offset for episodes that need the account's history.
    history_ms: int

    @classmethod
    def of(cls, settings: GeneratorSettings) -> _Clock:
        start = settings.start.astimezone(dt.UTC)
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        start_ms = (start - epoch) // dt.timedelta(milliseconds=1)
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        weekday = (start.weekday() + np.arange(settings.days)) % 7
        period_ms = settings.days * DAY_MS
        return cls(
            start_ms=start_ms,
            period_ms=period_ms,
            start_of_day_ms=(start - midnight) // dt.timedelta(milliseconds=1),
            day_cdf=_cdf(np.where(weekday >= 5, _WEEKEND_UPLIFT, 1.0)),
            history_ms=min(DAY_MS, period_ms // 4),
        )

    def rhythm_times(self, rng: np.random.Generator, city: IntArray, day: IntArray | None = None) -> IntArray:
        """Event times (relative ms) following the daily rhythm in each city's local time.

        ``day`` fixes the local calendar day (times are then clipped into the
        period); else it is drawn with the weekend uplift and times wrap around
        the period, so they always fall inside it.
        """
        n = city.size
        fixed_day = day is not None
        if day is None:
            day = _pick(self.day_cdf, rng.random(n))
        hour = _pick(_HOURLY_CDF, rng.random(n))
        local_ms = ((hour + rng.random(n)) * HOUR_MS).astype(np.int64)
        t = day * DAY_MS + local_ms - _CITY_TZ_MS[city] - self.start_of_day_ms
        return np.clip(t, 0, self.period_ms - 1) if fixed_day else np.mod(t, self.period_ms)

    def episode_starts(self, rng: np.random.Generator, n: int, duration_ms: int) -> IntArray:
        """Uniform episode start times that leave history before and ``duration_ms`` after."""
        low = self.history_ms
        span = max(self.period_ms - duration_ms - low, 1)
        return low + (rng.random(n) * span).astype(np.int64)


_HOURLY_CDF: Final = _cdf(_HOURLY)


@dataclass(frozen=True)
class _Rows:
    """Transactions under construction: one index-aligned array per column."""

    account: IntArray
    time_ms: IntArray  # relative to the start of the period
    amount: FloatArray
    merchant: IntArray
    terminal: IntArray  # -1 when none (ecom)
    device: IntArray  # -1 when none (pos)
    ecom: BoolArray
    lat: FloatArray
    lon: FloatArray
    country: IntArray
    scenario: IntArray  # -1 for genuine rows
    episode: IntArray  # -1 for genuine rows

    @property
    def size(self) -> int:
        return int(self.account.size)

    def take(self, index: IntArray | BoolArray) -> _Rows:
        return _Rows(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence[_Rows]) -> _Rows:
        return _Rows(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Rows)})


def _fraud_rows(
    *,
    scenario: str,
    episode: IntArray,
    account: IntArray,
    time_ms: IntArray,
    amount: FloatArray,
    merchant: IntArray,
    terminal: IntArray,
    device: IntArray,
    lat: FloatArray,
    lon: FloatArray,
    country: IntArray,
) -> _Rows:
    """Fraud rows; ``ecom`` follows from the terminal being absent."""
    return _Rows(
        account=account,
        time_ms=time_ms,
        amount=amount,
        merchant=merchant,
        terminal=terminal,
        device=device,
        ecom=terminal < 0,
        lat=lat,
        lon=lon,
        country=country,
        scenario=np.full(account.size, _SCENARIO[scenario], dtype=np.int64),
        episode=episode,
    )


def _round_amounts(x: FloatArray, cat: IntArray) -> FloatArray:
    """Cents, cash to multiples of 10, within [0.01, 1e6]."""
    x = np.clip(x, 0.01, 1e6)
    return np.where(cat == _CASH, np.maximum(10.0, np.round(x / 10.0) * 10.0), np.round(x, 2))


def _amounts(rng: np.random.Generator, cat: IntArray, scale: FloatArray) -> FloatArray:
    """Lognormal amounts by category, scaled by the account's wealth."""
    x = scale * np.exp(_CAT_LOG_MEDIAN[cat] + _CAT_SIGMA[cat] * rng.standard_normal(cat.size))
    return _round_amounts(x, cat)


def _episode_count(sizes: IntArray, target: float) -> int:
    """How many of the candidate episodes (in order) bring the row count closest to ``target`` (>= 1)."""
    if sizes.size == 0:
        return 0
    cum = np.cumsum(sizes)
    return int(np.argmin(np.abs(cum - target))) + 1


def _greedy_fill(sizes: IntArray, target: float) -> IntArray:
    """Indices of non-empty candidates, in order, skipping those that would overshoot ``target`` by > 10 %.

    Stops once within 10 % below the target; takes the smallest candidate when none fits.
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


def _segments(sizes: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """(episode of each row, position within the episode, first row of each episode)."""
    first = np.cumsum(sizes) - sizes
    episode = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    return episode, np.arange(episode.size, dtype=np.int64) - first[episode], first


def _offsets(gaps_ms: IntArray, first: IntArray, episode: IntArray) -> IntArray:
    """Within-episode cumulative offsets: the first row of every episode is at 0."""
    gaps_ms = gaps_ms.copy()
    gaps_ms[first] = 0
    cum = np.cumsum(gaps_ms)
    return cum - cum[first][episode]


def _jitter(rng: np.random.Generator, lat: FloatArray, lon: FloatArray, sd_deg: float) -> tuple[FloatArray, FloatArray]:
    return (
        np.clip(lat + rng.normal(0.0, sd_deg, lat.size), -90.0, 90.0),
        np.clip(lon + rng.normal(0.0, sd_deg, lon.size), -180.0, 180.0),
    )


# ----------------------------------------------------------------------------- the world and genuine spending


def _build_world(rng: np.random.Generator, n: int) -> _World:
    n_city, n_cat = len(_CITIES), len(_CATEGORIES)
    home_city = _pick(_HOME_CDF, rng.random(n))
    home_lat, home_lon = _jitter(rng, _CITY_LAT[home_city], _CITY_LON[home_city], 0.08)
    wealth = rng.lognormal(0.0, 0.45, n)
    prefs = rng.gamma(np.array([c.share for c in _CATEGORIES]) * 8.0, 1.0, (n, n_cat)) + 1e-12
    pref_cdf = _cdf(prefs)
    rate = rng.lognormal(math.log(2.5), 0.5, n)
    ecom_propensity = rng.beta(2.0, 2.5, n)

    # Merchants: at least one per (city, category) cell, about one per ten accounts.
    home_w = _home_weights() / _home_weights().sum()
    city_w = 0.85 * home_w + 0.15 / n_city
    cell_w = (city_w[:, None] * np.array([c.merchants for c in _CATEGORIES])[None, :]).ravel()
    n_cells = n_city * n_cat
    n_merchants = max(n_cells, round(n / 10))
    cell_count = 1 + rng.multinomial(n_merchants - n_cells, cell_w / cell_w.sum()).astype(np.int64)
    cell_start = np.cumsum(cell_count) - cell_count
    merchant_cell = np.repeat(np.arange(n_cells, dtype=np.int64), cell_count)
    merchant_city, merchant_cat = merchant_cell // n_cat, merchant_cell % n_cat
    merchant_lat, merchant_lon = _jitter(rng, _CITY_LAT[merchant_city], _CITY_LON[merchant_city], 0.06)
    terminal_count = rng.integers(1, 6, n_merchants).astype(np.int64)
    terminal_start = np.cumsum(terminal_count) - terminal_count

    # Usual merchants in the home city, chosen by the account's category preferences.
    usual_count = rng.integers(8, _MAX_USUAL + 1, n).astype(np.int64)
    usual = np.empty((n, _MAX_USUAL), dtype=np.int64)
    accounts = np.arange(n, dtype=np.int64)
    for slot in range(_MAX_USUAL):
        cat = _pick_rows(pref_cdf, accounts, rng.random(n))
        cell = home_city * n_cat + cat
        u = rng.random(n) ** _MERCHANT_SKEW
        usual[:, slot] = cell_start[cell] + (u * cell_count[cell]).astype(np.int64)

    device_count = 1 + _pick(_cdf([0.5, 0.35, 0.15]), rng.random(n))
    device_start = np.cumsum(device_count) - device_count
    return _World(
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


#: Zipf-like weights over the usual-merchant slots, one CDF per number of usual merchants.
_USUAL_CDF: Final = {k: _cdf(1.0 / np.arange(1, k + 1, dtype=np.float64)) for k in range(8, _MAX_USUAL + 1)}


def _p_ecom(world: _World, cat: IntArray, account: IntArray) -> FloatArray:
    return _CAT_ECOM[cat] * np.minimum(1.0, 2.0 * world.ecom_propensity[account])


def _genuine_rows(rng: np.random.Generator, world: _World, clock: _Clock, days: int) -> _Rows:
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
        slot[rows] = _pick(cdf, u[rows])
    merchant[iu] = world.usual[au, slot]
    cat[iu] = world.merchant_cat[merchant[iu]]
    cat[io] = _pick_rows(world.pref_cdf, ao, rng.random(io.size))

    ecom = rng.random(n) < _p_ecom(world, cat, account)
    # Other merchants: anywhere when paid online, else in the home city.
    city_o = np.where(ecom[io], _pick(_CITY_CDF, rng.random(io.size)), world.home_city[ao])
    merchant[io] = world.merchant_in(rng, city_o, cat[io])

    amount = _amounts(rng, cat, world.wealth[account])
    terminal = np.where(ecom, -1, world.terminal_of(rng, merchant))
    device = np.where(ecom, world.device_of(rng, account), -1)
    ip_lat, ip_lon = _jitter(rng, world.home_lat[account], world.home_lon[account], 0.15)
    lat = np.where(ecom, ip_lat, world.merchant_lat[merchant])
    lon = np.where(ecom, ip_lon, world.merchant_lon[merchant])
    country = np.where(ecom, _CITY_COUNTRY[home], _CITY_COUNTRY[world.merchant_city[merchant]])
    return _Rows(
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


def _apply_travel(rng: np.random.Generator, world: _World, clock: _Clock, rows: _Rows) -> tuple[_Rows, BoolArray]:
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
    dest = _pick_rows(_TRIP_CDF, world.home_city[trips], rng.random(n_trips))
    flight = ((_CITY_KM[world.home_city[trips], dest] / _FLIGHT_KMH + 1.5) * HOUR_MS).astype(np.int64)

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
    ip_lat, ip_lon = _jitter(rng, _CITY_LAT[city], _CITY_LON[city], 0.15)
    rows.merchant[moved] = np.where(pos, new_merchant, rows.merchant[moved])
    rows.terminal[moved] = np.where(pos, new_terminal, -1)
    rows.lat[moved] = np.where(pos, world.merchant_lat[new_merchant], ip_lat)
    rows.lon[moved] = np.where(pos, world.merchant_lon[new_merchant], ip_lon)
    rows.country[moved] = _CITY_COUNTRY[city]  # the merchant's country, or the geo-IP's

    keep = np.ones(rows.size, dtype=bool)
    keep[idx[flying]] = False
    return rows.take(keep), traveller


# ----------------------------------------------------------------------------- fraud scenarios


@dataclass(frozen=True)
class _Genuine:
    """Genuine rows grouped by account (contiguous), for history look-ups."""

    rows: _Rows
    #: Row range of every account: rows[first[a]:first[a + 1]].
    first: IntArray

    @classmethod
    def of(cls, rows: _Rows, accounts: int) -> _Genuine:
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


class _AccountPool:
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
        order = self._order[self._free[self._order]]
        return order if ok is None else order[ok[order]]

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


def _card_testing(
    rng: np.random.Generator,
    world: _World,
    clock: _Clock,
    genuine: _Genuine,
    pool: _AccountPool,
    target: float,
    next_device: int,
) -> tuple[_Rows, int]:
    """Bursts of tiny amounts within minutes at new merchants, sometimes followed by real purchases.

    Mostly online from a fraud ring's devices (a few devices test many cards),
    sometimes with a cloned card at terminals of the fraudster's city.
    """
    n_cand = int(target / 15.0 * 1.5) + 4
    tests = rng.integers(5, 26, n_cand)
    follow = _pick(_cdf([0.6, 0.25, 0.15]), rng.random(n_cand))
    k = _episode_count(tests + follow, target)
    account = pool.take(k)
    k = account.size
    tests, follow = tests[:k], follow[:k]
    ecom_ep = rng.random(k) < 0.9
    city_ep = _pick(_CITY_CDF, rng.random(k))
    ring = max(1, math.ceil(k / 4))
    device_ep = next_device + rng.integers(0, ring, k)
    n_merchants = rng.integers(1, 4, k)
    test_cats = np.array([_CAT["online_services"], _CAT["entertainment"], _CAT["retail"], _CAT["electronics"]])
    merchants_ep = np.empty((k, 3), dtype=np.int64)
    for j in range(3):
        # Merchants new to the account: redraw the few it already knows.
        redraw = np.arange(k)
        for _ in range(10):
            cat = test_cats[_pick(_cdf([0.5, 0.2, 0.2, 0.1]), rng.random(redraw.size))]
            city = np.where(ecom_ep[redraw], _pick(_CITY_CDF, rng.random(redraw.size)), city_ep[redraw])
            merchants_ep[redraw, j] = world.merchant_in(rng, city, cat)
            redraw = redraw[genuine.used(account[redraw], merchants_ep[redraw, j])]
            if redraw.size == 0:
                break
    start = clock.episode_starts(rng, k, 3 * HOUR_MS)

    episode, position, first = _segments(tests + follow)
    n = episode.size
    is_test = position < tests[episode]
    gaps = np.where(
        is_test,
        (1_000 + rng.exponential(20_000, n)).astype(np.int64),
        (5 * MINUTE_MS + rng.exponential(20 * MINUTE_MS, n)).astype(np.int64),
    )
    time_ms = start[episode] + _offsets(gaps, first, episode)
    ecom = ecom_ep[episode]
    buy_cat = np.where(rng.random(n) < 0.6, _CAT["electronics"], _CAT["retail"])
    buy_city = np.where(ecom, _pick(_CITY_CDF, rng.random(n)), city_ep[episode])
    merchant = np.where(
        is_test,
        merchants_ep[episode, position % n_merchants[episode]],
        world.merchant_in(rng, buy_city, buy_cat),
    )
    tiny = np.round(0.01 + rng.random(n) * 1.99, 2)
    amount = np.where(is_test, tiny, _round_amounts(rng.lognormal(math.log(250.0), 0.6, n), buy_cat))
    terminal = np.where(ecom, -1, world.terminal_of(rng, merchant))
    ip_lat, ip_lon = _jitter(rng, _CITY_LAT[city_ep[episode]], _CITY_LON[city_ep[episode]], 0.15)
    rows = _fraud_rows(
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
        country=np.where(ecom, _CITY_COUNTRY[city_ep[episode]], _CITY_COUNTRY[world.merchant_city[merchant]]),
    )
    return rows, next_device + ring


#: An account takeover: the takeover session, then the fraudster returns every 1–4 days while it lasts.
_ATO_DAYS: Final = (10.0, 18.0)
_ATO_RETURN_DAYS: Final = (1.0, 4.0)
_ATO_SESSIONS: Final = 1 + math.ceil(_ATO_DAYS[1] / _ATO_RETURN_DAYS[0])


def _account_takeover(
    rng: np.random.Generator,
    world: _World,
    clock: _Clock,
    genuine: _Genuine,
    pool: _AccountPool,
    target: float,
    next_device: int,
) -> tuple[_Rows, int]:
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
    k = _episode_count(buys.sum(1), target)
    account = pool.take(k, ok=genuine.count(np.arange(world.accounts)) >= 3)
    k = account.size
    usual = genuine.median_amount(account)
    city_ep = _pick_rows(_FOREIGN_CDF, world.home_city[account], rng.random(k))
    device_ep = next_device + np.arange(k, dtype=np.int64)

    # One segment per (episode, session) with purchases; purchases minutes apart within a session.
    per_session = buys[:k].ravel()
    sessions = np.flatnonzero(per_session)
    segment, _, first = _segments(per_session[sessions])
    episode, session = sessions[segment] // _ATO_SESSIONS, sessions[segment] % _ATO_SESSIONS
    n = episode.size
    gaps = (5 * MINUTE_MS + rng.exponential(45 * MINUTE_MS, n)).astype(np.int64)
    time_ms = start[episode] + session_at[episode, session] + _offsets(gaps, first, segment)
    big_cats = np.array([_CAT["electronics"], _CAT["jewelry"], _CAT["travel"], _CAT["retail"]])
    cat = big_cats[_pick(_cdf([0.4, 0.2, 0.2, 0.2]), rng.random(n))]
    merchant = world.merchant_in(rng, _pick(_CITY_CDF, rng.random(n)), cat)
    amount = _round_amounts(usual[episode] * (5.0 + 15.0 * rng.random(n)), cat)
    city = city_ep[episode]
    lat, lon = _jitter(rng, _CITY_LAT[city], _CITY_LON[city], 0.1)
    rows = _fraud_rows(
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
        country=_CITY_COUNTRY[city],
    )
    return rows, next_device + k


def _impossible_travel(
    rng: np.random.Generator, world: _World, clock: _Clock, genuine: _Genuine, pool: _AccountPool, target: float
) -> _Rows:
    """Minutes after a genuine POS payment at home, 1–3 POS payments 3,000+ km away."""
    n_cand = int(target / 2.0 * 1.5) + 4
    sizes = rng.integers(1, 4, n_cand)
    k = _episode_count(sizes, target)
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
    city_ep = _pick_rows(_FAR_CDF, world.home_city[account], rng.random(k))

    episode, position, first = _segments(sizes)
    n = episode.size
    gaps = np.where(
        position == 0,
        (5 * MINUTE_MS + rng.random(n) * 85 * MINUTE_MS).astype(np.int64),
        (10 * MINUTE_MS + rng.random(n) * 50 * MINUTE_MS).astype(np.int64),
    )
    time_ms = g.time_ms[anchors][episode] + gaps[first][episode] + _offsets(gaps, first, episode)
    shop_cats = np.array([_CAT[c] for c in ("retail", "electronics", "jewelry", "restaurant", "fuel", "cash")])
    cat = shop_cats[_pick(_cdf([0.3, 0.25, 0.1, 0.1, 0.1, 0.15]), rng.random(n))]
    merchant = world.merchant_in(rng, city_ep[episode], cat)
    return _fraud_rows(
        scenario="impossible_travel",
        episode=episode,
        account=account[episode],
        time_ms=time_ms,
        amount=_round_amounts(usual[episode] * (1.0 + 5.0 * rng.random(n)), cat),
        merchant=merchant,
        terminal=world.terminal_of(rng, merchant),
        device=np.full(n, -1, dtype=np.int64),
        lat=world.merchant_lat[merchant],
        lon=world.merchant_lon[merchant],
        country=_CITY_COUNTRY[city_ep[episode]],
    )


_RAMP_MAX_DAYS: Final = 12


def _bust_out(
    rng: np.random.Generator, world: _World, clock: _Clock, genuine: _Genuine, pool: _AccountPool, target: float
) -> tuple[_Rows, IntArray, IntArray]:
    """An account ramps its spending over 5–12 days, then maxes out in 1–2 days.

    Returns the fraud rows, the accounts and when each goes silent (right
    after its last max-out purchase).
    """
    days = clock.period_ms // DAY_MS
    n_cand = int(target / 30.0 * 1.5) + 4
    max_days = rng.integers(1, 3, n_cand)
    ramp_days = np.clip(rng.integers(5, _RAMP_MAX_DAYS + 1, n_cand), 1, np.maximum(1, days - 1 - max_days))
    day = np.arange(_RAMP_MAX_DAYS)[None, :]
    progress = (day + 1) / ramp_days[:, None]
    ramp_counts = np.where(day < ramp_days[:, None], rng.poisson(1.0 + 3.0 * np.minimum(progress, 1.0)), 0)
    maxout = rng.integers(5, 16, n_cand)
    k = _episode_count(ramp_counts.sum(1) + maxout, target)
    span = np.maximum(days - ramp_days - max_days, 1)
    first_day = np.minimum(1 + (rng.random(n_cand) * (span - 1)).astype(np.int64), max(days - 1, 0))
    # Accounts with some history (3+ genuine rows) before their ramp.
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
    account = np.array(chosen, dtype=np.int64)
    k = account.size
    ramp_days, max_days, ramp_counts, maxout, first_day = (
        ramp_days[:k], max_days[:k], ramp_counts[:k], maxout[:k], first_day[:k]
    )  # fmt: skip
    usual = genuine.median_amount(account)

    # Ramp rows: more transactions, rising amounts, on the usual devices and in the home city.
    ep_day = np.repeat(np.arange(k * _RAMP_MAX_DAYS), ramp_counts.ravel())
    ramp_ep, ramp_day = ep_day // _RAMP_MAX_DAYS, ep_day % _RAMP_MAX_DAYS
    home = world.home_city[account]
    ramp_time = clock.rhythm_times(rng, home[ramp_ep], (first_day[ramp_ep] + ramp_day))
    ramp_progress = (ramp_day + 1) / ramp_days[ramp_ep]
    ramp_cats = np.array(
        [_CAT[c] for c in ("retail", "electronics", "restaurant", "entertainment", "travel", "jewelry")]
    )
    ramp_cat = ramp_cats[_pick(_cdf([0.35, 0.2, 0.15, 0.1, 0.1, 0.1]), rng.random(ramp_ep.size))]
    ramp_amount = usual[ramp_ep] * np.maximum(1.5 + 2.5 * ramp_progress + rng.normal(0, 0.3, ramp_ep.size), 1.5)
    # Max-out rows: 5–15 big purchases within 1–2 days after the ramp.
    max_ep = np.repeat(np.arange(k), maxout)
    max_start = (first_day + ramp_days) * DAY_MS  # after the last ramp purchase, whatever the time zone
    np.maximum.at(max_start, ramp_ep, ramp_time + HOUR_MS)
    max_span = np.maximum(np.minimum(max_days * DAY_MS, clock.period_ms - 1 - max_start), 1)
    max_time = max_start[max_ep] + (rng.random(max_ep.size) * max_span[max_ep]).astype(np.int64)
    max_cats = np.array([_CAT["electronics"], _CAT["jewelry"], _CAT["travel"]])
    max_cat = max_cats[_pick(_cdf([0.5, 0.3, 0.2]), rng.random(max_ep.size))]
    max_amount = usual[max_ep] * (8.0 + 17.0 * rng.random(max_ep.size))

    episode = np.concatenate([ramp_ep, max_ep])
    cat = np.concatenate([ramp_cat, max_cat])
    n = episode.size
    acc = account[episode]
    ecom = rng.random(n) < np.maximum(_CAT_ECOM[cat], 0.3)
    city = np.where(ecom, _pick(_CITY_CDF, rng.random(n)), world.home_city[acc])
    merchant = world.merchant_in(rng, city, cat)
    ip_lat, ip_lon = _jitter(rng, world.home_lat[acc], world.home_lon[acc], 0.15)
    rows = _fraud_rows(
        scenario="bust_out",
        episode=episode,
        account=acc,
        time_ms=np.minimum(np.concatenate([ramp_time, max_time]), clock.period_ms - 1),
        amount=_round_amounts(np.concatenate([ramp_amount, max_amount]), cat),
        merchant=merchant,
        terminal=np.where(ecom, -1, world.terminal_of(rng, merchant)),
        device=np.where(ecom, world.device_of(rng, acc), -1),
        lat=np.where(ecom, ip_lat, world.merchant_lat[merchant]),
        lon=np.where(ecom, ip_lon, world.merchant_lon[merchant]),
        country=np.where(ecom, _CITY_COUNTRY[world.home_city[acc]], _CITY_COUNTRY[world.merchant_city[merchant]]),
    )
    last_event = np.zeros(k, dtype=np.int64)
    np.maximum.at(last_event, episode, rows.time_ms)
    return rows, account, last_event + 1


def _compromised_terminal(
    rng: np.random.Generator, world: _World, clock: _Clock, rows: _Rows, target: float
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
    chosen = _greedy_fill(sizes, target)
    index = np.concatenate([hits[c] for c in chosen]) if chosen.size else np.empty(0, dtype=np.int64)
    episode = np.repeat(np.arange(chosen.size, dtype=np.int64), sizes[chosen])
    return index, episode


# ----------------------------------------------------------------------------- assembly


@dataclass(frozen=True)
class SyntheticHistory:
    """A generated history: transactions with ground truth, and their delayed labels.

    ``transactions`` has schema ``contracts.arrow.HISTORY_SCHEMA`` in delivery
    order; ``labels`` has ``LABEL_SCHEMA``, sorted by ``label_time``.

    >>> from configs.settings import GeneratorSettings
    >>> history = generate(GeneratorSettings(accounts=200, days=5, seed=3))
    >>> 0.0 < history.fraud_rate < 0.05, history.labels.num_rows > 0
    (True, True)
    """

    transactions: pa.Table
    labels: pa.Table

    @property
    def fraud_rate(self) -> float:
        """Share of transactions that are fraudulent."""
        n = self.transactions.num_rows
        return float(pc.sum(self.transactions.column("is_fraud")).as_py() or 0) / max(n, 1)


def _id_strings(prefix: str, numbers: IntArray, width: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` as a string array, built from buffers (no Python loop)."""
    n = numbers.size
    width = max(width, len(str(int(numbers.max()))) if n else width)
    row = len(prefix) + width
    chars = np.empty((n, row), dtype=np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    rest = numbers.astype(np.int64)
    for j in range(row - 1, len(prefix) - 1, -1):
        chars[:, j] = 48 + rest % 10
        rest = rest // 10
    if n * row >= 2**31:
        raise ValueError(f"too many ids ({n:,}) for one string array: generate fewer accounts or days")
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(row)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def _lookup(values: Sequence[str] | pa.Array, index: IntArray) -> pa.Array:
    """``values[index]`` as a string array; negative indices become nulls."""
    table = values if isinstance(values, pa.Array) else pa.array(list(values), type=pa.string())
    missing = index < 0
    indices = pa.array(np.where(missing, 0, index), mask=missing if missing.any() else None, type=pa.int64())
    return pc.take(table, indices)


def _times(ms: IntArray) -> pa.Array:
    return pa.array(ms.astype(np.int64), type=pa.int64()).cast(TIME)


def _label_delays(rng: np.random.Generator, n: int) -> IntArray:
    """Fraud report delays: ~30 % customer calls within 1–12 h, the rest chargebacks in 2–45 days."""
    call = rng.random(n) < 0.3
    hours = 1.0 + 11.0 * rng.random(n)
    days = np.exp(math.log(2.0) + rng.random(n) * (math.log(45.0) - math.log(2.0)))
    return np.where(call, hours * HOUR_MS, days * DAY_MS).astype(np.int64)


def _chargeback_delays(rng: np.random.Generator, n: int) -> IntArray:
    """Chargeback delays: 2 days + Gamma(shape 2, scale 6 days), capped at 60 days.

    Skewed as chargebacks are: median ~12 days, mean ~14, 90 % within ~25 days, a thin tail to 60.
    """
    days = np.minimum(2.0 + rng.gamma(2.0, 6.0, n), 60.0)
    return (days * DAY_MS).astype(np.int64)


def _inject_fraud(
    rng: np.random.Generator,
    world: _World,
    clock: _Clock,
    rows: _Rows,
    traveller: BoolArray,
    settings: GeneratorSettings,
) -> tuple[_Rows, int]:
    """Genuine rows plus every scenario's fraud; returns the rows and the number of device ids in use.

    The budget: four scenarios add rows, compromised_terminal converts genuine
    rows, so the fraud total F solves F = rate * (genuine + added), with
    added = F * (1 - compromised share).
    """
    genuine = _Genuine.of(rows, world.accounts)
    weights = np.array([max(settings.scenario_weights.get(name, 0.0), 0.0) for name in SCENARIOS])
    share = weights / weights.sum()
    r = settings.fraud_rate
    fraud_total = r * rows.size / (1.0 - r * (1.0 - share[_SCENARIO["compromised_terminal"]]))
    target = {name: fraud_total * share[i] for i, name in enumerate(SCENARIOS)}

    pool = _AccountPool(rng, ~traveller)
    parts: list[_Rows] = []
    next_device = world.account_devices
    if target["card_testing"] > 0:
        part, next_device = _card_testing(rng, world, clock, genuine, pool, target["card_testing"], next_device)
        parts.append(part)
    if target["account_takeover"] > 0:
        part, next_device = _account_takeover(rng, world, clock, genuine, pool, target["account_takeover"], next_device)
        parts.append(part)
    if target["impossible_travel"] > 0:
        parts.append(_impossible_travel(rng, world, clock, genuine, pool, target["impossible_travel"]))
    if target["bust_out"] > 0:
        part, busted, silent_from = _bust_out(rng, world, clock, genuine, pool, target["bust_out"])
        parts.append(part)
        # After the max-out the account goes silent.
        silent = np.full(world.accounts, clock.period_ms, dtype=np.int64)
        silent[busted] = silent_from
        rows = rows.take(rows.time_ms < silent[rows.account])
    if target["compromised_terminal"] > 0:
        index, episode = _compromised_terminal(rng, world, clock, rows, target["compromised_terminal"])
        cat = world.merchant_cat[rows.merchant[index]]
        rows.amount[index] = _round_amounts(rows.amount[index] * (1.2 + 0.8 * rng.random(index.size)), cat)
        rows.scenario[index] = _SCENARIO["compromised_terminal"]
        rows.episode[index] = episode
    # Episode ids unique across scenarios.
    episode_base = int(rows.episode.max(initial=-1)) + 1
    for part in parts:
        part.episode[:] += episode_base
        episode_base = int(part.episode.max(initial=episode_base - 1)) + 1
    rows = _Rows.concat([rows, *parts])
    np.clip(rows.time_ms, 0, clock.period_ms - 1, out=rows.time_ms)
    return rows, next_device


def _label_times(rng: np.random.Generator, rows: _Rows, settings: GeneratorSettings) -> IntArray:
    """Label time of every row (relative ms), -1 for unlabelled rows, by ``settings.label_delay``.

    Every victim reports on their own, what was taken from them in one day at
    once: the fraud rows of one account in one episode on one day are reported
    together, at the last of them plus a delay. A burst (card testing) is one
    report, a takeover one per day of abuse; a compromised terminal's
    cardholders call or charge back one by one, each visit on its own. A
    ``genuine_label_rate`` share of genuine rows is confirmed later.

    - ``mixed``: a report is a call within 1–12 h (30 %) or a chargeback in
      2–45 days; genuine rows are confirmed 1–30 days later;
    - ``fixed``: every label, fraud or genuine, ``label_delay_days`` after its
      own transaction (no grouping into reports);
    - ``chargeback``: every report, and every genuine confirmation, 2–60 days
      later (:func:`_chargeback_delays`).

    The ``mixed`` draws are made whatever the profile (the same rows are
    labelled, and the rest of the history is the same); ``chargeback`` draws
    from a stream of its own, spawned from ``rng`` without moving it.
    """
    n = rows.size
    is_fraud = rows.scenario >= 0
    fraud = np.flatnonzero(is_fraud)
    key = np.stack([rows.episode[fraud], rows.account[fraud], rows.time_ms[fraud] // DAY_MS])
    _, report = np.unique(key, axis=1, return_inverse=True)
    report = report.reshape(-1)
    n_reports = int(report.max(initial=-1)) + 1
    last_event = np.zeros(n_reports, dtype=np.int64)
    np.maximum.at(last_event, report, rows.time_ms[fraud])
    report_ms = last_event + _label_delays(rng, n_reports)
    label_ms = np.full(n, -1, dtype=np.int64)
    label_ms[fraud] = report_ms[report]
    confirm = np.flatnonzero(~is_fraud & (rng.random(n) < settings.genuine_label_rate))
    label_ms[confirm] = rows.time_ms[confirm] + ((1.0 + 29.0 * rng.random(confirm.size)) * DAY_MS).astype(np.int64)
    if settings.label_delay == "fixed":
        labelled = np.flatnonzero(label_ms >= 0)
        label_ms[labelled] = rows.time_ms[labelled] + max(round(settings.label_delay_days * DAY_MS), 1)
    elif settings.label_delay == "chargeback":
        own = rng.spawn(1)[0]
        label_ms[fraud] = (last_event + _chargeback_delays(own, n_reports))[report]
        label_ms[confirm] = rows.time_ms[confirm] + _chargeback_delays(own, confirm.size)
    return label_ms


def _delivery_order(rng: np.random.Generator, time_ms: IntArray, settings: GeneratorSettings) -> IntArray | None:
    """Row order by delivery time (ties by index), or None when every row is delivered on time.

    ``out_of_order_rate`` of rows are delayed by (0, max_disorder_s], ``late_rate``
    of rows by (max_disorder_s, max_late_s]; event times never change.
    """
    if settings.out_of_order_rate <= 0 and settings.late_rate <= 0:
        return None
    n = time_ms.size
    disorder_ms = max(math.floor(settings.max_disorder_s * 1000.0), 1)
    late_ms = max(math.floor(settings.max_late_s * 1000.0), disorder_ms + 1)
    u = rng.random(n)
    ooo = u < settings.out_of_order_rate
    late = ~ooo & (u < settings.out_of_order_rate + settings.late_rate)
    v = 1.0 - rng.random(n)  # (0, 1]
    delay = np.zeros(n, dtype=np.int64)
    delay[ooo] = np.clip(np.ceil(v[ooo] * disorder_ms), 1, disorder_ms).astype(np.int64)
    delay[late] = disorder_ms + np.clip(np.ceil(v[late] * (late_ms - disorder_ms)), 1, late_ms - disorder_ms).astype(
        np.int64
    )
    return np.argsort(time_ms + delay, kind="stable").astype(np.int64)


def _transactions_table(world: _World, clock: _Clock, rows: _Rows, number: IntArray, devices: int) -> pa.Table:
    """Rows (already in delivery order) as a HISTORY_SCHEMA table; ``number`` is each row's transaction index."""
    return pa.Table.from_arrays(
        [
            _id_strings("tx", number, 10),
            _lookup(_id_strings("A", np.arange(world.accounts), 7), rows.account),
            _times(clock.start_ms + rows.time_ms),
            pa.array(rows.amount, type=pa.float64()),
            _lookup(_CURRENCY_OF_COUNTRY, _CITY_COUNTRY[world.home_city][rows.account]),
            _lookup(_id_strings("M", np.arange(world.merchant_city.size), 6), rows.merchant),
            _lookup([c.name for c in _CATEGORIES], world.merchant_cat[rows.merchant]),
            _lookup(_id_strings("T", np.arange(world.terminals), 7), rows.terminal),
            _lookup(_id_strings("D", np.arange(max(devices, 1)), 7), rows.device),
            _lookup(_COUNTRIES, rows.country),
            pa.array(np.round(rows.lat, 5), type=pa.float64()),
            pa.array(np.round(rows.lon, 5), type=pa.float64()),
            _lookup(_CHANNELS, rows.ecom.astype(np.int64)),
            pa.array(rows.scenario >= 0, type=pa.bool_()),
            _lookup(SCENARIOS, rows.scenario),
        ],
        schema=HISTORY_SCHEMA,
    )


def _labels_table(world: _World, clock: _Clock, rows: _Rows, label_ms: IntArray) -> pa.Table:
    """Labelled rows (``rows`` in transaction-index order) as a LABEL_SCHEMA table sorted by label time."""
    labelled = np.flatnonzero(label_ms >= 0)
    labelled = labelled[np.argsort(label_ms[labelled], kind="stable")]
    return pa.Table.from_arrays(
        [
            _id_strings("tx", labelled, 10),
            _lookup(_id_strings("A", np.arange(world.accounts), 7), rows.account[labelled]),
            _lookup(("genuine", "fraud"), (rows.scenario[labelled] >= 0).astype(np.int64)),
            _times(clock.start_ms + label_ms[labelled]),
        ],
        schema=LABEL_SCHEMA,
    )


def generate(settings: GeneratorSettings, progress: Callable[[str], None] | None = None) -> SyntheticHistory:
    """Generate the synthetic world, its transactions, injected fraud and delayed labels.

    ``progress`` (optional) receives a short phase description as work advances.
    Same settings give byte-identical tables. Transaction ids number rows in
    event-time order (``tx0000000000`` is the earliest).
    """
    report = progress or (lambda _phase: None)
    rng = np.random.default_rng(settings.seed)
    clock = _Clock.of(settings)
    report(f"world of {settings.accounts:,} accounts")
    world = _build_world(rng, settings.accounts)
    report("genuine spending")
    rows, traveller = _apply_travel(rng, world, clock, _genuine_rows(rng, world, clock, settings.days))
    report("fraud scenarios")
    rows, devices = _inject_fraud(rng, world, clock, rows, traveller, settings)
    report(f"ordering {rows.size:,} transactions")
    rows = rows.take(np.argsort(rows.time_ms, kind="stable"))  # transaction index = event-time rank
    label_ms = _label_times(rng, rows, settings)
    order = _delivery_order(rng, rows.time_ms, settings)
    report("building tables")
    number = np.arange(rows.size, dtype=np.int64) if order is None else order
    delivered = rows if order is None else rows.take(order)
    return SyntheticHistory(
        transactions=_transactions_table(world, clock, delivered, number, devices),
        labels=_labels_table(world, clock, rows, label_ms),
    )


def write_history(history: SyntheticHistory, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``transactions.parquet`` and ``labels.parquet`` (zstd) into ``out_dir`` (created if needed).

    Returns the two paths.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tx_path, label_path = directory / "transactions.parquet", directory / "labels.parquet"
    pq.write_table(history.transactions, tx_path, compression="zstd")
    pq.write_table(history.labels, label_path, compression="zstd")
    return tx_path, label_path
