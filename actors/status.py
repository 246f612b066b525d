"""One scoring actor's status (what ``fraudstream status`` shows) and its lag gauge, read from the worker's parts.

Per partition: positions, high watermarks and lag, in records and in seconds the
oldest unscored transaction has waited (unknown, and said so, when
the latest fetch is older than ``stream.kafka_wait_grace_s``), held records,
watermark, counters, checkpoint sequence and age. Per actor: rates, latency
percentiles, loop phase times, what is wrong now (:attr:`StatusReport.error`)
and the latest error ever seen, Kafka's and delivery's state, the stage
partitions, the served classifier and the rules' version: an
:class:`~actors.messages.ActorStatus` (per partition a
:class:`~actors.messages.PartitionStatus`), the struct the controller gathers.
"""

from __future__ import annotations

import os
import time

from aiokafka import TopicPartition

from actors.checkpointing import Checkpointer
from actors.clients import Clients
from actors.delivery import Delivery
from actors.health import KafkaHealth
from actors.loop import ScoringLoop
from actors.messages import ActorStatus, DeliveryRetrying, LastError, PartitionLag, PartitionStatus, StageStatus
from actors.ownership import Ownership
from actors.partition import PartitionProcessor
from actors.serving import ClassifierServing
from actors.stats import ErrorLog, LoopStats, percentiles
from actors.terminal_stage import BroadcastRisk
from configs import Settings


