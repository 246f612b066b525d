"""models/sources.py: the anomaly source is River's model on scaled features; rules lift scores and actions."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
import pytest

from configs import AnomalySettings, ConfigError, RuleSettings
from features import FeatureBatch, FeatureRegistry
from models import AnomalySource, RuleSource
from models.preprocessing import signed_log1p
from models.rules import BLOCK, REVIEW
from models.sources import STD_FLOOR, WARMUP
from tests.models.conftest import Generated

SMALL = AnomalySettings(n_trees=10, height=6, window_size=100)


def test_scores_are_the_calibrated_river_score_one_of_the_model_before_the_batch(
    generated: Generated, make_batch: Callable[[np.ndarray], FeatureBatch], registry: FeatureRegistry
) -> None:
    source = AnomalySource(SMALL, registry)
    values = generated.values[:4_000]
    for start in range(0, 3_000, 500):
        source.process(make_batch(values[start : start + 500]))
    batch = values[3_000:3_700]
    river = source.to_river()  # the model of record, synced: a notebook user's view
    raw = np.array([river.score_one(source.river_features(row)) for row in batch], dtype=np.float64)
    expected = source.calibration.rank(raw)
    scored = source.process(make_batch(batch))
    np.testing.assert_array_equal(scored.score, expected)
    assert scored.score.min() >= 0.0 and scored.score.max() <= 1.0 and scored.score.any()
    assert not scored.action.any() and not scored.matched


def test_no_anomaly_score_before_the_warm_up(
    generated: Generated, make_batch: Callable[[np.ndarray], FeatureBatch], registry: FeatureRegistry
) -> None:
    source = AnomalySource(SMALL, registry)
    # the first window's scores are all 0 (River's), then WARMUP raw scores must be there to rank against
    warm_up = SMALL.window_size + WARMUP
    for start in range(0, warm_up, 100):
        assert not source.process(make_batch(generated.values[start : start + 100])).score.any()
    assert source.process(make_batch(generated.values[warm_up : warm_up + 100])).score.any()


def test_explanation_is_distance_from_the_typical_value_at_the_batch_start(
    generated: Generated, make_batch: Callable[[np.ndarray], FeatureBatch], registry: FeatureRegistry
) -> None:
    source = AnomalySource(SMALL, registry)
    source.process(make_batch(generated.values[:3_000]))
    mean, std = source.typical.mean(), np.maximum(source.typical.std(), STD_FLOOR)
    batch = generated.values[3_000:3_200]
    scored = source.process(make_batch(batch))
    assert scored.explain is not None
    rows = np.array([0, 17, 199])
    columns, contribution = scored.explain(rows)
    assert [registry.names[c] for c in columns] == list(AnomalySettings().features)
    np.testing.assert_allclose(contribution, (signed_log1p(batch[rows][:, columns]) - mean) / std)


def test_feature_subset_of_unknown_names_is_a_config_error(registry: FeatureRegistry) -> None:
    with pytest.raises(ConfigError) as error:
        AnomalySource(msgspec.structs.replace(SMALL, features=("amount", "speed")), registry)
    message = str(error.value)
    assert message.startswith("config error: scoring.anomaly.features: unknown feature 'speed' (did you mean:")
    assert "allowed: amount, log_amount," in message and message.endswith("is_night")


def test_empty_feature_list_means_every_feature(registry: FeatureRegistry) -> None:
    source = AnomalySource(msgspec.structs.replace(SMALL, features=()), registry)
    assert source.features == registry.names and source.version == "river.HalfSpaceTrees:10x6w100s1"


def test_rules_lift_score_and_action_to_the_strongest_matching_rule(
    registry: FeatureRegistry, make_batch: Callable[[np.ndarray], FeatureBatch]
) -> None:
    rules = (
        RuleSettings(name="big", when="amount > 100", action="review", score=0.95),
        RuleSettings(name="huge", when="amount > 1000", action="block", score=0.9),
        RuleSettings(name="never", when="amount < 0"),
    )
    source = RuleSource(rules, registry)
    values = np.zeros((3, len(registry)))
    values[:, registry.index("amount")] = [5.0, 500.0, 5000.0]
    scored = source.process(make_batch(values))
    assert scored.score.tolist() == [0.0, 0.95, 0.95]
    assert scored.action.tolist() == [0, REVIEW, BLOCK]
    assert [(name, hits.tolist()) for name, hits in scored.matched] == [
        ("big", [False, True, True]),
        ("huge", [False, False, True]),
    ]
    assert source.state() == {} and source.version.startswith("rules-")
