"""Novelty: the per-account Bloom filter, recent distinct counts, and the engine's
new_merchant / new_country / new_device / distinct_*_24h features."""

from __future__ import annotations

import random
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import FeatureSettings
from features import novelty
from features.ckernel import CRecentDistinct

from .conftest import IMPLEMENTATIONS

T0 = 1_767_225_600_000
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


# --------------------------------------------------------------------------- NoveltyFilter


@given(st.lists(st.binary(min_size=1, max_size=12), max_size=80))
@settings(max_examples=200, deadline=None)
def test_filter_never_forgets(impl, keys: list[bytes]) -> None:
    """No false 'new': a key added once is never new again (false 'seen' is the only error)."""
    seen = impl.novelty.NoveltyFilter(bits=1024)
    inserted: set[bytes] = set()
    for key in keys:
        is_new = seen.add_is_new(key)
        if key in inserted:
            assert not is_new
        inserted.add(key)
    assert all(not seen.add_is_new(key) for key in inserted)


def test_filter_size_is_fixed_whatever_the_number_of_inserts(impl) -> None:
    seen = impl.novelty.NoveltyFilter(bits=1024)
    assert len(seen.bits) == 128
    for i in range(20_000):
        seen.add_is_new(f"m:M{i}".encode())
    assert len(seen.bits) == 128
    assert impl.novelty.NoveltyFilter(bits=4096).bits == bytearray(512)


def _random_keys(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    return [("m:" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=rng.randint(3, 20)))).encode()
            for _ in range(count)]


@pytest.mark.parametrize(
    ("inserted", "probes"),
    [
        pytest.param(_random_keys(1, 100), _random_keys(2, 10_000), id="keys-of-random-length"),
        pytest.param(
            [f"m:M{i:06d}".encode() for i in range(100)],
            [f"m:M{i:06d}".encode() for i in range(100, 10_100)],
            id="fixed-width-ids",
        ),
    ],
)
def test_false_positive_rate_at_100_items_in_1024_bits(impl, inserted: list[bytes], probes: list[bytes]) -> None:
    seen = impl.novelty.NoveltyFilter(bits=1024)
    for key in inserted:
        seen.add_is_new(key)
    fresh = [p for p in probes if p not in set(inserted)]
    probe = impl.novelty.NoveltyFilter
    false_seen = sum(not probe(data=bytearray(seen.bits)).add_is_new(p) for p in fresh)  # on copies: no adding
    rate = false_seen / len(fresh)
    assert rate < 0.05, rate


def test_hashes_are_the_same_in_every_process(impl) -> None:
    code = "from features.novelty import stable_hash; print(stable_hash(b'm:M0001'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "99"}, cwd=Path(__file__).parents[2])
    assert int(out.stdout) == impl.novelty.stable_hash(b"m:M0001")


# --------------------------------------------------------------------------- RecentDistinct
#: Every RecentDistinct there is: the kernel's (pure, compiled) and the C twin when built.
RECENT_CLASSES = {name: kernel.novelty.RecentDistinct for name, kernel in IMPLEMENTATIONS.items()}
if CRecentDistinct is not None:
    RECENT_CLASSES["c"] = CRecentDistinct


@pytest.fixture(scope="module", params=sorted(RECENT_CLASSES))
def recent_class(request: pytest.FixtureRequest) -> type:
    return RECENT_CLASSES[request.param]



@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 4), st.integers(0, 3)), max_size=40),
    st.integers(0, 120),
    st.integers(1, 60),
    st.integers(-1, 100),
)
@settings(max_examples=200, deadline=None)
def test_recent_distinct_equals_brute_force(recent_class, events, t, window, through) -> None:
    recent = recent_class()
    for time, merchant, country in events:
        recent.add(time, merchant, country)
    recent.expire(through)
    alive = [e for e in events if e[0] > through]
    # every live entry is kept; expired ones go once no newer entry is in front of them
    leading = next((i for i, e in enumerate(events) if e[0] > through), len(events))
    assert recent.times == [e[0] for e in events[leading:]]
    inside = [e for e in alive if t - window < e[0] <= t]
    expected = (len({m for _, m, _ in inside if m}), len({c for _, _, c in inside if c}))
    assert recent.distinct(t, window, floor_ms=through) == expected


# --------------------------------------------------------------------------- engine features


def test_new_values_are_one_the_first_time_and_zero_after(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())
    names = ("new_merchant", "new_country", "new_device")
    first, _ = engine.transform_one(tx(T0, merchant_id="M1", country="FR", device_id="D1"))
    assert [feature(engine, first, n) for n in names] == [1.0, 1.0, 1.0]
    again, _ = engine.transform_one(tx(T0 + MINUTE, merchant_id="M1", country="FR", device_id="D1"))
    assert [feature(engine, again, n) for n in names] == [0.0, 0.0, 0.0]
    mixed, _ = engine.transform_one(tx(T0 + 2 * MINUTE, merchant_id="M2", country="FR", device_id="D1"))
    assert [feature(engine, mixed, n) for n in names] == [1.0, 0.0, 0.0]
    other_account, _ = engine.transform_one(tx(T0 + 3 * MINUTE, "A2", merchant_id="M1", country="FR", device_id="D1"))
    assert [feature(engine, other_account, n) for n in names] == [1.0, 1.0, 1.0]  # novelty is per account