class StatusReport:
    """Assembles the status of one actor from its parts (and sets the lag gauge as it goes)."""

    def __init__(self, settings: Settings, name: str, *, clients: Clients, ownership: Ownership,
                 checkpoints: Checkpointer, loop: ScoringLoop, stats: LoopStats, errors: ErrorLog, delivery: Delivery,
                 health: KafkaHealth, serving: ClassifierServing, broadcast: BroadcastRisk) -> None:
        self.settings = settings
        self.name = name
        self.clients = clients
        self.ownership = ownership
        self.checkpoints = checkpoints
        self.loop = loop
        self.stats = stats
        self.errors = errors
        self.delivery = delivery
        self.health = health
        self.serving = serving
        self.broadcast = broadcast
        topics = settings.kafka.topics
        self.tx_topic = topics.transactions.name
        self.label_topic = topics.labels.name

    @property
    def error(self) -> str | None:
        """What is wrong now (None when healthy): loop, delivery, commit, checkpoint and Kafka errors."""
        problems = dict(self.errors.errors)
        delivery = self.delivery.status()
        if isinstance(delivery, DeliveryRetrying):
            problems["delivery"] = (f"{delivery.undelivered} outputs of partitions {delivery.partitions} not "
                                    f"delivered for {delivery.since_s} s ({delivery.error}); those partitions "
                                    "do not advance until they are")
        waiting = self.health.waiting(self.ownership.fetch_times())
        if waiting:
            problems["kafka"] = waiting
        return "; ".join(problems.values()) or None

    def build(self) -> ActorStatus:
        """Per-partition positions, lag, counters and checkpoint age; per-actor rates."""
        now = time.time()
        self.health.observe(self.ownership.fetch_times())  # also while the loop waits on a delivery
        error = self.error
        if error is not None:  # what was wrong stays visible (with its time) after it cleared
            self.errors.last_error = (now, error)
        processors = self.ownership.processors
        partitions = {str(p): self._partition(p, processor, now) for p, processor in sorted(processors.items())}
        stats, last_error = self.stats, self.errors.last_error
        return ActorStatus(
            actor=self.name,
            pid=os.getpid(),
            partitions=partitions,
            events_per_s=round(stats.events_per_s(), 1),
            batches=stats.batches,
            latency_ms=stats.latency_ms(),
            fetch_delay_ms=percentiles(stats.fetch_delays),
            phase_ms=stats.phases.summary(),
            running=self.loop.running,
            error=error,
            errors=dict(self.errors.errors),
            last_error=None if last_error is None else LastError(time=last_error[0], error=last_error[1]),
            kafka=self.health.status(self.ownership.fetch_times()),
            delivery=self.delivery.status(),
            uptime_s=round(now - stats.started_at, 1),
            first_poll_wall=stats.first_poll_wall,
            last_commit_wall=self.loop.last_commit_wall,
            stages=self._stages(),
            broadcast_complete_through_ms=self.broadcast.complete_through_ms,
            serving=self.serving.status(),
            rules_version=next(iter(processors.values())).scorer.model_versions.get("rules") if processors else None,
        )

    def lags(self) -> dict[int, PartitionLag]:
        """Each owned partition's lag in records and seconds (the controller's supervision tick reads them)."""
        now = time.time()
        lags = {}
        for partition, processor in self.ownership.processors.items():
            highwater, fetch_age_s = self._fetched(partition, now)
            lag, _ = self._lag(processor, highwater, fetch_age_s)
            lags[partition] = PartitionLag(records=lag, seconds=self._lag_s(processor, lag, now),
                                           next_offset=processor.next_offset)
        return lags

    def _fetched(self, partition: int, now: float) -> tuple[int | None, float | None]:
        """The transactions partition's high watermark and the age (s) of its latest fetch response."""
        consumer = self.clients.consumer
        if consumer is None:
            return None, None
        tx = TopicPartition(self.tx_topic, partition)
        fetched_ms = consumer.last_poll_timestamp(tx) if tx in consumer.assignment() else None
        fetch_age_s = None if fetched_ms is None else round(max(0.0, now - fetched_ms / 1000.0), 3)
        return consumer.highwater(tx), fetch_age_s

    def _lag(self, processor: PartitionProcessor, highwater: int | None,
             fetch_age_s: float | None) -> tuple[int | None, int | None]:
        """(lag now, last known lag) in records: a lag read from a fetch older than the grace is not the lag
        now, it is unknown (and said so)."""
        lag = None if highwater is None else max(0, highwater - processor.next_offset)
        stale = fetch_age_s is not None and fetch_age_s > self.settings.stream.kafka_wait_grace_s
        return (None if stale else lag), lag

    @staticmethod
    def _lag_s(processor: PartitionProcessor, lag: int | None, now: float) -> float | None:
        """How long the oldest transaction not scored yet has waited (0: none waits; None: unknown)."""
        if lag is None:
            return None
        if lag == 0:
            return 0.0
        since_ms = processor.waiting_since_ms
        return None if since_ms is None else round(max(0.0, now - since_ms / 1000.0), 3)

    def _partition(self, partition: int, processor: PartitionProcessor, now: float) -> PartitionStatus:
        """One owned partition: where it is read, how far behind, what it holds, its counters and checkpoint."""
        consumer = self.clients.consumer
        highwater, fetch_age_s = self._fetched(partition, now)
        label_highwater = None
        if consumer is not None:
            label_highwater = consumer.highwater(TopicPartition(self.label_topic, partition))
        lag, last_known_lag = self._lag(processor, highwater, fetch_age_s)
        metrics = self.clients.metrics
        if lag is not None and metrics is not None:
            metrics.lag.set(lag, tags={"actor": self.name, "partition": str(partition)})
        wall, _, seq = self.checkpoints.last_checkpoint.get(partition, (now, 0, -1))
        return PartitionStatus(
            next_offset=processor.next_offset,
            highwater=highwater,
            lag=lag,
            last_known_lag=last_known_lag,
            lag_s=self._lag_s(processor, lag, now),
            undelivered=sum(1 for o in self.delivery.pending if o.owner == partition),
            fetch_age_s=fetch_age_s,
            next_label_offset=processor.next_label_offset,
            label_lag=None if label_highwater is None else max(0, label_highwater - processor.next_label_offset),
            held_labels=len(processor.held_labels),
            held_transactions=len(processor.held),
            watermark_ms=processor.engine.watermark_ms,
            checkpoint_seq=seq,
            checkpoint_age_s=round(now - wall, 3),
            restored_from=self.ownership.restored_from.get(partition),
            **vars(processor.counters),
            late_events=processor.engine.stats.late_events,
            accounts=len(processor.engine.accounts),
        )

    def _stages(self) -> dict[str, StageStatus]:
        """Each owned stage partition: where it is read, how complete, how many terminals it holds."""
        offsets = self.ownership.stage_offsets
        return {str(d): StageStatus(next_offset=offsets.get(d), complete_through_ms=st.complete_through_ms,
                                    terminals=len(st.terminals)) for d, st in sorted(self.ownership.stages.items())}
