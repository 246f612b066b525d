"""scoring.fusion: max (the original fusion, bit for bit), weighted mean and logistic stacking, each against a hand
computation over real sources; rules and thresholds apply after fusion; configuration errors are one line."""

from __future__ import annotations

import functools
from collections.abc import Callable

import msgspec
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from configs import ConfigError, FusionSettings, RuleSettings, ScoringSettings, StackingSettings
from configs.settings import FUSED_SOURCES, settings_from_dict
from features import FeatureBatch, FeatureRegistry
from models import ScoredBatch, Scorer
from models.batch import BatchModel, ClassifierSource
from models.fusion import Fusion, fit_stacking
from models.online import OnlineClassifierSource
from models.sources import AnomalySource, RuleSource
from tests.models.conftest import Generated

Batch = Callable[[np.ndarray], FeatureBatch]
SMALL = RuleSettings(name="small", when="amount < 2", action="review", score=0.5)
COLUMNS = ("amount", "count_10m", "amount_ratio", "distinct_countries_24h")


@pytest.fixture(scope="module")
def batch_model(generated: Generated, registry: FeatureRegistry) -> BatchModel:
    """A real (small) scikit-learn classifier fitted on the first half of the generated history."""
    half = len(generated.values) // 2
    x = pd.DataFrame(generated.values[:half, [registry.index(c) for c in COLUMNS]], columns=list(COLUMNS))
    model = LogisticRegression(max_iter=1_000).fit(x, generated.is_fraud[:half])
    return BatchModel(model, COLUMNS, registry.version, "lr/1")


def _scorer(fusion: FusionSettings, registry: FeatureRegistry, model: BatchModel) -> Scorer:
    settings = ScoringSettings(rules=(SMALL,), fusion=fusion, review_threshold=0.9, block_threshold=0.99,
                               online=msgspec.structs.replace(ScoringSettings().online, enabled=False))  # fmt: skip
    base = Scorer.from_settings(settings, registry)
    return Scorer(settings, registry, [*base.sources, ClassifierSource(model, registry, settings)])


def _run(scorer: Scorer, values: np.ndarray, make_batch: Batch) -> list[ScoredBatch]:
    return [scorer.process(make_batch(values[i : i + 1_000])) for i in range(0, len(values), 1_000)]


def _expected_decisions(score: np.ndarray, demanded: np.ndarray) -> list[str | None]:
    level = np.maximum(demanded, np.where(score >= 0.99, 2, np.where(score >= 0.9, 1, 0)))
    return [(None, "review", "block")[i] for i in level.tolist()]


def _demanded(scorer: Scorer, values: np.ndarray, registry: FeatureRegistry, p: np.ndarray) -> np.ndarray:
    """What the rule and the classifier demand, computed by hand (review 1, block 2)."""
    rule = np.where(values[:, registry.index("amount")] < 2, 1, 0)
    classifier = np.where(p >= 0.9, 2, np.where(p >= 0.5, 1, 0))  # scoring.classifier review/block probability
    return np.maximum(rule, classifier)


def test_max_fusion_is_the_maximum_of_every_source_bit_for_bit(
    generated: Generated, make_batch: Batch, registry: FeatureRegistry
) -> None:
    scorer = Scorer.from_settings(ScoringSettings(), registry)
    assert scorer.fusion.method == "max" and "fusion" not in scorer.model_versions
    for scored in _run(scorer, generated.values[:12_000], make_batch):
        by_hand = functools.reduce(np.maximum, scored.sources.values(), np.zeros(len(scored.score)))
        np.testing.assert_array_equal(scored.score, by_hand)


