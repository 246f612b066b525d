"""EventWindow (pure, compiled, and its C twin) against a brute-force list of events: insertion in any
order, aggregates, expiry in chunks, dropping the oldest, and rebuilding from a checkpoint; and the C twin
against the Python definition, bit for bit."""

from __future__ import annotations

import math
from itertools import accumulate
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import windows as python_windows
from features.ckernel import CEventWindow

from .conftest import IMPLEMENTATIONS

#: Every EventWindow there is: the kernel's (pure, compiled) and the C twin when built.
WINDOWS = dict(IMPLEMENTATIONS.items())
if CEventWindow is not None:
    WINDOWS["c"] = SimpleNamespace(name="c", windows=SimpleNamespace(EventWindow=CEventWindow))


@pytest.fixture(scope="module", params=sorted(WINDOWS))
def impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    """Here ``impl.windows.EventWindow`` is each window implementation in turn."""
    return WINDOWS[request.param]


EPS = 2.0**-52

_time = st.integers(0, 100_000)
_amount = st.integers(0, 10**7).map(lambda cents: cents / 100)
_operation = st.one_of(
    st.tuples(st.just("insert"), _time, _amount),
    st.tuples(st.just("insert"), _time, _amount),
    st.tuples(st.just("insert"), _time, _amount),
    st.tuples(st.just("expire"), _time, st.integers(1, 10)),
    st.tuples(st.just("drop_oldest"), st.integers(-2, 6), st.just(0)),
)


def _brute(events: list[tuple[int, float]], t: int, window: int) -> tuple[int, float]:
    inside = [a for time, a in events if t - window < time <= t]
    return len(inside), math.fsum(inside)


def _tolerance(events: list[tuple[int, float]]) -> float:
    """Prefix-sum differences carry the rounding of the whole prefix."""
    return 4 * (len(events) + 1) * EPS * (sum(a for _, a in events) + 1.0)


