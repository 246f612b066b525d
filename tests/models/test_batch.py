"""The batch classifier: time split, training, ranking metrics against brute force, and the classifier source."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from configs import ScoringSettings, TrainingSettings
from configs.settings import ClassifierSettings
from features import FeatureBatch, FeatureRegistry
from models import Scorer
from models.batch import (
    DAY_MS,
    BatchModel,
    ClassifierSource,
    TimeSplit,
    average_precision,
    card_precision_at_k_per_day,
    fit_classifier,
    fraud_probability,
    precision_at_k_per_day,
    recall_by_scenario,
)


def test_time_split_orders_fit_calibration_gap_and_test() -> None:
    split = TimeSplit.of_span(1_000, 1_000 + 30 * DAY_MS, train_fraction=0.6, calibration_fraction=0.2,
                              gap_ms=7 * DAY_MS)  # fmt: skip
    assert split.start_ms < split.calibration_start_ms < split.train_end_ms < split.test_start_ms < split.end_ms
    assert split.test_start_ms - split.train_end_ms == 7 * DAY_MS
    times = np.arange(1_000, 1_000 + 30 * DAY_MS, 3_600_000)
    fit, calibration, test = split.fit_rows(times), split.calibration_rows(times), split.test_rows(times)
    assert not (fit & calibration).any() and not (fit & test).any() and not (calibration & test).any()
    assert times[fit].max() < times[calibration].min() and times[calibration].max() < times[test].min() - 7 * DAY_MS
    gap = ~(fit | calibration | test)
    assert gap.sum() == 7 * 24  # hourly rows in the gap
    with pytest.raises(ValueError, match="not more than the 7-day gap"):
        TimeSplit.of_span(0, 5 * DAY_MS, 0.7, 0.25, 7 * DAY_MS)


def _brute_daily(times: np.ndarray, keys: np.ndarray, truth: np.ndarray, score: np.ndarray, k: int) -> dict[str, float]:
    """Per day: group rows by key (max score, any truth), take the k best groups by (score desc, first row)."""
    result = {}
    for day in sorted(set((times // DAY_MS).tolist())):
        rows = [i for i in range(len(times)) if times[i] // DAY_MS == day]
        groups: dict[object, list[int]] = {}
        for i in rows:
            groups.setdefault(keys[i], []).append(i)
        ranked = sorted(groups.values(), key=lambda g: (-max(score[i] for i in g), str(keys[g[0]])))
        hits = sum(any(truth[i] for i in g) for g in ranked[:k])
        result[dt.datetime.fromtimestamp(day * 86_400, dt.UTC).date().isoformat()] = hits / k
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_card_and_transaction_precision_at_k_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    times = np.sort(rng.integers(0, 4 * DAY_MS, n))
    cards = np.array([f"c{i:03d}" for i in rng.integers(0, 60, n)], dtype=object)
    truth = rng.random(n) < 0.1
    score = rng.random(n).round(2)  # ties on purpose
    k = 7
    expected_cards = _brute_daily(times, cards, truth, score, k)
    got_cards = card_precision_at_k_per_day(times, cards, truth, score, k)
    assert got_cards.keys() == expected_cards.keys()
    # ties between cards may be broken differently; compare with distinct scores, and bound with ties
    distinct = score + np.arange(n) * 1e-9
    assert card_precision_at_k_per_day(times, cards, truth, distinct, k) == pytest.approx(
        _brute_daily(times, cards, truth, distinct, k)
    )
    assert all(0.0 <= v <= 1.0 for v in got_cards.values())
    rows = np.array([f"r{i:04d}" for i in range(n)], dtype=object)
    assert precision_at_k_per_day(times, truth, distinct, k) == pytest.approx(
        _brute_daily(times, rows, truth, distinct, k)
    )


def test_recall_by_scenario_counts_accounts_caught_on_their_fraud() -> None:
    account = np.array(["a", "a", "b", "b", "c", "d"], dtype=object)
    scenario = np.array([None, "x", "x", "y", None, "y"], dtype=object)
    is_fraud = np.array([False, True, True, True, False, True])
    alerted = np.array([True, False, False, True, True, True])  # a is alerted, but not on its fraud
    assert recall_by_scenario(account, scenario, is_fraud, alerted) == {
        "x": {"accounts": 2, "caught": 0, "recall": 0.0},
        "y": {"accounts": 2, "caught": 2, "recall": 1.0},
    }


@pytest.fixture(scope="module")
def trained(generated, registry: FeatureRegistry):  # type: ignore[no-untyped-def]
    """A classifier fitted on the first 60 % of the generated rows (event-time order), calibrated on the next 15 %."""
    n = len(generated.values)
    index = np.arange(n)
    fit, calibration, test = index < 0.6 * n, (index >= 0.6 * n) & (index < 0.75 * n), index >= 0.8 * n
    settings = TrainingSettings(max_iter=60)
    model = fit_classifier(generated.values, generated.is_fraud, fit, calibration, registry.names, settings)
    return model, test


def test_classifier_ranks_held_out_fraud_and_gives_probabilities(generated, registry, trained) -> None:  # type: ignore[no-untyped-def]
    model, test = trained
    p = fraud_probability(model, generated.values[test], registry.names)
    assert ((p >= 0) & (p <= 1)).all()
    truth = generated.is_fraud[test]
    ap = average_precision(truth, p)
    assert ap is not None and ap > 0.2, ap  # 30 times the fraud rate (~0.6 %), from ~150 frauds
    assert p[truth].mean() > 20 * p[~truth].mean()


def test_fit_refuses_slices_without_fraud(generated, registry) -> None:  # type: ignore[no-untyped-def]
    n = len(generated.values)
    no_fraud = np.zeros(n, dtype=bool)
    rows = np.arange(n) < n // 2
    with pytest.raises(ValueError, match="both classes are needed"):
        fit_classifier(generated.values, no_fraud, rows, ~rows, registry.names, TrainingSettings(max_iter=5))
    target = generated.is_fraud & rows
    with pytest.raises(ValueError, match="calibration slice"):
        fit_classifier(generated.values, target, rows, ~rows, registry.names, TrainingSettings(max_iter=5))


def test_classifier_source_in_the_scorer(generated, registry, trained, make_batch) -> None:  # type: ignore[no-untyped-def]
    model, test = trained
    batch_model = BatchModel(model, registry.names, registry.version, "fraud-classifier/7")
    scoring = ScoringSettings(classifier=ClassifierSettings(review_probability=0.3, block_probability=0.8))
    source = ClassifierSource(batch_model, registry, scoring)
    base = Scorer.from_settings(scoring, registry)
    scorer = Scorer(scoring, registry, [*base.sources, source])
    assert scorer.model_versions["classifier"] == "fraud-classifier/7"
    rows = generated.values[np.flatnonzero(test)[:3000]]
    scored = scorer.process(make_batch(rows))
    p = fraud_probability(model, rows, registry.names)
    own = scored.sources["classifier"]
    # the mapping is monotone and sends the probabilities to the thresholds
    order = np.argsort(p)
    assert (np.diff(own[order]) >= -1e-12).all()
    assert ((own >= scoring.review_threshold) == (p >= 0.3)).all()
    assert ((own >= scoring.block_threshold) == (p >= 0.8)).all()
    decided = np.array([d is not None for d in scored.decision])
    assert decided[p >= 0.3].all()
    assert all(scored.decision[i] == "block" for i in np.flatnonzero(p >= 0.8))
    assert source.state() == {}
    # a restored scorer carries no classifier state and scores the same
    assert Scorer.from_state(scoring, registry, base.state_bytes()).model_versions == base.model_versions


def test_classifier_source_refuses_another_feature_layout(registry, trained) -> None:  # type: ignore[no-untyped-def]
    model, _ = trained
    other = BatchModel(model, registry.names, "fs1-00000000", "fraud-classifier/2")
    with pytest.raises(ValueError, match="trained on features fs1-00000000, the config gives"):
        ClassifierSource(other, registry, ScoringSettings())
    unknown = BatchModel(model, ("amount", "loyalty_points"), registry.version, "fraud-classifier/3")
    with pytest.raises(ValueError, match="loyalty_points"):
        ClassifierSource(unknown, registry, ScoringSettings())


def test_classifier_scores_a_feature_batch_like_the_model(registry, trained, generated) -> None:  # type: ignore[no-untyped-def]
    model, test = trained
    rows = generated.values[np.flatnonzero(test)[:200]]
    source = ClassifierSource(BatchModel(model, registry.names, registry.version, "m/1"), registry, ScoringSettings())
    batch = FeatureBatch(rows, np.zeros(len(rows), bool), registry.names, registry.version)
    expected = model.predict_proba(pd.DataFrame(rows, columns=list(registry.names)))[:, 1]
    assert np.array_equal(source.probability(batch), expected)


@pytest.mark.parametrize("calibration", ["isotonic", "sigmoid"])
def test_skops_is_told_to_trust_every_type_a_trained_classifier_holds(calibration: str) -> None:
    """MLflow saves the classifier with skops, which refuses types not listed as trusted: both calibrations."""
    import skops.io

    from models.batch import TRUSTED_TYPES

    rng = np.random.default_rng(0)
    values = rng.normal(size=(2_000, 3))
    target = values[:, 0] + rng.normal(size=2_000) > 2.0
    fit = np.arange(2_000) < 1_200
    settings = TrainingSettings(calibration=calibration, max_iter=10, min_samples_leaf=20)  # type: ignore[arg-type]
    model = fit_classifier(values, target, fit, ~fit, ["a", "b", "c"], settings)
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    assert untrusted and set(untrusted) <= set(TRUSTED_TYPES)
