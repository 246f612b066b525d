"""The fixed geography: ~30 real cities in 13 countries, and distributions over them.

Owns the city table (position, population, currency, time zone), the issuer's
home markets, country and currency codes, the city-to-city distance matrix, and
the city CDFs the world and the scenarios draw from (homes, merchants, trips,
foreign and far-away cities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from synthetic.sampling import HOUR_MS, FloatArray, to_cdf


@dataclass(frozen=True)
class City:
    name: str
    country: str
    lat: float
    lon: float
    #: Population in millions (drives merchants, destinations and home choice).
    population: float
    currency: str
    #: Standard-time UTC offset in hours (no daylight saving).
    utc_offset_h: float


CITIES: Final = (
    City("New York", "US", 40.7128, -74.0060, 8.3, "USD", -5),
    City("Los Angeles", "US", 34.0522, -118.2437, 3.9, "USD", -8),
    City("Chicago", "US", 41.8781, -87.6298, 2.7, "USD", -6),
    City("Houston", "US", 29.7604, -95.3698, 2.3, "USD", -6),
    City("San Francisco", "US", 37.7749, -122.4194, 0.8, "USD", -8),
    City("Miami", "US", 25.7617, -80.1918, 0.45, "USD", -5),
    City("London", "GB", 51.5074, -0.1278, 9.0, "GBP", 0),
    City("Manchester", "GB", 53.4808, -2.2426, 0.55, "GBP", 0),
    City("Edinburgh", "GB", 55.9533, -3.1883, 0.5, "GBP", 0),
    City("Paris", "FR", 48.8566, 2.3522, 2.1, "EUR", 1),
    City("Lyon", "FR", 45.7640, 4.8357, 0.52, "EUR", 1),
    City("Marseille", "FR", 43.2965, 5.3698, 0.87, "EUR", 1),
    City("Berlin", "DE", 52.5200, 13.4050, 3.7, "EUR", 1),
    City("Munich", "DE", 48.1351, 11.5820, 1.5, "EUR", 1),
    City("Hamburg", "DE", 53.5511, 9.9937, 1.8, "EUR", 1),
    City("Madrid", "ES", 40.4168, -3.7038, 3.3, "EUR", 1),
    City("Barcelona", "ES", 41.3874, 2.1686, 1.6, "EUR", 1),
    City("Rome", "IT", 41.9028, 12.4964, 2.8, "EUR", 1),
    City("Milan", "IT", 45.4642, 9.1900, 1.4, "EUR", 1),
    City("Amsterdam", "NL", 52.3676, 4.9041, 0.9, "EUR", 1),
    City("Sao Paulo", "BR", -23.5505, -46.6333, 12.3, "BRL", -3),
    City("Rio de Janeiro", "BR", -22.9068, -43.1729, 6.7, "BRL", -3),
    City("Lagos", "NG", 6.5244, 3.3792, 15.4, "NGN", 1),
    City("Mumbai", "IN", 19.0760, 72.8777, 12.5, "INR", 5.5),
    City("Delhi", "IN", 28.7041, 77.1025, 16.8, "INR", 5.5),
    City("Tokyo", "JP", 35.6762, 139.6503, 14.0, "JPY", 9),
    City("Osaka", "JP", 34.6937, 135.5023, 2.7, "JPY", 9),
    City("Sydney", "AU", -33.8688, 151.2093, 5.3, "AUD", 10),
    City("Melbourne", "AU", -37.8136, 144.9631, 5.1, "AUD", 10),
    City("Toronto", "CA", 43.6532, -79.3832, 2.9, "CAD", -5),
    City("Vancouver", "CA", 49.2827, -123.1207, 0.7, "CAD", -8),
)

#: How strongly each country is a home market of the issuer (times population).
_HOME_MARKET: Final = (
    ("US", 1.0), ("GB", 1.2), ("FR", 1.0), ("DE", 0.9), ("ES", 0.5), ("IT", 0.4), ("NL", 0.6),
    ("CA", 0.5), ("BR", 0.05), ("NG", 0.03), ("IN", 0.02), ("JP", 0.05), ("AU", 0.1),
)  # fmt: skip

COUNTRIES: Final = tuple(sorted({c.country for c in CITIES}))
CURRENCY_OF_COUNTRY: Final = tuple(next(c.currency for c in CITIES if c.country == k) for k in COUNTRIES)

CITY_LAT: Final = np.array([c.lat for c in CITIES])
CITY_LON: Final = np.array([c.lon for c in CITIES])
CITY_POP: Final = np.array([c.population for c in CITIES])
CITY_COUNTRY: Final = np.array([COUNTRIES.index(c.country) for c in CITIES], dtype=np.int64)
CITY_TZ_MS: Final = np.array([round(c.utc_offset_h * HOUR_MS) for c in CITIES], dtype=np.int64)


def _haversine_km(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    """Great-circle distance in km (vectorised)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    km: FloatArray = 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return km


CITY_KM: Final = _haversine_km(CITY_LAT[:, None], CITY_LON[:, None], CITY_LAT[None, :], CITY_LON[None, :])


def home_weights() -> FloatArray:
    """How likely each city is to be an account's home: population times the home-market weight."""
    market = dict(_HOME_MARKET)
    weights: FloatArray = CITY_POP * np.array([market[c.country] for c in CITIES])
    return weights


HOME_CDF: Final = to_cdf(home_weights())
CITY_CDF: Final = to_cdf(CITY_POP)
_SAME_COUNTRY: Final = CITY_COUNTRY[:, None] == CITY_COUNTRY[None, :]


def _trip_weights() -> FloatArray:
    """Trip destinations by home city: half domestic (when there is another city), half abroad."""
    domestic = (_SAME_COUNTRY & ~np.eye(len(CITIES), dtype=bool)) * CITY_POP
    abroad = ~_SAME_COUNTRY * CITY_POP
    domestic_total = domestic.sum(1, keepdims=True)
    share = np.divide(domestic, domestic_total, out=np.zeros_like(domestic), where=domestic_total > 0)
    weights: FloatArray = 0.5 * share + 0.5 * abroad / abroad.sum(1, keepdims=True)
    return weights


TRIP_CDF: Final = to_cdf(_trip_weights())
#: Cities in another country than the home city (account takeover), by population.
FOREIGN_CDF: Final = to_cdf(~_SAME_COUNTRY * CITY_POP)
#: Cities at least 3,000 km away (impossible travel), by population.
FAR_CDF: Final = to_cdf((CITY_KM >= 3000.0) * CITY_POP)