@given(st.lists(_operation, max_size=60), st.lists(st.tuples(_time, st.integers(1, 120_000)), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_window_equals_brute_force_under_any_operations(impl, operations, queries) -> None:
    window = impl.windows.EventWindow()
    events: list[tuple[int, float]] = []  # the model: (time, amount) sorted by time, ties in arrival order
    for operation in operations:
        if operation[0] == "insert":
            _, t, amount = operation
            end = window.insert(t, amount)
            events.append((t, amount))
            events.sort(key=lambda e: e[0])  # stable: a tie goes after the earlier arrivals
            assert end == sum(1 for time, _ in events if time <= t)  # just past the new event
            assert window.previous_time(end) == (events[end - 2][0] if end >= 2 else None)
        elif operation[0] == "expire":
            _, through, min_chunk = operation
            expired = sum(1 for time, _ in events if time <= through)
            dropped = window.expire(through, min_chunk=min_chunk)
            assert dropped in (0, expired)
            if expired and (expired >= min_chunk or expired == len(events)):
                assert dropped == expired  # a full chunk (or everything) goes at once
            elif expired:
                assert dropped == 0  # fewer than min_chunk stay, lazily
            del events[:dropped]
        else:
            _, count, _ = operation
            dropped = window.drop_oldest(min(count, len(events)))
            assert dropped == max(0, min(count, len(events)))
            del events[:dropped]

        assert window.times == [t for t, _ in events]
        assert window.amounts == [a for _, a in events]
        assert window.prefix == list(accumulate(window.amounts, initial=0.0))  # left to right, exactly
        assert len(window) == len(events)

    for t, length in queries:
        count, total = window.aggregate(t, length)
        expected_count, expected_total = _brute(events, t, length)
        assert count == expected_count
        assert total == pytest.approx(expected_total, rel=1e-9, abs=_tolerance(events))
        assert window.end_index(t) == sum(1 for time, _ in events if time <= t)


@given(
    st.one_of(
        st.lists(st.tuples(_time, _amount), min_size=1, max_size=40),
        st.lists(st.tuples(st.integers(0, 3_000), _amount), min_size=20, max_size=120),  # dense: long scans
    ),
    st.lists(st.integers(1, 50_000), min_size=1, max_size=5, unique=True),
)
@settings(max_examples=150, deadline=None)
def test_aggregates_into_gives_count_sum_mean_per_window(impl, events, windows) -> None:
    windows = tuple(sorted(windows))
    window = impl.windows.EventWindow()
    for i, (t, amount) in enumerate(events):
        end = window.insert(t, amount)
        out: list[float] = [-1.0]
        window.aggregates_into(t, windows, end, out)
        assert out[0] == -1.0 and len(out) == 1 + 3 * len(windows)  # appends, never overwrites
        seen = sorted(events[: i + 1], key=lambda e: e[0])
        upto = [e for e in seen if e[0] <= t]  # the new one goes after equal times that arrived before it
        for k, length in enumerate(windows):
            count, total, mean = out[1 + 3 * k : 4 + 3 * k]
            expected_count, expected_total = _brute(upto, t, length)
            assert count == expected_count and count >= 1
            assert total == pytest.approx(expected_total, rel=1e-9, abs=_tolerance(seen))
            assert mean == pytest.approx(expected_total / expected_count, rel=1e-9, abs=_tolerance(seen))
            assert (count, total) == window.aggregate(t, length, end)  # the same arithmetic


def test_empty_window_means_are_zero(impl) -> None:
    window = impl.windows.EventWindow()
    out: list[float] = []
    window.aggregates_into(1_000, (10, 100), 0, out)
    assert out == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert window.aggregate(1_000, 10) == (0, 0.0)
    assert window.previous_time(0) is None and window.previous_time(1) is None


def test_window_bounds_are_open_at_the_start_and_closed_at_the_end(impl) -> None:
    window = impl.windows.EventWindow()
    for t in (1_000, 2_000, 3_000):
        window.insert(t, 1.0)
    assert window.aggregate(3_000, 2_000) == (2, 2.0)  # (1000, 3000]: 1000 excluded
    assert window.aggregate(3_000, 2_001) == (3, 3.0)
    assert window.aggregate(2_999, 10_000) == (2, 2.0)  # 3000 is after the end


def test_out_of_order_insert_recomputes_prefix_after_the_insertion_point(impl) -> None:
    window = impl.windows.EventWindow()
    for t, amount in ((1_000, 0.1), (3_000, 0.2), (4_000, 0.3)):
        window.insert(t, amount)
    assert window.insert(2_000, 0.7) == 2
    assert window.times == [1_000, 2_000, 3_000, 4_000]
    assert window.prefix == list(accumulate([0.1, 0.7, 0.2, 0.3], initial=0.0))
    assert window.aggregate(4_000, 2_500) == (3, pytest.approx(1.2))


def test_expire_is_lazy_until_a_chunk_or_everything_has_expired(impl) -> None:
    window = impl.windows.EventWindow(list(range(10)), [1.0] * 10)
    assert window.expire(through=3) == 0  # 4 expired, fewer than the default chunk of 8
    assert len(window) == 10
    assert window.expire(through=7) == 8
    assert window.times == [8, 9]
    assert window.expire(through=100) == 2  # everything expired: drop it all, whatever the chunk
    assert window.times == [] and window.prefix == [0.0]
    assert window.expire(through=100) == 0


@given(st.lists(st.tuples(_time, _amount), max_size=40), st.integers(0, 40))
@settings(max_examples=100, deadline=None)
def test_rebuilt_window_computes_exactly_what_the_original_does(impl, events, drop) -> None:
    """A window rebuilt from (times, amounts), as a restored checkpoint is, gives identical results."""
    window = impl.windows.EventWindow()
    for t, amount in events:
        window.insert(t, amount)
    window.drop_oldest(min(drop, len(window)))
    rebuilt = impl.windows.EventWindow(list(window.times), list(window.amounts))
    assert rebuilt.prefix == window.prefix
    for t in {t for t, _ in events} | {0, 100_000}:
        for length in (1, 500, 5_000, 100_000):
            assert rebuilt.aggregate(t, length) == window.aggregate(t, length)


def test_drop_oldest_returns_the_number_actually_dropped(impl) -> None:
    window = impl.windows.EventWindow([1, 2, 3], [1.0, 1.0, 1.0])
    assert window.drop_oldest(10) == 3  # actual: 10


@pytest.mark.skipif(CEventWindow is None, reason="the C window is not built here")
@given(st.lists(_operation, max_size=80), st.lists(st.integers(1, 50_000), min_size=1, max_size=6, unique=True))
@settings(max_examples=200, deadline=None)
def test_c_window_is_the_python_window_bit_for_bit(operations, windows) -> None:
    windows = tuple(sorted(windows))
    python, c = python_windows.EventWindow(), CEventWindow()
    for operation in operations:
        if operation[0] == "insert":
            _, t, amount = operation
            end = python.insert(t, amount)
            assert c.insert(t, amount) == end
            left: list[float] = []
            right: list[float] = []
            floor = t - 40_000
            python.aggregates_into(t, windows, end, left, floor)
            c.aggregates_into(t, windows, end, right, floor)
            assert left == right  # the same doubles, not merely close
            assert c.previous_time(end) == python.previous_time(end)
            assert c.previous_time(end + 1) == python.previous_time(end + 1)
        elif operation[0] == "expire":
            _, through, min_chunk = operation
            assert c.expire(through, min_chunk) == python.expire(through, min_chunk)
        else:
            assert c.drop_oldest(operation[1]) == python.drop_oldest(operation[1])
        assert (c.times, c.amounts, c.prefix, c.starts) == (python.times, python.amounts, python.prefix, python.starts)
        assert c.times_bytes() == b"".join(t.to_bytes(8, "little", signed=True) for t in python.times)


@pytest.mark.skipif(CEventWindow is None, reason="the C window is not built here")
def test_c_window_rejects_bad_arguments_with_the_name_of_the_field() -> None:
    window = CEventWindow()
    with pytest.raises(TypeError, match="event_time_ms"):
        window.insert("soon", 1.0)
    with pytest.raises(ValueError, match="2 times but 1 amounts"):
        CEventWindow([1, 2], [1.0])
    with pytest.raises(IndexError, match="end 5"):
        window.aggregates_into(0, (10,), 5, [])
