"""What the scoring processes tell each other and the checkpoint store, as typed values.

Status. Each scoring actor reports an :class:`ActorStatus` (per partition a
:class:`PartitionStatus`); the controller gathers them into a :class:`JobStatus`
(:func:`job_status`: every partition with its owner, the totals); the driver
writes that to ``stream.status_path`` and ``fraudstream status`` reads it back.
They cross Ray as these structs and become JSON only at the edge
(``msgspec.json.encode``), their field names the keys the status file has
always had. An actor that does not answer (or whose drain failed) is an
:class:`ActorStatus` too, with every key: its name, its ``error`` and its
``restarts``, the rest left at their defaults (``pid`` None, no partitions).

Checkpoint metadata. A partition's checkpoint records a
:class:`PartitionCheckpointMeta` and a terminal.deltas partition's a
:class:`StageCheckpointMeta`; the store keeps them as JSON objects
(:meth:`PartitionCheckpointMeta.to_store`, :meth:`PartitionCheckpointMeta.from_store`),
so checkpoints written before these structs existed load unchanged.

>>> p = PartitionStatus(next_offset=7, undelivered=0, next_label_offset=3, held_labels=0, held_transactions=0,
...                     watermark_ms=0, checkpoint_seq=-1, checkpoint_age_s=0.5, late_events=0, accounts=1,
...                     **vars(PartitionCounters(scored=7)))
>>> job = job_status([ActorStatus(actor="scoring-0-0", partitions={"0": p}), ActorStatus(actor="scoring-0-1",
...                   error="RayActorError()", restarts=1)], plan=[[0], [1]], stage_plan=[[0], [1]], events=[], now=0.0)
>>> job.partitions["0"].actor, job.totals.scored, job.totals.lag, job.actors[1].pid
('scoring-0-0', 7, None, None)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

#: Bumped when the checkpoint layout of a partition changes.
CHECKPOINT_FORMAT = 2


# ------------------------------------------------------------------------------------------ one partition
@dataclass
class PartitionCounters:
    """Monotonic counters of one partition (restored with its checkpoint, shown in its status)."""

    scored: int = 0
    alerts: int = 0
    dead_letters: int = 0
    #: Records whose Kafka key was not their account_id, produced again keyed by it (stream.wrong_key: rekey).
    rekeyed: int = 0
    labels_applied: int = 0
    labels_unmatched: int = 0
    #: Labels the scorer's label-learning sources (the online classifier) learned from.
    labels_learned: int = 0
    #: Offsets that could not be read (checkpoint offset outside the retained log).
    offset_gaps: int = 0
    #: Events scored before every partition's terminal updates for their visible buckets were in.
    terminal_stale: int = 0
    #: Events the shadow challenger would have alerted on, and those of them the champion alerted on too.
    challenger_alerts: int = 0
    challenger_agreed: int = 0


class PartitionStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One owned partition of ``transactions``/``labels``: positions, lag, what it holds, counters, checkpoint."""

    #: Next offset to read in the transactions partition.
    next_offset: int
    #: The partition's high watermark as the latest fetch reported it (None before one).
    highwater: int | None = None
    #: highwater - next_offset; None when unknown (no fetch yet, or the latest older than the grace).
    lag: int | None = None
    #: The lag from the latest fetch, however old.
    last_known_lag: int | None = None
    #: Seconds the oldest transaction not scored yet has waited (now - its Kafka timestamp; see
    #: :class:`PartitionLag`); 0 when caught up, None when ``lag`` is unknown or nothing was read yet.
    lag_s: float | None = None
    #: Outputs of this partition sent but not acknowledged yet.
    undelivered: int
    #: Seconds since the latest fetch response (None before one).
    fetch_age_s: float | None = None
    next_label_offset: int
    label_lag: int | None = None
    #: Labels and transactions read but not applied or scored yet.
    held_labels: int
    held_transactions: int
    watermark_ms: int
    #: Sequence of the latest checkpoint (-1: none yet) and its age in seconds.
    checkpoint_seq: int
    checkpoint_age_s: float
    #: Sequence of the checkpoint the partition was restored from (None: it started empty).
    restored_from: int | None = None
    # the PartitionCounters, flat
    scored: int
    alerts: int
    dead_letters: int
    rekeyed: int
    labels_applied: int
    labels_unmatched: int
    labels_learned: int
    offset_gaps: int
    terminal_stale: int
    challenger_alerts: int
    challenger_agreed: int
    late_events: int
    #: Accounts in the partition's feature state.
    accounts: int


