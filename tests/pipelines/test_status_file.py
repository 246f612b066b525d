"""The job's status file: written as the job's status, read back by `fraudstream status` (table, raw JSON, stopped)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec
import pytest

from actors.messages import ActorStatus, DrainedJob, JobStatus, StoppedJob, job_status
from configs import Settings
from pipelines.stream import read_status, write_status
from tests.actors.fakes import actor_status, partition_status
from tests.integration.streamkit import job_config, run_cli


def _status() -> JobStatus:
    actors = [actor_status("scoring-0-0", {"0": partition_status(7, 0, 7), "2": partition_status(5, None, 5)}),
              ActorStatus(actor="scoring-0-1", error="RayActorError()", restarts=1)]  # fmt: skip
    return job_status(actors, plan=[[0, 2], [1, 3]], stage_plan=[[0], [1]], events=[], now=time.time())


def test_the_status_file_reads_back_as_it_was_written(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.json"
    status = _status()
    write_status(path, status)
    assert read_status(path.read_bytes()) == status
    assert json.loads(path.read_text()) == msgspec.to_builtins(status)
    stopped = StoppedJob(time=time.time(), final=DrainedJob(actors=status.actors))
    write_status(path, stopped)
    assert read_status(path.read_bytes()) == stopped
    assert json.loads(path.read_text())["stopped"] is True


def test_fraudstream_status_shows_each_partition_the_raw_json_or_that_the_job_stopped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], local_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "status.json"
    config = job_config(local_settings, "127.0.0.1:9", tmp_path / "job.yaml", checkpoint_uri=str(tmp_path / "cp"),
                        status_path=str(path), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    status = _status()
    write_status(path, status)
    code, out, _ = run_cli(monkeypatch, capsys, "status", "--config", str(config))
    rows = [line for line in out.splitlines() if "scoring-0-0" in line]
    assert code == 0 and len(rows) == 2 and "?" in rows[1]  # partition 2's lag is unknown
    code, out, _ = run_cli(monkeypatch, capsys, "status", "--config", str(config), "--json")
    assert code == 0 and json.loads(out) == msgspec.to_builtins(status)
    write_status(path, StoppedJob(time=time.time(), final=DrainedJob(actors=status.actors)))
    code, _, err = run_cli(monkeypatch, capsys, "status", "--config", str(config))
    assert code == 0 and "the job stopped" in err
    path.write_text('{"time": 1.0, "actors": "not a list"}')  # another version's, or no status at all
    code, _, err = run_cli(monkeypatch, capsys, "status", "--config", str(config))
    assert code == 2 and "is not a job status this version of fraudstream reads" in " ".join(err.split())
