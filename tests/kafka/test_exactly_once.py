"""Exactly-once alerts on the real cluster (``kafka.exactly_once: true``, over SASL_SSL as the job's principal).

While a history streams in, the OS process of a scoring actor is SIGKILLed twice (Ray restarts it; its
transactional producer fences the dead one's and aborts what it left open), then the whole job is SIGKILLed
(no drain: its actors' open transactions are left to the restarted job) and started again. A consumer reading
``alerts`` with ``isolation.level=read_committed`` then finds every alert of an uninterrupted at-least-once run
of the same history exactly once: no duplicate ``alert_id``, none missing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.messages import JobStatus
from configs import KafkaSettings
from connectors.kafka import ensure_topics, make_consumer
from contracts.records import decode_alert
from models.checked_settings import load_settings
from pipelines.produce import produce_history
from pipelines.stream import read_status
from tests.kafka.cluster import KafkaCluster
from tests.kafka.test_stream_sasl import (
    ACTORS,
    ROOT,
    as_user,
    cluster_config,
    job_env,
    prepare_topics,
    produce,
    run_job_until_scored,
    sasl_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Transactions per second while the actors are killed (the history lasts ~35 s at this rate).
RATE = 200.0


def _status(path: Path) -> JobStatus | None:
    try:
        found = read_status(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    return found if isinstance(found, JobStatus) else None


def _wait_for(what: str, check: Any, job: subprocess.Popen[bytes], log: Path, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        assert job.poll() is None, f"the job exited ({job.returncode}):\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f}s\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


def _start_job(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines.stream", "--config", str(config), "--actors",
                                 str(ACTORS)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _kill_an_actor(status_path: Path, job: subprocess.Popen[bytes], log: Path, index: int) -> int:
    """SIGKILL the OS process of actor ``index`` once it has scored since its last start; its pid."""
    def scoring_actor() -> int | None:
        status = _status(status_path)
        if status is None or len(status.actors) != ACTORS:
            return None
        actor = status.actors[index]
        mine = [p for p in status.partitions.values() if p.actor == actor.actor]
        return actor.pid if actor.pid and mine and all(p.scored > 0 for p in mine) else None

    pid: int = _wait_for(f"actor {index} scoring", scoring_actor, job, log)
    os.kill(pid, signal.SIGKILL)
    return pid


def _read_committed_alerts(kafka: KafkaSettings) -> list[Any]:
    async def read() -> list[Any]:
        from aiokafka import TopicPartition

        consumer = make_consumer(kafka, None, auto_offset_reset="earliest", isolation_level="read_committed")
        await consumer.start()
        try:
            tps = [TopicPartition(kafka.topics.alerts.name, p) for p in range(kafka.topics.alerts.partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)  # the last stable offsets (read_committed)
            records: list[Any] = []
            deadline = time.monotonic() + 60
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                assert time.monotonic() < deadline, "alerts not read to their end in 60 s"
                for batch in (await consumer.getmany(timeout_ms=300, max_records=10_000)).values():
                    records.extend(batch)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_killed_actors_and_a_killed_job_leave_every_alert_exactly_once(
    kafka_cluster: KafkaCluster, kafka_broker: str, history: Any, tmp_path: Path
) -> None:
    config = sasl_config(kafka_cluster, tmp_path / "eos", "eos", exactly_once=True)
    settings = load_settings(config)
    job_kafka = prepare_topics(kafka_cluster, config)
    assert job_kafka.exactly_once
    producer_settings = msgspec.structs.replace(settings.producer, rate=RATE)
    admin_kafka = as_user(kafka_cluster, job_kafka, "admin")  # the job may not write the transactions
    produced: list[Any] = []
    feeding = threading.Thread(target=lambda: produced.append(asyncio.run(produce_history(
        history.transactions, history.labels, admin_kafka, producer_settings, None))), daemon=True)

    status_path, log = Path(settings.stream.status_path), tmp_path / "eos.log"
    with tempfile.TemporaryDirectory(prefix="fsx", dir="/tmp") as ray_tmp:
        env = job_env(RAY_TMPDIR=ray_tmp)
        job = _start_job(config, env, log)
        try:
            feeding.start()
            killed = [_kill_an_actor(status_path, job, log, 0)]
            # Ray restarts it (a new process, the same name and transactional id); then the other one
            killed.append(_kill_an_actor(status_path, job, log, 1))
            _wait_for("both actors restarted and scoring", lambda: (s := _status(status_path)) and all(
                a.pid and a.pid not in killed for a in s.actors) and s.totals.scored > 0, job, log)
            os.killpg(job.pid, signal.SIGKILL)  # the whole job and its Ray, no drain
            job.wait()
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
        status_path.unlink(missing_ok=True)
    feeding.join(timeout=120)
    assert produced and produced[0].transactions == history.transactions.num_rows

    with tempfile.TemporaryDirectory(prefix="fsy", dir="/tmp") as ray_tmp:
        final, _ = run_job_until_scored(config, produced[0].transactions, job_env(RAY_TMPDIR=ray_tmp),
                                        tmp_path / "eos-restarted.log")
    partitions = final.partitions.values()
    assert sum(p.next_offset for p in partitions) == produced[0].transactions and final.totals.offset_gaps == 0

    alerts = [decode_alert(r.value) for r in _read_committed_alerts(as_user(kafka_cluster, job_kafka, "reader"))]
    repeated = {alert_id: n for alert_id, n in Counter(a.alert_id for a in alerts).items() if n > 1}
    assert not repeated, f"{len(repeated)} alerts more than once, e.g. {list(repeated.items())[:3]}"

    # the same history, uninterrupted and at-least-once on the embedded broker: the alerts expected
    reference = cluster_config(tmp_path / "reference.yaml", tmp_path / "reference", "eosref", {
        "bootstrap_servers": [kafka_broker], "security_protocol": "PLAINTEXT", "ssl_ca_file": None,
        "sasl_mechanism": None, "sasl_username": None,
    }, replication_factor=1)  # fmt: skip
    reference_kafka = load_settings(reference).kafka
    asyncio.run(ensure_topics(reference_kafka))
    produce(reference_kafka, settings.producer, history)
    with tempfile.TemporaryDirectory(prefix="fsz", dir="/tmp") as ray_tmp:
        run_job_until_scored(reference, produced[0].transactions, job_env(RAY_TMPDIR=ray_tmp), tmp_path / "ref.log")
    expected = {decode_alert(r.value).alert_id for r in _read_committed_alerts(reference_kafka)}
    assert expected and {a.alert_id for a in alerts} == expected
