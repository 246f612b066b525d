"""notebooks/model_experimentation.ipynb runs top to bottom on small data, into a private MLflow store (CI).

The notebook is executed with nbclient in the ``python3`` kernel, which jupyter_client starts with this
interpreter (``sys.executable``: the kernelspec's ``python`` is replaced by it), from a temporary working
directory, so it must not depend on the repository being the working directory. Its parameters come from
``FRAUDSTREAM_NB_*`` environment variables, which the kernel inherits. A failing cell fails the test
(nbclient raises ``CellExecutionError`` with the cell's traceback); the executed copy is written beside the
temporary store for a look afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "model_experimentation.ipynb"
#: The notebook's default experiment for its comparison runs, and the runs it logs there.
EXPERIMENT = "fraudstream-notebook"
MODELS = ("hist_gradient_boosting", "logistic_regression", "river_logistic_regression", "river_half_space_trees")


def test_notebook_is_stored_without_outputs() -> None:
    """Commit-ready: valid, no outputs or execution counts, a tagged parameters cell, the python3 kernel."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert notebook.metadata.kernelspec.name == "python3"


def _texts(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif "data" in output:
                parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.integration
def test_notebook_runs_top_to_bottom_and_logs_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient
    from nbclient import NotebookClient

    from configs import MlflowSettings, load_settings
    from connectors.registry import connect, load_batch_model
    from features import FeatureRegistry

    store = tmp_path / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{store}"
    environment = {
        "FRAUDSTREAM_NB_HISTORY": str(tmp_path / "history"),  # absent: the notebook generates it
        "FRAUDSTREAM_NB_ACCOUNTS": "800",
        "FRAUDSTREAM_NB_DAYS": "21",
        "FRAUDSTREAM_NB_SEED": "7",
        "FRAUDSTREAM_NB_SPLIT_DAY": "2026-01-16",
        "FRAUDSTREAM_NB_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    for name in [name for name in os.environ if name.startswith("FRAUDSTREAM_NB_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    started = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()  # fmt: skip
    finally:
        nbformat.write(notebook, str(tmp_path / "executed.ipynb"))
    print(f"notebook executed in {time.perf_counter() - started:.1f} s")

    text = _texts(notebook)
    assert f"python:  {sys.executable}" in text, "the python3 kernel must run this interpreter (kernelspec list)"
    assert (tmp_path / "history" / "transactions.parquet").is_file()
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the PR curves are shown inline"

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(MODELS) <= set(runs), sorted(runs)
    for name in MODELS:
        metrics = runs[name].data.metrics
        assert 0.0 <= metrics["test_ap"] <= 1.0 and "test_roc_auc" in metrics, (name, metrics)
        assert "pr_curves.png" in [artifact.path for artifact in client.list_artifacts(runs[name].info.run_id)]

    feature_version = FeatureRegistry.from_settings(load_settings().features).version
    versions = client.search_model_versions("name = 'fraud-classifier'")
    assert [str(v.version) for v in versions] == ["1"]
    tags = versions[0].tags
    assert tags["feature_version"] == feature_version and tags["feature_names"] and tags["test_ap"]
    registered = [name for name in MODELS if runs[name].data.tags.get("fraudstream.registered_version")]
    assert len(registered) == 1 and runs[registered[0]].data.tags["model_family"] == "batch"
    assert runs[registered[0]].data.tags["fraudstream.registered_version"] == "models:/fraud-classifier/1"
    assert "models:/fraud-classifier/1" in text and "fraudstream promote --version 1" in text

    previous = mlflow.get_tracking_uri()
    try:  # what serving loads, through the project's adapter (connect points MLflow at the store)
        model = load_batch_model(connect(MlflowSettings(tracking_uri=uri)), "models:/fraud-classifier/1")
    finally:
        mlflow.set_tracking_uri(previous)
    assert model.feature_version == feature_version
    assert model.feature_names == tuple(tags["feature_names"].split(","))
