"""models/calibration.py: ranks are bounded, monotonic, recent and deterministic."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.calibration import PercentileCalibration

raw_scores = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=300)


@given(raw_scores, raw_scores)
@settings(max_examples=100, deadline=None)
def test_ranks_are_in_0_1_and_monotonic_in_the_raw_score(learned: list[float], probe: list[float]) -> None:
    calibration = PercentileCalibration(size=128, min_count=1)
    calibration.learn(np.array(learned))
    ordered = np.sort(np.array(probe))
    ranks = calibration.rank(ordered)
    assert ((ranks >= 0.0) & (ranks <= 1.0)).all()
    assert (np.diff(ranks) >= 0).all()
    assert calibration.rank(np.array([2.0])).tolist() == [1.0]  # above everything seen


def test_rank_is_the_share_of_recent_scores_at_most_the_raw_score() -> None:
    calibration = PercentileCalibration(size=1_000, min_count=10)
    calibration.learn(np.arange(1_000) / 1_000)
    np.testing.assert_allclose(calibration.rank(np.array([0.0, 0.0995, 0.5, 0.989])), [0.001, 0.1, 0.501, 0.99])


def test_only_the_last_size_scores_count() -> None:
    calibration = PercentileCalibration(size=100, min_count=10, refresh=1)
    calibration.learn(np.full(1_000, 0.9))  # old, forgotten
    calibration.learn(np.linspace(0.0, 0.5, 100))
    assert calibration.rank(np.array([0.5])).tolist() == [1.0]
    assert calibration.filled_ == 100 and len(calibration.ring_) == 100


def test_ranks_are_zero_until_min_count_scores_were_learned() -> None:
    calibration = PercentileCalibration(size=100, min_count=50)
    calibration.learn(np.linspace(0.0, 1.0, 49))
    assert calibration.rank(np.array([1.0])).tolist() == [0.0]
    calibration.learn(np.array([0.5]))
    assert calibration.rank(np.array([1.0])).tolist() == [1.0]


def test_sorted_snapshot_is_refreshed_after_refresh_new_scores() -> None:
    calibration = PercentileCalibration(size=1_000, min_count=1, refresh=100)
    calibration.learn(np.linspace(0.0, 1.0, 100))
    assert calibration.rank(np.array([0.5])).round(2).tolist() == [0.5]
    calibration.learn(np.full(50, 0.0))  # fewer than `refresh` new scores: the snapshot stays
    assert calibration.rank(np.array([0.5])).round(2).tolist() == [0.5]
    calibration.learn(np.full(50, 0.0))
    assert calibration.rank(np.array([0.5])).round(2).tolist() == [0.75]
