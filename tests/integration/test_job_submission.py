"""The scoring job submitted to a Ray cluster through Ray's job server: a real head (`ray start --head`),
``JobSubmissionClient`` (pipelines/jobs.py), the embedded broker; the job is stopped and must drain."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from actors.worker import checkpoint_key
from configs import Settings
from connectors.broker import free_port
from connectors.checkpoint import CheckpointStore, cluster_namespace
from connectors.kafka import cluster_id
from contracts.records import decode_alert
from pipelines.jobs import ScoringJobs
from synthetic import generate
from tests.integration.streamkit import consume_all, job_config, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_head() -> Iterator[ScoringJobs]:
    """A Ray head of its own (not the tests' in-process Ray), started the way a cluster node is: `ray start`
    with the project's environment first on PATH. `--block` keeps it in the foreground, so stopping that one
    process stops every Ray process it started (no `ray stop`, which would take the tests' Ray with it). Its own
    temp dir keeps its address out of /tmp/ray/ray_current_cluster, where a later `ray.init()` of the tests would
    find it and try to join a cluster that is gone. Its job agent listens on a port of its own: the tests' in-process
    Ray (ray_session) already holds Ray's default 52365 on this machine, and an agent that cannot bind it leaves the
    job server with no agent to submit to."""
    venv = Path(sys.executable).parent
    temp_dir = tempfile.mkdtemp(prefix="rayhead-")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    head = subprocess.Popen(
        [str(venv / "ray"), "start", "--head", "--block", f"--port={free_port()}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", "--num-cpus=6", "--include-dashboard=true", "--disable-usage-stats",
         f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                jobs = ScoringJobs(f"http://127.0.0.1:{dashboard}")
                break
            except Exception:
                assert head.poll() is None, "ray start --head exited"
                assert time.monotonic() < deadline, "the Ray job server did not answer in 90 s"
                time.sleep(1)
        yield jobs
    finally:
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
            head.wait(10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _job_config(settings: Settings, tmp_path: Path, kafka_broker: str) -> Path:
    """The job's settings: the test's broker and topics, private checkpoints, status and store."""
    return job_config(settings, kafka_broker, tmp_path / "job.yaml", checkpoint_uri=str(tmp_path / "checkpoints"),
                      status_path=str(tmp_path / "status.json"),
                      tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")  # fmt: skip


def _status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_submitted_job_scores_publishes_alerts_and_drains_when_stopped(
    ray_head: ScoringJobs, isolated_settings, kafka_broker: str, tmp_path: Path
) -> None:
    settings = isolated_settings(partitions=4)
    history = generate(msgspec.structs.replace(settings.generator, accounts=300, days=4, seed=3))
    report = produce(settings, kafka_broker, history.transactions, history.labels)
    config = _job_config(settings, tmp_path, kafka_broker)

    job_id = ray_head.submit(str(config), working_dir=ROOT, actors=2, drain_timeout_s=90)
    status_path = tmp_path / "status.json"
    deadline = time.monotonic() + 240
    while (_status(status_path).get("totals") or {}).get("scored", 0) < report.transactions:
        state = ray_head.status(job_id)
        assert state in {"PENDING", "RUNNING"}, f"job {state}:\n{ray_head.logs(job_id)[-3000:]}"
        assert time.monotonic() < deadline, f"not every transaction scored:\n{ray_head.logs(job_id)[-3000:]}"
        time.sleep(1)
    assert ray_head.status(job_id) == "RUNNING"

    # alerts arrive on the topic, keyed by account
    records = asyncio.run(consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))
    alerts = [decode_alert(r.value) for r in records]
    assert alerts and all(r.key == a.account_id.encode() for r, a in zip(records, alerts, strict=True))
    assert len(alerts) == _status(status_path)["totals"]["alerts"]

    # stopped: SIGTERM, the job drains (every partition checkpointed at its end) and ends as STOPPED
    assert ray_head.stop(job_id, timeout_s=150) == "STOPPED"
    final = _status(status_path)
    assert final.get("stopped") is True, final
    partitions = {p: s for actor in final["final"]["actors"] for p, s in actor["partitions"].items()}
    assert sorted(partitions) == ["0", "1", "2", "3"], final
    assert sum(s["next_offset"] for s in partitions.values()) == report.transactions
    assert all(s["checkpoint_seq"] >= 1 for s in partitions.values()), partitions
    # the last checkpoint of every partition is at its end: a restart would score nothing twice
    store = CheckpointStore(str(tmp_path / "checkpoints"),
                            namespace=cluster_namespace(asyncio.run(cluster_id(settings.kafka, kafka_broker))))
    topic = settings.kafka.topics.transactions.name
    for partition, state in partitions.items():
        latest = store.load_latest(checkpoint_key(topic, int(partition)))
        assert latest is not None and latest.meta["next_offset"] == state["next_offset"], partition
    logs = ray_head.logs(job_id)
    assert '"scored"' in logs  # the job's status lines, as `ray job logs` shows them
