"""The batch classifier served from a real MLflow registry by real Ray actors on the embedded broker.

Train -> register -> alias -> actors serve it; the alias moves while streaming -> actors switch between
micro-batches, nothing lost, alerts name the new version; a challenger scores in shadow; a bad URI, a
missing alias and a model trained on other features stop start-up with one line.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from configs import ConfigError, Settings
from connectors.history import read_history
from connectors.registry import connect, promote
from contracts.records import decode_alert
from pipelines.stream import StreamJob
from pipelines.train import feature_table, register, train_model
from synthetic import generate, write_history
from tests.integration.streamkit import consume_all, produce, wait_scored

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, local_settings: Settings) -> dict[str, Any]:
    """A history, and a store holding two trained versions of fraud-classifier (no alias set)."""
    root = tmp_path_factory.mktemp("serving")
    history = generate(msgspec.structs.replace(local_settings.generator, accounts=600, days=10, seed=11))
    write_history(history, root / "history")
    mlflow = msgspec.structs.replace(local_settings.mlflow, tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    settings = msgspec.structs.replace(
        local_settings, mlflow=mlflow,
        history=msgspec.structs.replace(local_settings.history, label_delay_days=2),
        training=msgspec.structs.replace(local_settings.training, max_iter=20, calibration_fraction=0.4),
    )  # fmt: skip
    client = connect(settings.mlflow)
    table = feature_table(settings, read_history(root / "history", settings.history, None))
    versions = []
    for max_iter in (20, 10):
        variant = msgspec.structs.replace(settings, training=msgspec.structs.replace(settings.training, max_iter=max_iter))
        versions.append(register(variant, train_model(variant, table), str(root / "history"), client).version)
    return {"settings": settings, "history": history, "client": client, "versions": versions}


def _serving_settings(stream_settings, registry: dict[str, Any], **classifier: Any) -> Settings:
    base = stream_settings()
    options = {"model_uri": "models:/fraud-classifier@champion", "poll_interval_s": 0.5, "when_missing": "error",
               **classifier}
    scoring = msgspec.structs.replace(
        base.scoring, classifier=msgspec.structs.replace(base.scoring.classifier, **options))
    return msgspec.structs.replace(base, scoring=scoring, mlflow=registry["settings"].mlflow)


def _alerts(settings: Settings, bootstrap: str) -> list[Any]:
    return [decode_alert(r.value) for r in asyncio.run(consume_all(settings, bootstrap, settings.kafka.topics.alerts.name))]


def test_actors_serve_the_champion_and_switch_versions_mid_stream(
    stream_settings, registry, kafka_broker, job_factory
) -> None:
    v1, v2 = (f"fraud-classifier/{v}" for v in registry["versions"])
    client = registry["client"]
    promote(client, "fraud-classifier", registry["versions"][0], "champion", force=True)
    settings = _serving_settings(stream_settings, registry)
    table = registry["history"].transactions
    first, rest = table.slice(0, table.num_rows // 2), table.slice(table.num_rows // 2)

    produce(settings, kafka_broker, first, None)
    job = job_factory(settings, actors=2)
    assert job.serving is not None and job.serving.champion == v1
    status = wait_scored(job, first.num_rows)
    before = _alerts(settings, kafka_broker)
    assert before, "the first half raised no alert"
    assert {a.model_versions["classifier"] for a in before} == {v1}
    assert all(a.challenger_score is None and "challenger" not in a.model_versions for a in before)

    # move the champion to v2, with v1 as the challenger in shadow, while the job runs
    promote(client, "fraud-classifier", registry["versions"][1], "champion", force=True)
    promote(client, "fraud-classifier", registry["versions"][0], "challenger", force=True)
    deadline = time.monotonic() + 60
    while True:
        served = [a.serving for a in job.status().actors]
        if all(s.champion == v2 and s.challenger == v1 for s in served):
            break
        assert time.monotonic() < deadline, served
        time.sleep(0.3)
    assert all(s.swaps == 1 and s.error is None for s in served)

    produce(settings, kafka_broker, rest, None)
    status = wait_scored(job, table.num_rows)
    assert status.totals.scored == table.num_rows  # nothing lost, nothing scored twice across the swap
    after = [a for a in _alerts(settings, kafka_broker) if a.alert_id not in {b.alert_id for b in before}]
    assert after, "the second half raised no alert"
    assert {a.model_versions["classifier"] for a in after} == {v2}
    assert {a.model_versions["challenger"] for a in after} == {v1}
    assert all(a.challenger_score is not None and 0.0 <= a.challenger_score <= 1.0 for a in after)
    shadow = sum(p.challenger_alerts for p in status.partitions.values())
    agreed = sum(p.challenger_agreed for p in status.partitions.values())
    assert 0 <= agreed <= shadow
    transactions_after = set(rest.column("transaction_id").to_pylist())
    assert all(a.transaction_id in transactions_after for a in after)


def test_unservable_models_stop_start_up_with_one_line(stream_settings, registry, kafka_broker, ray_session) -> None:
    client = registry["client"]
    # a malformed URI
    settings = _serving_settings(stream_settings, registry, model_uri="models:/fraud-classifier")
    with pytest.raises(ConfigError) as bad_uri:
        StreamJob(settings, kafka_broker).start(1)
    assert "scoring.classifier.model_uri" in str(bad_uri.value) and "models:/NAME@ALIAS" in str(bad_uri.value)
    # an alias nobody set (when_missing: error)
    settings = _serving_settings(stream_settings, registry, model_uri="models:/fraud-classifier@nobody")
    with pytest.raises(ConfigError) as missing:
        StreamJob(settings, kafka_broker).start(1)
    assert "no version with alias 'nobody'" in str(missing.value) and "fraudstream promote" in str(missing.value)
    # a model trained on other features than the job computes
    promote(client, "fraud-classifier", registry["versions"][0], "champion", force=True)
    settings = _serving_settings(stream_settings, registry)
    other = msgspec.structs.replace(settings, features=msgspec.structs.replace(settings.features, ewma_alpha=0.2))
    with pytest.raises(ConfigError) as layout:
        StreamJob(other, kafka_broker).start(1)
    assert "trained on features" in str(layout.value) and "fraudstream train" in str(layout.value)
    for error in (bad_uri, missing, layout):
        assert "\n" not in str(error.value)


def test_a_store_with_no_model_yet_waits_when_told_to(stream_settings, registry, kafka_broker, tmp_path: Path,
                                                      job_factory) -> None:
    empty = msgspec.structs.replace(registry["settings"].mlflow, tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    settings = msgspec.structs.replace(_serving_settings(stream_settings, registry), mlflow=empty)
    with pytest.raises(ConfigError, match="holds no model yet"):
        StreamJob(settings, kafka_broker).start(1)
    waiting = msgspec.structs.replace(settings, scoring=msgspec.structs.replace(
        settings.scoring, classifier=msgspec.structs.replace(settings.scoring.classifier, when_missing="wait")))
    small = registry["history"].transactions.slice(0, 500)
    produce(waiting, kafka_broker, small, None)
    job = job_factory(waiting, actors=1)
    status = wait_scored(job, small.num_rows)
    assert status.totals.scored == small.num_rows
    assert status.actors[0].serving.champion is None
    assert not (tmp_path / "none.db").exists()  # waiting does not create a store