class JobPartitionStatus(PartitionStatus, frozen=True, kw_only=True):
    """A partition as the job shows it: its status and the actor that owns it."""

    actor: str


class StageStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One owned terminal.deltas partition: where it is read, how complete, how many terminals it holds."""

    next_offset: int | None = None
    complete_through_ms: int
    terminals: int


# ------------------------------------------------------------------------------------------ one actor
class Percentiles(msgspec.Struct, frozen=True, kw_only=True):
    """p50, p95, p99 (ms, two decimals) of some samples and their number (None without samples)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    samples: int = 0


class PhaseFigures(msgspec.Struct, frozen=True, kw_only=True):
    """How long one phase of the loop took (ms): p50, p99, max, and the number of samples."""

    p50: float
    p99: float
    max: float
    samples: int


class LastError(msgspec.Struct, frozen=True, kw_only=True):
    """The latest error ever seen (it stays after it cleared) and its wall time."""

    time: float
    error: str


class KafkaStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Whether Kafka answers: ``waiting`` once no fetch answered for longer than the grace."""

    state: Literal["ok", "waiting"]
    last_fetch_age_s: float | None = None
    #: Outages seen, and the wall time the current one began (None: none now).
    outages: int
    outage_since: float | None = None


class DeliveryOk(msgspec.Struct, frozen=True, kw_only=True, tag_field="state", tag="ok"):
    """Every output sent was acknowledged (``state``: ok)."""

    #: Records replaced by a small dead letter because they were too large to send.
    replaced_too_large: int
    #: Sends that failed and were retried.
    retried: int

    @property
    def state(self) -> Literal["ok"]:
        return "ok"


class DeliveryRetrying(msgspec.Struct, frozen=True, kw_only=True, tag_field="state", tag="retrying"):
    """Outputs not acknowledged yet, sent again until they are (``state``: retrying); their partitions wait."""

    undelivered: int
    since_s: float
    attempts: int
    error: str | None = None
    #: The partitions whose progress waits for them.
    partitions: list[int]
    replaced_too_large: int
    retried: int

    @property
    def state(self) -> Literal["retrying"]:
        return "retrying"


#: Output delivery of an actor (``state`` first in JSON: ok, or retrying with what is stuck).
DeliveryStatus = DeliveryOk | DeliveryRetrying


class ServingStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The classifiers served from the registry (``name/version``) and the latest poll of their aliases."""

    uri: str
    champion: str | None = None
    challenger: str | None = None
    #: Versions swapped in after the first load.
    swaps: int
    last_poll: float | None = None
    error: str | None = None


class ActorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One scoring actor's status; an actor that did not answer has only ``actor``, ``error`` and ``restarts``."""

    actor: str
    #: The actor's process (None: it did not answer).
    pid: int | None = None
    #: Owned partitions by number ("0", "1", ...).
    partitions: dict[str, PartitionStatus] = {}
    events_per_s: float = 0.0
    batches: int = 0
    #: Kafka timestamp -> alerts acknowledged, per scored event.
    latency_ms: Percentiles = Percentiles()
    #: Kafka timestamp -> the poll that returned the record.
    fetch_delay_ms: Percentiles = Percentiles()
    #: Per phase of the loop (poll, stage, score, terminal, ack, commit, checkpoint) that ran.
    phase_ms: dict[str, PhaseFigures] = {}
    running: bool = False
    #: What is wrong now (None when healthy), or why the actor did not answer.
    error: str | None = None
    #: What is wrong now by where it happened.
    errors: dict[str, str] = {}
    last_error: LastError | None = None
    kafka: KafkaStatus | None = None
    delivery: DeliveryStatus | None = None
    uptime_s: float | None = None
    #: Wall times of the first non-empty poll and of the latest offset commit (benchmarks).
    first_poll_wall: float | None = None
    last_commit_wall: float | None = None
    #: Owned terminal.deltas partitions by number.
    stages: dict[str, StageStatus] = {}
    broadcast_complete_through_ms: int | None = None
    serving: ServingStatus | None = None
    rules_version: str | None = None
    #: Set by the Ray actor: whether Ray restarted it, its node's address and Ray node id.
    restarted: bool | None = None
    node: str | None = None
    node_id: str | None = None
    #: Set by the controller: how often it saw the actor's process change.
    restarts: int = 0


