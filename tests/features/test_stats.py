"""RunningStats against numpy (mean, sample std, EWMA), merging partial statistics, and the
engine's amount features, which describe the account's *earlier* amounts."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import FeatureSettings

T0 = 1_767_225_600_000
MINUTE = 60_000

_amounts = st.lists(st.integers(0, 10**8).map(lambda cents: cents / 100), max_size=60)
_alpha = st.sampled_from((0.1, 0.5, 1.0, 0.03))


def _ewma(values: list[float], alpha: float) -> float:
    level = values[0]
    for x in values[1:]:
        level = alpha * x + (1 - alpha) * level
    return level


def _close(scale: float) -> dict[str, float]:
    return {"rel": 1e-9, "abs": 1e-12 * (scale + 1.0)}


@given(_amounts, _alpha)
@settings(max_examples=200, deadline=None)
def test_running_stats_equal_numpy(impl, values: list[float], alpha: float) -> None:
    stats = impl.stats.RunningStats(alpha)
    for x in values:
        stats.update(x)
    scale = max(values, default=0.0)
    assert stats.n == len(values)
    if not values:
        assert (stats.mean, stats.std(), stats.ewma) == (0.0, 0.0, 0.0)
        return
    assert stats.mean == pytest.approx(float(np.mean(values)), **_close(scale))
    expected_std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    assert stats.std() == pytest.approx(expected_std, **_close(scale))
    assert stats.ewma == pytest.approx(_ewma(values, alpha), **_close(scale))


@given(_amounts, _amounts, _alpha)
@settings(max_examples=200, deadline=None)
def test_merge_equals_statistics_of_the_concatenation(impl, left: list[float], right: list[float], alpha) -> None:
    a, b, whole = impl.stats.RunningStats(alpha), impl.stats.RunningStats(alpha), impl.stats.RunningStats(alpha)
    for x in left:
        a.update(x)
        whole.update(x)
    for x in right:
        b.update(x)
        whole.update(x)
    a += b
    both = left + right
    scale = max(both, default=0.0)
    assert a.n == whole.n == len(both)
    if not both:
        return
    assert a.mean == pytest.approx(float(np.mean(both)), **_close(scale))
    variance = float(np.var(both, ddof=1)) if len(both) > 1 else 0.0
    assert a.m2 / max(a.n - 1, 1) == pytest.approx(variance, rel=1e-9, abs=1e-12 * (scale + 1.0) ** 2)
    assert a.std() == pytest.approx(whole.std(), **_close(scale))
    # the EWMA of a merge is the later stream's recent level
    assert a.ewma == (b.ewma if right else whole.ewma)


def test_merge_into_empty_copies_and_merge_of_empty_is_identity(impl) -> None:
    empty, full = impl.stats.RunningStats(0.1), impl.stats.RunningStats(0.1)
    for x in (1.0, 2.0, 4.0):
        full.update(x)
    empty += full
    assert (empty.n, empty.mean, empty.m2, empty.ewma) == (full.n, full.mean, full.m2, full.ewma)
    before = (full.n, full.mean, full.m2, full.ewma)
    full += impl.stats.RunningStats(0.1)
    assert (full.n, full.mean, full.m2, full.ewma) == before


@given(amounts=st.lists(st.integers(1, 10**6).map(lambda cents: cents / 100), min_size=1, max_size=40), alpha=_alpha)
@settings(max_examples=100, deadline=None)
def test_engine_amount_features_use_the_earlier_amounts(impl, amounts: list[float], alpha: float, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(ewma_alpha=alpha))
    index = engine.registry.index
    for i, amount in enumerate(amounts):
        vector, _ = engine.transform_one(tx(T0 + i * MINUTE, "A", amount))
        earlier = amounts[:i]
        assert vector[index("history_count")] == i
        if not earlier:
            names = ("amount_mean", "amount_std", "amount_ewma", "amount_z", "amount_ratio")
            neutral = [vector[index(n)] for n in names]
            assert neutral == [amount, 0.0, amount, 0.0, 1.0]
            continue
        scale = max(amounts)
        mean = float(np.mean(earlier))
        std = float(np.std(earlier, ddof=1)) if len(earlier) > 1 else 0.0
        assert vector[index("amount_mean")] == pytest.approx(mean, **_close(scale))
        assert vector[index("amount_std")] == pytest.approx(std, **_close(scale))
        assert vector[index("amount_ewma")] == pytest.approx(_ewma(earlier, alpha), **_close(scale))
        assert vector[index("amount_ratio")] == pytest.approx(amount / mean, rel=1e-9)
        exact_std = statistics.stdev(earlier) if len(earlier) > 1 else 0.0  # exact: 0 for equal amounts
        if exact_std > 0:
            z = (amount - statistics.mean(earlier)) / exact_std
            assert vector[index("amount_z")] == pytest.approx(z, rel=1e-7, abs=1e-9 * scale / exact_std)
        else:
            assert vector[index("amount_z")] == 0.0


def test_engine_amount_features_hand_built(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(ewma_alpha=0.5))
    for i, amount in enumerate((10.0, 20.0, 30.0)):
        engine.transform_one(tx(T0 + i * MINUTE, "A", amount))
    vector, _ = engine.transform_one(tx(T0 + 3 * MINUTE, "A", 60.0))
    assert feature(engine, vector, "amount_mean") == 20.0
    assert feature(engine, vector, "amount_std") == 10.0
    assert feature(engine, vector, "amount_ewma") == 22.5  # 10 -> 15 -> 22.5
    assert feature(engine, vector, "amount_z") == 4.0
    assert feature(engine, vector, "amount_ratio") == 3.0
    assert feature(engine, vector, "history_count") == 3.0
    assert feature(engine, vector, "log_amount") == math.log1p(60.0)


def test_zero_mean_and_zero_spread_give_neutral_ratio_and_z(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())
    engine.transform_one(tx(T0, "A", 0.0))
    engine.transform_one(tx(T0 + MINUTE, "A", 0.0))
    vector, _ = engine.transform_one(tx(T0 + 2 * MINUTE, "A", 5.0))
    assert feature(engine, vector, "amount_ratio") == 1.0  # mean 0: no ratio
    assert feature(engine, vector, "amount_z") == 0.0  # std 0: no z