def test_weighted_fusion_is_the_weighted_mean_then_rules_and_thresholds(
    generated: Generated, make_batch: Batch, registry: FeatureRegistry, batch_model: BatchModel
) -> None:
    scorer = _scorer(FusionSettings(method="weighted", weights={"anomaly": 3.0}), registry, batch_model)
    assert scorer.model_versions["fusion"] == "weighted:anomaly=3"
    values = generated.values[:15_000]
    results = _run(scorer, values, make_batch)
    anomaly, classifier, rules = (np.concatenate([r.sources[k] for r in results])
                                  for k in ("anomaly", "classifier", "rules"))  # fmt: skip
    expected = np.maximum((3.0 * anomaly + 1.0 * classifier) / 4.0, rules)  # the classifier is not listed: weight 1
    score = np.concatenate([r.score for r in results])
    np.testing.assert_allclose(score, expected, rtol=0, atol=1e-15)
    p = ClassifierSource(batch_model, registry, scorer.settings).probability(make_batch(values))
    decisions = [d for r in results for d in r.decision]
    assert decisions == _expected_decisions(score, _demanded(scorer, values, registry, p))
    assert {"review", "block"} <= set(decisions)
    # a weight of 0 leaves a source out
    zero = _scorer(FusionSettings(method="weighted", weights={"classifier": 0.0}), registry, batch_model)
    first = zero.process(make_batch(values[:5_000]))
    np.testing.assert_array_equal(first.score, np.maximum(first.sources["anomaly"], first.sources["rules"]))


def test_stacking_is_a_logistic_model_of_the_source_scores(
    generated: Generated, make_batch: Batch, registry: FeatureRegistry, batch_model: BatchModel
) -> None:
    stacking = StackingSettings(intercept=-9.0, coefficients={"anomaly": 6.0, "classifier": 8.0, "online": 2.0})
    scorer = _scorer(FusionSettings(method="stacking", stacking=stacking), registry, batch_model)
    assert scorer.model_versions["fusion"] == "stacking:b=-9,anomaly=6,classifier=8,online=2"
    values = generated.values[:15_000]
    results = _run(scorer, values, make_batch)
    anomaly = np.concatenate([r.sources["anomaly"] for r in results])
    classifier = np.concatenate([r.sources["classifier"] for r in results])
    rules = np.concatenate([r.sources["rules"] for r in results])
    expected = np.maximum(1.0 / (1.0 + np.exp(-(-9.0 + 6.0 * anomaly + 8.0 * classifier))), rules)  # online absent
    score = np.concatenate([r.score for r in results])
    np.testing.assert_allclose(score, expected, rtol=1e-12, atol=0)
    p = ClassifierSource(batch_model, registry, scorer.settings).probability(make_batch(values))
    decisions = [d for r in results for d in r.decision]
    assert decisions == _expected_decisions(score, _demanded(scorer, values, registry, p))


def test_reasons_still_name_fired_rules_and_top_features_under_weighted_fusion(
    generated: Generated, make_batch: Batch, registry: FeatureRegistry, batch_model: BatchModel
) -> None:
    scorer = _scorer(FusionSettings(method="weighted"), registry, batch_model)
    _run(scorer, generated.values[:10_000], make_batch)
    values = generated.values[10_000:20_000]
    scored = scorer.process(make_batch(values))
    small = values[:, registry.index("amount")] < 2
    alerted = [i for i, d in enumerate(scored.decision) if d is not None]
    assert alerted and all((scored.reasons[i] is None) == (scored.decision[i] is None) for i in range(len(values)))
    for i in alerted:
        assert scored.reasons[i].rules == (["small"] if small[i] else [])
        assert len(scored.reasons[i].top_features) == 3  # the anomaly model explains


def test_fusion_by_hand_on_given_scores() -> None:
    names = ("anomaly", "online", "classifier", "rules")
    a, o, c, r = np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.5, 0.0]), np.array([0.2, 0.2, 0.2]), np.zeros(3)
    r[2] = 0.97
    weighted = Fusion(FusionSettings(method="weighted", weights={"anomaly": 2.0, "online": 1.0, "classifier": 1.0}),
                      names)  # fmt: skip
    np.testing.assert_allclose(weighted.fuse([a, o, c, r]), [0.3, 0.425, 0.97], atol=1e-15)
    equal = Fusion(FusionSettings(method="weighted"), names)
    assert equal.version == "weighted:equal"
    np.testing.assert_allclose(equal.fuse([a, o, c, r]), [0.4, 0.4, 0.97], atol=1e-15)
    stacked = Fusion(FusionSettings(method="stacking", stacking=StackingSettings(coefficients={"online": -2.0})), names)
    np.testing.assert_allclose(stacked.fuse([a, o, c, r]), [1 / (1 + np.e**2), 1 / (1 + np.e), 0.97], rtol=1e-15)
    with pytest.raises(ValueError, match="fusion of 4 sources got 3 score arrays"):
        weighted.fuse([a, o, c])


