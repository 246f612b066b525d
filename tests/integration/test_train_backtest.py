"""train -> registry -> promote -> backtest through the CLI, on a real MLflow SQLite store (no mocks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from configs import load_settings
from features import FeatureRegistry
from pipelines.cli import main
from synthetic import generate, write_history
from tests.integration.streamkit import run_cli

pytestmark = pytest.mark.integration

DAY = "2026-01-{:02d}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A generated history (1,000 accounts x 14 days) and a config with a private MLflow store."""
    root = tmp_path_factory.mktemp("train")
    settings = load_settings()
    history = generate(msgspec.structs.replace(settings.generator, accounts=1000, days=14, seed=5))
    write_history(history, root / "history")
    store = root / "mlruns" / "mlflow.db"
    common = (
        f"mlflow: {{tracking_uri: 'sqlite:///{store}'}}\n"
        "history: {label_delay_days: 3}\n"
        "backtest: {micro_batch_records: 1000}\n"
    )
    (root / "config.yaml").write_text(common + "training: {max_iter: 40, calibration_fraction: 0.4}\n")
    (root / "weak.yaml").write_text(
        common + "training: {max_iter: 5, calibration_fraction: 0.4, features: [hour_of_day, is_weekend, amount]}\n"
    )
    (root / "other_features.yaml").write_text(common + "features: {ewma_alpha: 0.2}\n")
    return {"root": root, "history": root / "history", "store": store, "config": root / "config.yaml",
            "weak": root / "weak.yaml", "other_features": root / "other_features.yaml"}  # fmt: skip


def client(store: Path):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{store}")


@pytest.fixture(scope="module")
def first_version(workspace: dict[str, Path]) -> dict:
    """`fraudstream train` once for the module (the store, version 1)."""
    monkeypatch = pytest.MonkeyPatch()
    capture = _Capture()
    try:
        code, out, err = capture.run(monkeypatch, "train", "--history", str(workspace["history"]),
                                     "--config", str(workspace["config"]))  # fmt: skip
    finally:
        monkeypatch.undo()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


