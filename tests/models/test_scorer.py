"""The scorer: batched HST equals River's, rules equal a brute-force evaluation, state round-trips,
and fused scores rank generated fraud far above genuine traffic."""

from __future__ import annotations

import json
import operator

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river.anomaly import HalfSpaceTrees
from sklearn.metrics import roc_auc_score

from configs import ConfigError, FeatureSettings, RuleSettings, ScoringSettings, load_settings
from contracts.records import Reasons
from features import FeatureBatch, FeatureRegistry
from features.offline import build_feature_table
from models import BatchHalfSpaceTrees, Scorer, compile_rule
from pipelines.synthetic import generate

REGISTRY = FeatureRegistry.from_settings(FeatureSettings())


def _batch(values: np.ndarray) -> FeatureBatch:
    return FeatureBatch(values, np.zeros(len(values), dtype=bool), REGISTRY.names, REGISTRY.version)


@pytest.mark.parametrize("batch_size", [1, 37, 250, 1000])
def test_batched_half_space_trees_equal_river_score_one_and_learn_one(batch_size: int) -> None:
    rng = np.random.default_rng(batch_size)
    x = rng.random((1_600, 6))
    batched = BatchHalfSpaceTrees(n_trees=5, height=4, window_size=100, seed=3, width=6)
    river = HalfSpaceTrees(n_trees=5, height=4, window_size=100, seed=3)
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        expected = [river.score_one(dict(enumerate(row))) for row in chunk]  # the model before this batch
        np.testing.assert_allclose(batched.score(chunk), expected, rtol=0, atol=1e-12)
        batched.learn(chunk)
        for row in chunk:
            river.learn_one(dict(enumerate(row)))
    synced = batched.to_river()
    for mine, theirs in zip(synced.trees, river.trees, strict=True):
        for a, b in zip(mine.iter_dfs(), theirs.iter_dfs(), strict=True):
            assert (a.l_mass, a.r_mass) == (b.l_mass, b.r_mass)


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
_NAMES = ("a", "b", "c")
comparisons = st.tuples(st.sampled_from(_NAMES), st.sampled_from(sorted(_OPS)), st.integers(-3, 3))
expressions = st.recursive(
    comparisons.map(lambda c: (f"{c[0]} {c[1]} {c[2]}", lambda row, c=c: _OPS[c[1]](row[_NAMES.index(c[0])], c[2]))),
    lambda inner: st.one_of(
        st.tuples(inner, inner, st.sampled_from(["and", "or"])).map(
            lambda t: (f"({t[0][0]}) {t[2]} ({t[1][0]})",
                       (lambda row, t=t: t[0][1](row) and t[1][1](row)) if t[2] == "and"
                       else (lambda row, t=t: t[0][1](row) or t[1][1](row)))),
        inner.map(lambda e: (f"not ({e[0]})", lambda row, e=e: not e[1](row))),
    ),
    max_leaves=6,
)


@given(expressions, st.lists(st.tuples(*[st.integers(-4, 4)] * 3), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_compiled_rules_equal_a_row_by_row_evaluation(expression, rows) -> None:
    text, brute = expression
    matrix = np.array(rows, dtype=np.float64)
    assert compile_rule("r", text, _NAMES)(matrix).tolist() == [bool(brute(row)) for row in rows]


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("speed > 1", "unknown feature 'speed' (did you mean: speed_kmh?)"),
        ("amount >", "not a valid expression"),
        ("amount > count_1h", "expected a number, got 'count_1h'"),
        ("__import__('os').system('x')", "is not allowed"),
        ("amount + 1 > 2", "compare a feature name with a number"),
    ],
)
def test_invalid_rules_stop_start_up_with_the_rule_and_the_fix(when: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        Scorer(ScoringSettings(rules=(RuleSettings(name="r1", when=when),)), REGISTRY)
    assert str(error.value).startswith("config error: scoring.rules[r1].when:") and message in str(error.value)


def test_unknown_anomaly_feature_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scoring.anomaly.features: unknown \\['nope'\\]"):
        Scorer(ScoringSettings(anomaly=msgspec.structs.replace(ScoringSettings().anomaly, features=("amount", "nope"))),
               REGISTRY)


@pytest.fixture(scope="module")
def feature_table() -> pa.Table:
    settings = load_settings()
    history = generate(msgspec.structs.replace(settings.generator, accounts=1_500, days=14, seed=13))
    table = build_feature_table(history.transactions, history.labels, settings.features, partitions=1)
    assert "is_fraud" in table.column_names  # ground truth carried for evaluation
    return table


def _matrix(table: pa.Table) -> np.ndarray:
    return np.column_stack([table.column(name).to_numpy() for name in REGISTRY.names]).astype(np.float64)


def _run(scorer: Scorer, values: np.ndarray, size: int = 500) -> list:
    return [scorer.process(_batch(values[i : i + size])) for i in range(0, len(values), size)]


def test_fused_scores_rank_fraud_far_above_genuine_and_alerts_are_explained(feature_table: pa.Table) -> None:
    values = _matrix(feature_table)
    y = feature_table.column("is_fraud").to_numpy()
    scorer = Scorer(load_settings().scoring, REGISTRY)
    results = _run(scorer, values)
    score = np.concatenate([r.score for r in results])
    decisions = [d for r in results for d in r.decision]
    reasons = [x for r in results for x in r.reasons]
    warm = slice(10_000, None)  # after the anomaly model's warm-up
    auc = roc_auc_score(y[warm], score[warm])
    assert auc > 0.75, auc
    alerted = np.array([d is not None for d in decisions])
    assert 0.002 < alerted.mean() < 0.03, alerted.mean()
    assert y[alerted].mean() > 10 * y.mean(), (y[alerted].mean(), y.mean())
    for decision, reason in zip(decisions, reasons, strict=True):
        assert (decision is None) == (reason is None)
        if reason is not None:
            assert isinstance(reason, Reasons) and len(reason.top_features) == 3
            assert all(f.name in REGISTRY.names for f in reason.top_features)
    # rule names appear on the alerts they caused
    assert {"card_testing"} <= {rule for r in reasons if r for rule in r.rules}


def test_state_round_trip_continues_exactly(feature_table: pa.Table) -> None:
    values = _matrix(feature_table)[:12_000]
    settings = load_settings().scoring
    uninterrupted = Scorer(settings, REGISTRY)
    expected = _run(uninterrupted, values)
    first = Scorer(settings, REGISTRY)
    head = _run(first, values[:6_000])
    restored = Scorer.from_state(settings, REGISTRY, first.state_bytes())
    tail = _run(restored, values[6_000:])
    # the River model of record comes back too (rebuilt from its parameters, masses restored)
    for mine, theirs in zip(restored.model.to_river().trees, uninterrupted.model.to_river().trees, strict=True):
        assert [(n.l_mass, n.r_mass) for n in mine.iter_dfs()] == [(n.l_mass, n.r_mass) for n in theirs.iter_dfs()]
    for a, b in zip(expected, head + tail, strict=True):
        np.testing.assert_array_equal(a.score, b.score)
        assert a.decision == b.decision
        assert json.dumps(msgspec.to_builtins(a.reasons)) == json.dumps(msgspec.to_builtins(b.reasons))


def test_state_from_other_settings_is_refused() -> None:
    blob = Scorer(ScoringSettings(), REGISTRY).state_bytes()
    other = msgspec.structs.replace(ScoringSettings().anomaly, n_trees=7)
    with pytest.raises(ValueError, match="start the partition without the checkpoint"):
        Scorer.from_state(ScoringSettings(anomaly=other), REGISTRY, blob)
