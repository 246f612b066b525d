"""models/anomaly.py: the batched Half-Space Trees are River's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from river.anomaly import HalfSpaceTrees

from models import BatchHalfSpaceTrees

NAMES = ("f0", "f1", "f2", "f3", "f4", "f5")


def _masses(river: HalfSpaceTrees) -> list[list[tuple[int, int]]]:
    return [[(node.l_mass, node.r_mass) for node in tree.iter_dfs()] for tree in river.trees]


def _splits(river: HalfSpaceTrees) -> list[list[tuple[str, float]]]:
    return [
        [(node.feature, node.threshold) for node in tree.iter_dfs() if hasattr(node, "feature")] for tree in river.trees
    ]


@pytest.mark.parametrize("batch_size", [1, 37, 100, 250, 1000])
def test_scores_equal_river_score_one_before_the_batch_and_masses_equal_learn_one(batch_size: int) -> None:
    rng = np.random.default_rng(batch_size)
    x = rng.random((1_600, len(NAMES))) ** 3  # skewed, like scaled heavy-tailed features
    batched = BatchHalfSpaceTrees(NAMES, n_trees=5, height=4, window_size=100, seed=3)
    river = HalfSpaceTrees(n_trees=5, height=4, window_size=100, seed=3)
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        expected = [river.score_one(dict(zip(NAMES, row, strict=True))) for row in chunk]
        leaves = batched.leaves(chunk)
        np.testing.assert_array_equal(batched.score(leaves), np.array(expected, dtype=np.float64))
        batched.learn(leaves)
        for row in chunk:
            river.learn_one(dict(zip(NAMES, row, strict=True)))
    synced = batched.to_river()
    assert _splits(synced) == _splits(river)
    assert _masses(synced) == _masses(river)
    assert (synced.counter, synced._first_window) == (river.counter, river._first_window)
    # the synced River object goes on exactly like the one that learned per event
    probe = rng.random((50, len(NAMES)))
    assert [synced.score_one(dict(zip(NAMES, r, strict=True))) for r in probe] == [
        river.score_one(dict(zip(NAMES, r, strict=True))) for r in probe
    ]


def test_default_size_model_on_many_features_equals_river() -> None:
    names = tuple(f"x{i:02d}" for i in range(15))
    rng = np.random.default_rng(7)
    x = np.clip(rng.normal(0.5, 0.15, (1_300, len(names))), 0, 1)
    x[::97] = rng.random((len(x[::97]), len(names)))  # a few outliers
    batched = BatchHalfSpaceTrees(names, n_trees=25, height=8, window_size=250, seed=1)
    river = HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=1)
    for start in range(0, len(x), 650):
        chunk = x[start : start + 650]
        expected = np.array([river.score_one(dict(zip(names, row, strict=True))) for row in chunk], dtype=np.float64)
        leaves = batched.leaves(chunk)
        np.testing.assert_array_equal(batched.score(leaves), expected)
        batched.learn(leaves)
        for row in chunk:
            river.learn_one(dict(zip(names, row, strict=True)))
    assert _masses(batched.to_river()) == _masses(river)


def test_values_exactly_on_thresholds_take_rivers_side() -> None:
    batched = BatchHalfSpaceTrees(NAMES, n_trees=3, height=4, window_size=20, seed=5)
    thresholds = {name: [] for name in NAMES}
    for feature, threshold in (split for tree in _splits(batched.to_river()) for split in tree):
        thresholds[feature].append(threshold)
    rng = np.random.default_rng(2)
    x = np.array([[rng.choice(thresholds[n]) if thresholds[n] else 0.5 for n in NAMES] for _ in range(120)])
    river = HalfSpaceTrees(n_trees=3, height=4, window_size=20, seed=5)
    for row in x[:40]:
        river.learn_one(dict(zip(NAMES, row, strict=True)))
    batched.learn(batched.leaves(x[:40]))
    expected = [river.score_one(dict(zip(NAMES, row, strict=True))) for row in x[40:]]
    np.testing.assert_array_equal(batched.score(batched.leaves(x[40:])), np.array(expected, dtype=np.float64))
    assert _masses(batched.to_river()) == _masses(river)


def test_first_window_scores_zero_like_river() -> None:
    batched = BatchHalfSpaceTrees(NAMES, n_trees=2, height=3, window_size=50, seed=1)
    x = np.random.default_rng(0).random((49, len(NAMES)))
    batched.learn(batched.leaves(x))
    assert batched.first_window_ and not batched.score(batched.leaves(x)).any()
    batched.learn(batched.leaves(x[:1]))
    assert not batched.first_window_ and batched.score(batched.leaves(x)).all()


def test_state_restores_into_a_model_built_with_the_same_parameters() -> None:
    rng = np.random.default_rng(1)
    first = BatchHalfSpaceTrees(NAMES, n_trees=4, height=5, window_size=64, seed=9)
    first.learn(first.leaves(rng.random((300, len(NAMES)))))
    second = BatchHalfSpaceTrees(NAMES, n_trees=4, height=5, window_size=64, seed=9)
    second.restore(first.state())
    probe = rng.random((200, len(NAMES)))
    np.testing.assert_array_equal(second.score(second.leaves(probe)), first.score(first.leaves(probe)))
    assert _masses(second.to_river()) == _masses(first.to_river())