@pytest.mark.parametrize(
    ("fusion", "expected"),
    [
        ({"method": "weighted", "weights": {"anomoly": 1}},
         "scoring.fusion.weights: unknown source 'anomoly' (sources: anomaly, online, classifier)"),
        ({"method": "weighted", "weights": {"rules": 1}},
         "unknown source 'rules' (sources: anomaly, online, classifier); rules are not fused"),
        ({"weights": {"anomaly": -1}}, "scoring.fusion.weights[...]: Expected `float` >= 0.0"),
        ({"method": "stacking", "stacking": {"coefficients": {"clasifier": 2}}},
         "scoring.fusion.stacking.coefficients: unknown source 'clasifier' (sources: anomaly, online, classifier, rules)"),
        ({"method": "stacking"}, "scoring.fusion.stacking.coefficients: method stacking needs a coefficient"),
        ({"method": "mean"}, "scoring.fusion.method: Invalid enum value 'mean' (allowed: 'learned', 'max', 'weighted', 'stacking')"),
        ({"method": "weighted", "weights": {"anomaly": float("inf")}}, "weights: anomaly is inf; give a finite number"),
    ],
)
def test_bad_fusion_settings_are_one_line_naming_the_key(fusion: dict, expected: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as error:
        settings_from_dict({"scoring": {"fusion": fusion}})
    assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_weights_that_leave_no_source_are_refused_when_the_scorer_is_built(registry: FeatureRegistry) -> None:
    settings = ScoringSettings(fusion=FusionSettings(method="weighted", weights={"anomaly": 0.0, "online": 0.0}))
    with pytest.raises(ConfigError, match=r"scoring.fusion.weights: every fused source of this scorer "
                                          r"\(anomaly, online\) weighs 0; give one a weight above 0"):  # fmt: skip
        Scorer.from_settings(settings, registry)


def test_the_fused_source_names_are_the_sources_names() -> None:
    assert (AnomalySource.name, OnlineClassifierSource.name, ClassifierSource.name) == FUSED_SOURCES
    assert RuleSource.name not in FUSED_SOURCES


def test_fit_stacking_recovers_a_known_logistic_model() -> None:
    rng = np.random.default_rng(4)
    anomaly, classifier, rules = rng.random(40_000), rng.random(40_000), np.zeros(40_000)
    p = 1.0 / (1.0 + np.exp(-(-5.0 + 3.0 * anomaly + 4.0 * classifier)))
    fitted = fit_stacking({"anomaly": anomaly, "classifier": classifier, "rules": rules}, rng.random(40_000) < p,
                          regularization=1e-6)  # fmt: skip
    assert set(fitted.coefficients) == {"anomaly", "classifier"}  # rules are a floor, not fitted
    assert abs(fitted.intercept + 5.0) < 0.3
    assert abs(fitted.coefficients["anomaly"] - 3.0) < 0.3 and abs(fitted.coefficients["classifier"] - 4.0) < 0.3
    # the result is valid settings for method stacking
    fusion = {"method": "stacking", "stacking": msgspec.to_builtins(fitted)}
    settings = settings_from_dict({"scoring": {"fusion": fusion}})
    assert settings.scoring.fusion.stacking == fitted
    with pytest.raises(ValueError, match="all one class"):
        fit_stacking({"anomaly": anomaly}, np.zeros(40_000, dtype=bool))


def test_learned_fusion_moves_with_the_served_classifier(
    generated: Generated, make_batch: Batch, registry: FeatureRegistry, batch_model: BatchModel
) -> None:
    """Method learned (the default) fuses with the stacking registered with the classifier version; a version
    without one, or no classifier, fuses with max; method max ignores what the version carries."""
    learned = StackingSettings(intercept=-1.0, coefficients={"classifier": 0.8, "anomaly": 0.5}, inputs="logit")
    carrying = BatchModel(batch_model.model, batch_model.feature_names, batch_model.feature_version, "lr/2", learned)
    scorer = _scorer(FusionSettings(), registry, carrying)
    assert scorer.fusion.method == "stacking"
    assert scorer.model_versions["fusion"] == "learned:lr/2:b=-1,anomaly=0.5,classifier=0.8,logit"
    values = generated.values[:3_000]
    def logit(s: np.ndarray) -> np.ndarray:
        return np.log(np.clip(s, 1e-9, 1 - 1e-9) / (1 - np.clip(s, 1e-9, 1 - 1e-9)))

    for scored in _run(scorer, values, make_batch):
        a, c, rules = scored.sources["anomaly"], scored.sources["classifier"], scored.sources["rules"]
        # learned: the rules are an input (weight 0 here), not a floor; a matched rule still decides
        by_hand = 1 / (1 + np.exp(-(-1.0 + 0.8 * logit(c) + 0.5 * logit(a))))
        np.testing.assert_allclose(scored.score, by_hand, rtol=1e-12, atol=1e-12)
        assert all(scored.decision[i] is not None for i in np.flatnonzero(rules > 0))
    plain = _scorer(FusionSettings(), registry, batch_model)  # a version registered without a fusion
    assert plain.fusion.method == "max" and "fusion" not in plain.model_versions
    assert _scorer(FusionSettings(method="max"), registry, carrying).fusion.method == "max"


def _synthetic_sources(rows: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A strong classifier, a weak anomaly score that sees another part of the frauds, pure noise."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(rows) < 0.01
    kind = rng.random(rows) < 0.7  # the frauds the classifier knows
    classifier = np.where(fraud & kind, rng.beta(6, 2, rows), rng.beta(1, 30, rows))
    anomaly = np.where(fraud & ~kind, rng.beta(8, 2, rows), rng.beta(2, 3, rows))
    return {"classifier": classifier, "anomaly": anomaly, "online": rng.random(rows), "rules": np.zeros(rows)}, fraud


def test_learn_fusion_never_keeps_a_stacking_that_ranks_below_its_best_source() -> None:
    from models.batch import average_precision
    from models.fusion import learn_fusion

    halves = np.arange(60_000) % 2 == 1
    scores, fraud = _synthetic_sources(60_000, 3)
    learned = learn_fusion(scores, fraud, halves)
    assert learned is not None
    # complementary sources: stacking ranks better than either alone, on the rows it was not fitted on
    assert learned.chosen == "stacking" and learned.stacking.inputs == "logit"
    assert learned.validation_ap["stacking"] > max(learned.validation_ap[s] for s in ("classifier", "anomaly", "online"))
    # rules are an input of the learned fusion (never matched here: weight 0 or near it)
    assert set(learned.stacking.coefficients) == {"anomaly", "classifier", "online", "rules"}
    # one strong source and noise: whatever is chosen ranks within a hair of the strong source on fresh data
    fresh, fresh_fraud = _synthetic_sources(60_000, 4)
    only = {"classifier": fresh["classifier"], "online": fresh["online"]}
    learned = learn_fusion(only, fresh_fraud, halves)
    assert learned is not None
    fused = Fusion(FusionSettings(method="stacking", stacking=learned.stacking), ("classifier", "online"))
    test, test_fraud = _synthetic_sources(60_000, 5)
    ap = average_precision(test_fraud, fused.fuse([test["classifier"], test["online"]]))
    assert ap >= average_precision(test_fraud, test["classifier"]) - 0.01
    # a single source chosen is that source's score exactly (coefficient 1 on its log-odds)
    single = StackingSettings(coefficients={"classifier": 1.0}, inputs="logit")
    alone = Fusion(FusionSettings(method="stacking", stacking=single), ("classifier", "online"))
    np.testing.assert_allclose(alone.fuse([test["classifier"], test["online"]]), test["classifier"], atol=1e-9)


def test_learn_fusion_picks_the_best_single_source_when_stacking_ranks_worse() -> None:
    """A source that was perfect on the fitting rows and inverted on the validation rows: the stacking fitted on
    the first loses on the second, and the steady source is kept alone."""
    from models.fusion import learn_fusion

    rng = np.random.default_rng(8)
    rows = 40_000
    fraud = rng.random(rows) < 0.02
    validation = np.arange(rows) % 2 == 1
    good = np.where(fraud, rng.beta(4, 2, rows), rng.beta(2, 4, rows))  # steady, moderately good
    flips = np.where(fraud != validation, rng.beta(9, 1, rows), rng.beta(1, 9, rows))  # perfect, then inverted
    learned = learn_fusion({"classifier": good, "anomaly": flips}, fraud, validation)
    assert learned is not None
    assert learned.chosen == "classifier" and learned.stacking.coefficients == {"classifier": 1.0}
    assert learned.validation_ap["stacking"] < learned.validation_ap["classifier"]