class PartitionLag(msgspec.Struct, frozen=True, kw_only=True):
    """How far one owned partition is behind, as its actor measures it (what the autoscaler reads).

    ``records`` is high watermark - ``next_offset``. ``seconds`` is how long the oldest transaction not
    scored yet has waited, by its Kafka timestamp (the producer's send time, or the broker's append time
    on a LogAppendTime topic): exact when that transaction was read and is held, otherwise measured from
    the last transaction read (the records after it were sent no earlier), so a backlog is never
    understated; a record that arrives after a quiet spell reads high until the poll that returns it.
    0 when caught up; both None when the latest fetch is older than ``stream.kafka_wait_grace_s`` (or
    none came yet), ``seconds`` None while nothing of the partition was read since it was assigned.
    """

    records: int | None = None
    seconds: float | None = None
    #: Next offset to read (its rise between two ticks is what the partition read meanwhile).
    next_offset: int = 0


class ActorHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """What an actor answers to the controller's supervision tick (``ScoringActor.ensure``)."""

    pid: int
    restarted: bool
    running: bool
    error: str | None = None
    #: Each owned partition's lag, by partition number.
    lags: dict[int, PartitionLag] = {}


# ------------------------------------------------------------------------------------------ the job
class JobTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Sums over every partition of the job; ``lag`` None when any partition's is unknown."""

    scored: int
    alerts: int
    dead_letters: int
    rekeyed: int
    labels_applied: int
    #: Labels the online classifiers learned (an analyst's verdict among them).
    labels_learned: int = 0
    lag: int | None = None
    #: The longest any partition's oldest unscored transaction has waited (None when any is unknown).
    lag_s: float | None = None
    offset_gaps: int
    late_events: int
    terminal_stale: int

    @classmethod
    def of(cls, partitions: Collection[PartitionStatus]) -> JobTotals:
        """The totals of these partitions (no partitions: lag unknown, not 0)."""
        known = [p.lag for p in partitions if p.lag is not None]
        waited = [p.lag_s for p in partitions if p.lag_s is not None]
        return cls(
            scored=sum(p.scored for p in partitions),
            alerts=sum(p.alerts for p in partitions),
            dead_letters=sum(p.dead_letters for p in partitions),
            rekeyed=sum(p.rekeyed for p in partitions),
            labels_applied=sum(p.labels_applied for p in partitions),
            labels_learned=sum(p.labels_learned for p in partitions),
            lag=sum(known) if partitions and len(known) == len(partitions) else None,
            lag_s=max(waited) if partitions and len(waited) == len(partitions) else None,
            offset_gaps=sum(p.offset_gaps for p in partitions),
            late_events=sum(p.late_events for p in partitions),
            terminal_stale=sum(p.terminal_stale for p in partitions),
        )


class JobEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Something the controller noticed or did (an actor restarted or unavailable, rules reloaded, the
    autoscaler's changes: ``scaled_out``, ``scaled_in``, ``autoscale_waiting``, ``autoscale_failed``,
    whose ``actor`` is ``controller``)."""

    time: float
    event: str
    actor: str
    detail: str
    #: Why it was done (the autoscaler's decisions).
    reason: str | None = None


class AutoscaleChange(msgspec.Struct, frozen=True, kw_only=True):
    """One change of the number of actors the autoscaler made: when (wall time), from, to and why."""

    time: float
    from_actors: int
    to_actors: int
    reason: str


class AutoscaleStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The autoscaler's state (``stream.autoscale``): the bounds it keeps K in, the lag it reads, what it
    decided at the latest supervision tick and why, and its latest change."""

    actors: int
    min_actors: int
    #: max_actors, or the partitions of transactions when fewer.
    max_actors: int
    #: The job's lag: the longest wait of any partition (s) and the records behind, summed (None: unknown).
    lag_s: float | None = None
    lag_records: int | None = None
    #: ``out``, ``in`` or ``hold``, and why (e.g. the lag and how long it stayed above scale_out_lag_s).
    decision: Literal["out", "in", "hold"]
    reason: str
    #: Actors the Ray autoscaler was asked to make room for (request_resources), None before a request.
    requested_actors: int | None = None
    #: Seconds until the next change may happen.
    cooldown_left_s: float
    last_change: AutoscaleChange | None = None
    #: Changes made since the controller started.
    changes: int = 0


class ControllerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Where the job's controller runs, and how often Ray restarted it (each time it replaced its scoring actors)."""

    pid: int
    node: str
    node_id: str
    restarts: int = 0


class RulesFileStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The watched rules file and why its latest change was not loaded (None: it was, or none was seen)."""

    path: str | None = None
    error: str | None = None


class JobStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The status of the whole job: what ``stream.status_path`` holds while it runs."""

    #: Wall time the controller gathered it.
    time: float
    actors: list[ActorStatus]
    #: Every owned partition by number, in partition order, with its owner.
    partitions: dict[str, JobPartitionStatus]
    totals: JobTotals
    events_per_s: float
    #: Partitions and terminal.deltas partitions of each actor.
    plan: list[list[int]]
    stage_plan: list[list[int]]
    #: The controller's latest events.
    events: list[JobEvent]
    #: Set by the driver, which watches the rules file.
    rules_file: RulesFileStatus | None = None
    #: The autoscaler's state (None: stream.autoscale is off).
    autoscale: AutoscaleStatus | None = None
    #: Set by the controller: its process, node and restarts.
    controller: ControllerStatus | None = None


class DrainedJob(msgspec.Struct, frozen=True, kw_only=True):
    """What the drain left: each actor's final status (after its final checkpoints), or why it failed."""

    actors: list[ActorStatus]


class StoppedJob(msgspec.Struct, frozen=True, kw_only=True):
    """What ``stream.status_path`` holds once the job drained."""

    time: float
    stopped: bool = True
    final: DrainedJob


def job_status(actors: list[ActorStatus], *, plan: list[list[int]], stage_plan: list[list[int]],
               events: list[JobEvent], now: float, autoscale: AutoscaleStatus | None = None,
               controller: ControllerStatus | None = None) -> JobStatus:
    """The job's status from each actor's: every partition with its owner, in partition order, and the totals."""
    owned = [(key, partition, actor.actor) for actor in actors for key, partition in actor.partitions.items()]
    partitions = {key: JobPartitionStatus(**msgspec.structs.asdict(partition), actor=name)
                  for key, partition, name in sorted(owned, key=lambda item: int(item[0]))}  # fmt: skip
    return JobStatus(
        time=now,
        actors=actors,
        partitions=partitions,
        totals=JobTotals.of(list(partitions.values())),
        events_per_s=round(sum(actor.events_per_s for actor in actors), 1),
        plan=plan,
        stage_plan=stage_plan,
        events=events,
        autoscale=autoscale,
        controller=controller,
    )


# ------------------------------------------------------------------------------------------ checkpoints
class PartitionCheckpointMeta(msgspec.Struct, frozen=True, kw_only=True):
    """What a partition's checkpoint records beside its state: the offsets it corresponds to, versions, counters."""

    format: int = CHECKPOINT_FORMAT
    partition: int
    transactions_topic: str
    labels_topic: str
    #: Next offsets to read in the transactions and labels partitions.
    next_offset: int
    next_label_offset: int
    feature_version: str
    model_versions: dict[str, str]
    max_event_time_ms: int
    #: Latest label time read (None: absent, as in the oldest checkpoints of this format).
    label_clock: int | None = None
    counters: PartitionCounters
    #: The actor that wrote it (set when it is written).
    actor: str | None = None

    def to_store(self) -> dict[str, Any]:
        """The JSON object the checkpoint store keeps."""
        meta: dict[str, Any] = msgspec.to_builtins(self)
        return meta

    @classmethod
    def from_store(cls, meta: dict[str, Any]) -> PartitionCheckpointMeta:
        """The metadata of a stored checkpoint; ValueError for another checkpoint format."""
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint format {meta.get('format')} is not {CHECKPOINT_FORMAT}; "
                "start this partition without it (move the checkpoint directory away)"
            )
        return msgspec.convert(meta, cls)


class StageCheckpointMeta(msgspec.Struct, frozen=True, kw_only=True):
    """What a terminal.deltas partition's checkpoint records beside its stage: where reading resumes."""

    partition: int
    topic: str
    next_offset: int
    actor: str

    def to_store(self) -> dict[str, Any]:
        """The JSON object the checkpoint store keeps."""
        meta: dict[str, Any] = msgspec.to_builtins(self)
        return meta

    @classmethod
    def from_store(cls, meta: dict[str, Any]) -> StageCheckpointMeta:
        """The metadata of a stored stage checkpoint."""
        return msgspec.convert(meta, cls)
