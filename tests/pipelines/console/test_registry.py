"""The registry's champion and challenger versions as the console shows them, read from a real MLflow store
(the ``registry_store`` fixture in conftest.py: fraud-classifier 2 is champion and 3 challenger, solo-classifier
has a champion only, bare-classifier no alias)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from configs import MlflowSettings, Settings
from connectors.registry import connect
from pipelines.console import registry
from pipelines.console.registry import RegistryVersions, RegistryWatch
from tests.pipelines.console.consolekit import Clock


def _settings(mlflow: MlflowSettings, model_uri: str) -> Settings:
    base = Settings()
    classifier = msgspec.structs.replace(base.scoring.classifier, model_uri=model_uri)
    return msgspec.structs.replace(
        base, mlflow=mlflow, scoring=msgspec.structs.replace(base.scoring, classifier=classifier)
    )


def _counted(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Calls of ``pipelines.console.registry.<name>`` counted; the real function still answers."""
    calls: list[int] = []
    real = getattr(registry, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, name, counting)
    return calls


def test_the_watch_reports_what_the_champion_and_challenger_aliases_name(registry_store: MlflowSettings) -> None:
    watch = RegistryWatch(_settings(registry_store, "models:/fraud-classifier@champion"))
    assert watch.read() == RegistryVersions(model="fraud-classifier", champion="fraud-classifier/2",
                                            challenger="fraud-classifier/3")  # fmt: skip
    # a job pinned to a version: the registry's aliases are still what is shown (the page marks the difference)
    pinned = RegistryWatch(_settings(registry_store, "models:/fraud-classifier/1"))
    assert pinned.read().champion == "fraud-classifier/2"


def test_an_unset_challenger_is_none_an_unset_champion_or_unknown_model_is_the_message(
    registry_store: MlflowSettings,
) -> None:
    solo = RegistryWatch(_settings(registry_store, "models:/solo-classifier@champion")).read()
    assert solo == RegistryVersions(model="solo-classifier", champion="solo-classifier/1")
    bare = RegistryWatch(_settings(registry_store, "models:/bare-classifier@champion")).read()
    assert (bare.model, bare.champion, bare.challenger) == ("bare-classifier", None, None)
    assert bare.message == (
        "scoring.classifier.model_uri: model 'bare-classifier' has no version with alias 'champion'; set it with "
        "`fraudstream promote --version N --alias champion`")  # fmt: skip
    ghost = RegistryWatch(_settings(registry_store, "models:/ghost-classifier@champion")).read()
    assert (ghost.model, ghost.champion, ghost.challenger) == ("ghost-classifier", None, None)
    assert ghost.message == (
        "scoring.classifier.model_uri: no registered model 'ghost-classifier' yet; train one with `fraudstream train`"
    )


def test_without_a_model_uri_nothing_is_shown_and_mlflow_is_not_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects = _counted(monkeypatch, "connect")
    store = tmp_path / "mlruns" / "mlflow.db"
    watch = RegistryWatch(_settings(MlflowSettings(tracking_uri=f"sqlite:///{store}"), ""))
    assert watch.read() == RegistryVersions(model=None, champion=None, challenger=None, message=None)
    assert connects == [] and not store.parent.exists()


def test_a_store_never_created_or_unreadable_is_a_message_not_an_exception(tmp_path: Path, mlflow_kept: None) -> None:
    missing = tmp_path / "mlruns" / "mlflow.db"
    never = RegistryWatch(
        _settings(MlflowSettings(tracking_uri=f"sqlite:///{missing}"), "models:/fraud-classifier@champion")
    )
    assert never.read() == RegistryVersions(model="fraud-classifier", message=(
        f"mlflow.tracking_uri: sqlite:///{missing} holds no model yet; train and promote one "
        "(`fraudstream train`, `fraudstream promote`)"))  # fmt: skip
    assert not missing.parent.exists()  # the console only reads: it does not create a store
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    broken = RegistryWatch(
        _settings(MlflowSettings(tracking_uri=f"sqlite:///{garbage}"), "models:/fraud-classifier@champion")
    )
    answer = broken.read()
    assert (answer.model, answer.champion, answer.challenger) == ("fraud-classifier", None, None)
    assert answer.message is not None and "\n" not in answer.message
    assert answer.message.startswith(f"mlflow.tracking_uri: cannot open sqlite:///{garbage}")


def test_an_answer_is_kept_for_the_interval_then_the_registry_is_asked_again(
    registry_store: MlflowSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _counted(monkeypatch, "registry_versions")
    clock = Clock(100.0)
    watch = RegistryWatch(_settings(registry_store, "models:/moving-classifier@champion"), interval_s=30.0, clock=clock)
    assert watch.read().champion == "moving-classifier/1"
    connect(registry_store).set_registered_model_alias("moving-classifier", "champion", "2")
    clock.now += 29.0
    assert watch.read().champion == "moving-classifier/1" and len(asked) == 1  # kept: the registry was not asked
    clock.now += 1.0
    assert watch.read().champion == "moving-classifier/2" and len(asked) == 2


def test_while_one_thread_asks_the_registry_the_others_get_the_previous_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    release, started = threading.Event(), threading.Event()
    answers = [RegistryVersions(model="m", champion="m/1"), RegistryVersions(model="m", champion="m/2")]

    def slow_store(watch: RegistryWatch) -> RegistryVersions:
        if len(answers) == 1:  # the second question hangs until released
            started.set()
            release.wait(5)
        return answers.pop(0)

    monkeypatch.setattr(RegistryWatch, "_ask", slow_store)
    clock = Clock(0.0)
    watch = RegistryWatch(_settings(MlflowSettings(), "models:/m@champion"), interval_s=1.0, clock=clock)
    assert watch.read().champion == "m/1"
    clock.now += 2.0
    asking = threading.Thread(target=watch.read)
    asking.start()
    assert started.wait(5)
    assert watch.read().champion == "m/1"  # not blocked behind the slow question
    release.set()
    asking.join(5)
    assert watch.read().champion == "m/2"
