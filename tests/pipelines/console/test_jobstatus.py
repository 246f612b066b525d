"""The running job as the console shows it, from the status file the job writes."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.messages import DrainedJob, ServingStatus, StoppedJob, job_status
from pipelines.console.jobstatus import StatusWatch
from pipelines.stream import write_status
from tests.actors.fakes import actor_status, partition_status
from tests.pipelines.console.consolekit import Clock


def _status(now: float, alerts_per_partition: int, *, serving: bool = True):  # type: ignore[no-untyped-def]
    partitions = {"0": msgspec.structs.replace(partition_status(10, 4, 10), alerts=alerts_per_partition),
                  "1": msgspec.structs.replace(partition_status(20, 1, 20), alerts=alerts_per_partition)}  # fmt: skip
    actor = actor_status("scoring-0-0", partitions)
    if serving:
        actor = msgspec.structs.replace(actor, serving=ServingStatus(
            uri="models:/fraud-classifier@champion", champion="fraud-classifier/3", challenger="fraud-classifier/4",
            swaps=0))  # fmt: skip
    return job_status([actor], plan=[[0, 1]], stage_plan=[[0, 1]], events=[], now=now)


def test_the_summary_has_throughput_lag_alerts_per_second_and_the_served_versions(tmp_path: Path) -> None:
    path, clock = tmp_path / "status.json", Clock(1_000.5)
    watch = StatusWatch(path, clock=clock)
    write_status(path, _status(998.0, alerts_per_partition=5))
    first = watch.read()
    assert (first.state, first.events_per_s, first.lag, first.scored, first.alerts) == ("running", 10.0, 5, 30, 10)
    assert first.alerts_per_s is None  # one reading: no rate yet
    assert (first.champion, first.challenger, first.model_uri) == (
        "fraud-classifier/3", "fraud-classifier/4", "models:/fraud-classifier@champion")
    assert (first.latency_p50_ms, first.latency_p99_ms, first.age_s) == (1.0, 3.0, 2.5)
    write_status(path, _status(1_000.0, alerts_per_partition=15))
    second = watch.read()
    assert second.alerts == 30 and second.alerts_per_s == 10.0  # 20 more alerts in 2 s
    assert watch.read().alerts_per_s == 10.0  # the same file read again keeps its rate


def test_no_file_a_stopped_job_and_a_bad_file_are_states_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    watch = StatusWatch(path)
    absent = watch.read()
    assert absent.state == "absent" and str(path) in (absent.message or "") and absent.champion is None
    write_status(path, StoppedJob(time=5.0, final=DrainedJob(actors=[])))
    assert watch.read().state == "stopped"
    path.write_text("{not json")
    bad = watch.read()
    assert bad.state == "unreadable" and "is not a job status" in (bad.message or "")
    write_status(path, _status(1.0, 1, serving=False))
    assert watch.read().champion is None