class _Capture:
    """capsys is function-scoped; a module fixture captures stdout itself."""

    def run(self, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        monkeypatch.setattr(sys, "argv", ["fraudstream", *args])
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = int(exc.code or 0)
        return code, out.getvalue(), err.getvalue()


def test_train_registers_a_version_with_metrics_artifacts_and_tags(workspace, first_version) -> None:  # type: ignore[no-untyped-def]
    import mlflow

    assert first_version["version"] == "1" and first_version["registered_model"] == "fraud-classifier"
    registry = FeatureRegistry.from_settings(load_settings(workspace["config"]).features)
    assert first_version["feature_version"] == registry.version
    mlflow_client = client(workspace["store"])
    version = mlflow_client.get_model_version("fraud-classifier", "1")
    assert version.tags["feature_version"] == registry.version
    assert version.tags["feature_names"].split(",") == list(registry.names)
    run = mlflow_client.get_run(version.run_id)
    for key in ("test_ap", "test_roc_auc", "test_precision_at_100", "test_card_precision_at_100"):
        assert key in run.data.metrics, key
    assert 0.0 < run.data.metrics["test_ap"] <= 1.0
    assert run.data.params["feature_version"] == registry.version
    assert run.data.params["training.class_weight"] == "balanced"
    # the version registered is the recipe refitted on the latest labelled data (training.refit, the default)
    assert run.data.params["refit.train_end"] > run.data.params["split.train_end"]
    assert run.data.metrics["refit_fit_rows"] > run.data.metrics["fit_rows"]
    split = first_version["split"]
    assert split["train_end"] < split["test_start"]  # the label-delay gap
    artifacts = {a.path for a in mlflow_client.list_artifacts(version.run_id)}
    assert {"pr_curve.png", "test_daily_metrics.json"} <= artifacts
    assert (workspace["store"].parent / "artifacts").is_dir()  # artifacts beside the SQLite store
    mlflow.set_tracking_uri(f"sqlite:///{workspace['store']}")
    info = mlflow.models.get_model_info("models:/fraud-classifier/1")
    assert info.signature is not None
    assert [spec.name for spec in info.signature.inputs.inputs] == list(registry.names)
    assert info.saved_input_example_info is not None


def test_promote_gate_refuses_a_lower_ap_unless_forced(workspace, first_version, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli(monkeypatch, capsys, "promote", "--config", str(workspace["config"]))
    assert code == 0, err
    assert out.startswith("champion: fraud-classifier version 1")
    code, out, err = run_cli(monkeypatch, capsys, "train", "--history", str(workspace["history"]),
                             "--config", str(workspace["weak"]))  # fmt: skip
    assert code == 0, err
    weak = json.loads(out.strip().splitlines()[-1])
    assert weak["version"] == "2" and weak["metrics"]["test_ap"] < first_version["metrics"]["test_ap"]

    code, out, err = run_cli(monkeypatch, capsys, "promote", "--version", "2", "--config", str(workspace["config"]))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "promote refused: version 2 has test AP" in lines[0] and "below champion version 1" in lines[0]
    assert "--force" in lines[0] and "Traceback" not in err
    assert str(client(workspace["store"]).get_model_version_by_alias("fraud-classifier", "champion").version) == "1"

    code, out, err = run_cli(monkeypatch, capsys, "promote", "--version", "2", "--alias", "challenger",
                             "--config", str(workspace["config"]))  # fmt: skip
    assert code == 0 and out.startswith("challenger: fraud-classifier version 2"), err
    code, out, err = run_cli(monkeypatch, capsys, "promote", "--version", "2", "--force",
                             "--config", str(workspace["config"]))  # fmt: skip
    assert code == 0 and "forced" in out, err
    assert str(client(workspace["store"]).get_model_version_by_alias("fraud-classifier", "champion").version) == "2"
    code, out, err = run_cli(monkeypatch, capsys, "promote", "--version", "1", "--config", str(workspace["config"]))
    assert code == 0 and out.startswith("champion: fraud-classifier version 1"), err  # higher AP passes the gate


def test_backtest_writes_scores_and_metrics(workspace, first_version, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    out_json, scores = workspace["root"] / "bt" / "metrics.json", workspace["root"] / "bt" / "scores.parquet"
    code, _out, err = run_cli(monkeypatch, capsys, "backtest", "--history", str(workspace["history"]),
                             "--model", "models:/fraud-classifier/1", "--out", str(out_json),
                             "--scores-out", str(scores), "--config", str(workspace["config"]))  # fmt: skip
    assert code == 0, err
    metrics = json.loads(out_json.read_text())
    for key in ("ap", "roc_auc", "card_precision_at_k", "card_precision_at_k_per_day", "alert_rate",
                "recall_by_scenario", "sources", "model_versions"):  # fmt: skip
        assert key in metrics, key
    assert metrics["model_versions"]["classifier"] == "fraud-classifier/1"
    assert set(metrics["sources"]) == {"anomaly", "online", "rules", "classifier"}
    # the fitted stacking is a ready scoring.fusion.stacking section over the fused sources (rules are floors)
    fitted = metrics["stacking_fitted"]
    assert set(fitted["coefficients"]) == {"anomaly", "online", "classifier"}
    from configs.settings import settings_from_dict

    fusion = settings_from_dict({"scoring": {"fusion": {"method": "stacking", "stacking": fitted}}}).scoring.fusion
    assert fusion.stacking.coefficients["classifier"] == fitted["coefficients"]["classifier"] > 0
    assert set(metrics["recall_by_scenario"]) <= {"card_testing", "account_takeover", "impossible_travel",
                                                  "compromised_terminal", "bust_out"}  # fmt: skip
    assert metrics["recall_by_scenario"] and all(0.0 <= r <= 1.0 for r in metrics["recall_by_scenario"].values())
    assert 0.0 < metrics["alert_rate"] < 0.05 and metrics["top_k"] == 100
    assert len(metrics["card_precision_at_k_per_day"]) == 14
    table = pq.read_table(scores)
    assert table.column_names == ["transaction_id", "account_id", "event_time", "score", "decision"]
    history = pq.read_table(workspace["history"] / "transactions.parquet")
    assert table.num_rows == history.num_rows == metrics["rows"]
    decided = pc.sum(pc.is_valid(table.column("decision"))).as_py()
    assert decided == metrics["alerts"] and set(table.column("decision").drop_null().to_pylist()) <= {"review", "block"}


def test_backtest_from_until_replays_a_span_after_a_warm_up(workspace, first_version, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    out_json, scores = workspace["root"] / "span" / "metrics.json", workspace["root"] / "span" / "scores.parquet"
    code, _out, err = run_cli(monkeypatch, capsys, "backtest", "--history", str(workspace["history"]), "--no-model",
                             "--from", DAY.format(8), "--until", DAY.format(11) + "T23:59:59Z", "--out", str(out_json),
                             "--scores-out", str(scores), "--config", str(workspace["config"]))  # fmt: skip
    assert code == 0, err
    metrics = json.loads(out_json.read_text())
    table = pq.read_table(scores)
    times = table.column("event_time")
    assert pc.min(times).as_py().isoformat() >= "2026-01-08T00:00:00+00:00"
    assert pc.max(times).as_py().isoformat() <= "2026-01-11T23:59:59+00:00"
    history = pq.read_table(workspace["history"] / "transactions.parquet")
    history_times = history.column("event_time")
    before = pc.sum(pc.less(history_times, pc.min(times))).as_py()
    in_span = pc.sum(pc.and_(pc.greater_equal(history_times, pc.min(times)),
                             pc.less_equal(history_times, pc.max(times)))).as_py()  # fmt: skip
    assert metrics["warmup_rows"] == before > 0 and metrics["rows"] == table.num_rows == in_span
    assert "classifier" not in metrics["model_versions"] and len(metrics["card_precision_at_k_per_day"]) == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "fraud-classifier"], "--model: 'fraud-classifier' is not a model URI; use models:/NAME@ALIAS"),
        (["--model", "models:/fraud-classifier@nobody"], "has no version with alias 'nobody'; set it with"),
        (["--model", "models:/no-such-model@champion"], "no registered model 'no-such-model' yet"),
        (["--model", "models:/fraud-classifier/99"], "'fraud-classifier' has no version 99"),
        (["--history", "/nonexistent/history"], "--history: /nonexistent/history does not exist"),
        (["--from", "last week"], "--from: expected an ISO 8601 date or time"),
    ],
)
def test_bad_input_stops_with_one_line(workspace, first_version, monkeypatch, capsys, args, expected) -> None:  # type: ignore[no-untyped-def]
    base = {"--history": str(workspace["history"]), "--config": str(workspace["config"]),
            "--out": str(workspace["root"] / "bad.json")}  # fmt: skip
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = ["backtest", *[item for key, value in {**base, **given}.items() for item in (key, value)]]
    code, _out, err = run_cli(monkeypatch, capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err


def test_a_model_trained_on_other_features_is_refused(workspace, first_version, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _out, err = run_cli(monkeypatch, capsys, "backtest", "--history", str(workspace["history"]),
                             "--model", "models:/fraud-classifier/1", "--out", str(workspace["root"] / "x.json"),
                             "--config", str(workspace["other_features"]))  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "was trained on features" in lines[0] and "retrain it with `fraudstream train`" in lines[0]


def test_a_model_loads_from_the_store_of_the_client_given(workspace, first_version, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Not from whatever store MLflow's global URIs point at since (another connect, a notebook's store)."""
    import mlflow
    from mlflow import MlflowClient

    from configs import MlflowSettings
    from connectors.registry import connect, load_batch_model

    client = connect(MlflowSettings(tracking_uri=f"sqlite:///{workspace['store']}"))
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(elsewhere)  # e.g. another connect(): the registry follows the tracking URI
    try:
        model = load_batch_model(client, "models:/fraud-classifier/1")
        assert model.version == "fraud-classifier/1" and model.feature_names
        # with the fusion learned at training (training.learn_fusion), as the run recorded it
        run = client.get_run(client.get_model_version("fraud-classifier", "1").run_id)
        assert model.fusion is not None and model.fusion.inputs == "logit"
        assert msgspec.json.encode(model.fusion).decode() == run.data.params["fusion.stacking"]
        # put back as it was: the registry not pinned, still following the tracking URI
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (elsewhere, elsewhere)
        assert MlflowClient(f"sqlite:///{workspace['store']}")._registry_uri == f"sqlite:///{workspace['store']}"
    finally:
        mlflow.set_tracking_uri(before)
