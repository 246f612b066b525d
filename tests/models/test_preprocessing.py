"""models/preprocessing.py: batch learning equals row-by-row learning; scaling stays in [0, 1]."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.preprocessing import RecentMoments, RunningMinMax, signed_log1p

matrices = arrays(np.float64, st.tuples(st.integers(1, 40), st.just(3)), elements=st.floats(-1e6, 1e6))


@given(matrices, st.integers(1, 40))
@settings(max_examples=100, deadline=None)
def test_recent_moments_of_a_batch_equal_those_of_its_rows_one_by_one(x: np.ndarray, split: int) -> None:
    batched, single = RecentMoments(3, half_life=7.0), RecentMoments(3, half_life=7.0)
    batched.learn(x[:split])
    batched.learn(x[split:])
    for row in x:
        single.learn(row[None, :])
    np.testing.assert_allclose(batched.mean(), single.mean(), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(batched.std(), single.std(), rtol=1e-6, atol=1e-3)


def test_recent_moments_forget_with_the_half_life() -> None:
    moments = RecentMoments(1, half_life=10.0)
    moments.learn(np.zeros((1_000, 1)))
    moments.learn(np.ones((10, 1)))  # the last 10 rows weigh as much as everything before
    np.testing.assert_allclose(moments.mean(), [0.5], atol=1e-3)


@given(matrices, matrices)
@example(np.array([[5e-324, 0.0, 0.0], [0.0, 0.0, 0.0]]), np.zeros((1, 3)))  # a subnormal span (found by CI)
@settings(max_examples=100, deadline=None)
def test_running_min_max_maps_into_0_1_and_keeps_order(learned: np.ndarray, probe: np.ndarray) -> None:
    scaler = RunningMinMax(3)
    scaler.learn(signed_log1p(learned))
    scaled = scaler.transform(signed_log1p(probe))
    assert ((scaled >= 0.0) & (scaled <= 1.0)).all()
    for column in range(3):
        order = np.argsort(probe[:, column], kind="stable")
        assert (np.diff(scaled[order, column]) >= 0).all()


def test_columns_with_nothing_to_scale_by_map_to_the_middle() -> None:
    scaler = RunningMinMax(2)
    assert scaler.transform(np.array([[3.0, -3.0]])).tolist() == [[0.5, 0.5]]
    scaler.learn(np.array([[1.0, 2.0], [1.0, 4.0]]))
    assert scaler.transform(np.array([[7.0, 3.0]])).tolist() == [[0.5, 0.5]]
