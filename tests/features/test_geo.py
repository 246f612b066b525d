"""Great-circle distance, the location trail, and the engine's distance / speed features."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import FeatureSettings

T0 = 1_767_225_600_000
MINUTE = 60_000
HOUR = 3_600_000
LONDON = {"lat": 51.5074, "lon": -0.1278}
PARIS = {"lat": 48.8566, "lon": 2.3522}
NEW_YORK = {"lat": 40.7128, "lon": -74.0060}

_lat = st.floats(-90, 90, allow_nan=False)
_lon = st.floats(-180, 180, allow_nan=False)


def test_haversine_known_distances(impl) -> None:
    assert impl.geo.haversine_km(LONDON["lat"], LONDON["lon"], PARIS["lat"], PARIS["lon"]) == pytest.approx(344, abs=3)
    london_new_york = impl.geo.haversine_km(LONDON["lat"], LONDON["lon"], NEW_YORK["lat"], NEW_YORK["lon"])
    assert london_new_york == pytest.approx(5570, abs=15)
    assert impl.geo.haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * 6371.0088)  # half the equator
    assert impl.geo.haversine_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * 6371.0088)  # pole to pole


@given(_lat, _lon, _lat, _lon)
@settings(max_examples=200, deadline=None)
def test_haversine_is_a_symmetric_bounded_distance(impl, lat1, lon1, lat2, lon2) -> None:
    d = impl.geo.haversine_km(lat1, lon1, lat2, lon2)
    assert 0.0 <= d <= math.pi * 6371.0088 + 1e-6
    assert d == pytest.approx(impl.geo.haversine_km(lat2, lon2, lat1, lon1), rel=1e-9, abs=1e-9)
    assert impl.geo.haversine_km(lat1, lon1, lat1, lon1) == 0.0


@given(st.lists(st.tuples(st.integers(0, 50), _lat, _lon), max_size=30), st.integers(1, 6), st.integers(-5, 60))
@settings(max_examples=200, deadline=None)
def test_trail_keeps_the_latest_located_events_and_answers_at_or_before(impl, events, capacity, query) -> None:
    trail = impl.geo.LocationTrail(capacity)
    for t, lat, lon in events:
        trail.add(t, lat, lon)
    # model: stable sort by time (ties in arrival order), keep the `capacity` latest
    ordered = sorted(enumerate(events), key=lambda e: (e[1][0], e[0]))
    kept = [e for _, e in ordered][-capacity:] if events else []
    assert len(trail.times) == min(capacity, len(events))
    assert trail.times == [t for t, _, _ in kept]
    assert list(zip(trail.times, trail.lats, trail.lons, strict=True)) == kept
    at_or_before = [e for e in kept if e[0] <= query]
    assert trail.previous(query) == (at_or_before[-1] if at_or_before else None)


def _engine(impl, **overrides: object):
    return impl.engine.FeatureEngine(FeatureSettings(**overrides))  # type: ignore[arg-type]


def test_london_then_paris_thirty_minutes_later(impl, tx, feature) -> None:
    engine = _engine(impl)
    first, _ = engine.transform_one(tx(T0, **LONDON))
    assert (feature(engine, first, "distance_km"), feature(engine, first, "speed_kmh")) == (0.0, 0.0)
    vector, _ = engine.transform_one(tx(T0 + 30 * MINUTE, **PARIS))
    distance = feature(engine, vector, "distance_km")
    assert distance == pytest.approx(344, abs=3)
    assert feature(engine, vector, "speed_kmh") == pytest.approx(688, abs=6)
    assert feature(engine, vector, "speed_kmh") == pytest.approx(distance * 2, rel=1e-12)


def test_same_point_twice_is_zero(impl, tx, feature) -> None:
    engine = _engine(impl)
    engine.transform_one(tx(T0, **PARIS))
    vector, _ = engine.transform_one(tx(T0 + 5 * MINUTE, **PARIS))
    assert feature(engine, vector, "distance_km") == 0.0
    assert feature(engine, vector, "speed_kmh") == 0.0


def test_missing_location_is_neutral_and_keeps_the_previous_one(impl, tx, feature) -> None:
    engine = _engine(impl)
    engine.transform_one(tx(T0, **LONDON))
    vector, _ = engine.transform_one(tx(T0 + 10 * MINUTE))  # no lat/lon
    assert feature(engine, vector, "distance_km") == 0.0
    assert feature(engine, vector, "speed_kmh") == 0.0
    vector, _ = engine.transform_one(tx(T0 + 30 * MINUTE, **PARIS))
    assert feature(engine, vector, "distance_km") == pytest.approx(344, abs=3)  # from London, 30 min earlier
    assert feature(engine, vector, "speed_kmh") == pytest.approx(688, abs=6)


def test_speed_uses_at_least_one_minute(impl, tx, feature) -> None:
    engine = _engine(impl)
    engine.transform_one(tx(T0, **LONDON))
    vector, _ = engine.transform_one(tx(T0 + 1_000, **PARIS))  # one second later
    distance = feature(engine, vector, "distance_km")
    assert feature(engine, vector, "speed_kmh") == pytest.approx(distance * 60, rel=1e-12)
    engine = _engine(impl)
    engine.transform_one(tx(T0, **LONDON))
    vector, _ = engine.transform_one(tx(T0, **PARIS))  # same instant
    assert feature(engine, vector, "speed_kmh") == pytest.approx(feature(engine, vector, "distance_km") * 60, rel=1e-12)


def test_out_of_order_event_uses_latest_located_event_at_or_before_it(impl, tx, feature) -> None:
    engine = _engine(impl, allowed_lateness_s=3600)
    engine.transform_one(tx(T0, **LONDON))
    engine.transform_one(tx(T0 + 40 * MINUTE, **NEW_YORK))
    engine.transform_one(tx(T0 + 20 * MINUTE))  # unlocated, in between
    vector, late = engine.transform_one(tx(T0 + 30 * MINUTE, **PARIS))  # out of order, within lateness
    assert not late
    assert feature(engine, vector, "distance_km") == pytest.approx(344, abs=3)  # from London, not New York
    assert feature(engine, vector, "speed_kmh") == pytest.approx(688, abs=6)
    # and the next in-order event measures from New York (the latest located at or before it)
    vector, _ = engine.transform_one(tx(T0 + 100 * MINUTE, **PARIS))
    assert feature(engine, vector, "distance_km") == pytest.approx(
        impl.geo.haversine_km(NEW_YORK["lat"], NEW_YORK["lon"], PARIS["lat"], PARIS["lon"])
    )
    assert feature(engine, vector, "speed_kmh") == pytest.approx(feature(engine, vector, "distance_km"), rel=1e-12)


def test_late_located_event_measures_against_the_trail_without_joining_it(impl, tx, feature) -> None:
    engine = _engine(impl, allowed_lateness_s=60)
    engine.transform_one(tx(T0, **LONDON))
    engine.transform_one(tx(T0 + HOUR, **NEW_YORK))
    vector, late = engine.transform_one(tx(T0 + 30 * MINUTE, **PARIS))
    assert late
    assert feature(engine, vector, "distance_km") == pytest.approx(344, abs=3)
    assert engine.accounts["A1"].trail.times == [T0, T0 + HOUR]


def test_trail_capacity_bounds_memory(impl, tx) -> None:
    engine = _engine(impl, location_trail=2)
    for i in range(10):
        engine.transform_one(tx(T0 + i * MINUTE, **LONDON))
    trail = engine.accounts["A1"].trail
    assert trail.times == [T0 + 8 * MINUTE, T0 + 9 * MINUTE]
    assert len(trail.lats) == len(trail.lons) == 2
