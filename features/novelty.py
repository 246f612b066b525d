"""Novelty: has this account used this merchant / country / device before?

A per-account Bloom filter of fixed size answers "seen before" in bounded memory
(false "seen" answers grow with the number of distinct values: about 1.6 % at
100 values in 1024 bits). Hashes are CRC-32 based, so they are the same in every
process (Python's ``hash()`` of a str is not).

>>> seen = NoveltyFilter(bits=1024)
>>> seen.add_is_new(b"M0001", seed=1), seen.add_is_new(b"M0001", seed=1), seen.add_is_new(b"FR", seed=2)
(True, False, True)
>>> recent = RecentDistinct()
>>> recent.add(1_000, 11, 7); recent.add(2_000, 12, 7); recent.add(3_000, 11, 8)
>>> recent.distinct(3_000, 1_500)   # (merchants, countries) in (1500, 3000]
(2, 2)
"""

from __future__ import annotations

import zlib


def stable_hash(value: bytes) -> int:
    """A 32-bit hash that is the same in every process and run."""
    return zlib.crc32(value)


class NoveltyFilter:
    """A Bloom filter with three probes (Kirsch-Mitzenmacher double hashing)."""

    __slots__ = ("bits",)

    def __init__(self, bits: int = 1024, data: bytearray | None = None) -> None:
        self.bits = data if data is not None else bytearray(bits // 8)

    def add_is_new(self, key: bytes, seed: int = 0) -> bool:
        """Add ``key`` (in the namespace ``seed``); True when it was certainly not in before."""
        return self.add_hashes_is_new(zlib.crc32(key, seed), zlib.crc32(key, seed ^ 0x9E3779B9))

    def add_hashes_is_new(self, h1: int, h2: int) -> bool:
        """:meth:`add_is_new` for a key already hashed twice (three probes h1 + i*h2)."""
        bits = self.bits
        size = len(bits) << 3
        h2 |= 1
        p0 = h1 % size
        p1 = (h1 + h2) % size
        p2 = (h1 + 2 * h2) % size
        m0, m1, m2 = 1 << (p0 & 7), 1 << (p1 & 7), 1 << (p2 & 7)
        b0, b1, b2 = p0 >> 3, p1 >> 3, p2 >> 3
        if bits[b0] & m0 and bits[b1] & m1 and bits[b2] & m2:
            return False
        bits[b0] |= m0
        bits[b1] |= m1
        bits[b2] |= m2
        return True


class RecentDistinct:
    """(time, merchant hash, country hash) of recent events, for distinct counts."""

    __slots__ = ("times", "merchants", "countries")

    def __init__(
        self,
        times: list[int] | None = None,
        merchants: list[int] | None = None,
        countries: list[int] | None = None,
    ) -> None:
        self.times: list[int] = times if times is not None else []
        self.merchants: list[int] = merchants if merchants is not None else []
        self.countries: list[int] = countries if countries is not None else []

    def add(self, event_time_ms: int, merchant: int, country: int) -> None:
        """Remember an event (hashes; 0 means absent)."""
        self.times.append(event_time_ms)
        self.merchants.append(merchant)
        self.countries.append(country)

    def distinct(self, event_time_ms: int, window_ms: int) -> tuple[int, int]:
        """Distinct non-zero merchants and countries with time in (t - window, t]."""
        times = self.times
        if len(times) == 1:
            inside = event_time_ms - window_ms < times[0] <= event_time_ms
            return (int(inside and self.merchants[0] != 0), int(inside and self.countries[0] != 0))
        start = event_time_ms - window_ms
        merchants: set[int] = set()
        countries: set[int] = set()
        for t, merchant, country in zip(self.times, self.merchants, self.countries):
            if start < t <= event_time_ms:
                if merchant:
                    merchants.add(merchant)
                if country:
                    countries.add(country)
        return len(merchants), len(countries)

    def expire(self, through: int) -> None:
        """Forget events at or before ``through``."""
        times = self.times
        if times and min(times) <= through:
            keep = [i for i, t in enumerate(times) if t > through]
            self.times = [times[i] for i in keep]
            self.merchants = [self.merchants[i] for i in keep]
            self.countries = [self.countries[i] for i in keep]
