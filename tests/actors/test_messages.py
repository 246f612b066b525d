"""The typed messages: checkpoint metadata as stored before it was typed still loads, the job status gathers the
actors' statuses, and every status crosses processes (pickle, as Ray sends it) and JSON unchanged."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.messages import (
    ActorStatus,
    DeliveryOk,
    DeliveryRetrying,
    DrainedJob,
    JobEvent,
    JobStatus,
    PartitionCheckpointMeta,
    PartitionCounters,
    StageCheckpointMeta,
    StoppedJob,
    job_status,
)
from actors.partition import PartitionProcessor
from actors.terminal_stage import UNKNOWN, TerminalStage
from tests.actors.fakes import actor_status, make_ownership, partition_status, small_settings

#: A partition checkpoint's meta exactly as the code before the structs wrote it (format 2).
WRITTEN_META: dict[str, Any] = {
    "format": 2, "partition": 0, "transactions_topic": "tx", "labels_topic": "labels", "next_offset": 5,
    "next_label_offset": 3, "feature_version": "fs1-003829fc",
    "model_versions": {"anomaly": "river.HalfSpaceTrees:25x8w250s1:f15-e6d29926",
                       "online": "river.LogisticRegression:sgd0.01fw1m50b200000t45:f15-e6d29926",
                       "rules": "rules-7da2badb"},
    "max_event_time_ms": 1767225840000, "label_clock": 1767225000000,
    "counters": {"scored": 5, "alerts": 1, "dead_letters": 2, "rekeyed": 0, "labels_applied": 3, "labels_unmatched": 0,
                 "labels_learned": 3, "offset_gaps": 0, "terminal_stale": 5, "challenger_alerts": 0,
                 "challenger_agreed": 0},
    "actor": "actor-0",
}  # fmt: skip
#: A stage partition's, likewise.
WRITTEN_STAGE_META: dict[str, Any] = {"partition": 1, "topic": "deltas", "next_offset": 9, "actor": "actor-0"}


def test_partition_meta_as_written_before_converts_and_is_written_the_same() -> None:
    meta = PartitionCheckpointMeta.from_store(WRITTEN_META)
    assert (meta.next_offset, meta.next_label_offset, meta.label_clock, meta.actor) == (5, 3, 1767225000000, "actor-0")
    assert meta.counters == PartitionCounters(scored=5, alerts=1, dead_letters=2, labels_applied=3, labels_learned=3,
                                              terminal_stale=5)
    assert meta.to_store() == WRITTEN_META
    assert list(meta.to_store()) == list(WRITTEN_META)  # the same keys, in the same order


def test_older_partition_meta_without_the_label_clock_or_newer_counters_converts() -> None:
    older = {key: value for key, value in WRITTEN_META.items() if key != "label_clock"}
    older["counters"] = {"scored": 5, "alerts": 1}
    meta = PartitionCheckpointMeta.from_store(older)
    assert meta.label_clock is None and meta.counters == PartitionCounters(scored=5, alerts=1)


def test_partition_meta_of_another_format_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"checkpoint format 1 is not 2; start this partition without it"):
        PartitionCheckpointMeta.from_store({**WRITTEN_META, "format": 1})


def test_stage_meta_as_written_before_converts_and_is_written_the_same() -> None:
    meta = StageCheckpointMeta.from_store(WRITTEN_STAGE_META)
    assert meta.next_offset == 9 and meta.to_store() == WRITTEN_STAGE_META


def test_a_partition_is_restored_from_a_checkpoint_whose_meta_was_written_before(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    ownership = make_ownership(settings)
    blobs = PartitionProcessor(settings, 0, ownership.broadcast).snapshot().blobs()
    ownership.clients.store.save("tx-0", blobs, WRITTEN_META)
    older = {key: value for key, value in WRITTEN_META.items() if key != "label_clock"}
    ownership.clients.store.save("tx-1", blobs, {**older, "partition": 1})
    ownership.clients.store.save("deltas-1", {"stage": TerminalStage(2).to_bytes()}, WRITTEN_STAGE_META)
    asyncio.run(ownership.assign([0, 1], [1]))
    restored = ownership.processors[0]
    assert (restored.next_offset, restored.next_label_offset, restored.label_clock) == (5, 3, 1767225000000)
    assert restored.counters.scored == 5 and restored.counters.dead_letters == 2
    assert ownership.restored_from[0] == 1 and ownership.stage_offsets[1] == 9
    assert ownership.processors[1].label_clock == UNKNOWN  # no label time recorded: none read yet


# -------------------------------------------------------------------------------------------------- status
def test_the_job_shows_every_partition_with_its_owner_in_order_and_the_totals() -> None:
    actors = [actor_status("scoring-0-0", {"10": partition_status(7, 0, 7), "2": partition_status(5, 1, 5)}),
              actor_status("scoring-0-1", {"1": partition_status(3, 2, 3)})]  # fmt: skip
    job = job_status(actors, plan=[[2, 10], [1]], stage_plan=[[0], [1]], events=[], now=1.0)
    assert list(job.partitions) == ["1", "2", "10"]
    assert [p.actor for p in job.partitions.values()] == ["scoring-0-1", "scoring-0-0", "scoring-0-0"]
    assert job.partitions["2"].next_offset == 5 and job.events_per_s == 20.1
    assert (job.totals.scored, job.totals.alerts, job.totals.lag, job.totals.late_events) == (15, 3, 3, 3)


def test_an_unknown_lag_anywhere_or_no_partition_at_all_leaves_the_total_lag_unknown() -> None:
    one_unknown = [actor_status("a", {"0": partition_status(7, 0, 7), "1": partition_status(3, None, 3)})]
    assert job_status(one_unknown, plan=[], stage_plan=[], events=[], now=0.0).totals.lag is None
    assert job_status([actor_status("a", {})], plan=[], stage_plan=[], events=[], now=0.0).totals.lag is None


def test_an_actor_that_did_not_answer_has_the_shape_of_one_that_did() -> None:
    gone = ActorStatus(actor="scoring-0-1", error="RayActorError()", restarts=2)
    job = job_status([actor_status("scoring-0-0", {"0": partition_status(7, 0, 7)}), gone], plan=[[0], [1]],
                     stage_plan=[[0], [1]], events=[], now=0.0)  # fmt: skip
    encoded = msgspec.to_builtins(job)["actors"]
    assert list(encoded[1]) == list(encoded[0])
    assert (encoded[1]["pid"], encoded[1]["partitions"], encoded[1]["error"], encoded[1]["restarts"]) == (
        None, {}, "RayActorError()", 2)
    assert job.totals.scored == 7 and job.events_per_s == 10.0


def test_statuses_cross_processes_and_json_unchanged() -> None:
    retrying = DeliveryRetrying(undelivered=2, since_s=1.5, attempts=3, error="KafkaTimeoutError", partitions=[1],
                                replaced_too_large=0, retried=4)  # fmt: skip
    actor = msgspec.structs.replace(actor_status("scoring-0-0", {"0": partition_status(7, None, 7)}), delivery=retrying)
    job = job_status([actor], plan=[[0]], stage_plan=[[0]],
                     events=[JobEvent(time=1.0, event="actor_restarted", actor="scoring-0-0", detail="pid 1 -> 2")],
                     now=2.0)  # fmt: skip
    assert pickle.loads(pickle.dumps(job)) == job  # what Ray does to a call's result
    assert msgspec.json.decode(msgspec.json.encode(job), type=JobStatus) == job
    delivery = msgspec.to_builtins(job)["actors"][0]["delivery"]
    assert list(delivery) == ["state", "undelivered", "since_s", "attempts", "error", "partitions",
                              "replaced_too_large", "retried"] and delivery["state"] == "retrying"  # fmt: skip
    assert actor.delivery is not None and actor.delivery.state == "retrying"
    assert msgspec.to_builtins(DeliveryOk(replaced_too_large=0, retried=0)) == {
        "state": "ok", "replaced_too_large": 0, "retried": 0}
    stopped = StoppedJob(time=3.0, final=DrainedJob(actors=[actor]))
    assert msgspec.json.decode(msgspec.json.encode(stopped), type=StoppedJob) == stopped
