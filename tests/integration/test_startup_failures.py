"""A scoring job that fails to start leaves nothing running: no controller, no scoring actor, and no Ray
when the job started Ray itself (a Ray that ran before, like the session's, survives). An unwritable
status file stops the job before Ray starts. Real broker, real Ray, no mocks.

The controller's start is made to fail for real: a checkpoint store whose partition folder is a regular
file cannot be listed, so the scoring actor that restores the partition fails (Not a directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import pytest
import ray

from actors.controller import NAMESPACE, controller_name
from actors.worker import checkpoint_key
from configs import Settings
from connectors.checkpoint import cluster_namespace
from connectors.kafka import cluster_id
from pipelines.stream import StreamJob
from tests.integration.streamkit import job_config

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]

#: Runs in a process of its own: the action (``start``: StreamJob.start(2); ``main``: pipelines.stream.main),
#: while a thread records every process below this one; then waits up to 20 s for them to end and prints
#: what it saw as one JSON line. Ray started by the action runs below this process (gcs_server, raylet,
#: its workers), so ``left`` is what of it would outlive a failed start.
SCRIPT = r"""
import json, os, sys, threading, time
from pathlib import Path

def alive():
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if state != "Z":
                found[int(entry.name)] = int(ppid)
    return found

def below(root, processes):
    children, todo, found = {}, [root], set()
    for pid, ppid in processes.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found

seen = {}
done = threading.Event()

def watch():
    while not done.is_set():
        for pid in below(os.getpid(), alive()):
            # read again while it lives: a process caught between fork and exec shows its parent's (or no)
            # command line, and the raylet was once recorded that way and missed
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
            except OSError:
                continue
            if command or pid not in seen:
                seen[pid] = command
        time.sleep(0.05)

threading.Thread(target=watch, daemon=True).start()
import ray
from models.checked_settings import load_settings
from pipelines.stream import StreamJob, main

mode, config, bootstrap = sys.argv[1:4]
result = {}
try:
    if mode == "start":
        job = StreamJob(load_settings(config), bootstrap)
        job.start(2)
        result["started"] = True
    else:
        result["code"] = main(["--config", config, "--bootstrap", bootstrap])
except Exception as exc:
    result["error"] = str(exc).strip().splitlines()[-1]  # a Ray task error ends with its cause
result["ray_initialized"] = ray.is_initialized()
time.sleep(0.5)
done.set()
deadline = time.monotonic() + 20
while time.monotonic() < deadline and set(seen) & set(alive()):
    time.sleep(0.2)
result["ray_seen"] = sorted({w for cmd in seen.values() for w in ("raylet", "gcs_server") if w in cmd})
result["left"] = {pid: seen[pid] for pid in set(seen) & set(alive())}
print(json.dumps(result), flush=True)
"""


def _run_script(mode: str, config: Path, bootstrap: str) -> tuple[dict, str]:
    """(what SCRIPT printed, its stderr); its Ray, if any, is its own (a fresh temp folder, no RAY_ADDRESS)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory(prefix="fsr", dir="/tmp") as ray_tmp:  # short: Ray's socket paths
        env["RAY_TMPDIR"] = ray_tmp
        done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(config), bootstrap], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _failing_checkpoints(settings: Settings, kafka_broker: str) -> Settings:
    """``settings`` whose checkpoint store exists but cannot be read: partition 0's folder is a regular file."""
    namespace = cluster_namespace(asyncio.run(cluster_id(settings.kafka, kafka_broker)))
    root = Path(settings.stream.checkpoint_uri) / namespace
    root.mkdir(parents=True)
    (root / checkpoint_key(settings.kafka.topics.transactions.name, 0)).write_text("not a folder")
    return settings


def _config(settings: Settings, kafka_broker: str, tmp_path: Path) -> Path:
    """The settings as the YAML file a job process reads (MLflow in ``tmp_path``)."""
    return job_config(
        settings, kafka_broker, tmp_path / "job.yaml", checkpoint_uri=settings.stream.checkpoint_uri,
        status_path=settings.stream.status_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )  # fmt: skip


def test_a_failed_start_after_ray_started_shuts_down_the_ray_it_started(
    stream_settings, kafka_broker: str, tmp_path: Path
) -> None:
    settings = _failing_checkpoints(stream_settings(partitions=2), kafka_broker)
    result, stderr = _run_script("start", _config(settings, kafka_broker, tmp_path), kafka_broker)
    assert "Not a directory" in result.get("error", ""), (result, stderr[-3000:])  # the controller's start failed
    assert result["ray_seen"] == ["gcs_server", "raylet"]  # after the job had started a Ray of its own
    assert result["ray_initialized"] is False
    assert result["left"] == {}, "a failed start left processes of its Ray behind"


def test_an_unwritable_status_path_stops_the_job_before_ray_starts(
    stream_settings, kafka_broker: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "status.json"  # below a regular file: not writable, also for root
    settings = stream_settings(partitions=2, status_path=str(path))
    result, stderr = _run_script("main", _config(settings, kafka_broker, tmp_path), kafka_broker)
    assert result["code"] == 2, (result, stderr[-3000:])
    assert stderr.strip().splitlines() == [
        f"error: config error: stream.status_path: cannot write {path} (Not a directory); "
        "fix: point stream.status_path at a writable file"
    ]
    assert result["ray_seen"] == [] and result["ray_initialized"] is False  # Ray never started


def _alive_actors() -> list[str]:
    """Class names of the live actors of this process's Ray (from its GCS: no dashboard needed)."""
    from ray._private import state

    return sorted(a["ActorClassName"] for a in state.actors().values() if a["State"] == "ALIVE")


def test_a_failed_start_kills_the_controller_and_keeps_a_ray_that_ran_before(
    stream_settings, kafka_broker: str, ray_session
) -> None:
    settings = _failing_checkpoints(stream_settings(partitions=2), kafka_broker)
    before = _alive_actors()
    job = StreamJob(settings, kafka_broker)
    with pytest.raises(Exception, match="Not a directory"):
        job.start(2)
    assert job.controller is None
    with pytest.raises(ValueError):  # the controller is gone: its name is free for the next start
        ray.get_actor(controller_name(settings), namespace=NAMESPACE)
    deadline = time.monotonic() + 10
    while _alive_actors() != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive_actors() == before  # its scoring actors went with the controller
    assert ray.is_initialized() and job.started_ray is False  # the session's Ray survives
    assert ray.get(ray.put(1)) == 1


def test_a_failure_before_the_drain_still_drains(
    stream_settings, kafka_broker: str, job_factory, tmp_path: Path
) -> None:
    settings = stream_settings(partitions=2)
    mlflow = msgspec.structs.replace(settings.mlflow, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = msgspec.structs.replace(settings, mlflow=mlflow)  # the online models are logged at the stop
    job = job_factory(settings, actors=1)

    def fail() -> None:
        raise RuntimeError("collecting failed")

    with pytest.raises(RuntimeError, match="collecting failed"):
        job.run(0, before_drain=fail)
    assert job.controller is None
    with pytest.raises(ValueError):
        ray.get_actor(controller_name(settings), namespace=NAMESPACE)
    assert json.loads(Path(settings.stream.status_path).read_text())["stopped"] is True  # final checkpoints written