def test_absent_fields_are_neutral_and_namespaces_do_not_mix(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())
    names = ("new_merchant", "new_country", "new_device")
    vector, _ = engine.transform_one(tx(T0))
    assert [feature(engine, vector, n) for n in names] == [0.0, 0.0, 0.0]
    assert feature(engine, vector, "distinct_merchants_24h") == 0.0
    assert feature(engine, vector, "distinct_countries_24h") == 0.0
    engine.transform_one(tx(T0 + 1, merchant_id="FR"))  # a merchant named like a country
    vector, _ = engine.transform_one(tx(T0 + 2, country="FR", device_id="FR"))
    assert [feature(engine, vector, n) for n in names] == [0.0, 1.0, 1.0]


def test_distinct_counts_cover_the_last_24_hours_including_this_event(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())

    def distinct(t: int, merchant: str | None, country: str | None) -> tuple[float, float]:
        vector, _ = engine.transform_one(tx(t, merchant_id=merchant, country=country))
        return feature(engine, vector, "distinct_merchants_24h"), feature(engine, vector, "distinct_countries_24h")

    assert distinct(T0, "M1", "FR") == (1, 1)
    assert distinct(T0 + HOUR, "M2", "FR") == (2, 1)
    assert distinct(T0 + 2 * HOUR, "M1", "DE") == (2, 2)
    assert distinct(T0 + 3 * HOUR, None, None) == (2, 2)
    assert distinct(T0 + DAY, "M3", "FR") == (3, 2)  # T0 is out: (T0, T0+24h]; M1 still there at 2h
    assert distinct(T0 + DAY + 90 * MINUTE, "M3", "FR") == (2, 2)  # M2 (1h) out; M1, DE (2h) in
    assert distinct(T0 + DAY + 2 * HOUR, "M3", "FR") == (1, 1)  # M1/DE at exactly t-24h are out
    assert distinct(T0 + 3 * DAY, None, None) == (0, 0)


def test_distinct_counts_of_out_of_order_event_use_its_own_time(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(allowed_lateness_s=3600))
    engine.transform_one(tx(T0, merchant_id="M1"))
    engine.transform_one(tx(T0 + DAY + 30 * MINUTE, merchant_id="M2"))
    vector, late = engine.transform_one(tx(T0 + DAY - MINUTE, merchant_id="M3"))  # in time; M2 is after it
    assert not late
    assert feature(engine, vector, "distinct_merchants_24h") == 2  # M1 and M3


def test_late_event_novelty_is_scored_against_current_state(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(allowed_lateness_s=0))
    engine.transform_one(tx(T0 + 10 * MINUTE, merchant_id="M1", country="FR", device_id="D1"))
    vector, late = engine.transform_one(tx(T0, merchant_id="M9", country="JP", device_id="D9"))
    assert late
    assert [feature(engine, vector, n) for n in ("new_merchant", "new_country", "new_device")] == [1.0, 1.0, 1.0]


def test_late_event_does_not_mark_values_as_seen(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(allowed_lateness_s=0))
    engine.transform_one(tx(T0 + 10 * MINUTE, merchant_id="M1"))
    _, late = engine.transform_one(tx(T0, merchant_id="M9"))
    assert late
    vector, _ = engine.transform_one(tx(T0 + 11 * MINUTE, merchant_id="M9"))
    assert feature(engine, vector, "new_merchant") == 1.0
    assert feature(engine, vector, "distinct_merchants_24h") == 2.0  # M1 and M9, not the late one


def test_recent_distinct_state_is_bounded_like_the_window(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(max_events_per_account=5))
    for i in range(100):
        engine.transform_one(tx(T0 + i * 1_000, merchant_id=f"M{i}"))
    account = engine.accounts["A1"]
    assert len(account.window) == 5
    assert len(account.recent.times) <= 5  # actual: 100


_recent_operation = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 100), st.integers(0, 40), st.integers(0, 5)),
    st.tuples(st.just("add"), st.integers(0, 100), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("expire"), st.integers(-1, 100), st.just(0), st.just(0)),
    st.tuples(st.just("trim"), st.integers(-1, 100), st.integers(0, 6), st.just(0)),
)


@pytest.mark.skipif(CRecentDistinct is None, reason="the C twin is not built here")
@given(st.lists(_recent_operation, max_size=150), st.integers(5, 200))
@settings(max_examples=200, deadline=None)
def test_c_recent_distinct_is_the_python_one(operations, max_entries) -> None:
    python, c = novelty.RecentDistinct(), CRecentDistinct()
    for kind, a, b, d in operations:
        if kind == "add":
            python.add(a, b, d, max_entries)
            c.add(a, b, d, max_entries)
        elif kind == "expire":
            python.expire(a)
            c.expire(a)
        else:
            python.trim(a, b)
            c.trim(a, b)
        assert (c.times, c.merchants, c.countries) == (python.times, python.merchants, python.countries)
        for t, window, floor in ((a, 30, -(2**62)), (a, 200, a - 50), (100, 101, -1)):  # sizes past 64: qsort path
            assert c.distinct(t, window, floor) == python.distinct(t, window, floor)
    assert len(c) == len(python.times)
