"""Novelty: has this account used this merchant / country / device before?

A per-account Bloom filter of fixed size answers "seen before" in bounded memory
(false "seen" answers grow with the number of distinct values: about 1.6 % at
100 values in 1024 bits). Hashes are CRC-32 and Adler-32 based, so they are the
same in every process (Python's ``hash()`` of a str is not).

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
        h1, h2 = key_hashes(key, seed)
        return self.add_hashes_is_new(h1, h2)

    def _probes(self, h1: int, h2: int) -> tuple[int, int, int]:
        size = len(self.bits) << 3
        h2 |= 1
        return h1 % size, (h1 + h2) % size, (h1 + 2 * h2) % size

    def contains_hashes(self, h1: int, h2: int) -> bool:
        """True when the key hashed to (h1, h2) is (probably) in the filter; changes nothing."""
        bits = self.bits
        p0, p1, p2 = self._probes(h1, h2)
        return bool(bits[p0 >> 3] & (1 << (p0 & 7)) and bits[p1 >> 3] & (1 << (p1 & 7)) and bits[p2 >> 3] & (1 << (p2 & 7)))

    def add_hashes_is_new(self, h1: int, h2: int) -> bool:
        """:meth:`add_is_new` for a key already hashed (see :func:`key_hashes`)."""
        bits = self.bits
        p0, p1, p2 = self._probes(h1, h2)
        m0, m1, m2 = 1 << (p0 & 7), 1 << (p1 & 7), 1 << (p2 & 7)
        b0, b1, b2 = p0 >> 3, p1 >> 3, p2 >> 3
        if bits[b0] & m0 and bits[b1] & m1 and bits[b2] & m2:
            return False
        bits[b0] |= m0
        bits[b1] |= m1
        bits[b2] |= m2
        return True


def key_hashes(key: bytes, seed: int) -> tuple[int, int]:
    """Two independent 32-bit hashes of ``key`` in the namespace ``seed``.

    CRC-32 is affine in its input, so a second CRC with another seed would only
    XOR the first with a constant for keys of equal length; the second hash is
    Adler-32 (a sum, not a CRC) scrambled by a multiplicative mix.
    """
    mixed = (zlib.adler32(key, seed & 0xFFFF) * 0x9E3779B1) & 0xFFFFFFFFFFFF
    return zlib.crc32(key, seed), (mixed >> 16) ^ (mixed & 0xFFFF)


class RecentDistinct:
    """(time, merchant hash, country hash) of recent events, for distinct counts."""

    __slots__ = ("countries", "merchants", "times")

    def __init__(
        self,
        times: list[int] | None = None,
        merchants: list[int] | None = None,
        countries: list[int] | None = None,
    ) -> None:
        self.times: list[int] = times if times is not None else []
        self.merchants: list[int] = merchants if merchants is not None else []
        self.countries: list[int] = countries if countries is not None else []

    def add(self, event_time_ms: int, merchant: int, country: int, max_entries: int = 2_000) -> None:
        """Remember an event (hashes; 0 means absent), keeping at most ``max_entries``."""
        self.times.append(event_time_ms)
        self.merchants.append(merchant)
        self.countries.append(country)
        if len(self.times) > max_entries:
            extra = len(self.times) - max_entries
            del self.times[:extra], self.merchants[:extra], self.countries[:extra]

    def distinct(self, event_time_ms: int, window_ms: int, floor_ms: int = -(2**62)) -> tuple[int, int]:
        """Distinct non-zero merchants and countries with time in (max(t - window, floor), t].

        ``floor_ms`` is the retention horizon (see EventWindow.aggregates_into).
        """
        times, merchants, countries = self.times, self.merchants, self.countries
        start = event_time_ms - window_ms
        if start < floor_ms:
            start = floor_ms
        size = len(times)
        if size > 16:
            seen_merchants: set[int] = set()
            seen_countries: set[int] = set()
            for i in range(size):
                if start < times[i] <= event_time_ms:
                    if merchants[i]:
                        seen_merchants.add(merchants[i])
                    if countries[i]:
                        seen_countries.add(countries[i])
            return len(seen_merchants), len(seen_countries)
        distinct_merchants = 0
        distinct_countries = 0
        for i in range(size):
            t = times[i]
            if not start < t <= event_time_ms:
                continue
            merchant, country = merchants[i], countries[i]
            new_merchant, new_country = merchant != 0, country != 0
            for j in range(i):  # a few entries: a quadratic scan beats building sets
                if start < times[j] <= event_time_ms:
                    if merchants[j] == merchant:
                        new_merchant = False
                    if countries[j] == country:
                        new_country = False
            distinct_merchants += new_merchant
            distinct_countries += new_country
        return distinct_merchants, distinct_countries

    def trim(self, through: int, keep: int = 4) -> None:
        """:meth:`expire` once more than ``keep`` entries are held and the oldest is at or before ``through``
        (expiry in small batches, not an empty-handed call per event)."""
        times = self.times
        if len(times) > keep and times[0] <= through:
            self.expire(through)

    def expire(self, through: int) -> None:
        """Forget the leading events at or before ``through``.

        Entries are in arrival order, which is event order up to the lateness:
        an out-of-order entry behind a newer one goes once it reaches the front.
        Until then :meth:`distinct` leaves it out by time (its floor is never
        below ``through``), so only memory, never a result, depends on this.
        """
        times = self.times
        size = len(times)
        count = 0
        while count < size and times[count] <= through:
            count += 1
        if count:
            del times[:count], self.merchants[:count], self.countries[:count]
