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


def test_fraudstream_status_shows_the_lag_in_seconds_and_the_autoscaler_with_its_latest_changes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], local_settings: Settings, tmp_path: Path
) -> None:
    from actors.messages import AutoscaleChange, AutoscaleStatus, JobEvent

    path = tmp_path / "status.json"
    config = job_config(local_settings, "127.0.0.1:9", tmp_path / "job.yaml", checkpoint_uri=str(tmp_path / "cp"),
                        status_path=str(path), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    partition = msgspec.structs.replace(partition_status(7, 3, 7), lag_s=12.5)
    reason = "lag 12.5 s above scale_out_lag_s 2 s for 2 s; 3 records behind, not falling: 1 -> 2 actors"
    now = time.time()
    events = [JobEvent(time=now, event="actor_restarted", actor="scoring-0-0", detail="pid 1 -> 2"),
              JobEvent(time=now, event="scaled_out", actor="controller", detail="1 -> 2 actors", reason=reason)]
    autoscale = AutoscaleStatus(actors=2, min_actors=1, max_actors=4, lag_s=12.5, lag_records=3, decision="hold",
                                reason="lag 12.5 s above scale_out_lag_s 2 s for 0 s (of 2 s); 3 records behind",
                                requested_actors=2, cooldown_left_s=1.5, changes=1,
                                last_change=AutoscaleChange(time=now, from_actors=1, to_actors=2, reason=reason))
    status = job_status([actor_status("scoring-0-0", {"0": partition})], plan=[[0], [1]], stage_plan=[[0], [1]],
                        events=events, now=now, autoscale=autoscale)
    assert status.totals.lag_s == 12.5
    write_status(path, status)
    assert read_status(path.read_bytes()) == status
    code, out, _ = run_cli(monkeypatch, capsys, "status", "--config", str(config))
    text = " ".join(out.split())
    row = next(line for line in out.splitlines() if "scoring-0-0" in line)
    assert code == 0 and "lag s" in out and [cell.strip() for cell in row.split("│")][6:8] == ["3", "12.5"]
    assert "autoscale: 2 actors (1-4, room asked for 2), lag 12.5s; hold: lag 12.5 s above scale_out_lag_s" in text
    assert f"scaled_out 1 -> 2 actors: {reason}" in text and "actor_restarted" not in text
