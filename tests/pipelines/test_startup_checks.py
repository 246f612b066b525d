"""A scoring job refuses bad start-up input (``--actors`` below 1, an unwritable ``stream.status_path``)
in one line and exit code 2, before a broker, Kafka or Ray is started or waited for.

Kafka is given as a closed loopback port: a check that came after the wait for Kafka would end in a
Kafka error (after its timeout), not in the line these tests expect.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from configs import ConfigError, Settings
from connectors.broker import free_port
from pipelines.stream import StreamJob, check_start, main
from tests.integration.streamkit import job_config, run_cli


def _closed_port() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def _config(local_settings: Settings, tmp_path: Path, status_path: Path) -> Path:
    """A settings file whose Kafka is a closed port and whose status goes to ``status_path``."""
    return job_config(
        local_settings, _closed_port(), tmp_path / "job.yaml", checkpoint_uri=str(tmp_path / "checkpoints"),
        status_path=str(status_path), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )  # fmt: skip


def _unwritable(tmp_path: Path) -> Path:
    """A status path below a regular file: not writable, also for root."""
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "status.json"


@pytest.mark.parametrize("actors", ["0", "-1"])
def test_cli_run_refuses_fewer_than_one_actor_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], local_settings: Settings, tmp_path: Path,
    actors: str,
) -> None:
    config = _config(local_settings, tmp_path, tmp_path / "run" / "status.json")
    code, out, err = run_cli(monkeypatch, capsys, "run", "--config", str(config), "--actors", actors)
    assert code == 2
    errors = [line for line in err.splitlines() if "Error" in line]
    assert len(errors) == 1 and "Invalid value for '--actors'" in errors[0], err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "run").exists()  # the command never ran: not even its start-up checks


@pytest.mark.parametrize("actors", ["0", "-1"])
def test_pipelines_stream_refuses_fewer_than_one_actor_as_a_usage_error(
    capsys: pytest.CaptureFixture[str], local_settings: Settings, tmp_path: Path, actors: str
) -> None:
    config = _config(local_settings, tmp_path, tmp_path / "run" / "status.json")
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "--actors", actors])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert errors == [f"python -m pipelines.stream: error: argument --actors: must be at least 1, got {actors}"], err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("actors", [0, -1])
def test_stream_job_start_refuses_fewer_than_one_actor(local_settings: Settings, actors: int) -> None:
    # 0 must not silently mean "the default" (the controller reads a falsy count as stream.actors)
    with pytest.raises(ConfigError, match=rf"^config error: --actors must be at least 1, got {actors} "):
        StreamJob(local_settings, _closed_port()).start(actors)


def test_stream_job_start_checks_the_status_path_before_kafka(local_settings: Settings, tmp_path: Path) -> None:
    path = _unwritable(tmp_path)
    settings = msgspec.structs.replace(local_settings, stream=msgspec.structs.replace(local_settings.stream,
                                                                                      status_path=str(path)))
    began = time.monotonic()
    with pytest.raises(ConfigError) as error:
        StreamJob(settings, _closed_port()).start(1)
    assert str(error.value) == (
        f"config error: stream.status_path: cannot write {path} (Not a directory); "
        "fix: point stream.status_path at a writable file"
    )
    assert time.monotonic() - began < 5  # no wait for the (closed) Kafka came first


def test_a_status_path_that_is_a_folder_is_refused(local_settings: Settings, tmp_path: Path) -> None:
    settings = msgspec.structs.replace(local_settings, stream=msgspec.structs.replace(local_settings.stream,
                                                                                      status_path=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"stream\.status_path: cannot write .* \(Is a directory\); fix: "):
        StreamJob(settings, _closed_port()).start(1)


def test_a_writable_status_path_gets_its_folder_and_no_file_yet(local_settings: Settings, tmp_path: Path) -> None:
    # the status file appears once the job runs (readers take it as the sign that scoring began)
    path = tmp_path / "deep" / "run" / "status.json"
    settings = msgspec.structs.replace(local_settings, stream=msgspec.structs.replace(local_settings.stream,
                                                                                      status_path=str(path)))
    check_start(settings, 2)
    assert path.parent.is_dir() and list(path.parent.iterdir()) == []  # the probe is gone


def test_cli_run_names_an_unwritable_status_path_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], local_settings: Settings, tmp_path: Path
) -> None:
    path = _unwritable(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "run", "--config", str(_config(local_settings, tmp_path, path)))
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: config error: stream.status_path: cannot write {path} (Not a directory); "
        "fix: point stream.status_path at a writable file"
    ]
    assert out == ""


def test_pipelines_stream_names_an_unwritable_status_path_in_one_line(
    capsys: pytest.CaptureFixture[str], local_settings: Settings, tmp_path: Path
) -> None:
    path = _unwritable(tmp_path)
    assert main(["--config", str(_config(local_settings, tmp_path, path))]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"error: config error: stream.status_path: cannot write {path} (Not a directory); "
        "fix: point stream.status_path at a writable file"
    ]
