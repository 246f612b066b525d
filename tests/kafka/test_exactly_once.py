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
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import TopicPartition

from actors.messages import JobStatus
from configs import KafkaSettings
from connectors.kafka import make_consumer
from contracts.records import decode_alert
from models.checked_settings import load_settings
from tests.kafka.cluster import KafkaCluster
from tests.kafka.jobkit import (
    ACTORS,
    JobProcess,
    StreamProducer,
    as_user,
    job_env,
    prepare_topics,
    ray_tmpdir,
    run_job_until_scored,
    run_on_embedded_broker,
    sasl_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Transactions per second while the actors are killed (the history lasts ~35 s at this rate).
RATE = 200.0


def _kill_an_actor(job: JobProcess, index: int) -> int:
    """SIGKILL the OS process of actor ``index`` once every partition it owns has scored; its pid."""
    def scoring(status: JobStatus) -> bool:
        if len(status.actors) != ACTORS or not status.actors[index].pid:
            return False
        mine = [p for p in status.partitions.values() if p.actor == status.actors[index].actor]
        return bool(mine) and all(p.scored > 0 for p in mine)

    pid = job.wait_for(scoring, f"actor {index} scoring").actors[index].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def _read_committed_alerts(kafka: KafkaSettings) -> list[Any]:
    async def read() -> list[Any]:
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
    admin_kafka = as_user(kafka_cluster, job_kafka, "admin")  # the job may not write the transactions
    with ray_tmpdir() as ray_tmp, JobProcess(config, job_env(RAY_TMPDIR=ray_tmp), tmp_path / "eos.log") as job:
        feeding = StreamProducer(admin_kafka, settings.producer, history.transactions, history.labels, RATE)
        killed = [_kill_an_actor(job, 0)]
        # Ray restarts it (a new process, the same name and transactional id); then the other one
        killed.append(_kill_an_actor(job, 1))
        job.wait_for(lambda s: all(a.pid and a.pid not in killed for a in s.actors) and s.totals.scored > 0,
                     "both actors restarted and scoring")
        assert feeding.running  # all of this happened mid-stream
        job.kill()  # the whole job and its Ray, no drain
    produced = feeding.join()
    assert produced.transactions == history.transactions.num_rows

    with ray_tmpdir() as ray_tmp:
        final, _ = run_job_until_scored(config, produced.transactions, job_env(RAY_TMPDIR=ray_tmp),
                                        tmp_path / "eos-restarted.log")
    partitions = final.partitions.values()
    assert sum(p.next_offset for p in partitions) == produced.transactions and final.totals.offset_gaps == 0

    alerts = [decode_alert(r.value) for r in _read_committed_alerts(as_user(kafka_cluster, job_kafka, "reader"))]
    repeated = {alert_id: n for alert_id, n in Counter(a.alert_id for a in alerts).items() if n > 1}
    assert not repeated, f"{len(repeated)} alerts more than once, e.g. {list(repeated.items())[:3]}"

    # the same history, uninterrupted and at-least-once on the embedded broker: the alerts expected
    _, reference_kafka = run_on_embedded_broker(kafka_broker, tmp_path / "reference", "eosref", history,
                                                msgspec.structs.replace(settings.producer, rate=0.0))
    expected = {decode_alert(r.value).alert_id for r in _read_committed_alerts(reference_kafka)}
    assert expected and {a.alert_id for a in alerts} == expected
