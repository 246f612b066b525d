"""Training: the time split's model is what the test metrics measure; with refit the version registered is the
same recipe fitted again on the latest labelled data (no MLflow here: pipelines.train composes, the registry
adapter is tested in tests/integration/test_train_backtest.py)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from configs import Settings, load_settings
from connectors.history import read_history
from models.batch import DAY_MS, fraud_probability, iso_utc
from pipelines.train import FeatureTable, feature_table, train_model
from synthetic import generate, write_history


def _settings(refit: bool) -> Settings:
    settings = load_settings()
    training = msgspec.structs.replace(settings.training, max_iter=30, calibration_fraction=0.4, refit=refit)
    history = msgspec.structs.replace(settings.history, label_delay_days=3)
    return msgspec.structs.replace(settings, training=training, history=history)


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> FeatureTable:
    settings = _settings(refit=True)
    folder: Path = tmp_path_factory.mktemp("train") / "history"
    write_history(generate(msgspec.structs.replace(settings.generator, accounts=1000, days=14, seed=5)), folder)
    return feature_table(settings, read_history(folder, settings.history))


def test_without_refit_the_registered_model_is_the_one_the_test_period_measured(features: FeatureTable) -> None:
    trained = train_model(_settings(refit=False), features)
    test = trained.split.test_rows(features.times)
    again = fraud_probability(trained.model, features.matrix(trained.feature_names)[test], trained.feature_names)
    assert np.array_equal(again, trained.test_score)
    assert not any(key.startswith("refit") for key in [*trained.metrics, *trained.params])


def test_refit_fits_the_same_recipe_on_the_latest_labelled_rows(features: FeatureTable) -> None:
    plain = train_model(_settings(refit=False), features)
    trained = train_model(_settings(refit=True), features)
    split = trained.split
    # the test metrics are the split's, whatever is registered
    assert trained.metrics["test_ap"] == plain.metrics["test_ap"]
    assert np.array_equal(trained.test_score, plain.test_score)
    # the refit's train period ends one label delay before the span's end, and its labels are those known at the end
    assert trained.params["refit.train_end"] == iso_utc(split.end_ms - 3 * DAY_MS)
    assert trained.params["refit.start"] == trained.params["split.start"]
    assert trained.params["refit.test_start"] == iso_utc(split.end_ms)
    last_fit = features.times < split.end_ms - 3 * DAY_MS
    assert trained.metrics["refit_fit_rows"] + trained.metrics["refit_calibration_rows"] == last_fit.sum()
    assert trained.metrics["refit_fit_rows"] > plain.metrics["fit_rows"] + plain.metrics["calibration_rows"] * 0.5
    assert trained.metrics["refit_fit_frauds_known"] > plain.metrics["fit_frauds_known"]
    # and it is another model than the one the test period measured
    test = split.test_rows(features.times)
    refit_score = fraud_probability(trained.model, features.matrix(trained.feature_names)[test], trained.feature_names)
    assert not np.array_equal(refit_score, trained.test_score)


def test_train_learns_the_fusion_registered_with_the_version(features: FeatureTable) -> None:
    """On the rows the split's classifier was not fitted on, against the labels known at the span's end:
    whatever is chosen ranks at least as well there as the best single source, and the run records it."""
    trained = train_model(_settings(refit=True), features)
    fusion = trained.fusion
    assert fusion is not None and fusion.stacking.inputs == "logit"
    singles = {name: ap for name, ap in fusion.validation_ap.items() if name != "stacking"}
    assert set(singles) - {"rules"} == {"anomaly", "online", "classifier"}  # and the rules, when any are configured
    chosen_ap = fusion.validation_ap[fusion.chosen]
    assert chosen_ap is not None and chosen_ap >= max(ap for ap in singles.values() if ap is not None)
    unseen = trained.split.calibration_rows(features.times) | trained.split.test_rows(features.times)
    reported = unseen & (features.times <= trained.split.end_ms - 3 * DAY_MS)  # one label delay before the end
    assert fusion.fit_rows + fusion.validation_rows in (reported.sum(), unseen.sum())  # (all: too few reported)
    assert trained.params["fusion.chosen"] == fusion.chosen
    assert msgspec.json.decode(trained.params["fusion.stacking"]) == msgspec.to_builtins(fusion.stacking)
    assert trained.metrics[f"fusion_validation_ap_{fusion.chosen}"] == chosen_ap
    without = train_model(msgspec.structs.replace(_settings(refit=True), training=msgspec.structs.replace(
        _settings(refit=True).training, learn_fusion=False)), features)  # fmt: skip
    assert without.fusion is None and "fusion.chosen" not in without.params
