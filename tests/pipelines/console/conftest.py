"""A real MLflow registry (SQLite in a temporary folder) for the console tests that show its versions.

Building the store takes seconds (MLflow migrates the new database), so one
serves the session; each test reads its own registered model. ``connect``
points MLflow's process-wide tracking URI at the store: the ``mlflow_kept``
fixture puts it back after each test, so no later test finds it changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from configs import MlflowSettings
from connectors.registry import connect

#: Registered model -> its versions' aliases (version 1 first); versions with no alias have None.
MODELS: dict[str, list[str | None]] = {
    "fraud-classifier": [None, "champion", "challenger"],
    "solo-classifier": ["champion"],
    "bare-classifier": [None],
    "moving-classifier": ["champion", None],  # test_registry moves its champion
}


def _keep_mlflow_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore MLflow's tracking URI (the module's global and the variable it exports) when ``monkeypatch`` undoes."""
    from mlflow.tracking._tracking_service import utils as tracking_state

    monkeypatch.setattr(tracking_state, "_tracking_uri", tracking_state._tracking_uri)
    if "MLFLOW_TRACKING_URI" in os.environ:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ["MLFLOW_TRACKING_URI"])
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def _registry_store(tmp_path_factory: pytest.TempPathFactory) -> MlflowSettings:
    root: Path = tmp_path_factory.mktemp("registry")
    settings = MlflowSettings(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    source = root / "model"  # the versions' artifacts are never loaded: an empty folder stands in for them
    source.mkdir()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _keep_mlflow_uri(monkeypatch)
        client = connect(settings)
        for name, aliases in MODELS.items():
            client.create_registered_model(name)
            for alias in aliases:
                version = client.create_model_version(name, str(source)).version
                if alias is not None:
                    client.set_registered_model_alias(name, alias, str(version))
    return settings


@pytest.fixture
def mlflow_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's tracking URI as it was before the test, after it."""
    _keep_mlflow_uri(monkeypatch)


@pytest.fixture
def registry_store(_registry_store: MlflowSettings, mlflow_kept: None) -> Iterator[MlflowSettings]:
    """The session's MLflow store holding :data:`MODELS`; MLflow's tracking URI restored after the test."""
    yield _registry_store
