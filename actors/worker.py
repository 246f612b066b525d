"""The scoring loop of one actor: Kafka in, Kafka out, checkpoints, for the partitions it owns.

A :class:`ScoringWorker` owns a set of partition numbers of ``transactions``
(and the same numbers of ``labels``, which is keyed and partitioned alike). It
polls micro-batches with one aiokafka consumer on an explicit assignment (no
consumer-group rebalancing), hands each partition's records to that
partition's :class:`~actors.partition.PartitionProcessor`, sends alerts and
dead letters, and only once those sends are acknowledged commits the input
offsets and, when due, checkpoints the partition. Everything per event happens
in this process (DESIGN.md decision 1).

Offsets outside the log. When a checkpoint's offset is older than the log's
first retained offset, or newer than its end (the topic was recreated or
truncated), the partition resumes from the earliest retained offset: no record
still in the log goes unscored. The distance between the checkpoint's offset
and where reading resumed is counted as ``offset_gaps`` (status, metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from typing import Any

import msgspec
import numpy as np
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from actors.delivery import Delivery, Outgoing, Undelivered
from actors.health import KafkaHealth
from actors.metrics import ActorMetrics
from actors.partition import Output, PartitionProcessor
from actors.serving import ClassifierServing, Served
from actors.terminal_stage import (
    IDLE,
    UNKNOWN,
    BroadcastRisk,
    TerminalStage,
    decode_delta_batch,
    decode_risk_update,
)
from actors.terminal_stage import (
    encode as encode_stage_message,
)
from configs import RuleSettings, Settings
from connectors.checkpoint import CheckpointStore, cluster_namespace
from connectors.kafka import cluster_id, make_consumer, make_producer
from features import FeatureEngine, FeatureRegistry
from features.runtime import configure_gc_for_streaming, freeze_long_lived_state
from models.sources import RuleSource

log = logging.getLogger(__name__)

#: Most per-event latencies kept for percentiles.
LATENCY_SAMPLES = 200_000
#: Input offsets are committed to Kafka at most this often (and at every checkpoint).
COMMIT_INTERVAL_S = 0.25
#: Longest an offset commit may take (commits are for lag tooling; the checkpoints hold the positions).
COMMIT_TIMEOUT_S = 10.0
#: Longest the broker may hold a fetch that finds no data.
FETCH_MAX_WAIT_MS = 5
#: Terminal-stage updates are sent at most this often (well inside terminal_freshness_s).
STAGE_FLUSH_S = 0.5
#: Progress (and stage completeness) the broadcast table has not caught up with is sent again this often.
RESEND_S = 1.0
#: Periodic partition checkpoints of one actor are at least this far apart.
CHECKPOINT_SPACING_S = 1.0


def _percentiles(samples: deque[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None, "p99": None, "samples": 0}
    values = np.fromiter(samples, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2), "samples": len(values)}


class PhaseTimes:
    """How long each phase of the loop took (ms), to name what holds scoring up.

    Phases: ``poll`` (getmany, including its wait for records), ``stage``
    (applying terminal deltas and broadcast risk), ``score`` (decode, features,
    models, handing alerts to the producer), ``terminal`` (terminal updates
    out), ``ack`` (waiting for the alert acknowledgements), ``commit`` and
    ``checkpoint`` (the in-loop part: snapshot and what precedes it).
    """

    PHASES = ("poll", "stage", "score", "terminal", "ack", "commit", "checkpoint")

    def __init__(self, samples: int = 20_000) -> None:
        self.samples: dict[str, deque[float]] = {phase: deque(maxlen=samples) for phase in self.PHASES}
        self._mark = time.perf_counter()

    def start(self) -> None:
        self._mark = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Record the time since the previous mark as ``phase``; the next phase starts now."""
        now = time.perf_counter()
        self.samples[phase].append((now - self._mark) * 1000.0)
        self._mark = now

    def clear(self) -> None:
        for samples in self.samples.values():
            samples.clear()

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Per phase: p50, p99 and max (ms) and the number of samples."""
        out: dict[str, dict[str, float | None]] = {}
        for phase, samples in self.samples.items():
            if not samples:
                continue
            values = np.fromiter(samples, dtype=np.float64)
            p50, p99 = np.percentile(values, [50, 99])
            out[phase] = {"p50": round(float(p50), 2), "p99": round(float(p99), 2),
                          "max": round(float(values.max()), 2), "samples": len(values)}
        return out


def checkpoint_key(topic: str, partition: int) -> str:
    """The checkpoint store key of a partition: ``<transactions topic>-<partition>``."""
    return f"{topic}-{partition}"


class ScoringWorker:
    """Consume, score and checkpoint a set of partitions (one asyncio task, one process)."""

    def __init__(self, settings: Settings, bootstrap_servers: str | None, name: str) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.name = name
        topics = settings.kafka.topics
        self.tx_topic = topics.transactions.name
        self.label_topic = topics.labels.name
        self.alert_topic = topics.alerts.name
        self.dlq_topic = topics.dead_letters.name
        self.deltas_topic = topics.terminal_deltas.name
        self.risk_topic = topics.terminal_risk.name
        self.stage_count = topics.terminal_deltas.partitions
        #: Checkpoints of this job's Kafka cluster (opened by :meth:`start`, which learns its id).
        self.store: CheckpointStore | Any = None
        #: The broadcast terminal table every engine of this actor reads (fed by terminal.risk).
        table = FeatureEngine.terminal_risk_for(settings.features)
        table.publish_updates()
        self.broadcast = BroadcastRisk(table, self.stage_count)
        #: The terminal.deltas partitions this actor aggregates, and where each is read.
        self.stages: dict[int, TerminalStage] = {}
        self.stage_offsets: dict[int, int] = {}
        self._stage_sent: dict[int, int] = {}
        #: Progress last sent to the stage, per owned partition.
        self._progress_sent: dict[int, int] = {}
        #: Partitions (and stage partitions) changed since their last checkpoint.
        self._unsaved: set[int] = set()
        self._commit_pending: set[int] = set()
        self._last_commit = 0.0
        self._last_stage_flush = 0.0
        self._last_resend = 0.0
        self._last_snapshot = 0.0
        self._stage_unsaved: set[int] = set()
        self._stage_checkpoint: dict[int, float] = {}
        self.risk_offsets: dict[int, int] | None = None
        features = settings.features
        self._retention_ms = max(features.allowed_lateness_s * 1000, 86_400_000)
        self.processors: dict[int, PartitionProcessor] = {}
        self.last_checkpoint: dict[int, tuple[float, int, int]] = {}  # partition -> (wall time, scored, seq)
        self.restored_from: dict[int, int | None] = {}
        self.metrics: ActorMetrics | None = None
        self.consumer: Any = None
        self.producer: Any = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Partitions whose labels / transactions are paused (what they hold is at its bound).
        self._paused: set[int] = set()
        self._paused_tx: set[int] = set()
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        #: Kafka timestamp -> the poll that returned the record (the part of the latency before scoring).
        self._fetch_delays: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=64)
        self.phases = PhaseTimes()
        #: Checkpoint writes running in a thread while scoring goes on (partition / stage -> task).
        self._saving: dict[int, asyncio.Task[None]] = {}
        self._saving_stages: dict[int, asyncio.Task[None]] = {}
        self.batches = 0
        self.started_at = time.time()
        #: Wall times of the first non-empty poll and of the latest offset commit (benchmarks).
        self.first_poll_wall: float | None = None
        self.last_commit_wall: float | None = None
        #: What is wrong now, by where it happened (loop, commit, checkpoint of ...); cleared once it works again.
        self.errors: dict[str, str] = {}
        #: The latest error ever seen, with its wall time (stays after it is cleared).
        self.last_error: tuple[float, str] | None = None
        stream = settings.stream
        self.delivery = Delivery(self.dlq_topic, stream.delivery_backoff_ms, stream.delivery_backoff_max_ms)
        self.health = KafkaHealth(stream.kafka_wait_grace_s, name)
        #: True once outputs could not be delivered before a stop: nothing may be checkpointed after that.
        self._undelivered = False
        #: True while a step is changing partition state (an exception then rewinds the partitions).
        self._mutating = False
        #: The batch classifier(s) served from the registry; a version loaded by the poll
        #: waits in ``_served_next`` until the loop installs it between two micro-batches.
        self.serving = ClassifierServing(settings)
        self._served_next: Served | None = None
        self._poller: asyncio.Task[None] | None = None
        #: Rules reloaded while running (None: the config's), installed between micro-batches like a model.
        self.rules: tuple[RuleSettings, ...] | None = None
        self._rules_next: tuple[RuleSettings, ...] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Connect to Kafka (idempotent)."""
        if self.consumer is not None:
            return
        configure_gc_for_streaming()
        self.health.install()
        self.metrics = ActorMetrics.create()
        kafka = self.settings.kafka
        self.consumer = make_consumer(
            kafka,
            self.bootstrap_servers,
            group_id=f"{kafka.client_id}-scoring",
            auto_offset_reset="none",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # a fetch returns as soon as data is there; bound how long the broker may hold an empty one
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        # alerts of a batch are sent together and then awaited: lingering would only add latency
        producer_settings = msgspec.structs.replace(self.settings.producer, linger_ms=0)
        self.producer = make_producer(kafka, producer_settings, self.bootstrap_servers)
        await self.consumer.start()
        await self.producer.start()
        # offsets mean something only in the cluster they came from: a checkpoint of another
        # cluster (a new in-memory broker, a migrated topic) is never resumed from
        stream = self.settings.stream
        namespace = cluster_namespace(await cluster_id(kafka, self.bootstrap_servers))
        self.store = CheckpointStore(stream.checkpoint_uri, keep=stream.checkpoint_keep, namespace=namespace)
        if self.store.other_namespaces:
            log.warning("checkpoints of other Kafka clusters are not used (%s); this cluster's are in %s/%s",
                        ", ".join(self.store.other_namespaces), stream.checkpoint_uri, namespace)
        if self.serving.enabled:
            # the first micro-batch is scored with the served version (the job checked it can be loaded)
            try:
                await asyncio.to_thread(self.serving.refresh, True)
            except Exception as exc:  # noqa: BLE001 - shown in status; the poll keeps trying
                self.serving.error = f"{type(exc).__name__}: {exc}"
                log.error("cannot serve %s: %s", self.serving.uri, exc)
            self._poller = asyncio.get_running_loop().create_task(self._poll_registry())

    async def _poll_registry(self) -> None:
        """Ask the registry every ``poll_interval_s`` whether an alias moved; load a new version off the loop."""
        interval = self.settings.scoring.classifier.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                served = await asyncio.to_thread(self.serving.refresh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a store hiccup keeps the current version
                self.serving.error = f"{type(exc).__name__}: {exc}"
                log.warning("registry poll failed (serving %s): %s", self.serving.served.versions, exc)
                continue
            self.serving.error = None
            if served is not None:
                self._served_next = served
                if self.metrics is not None:
                    self.metrics.model_swaps.inc(1, tags={"actor": self.name})

    def set_rules(self, rules: tuple[RuleSettings, ...]) -> str:
        """Decide with these rules from the next micro-batch on; returns their version.

        Checked here first (unknown feature, bad expression: ConfigError, the old rules stay).
        """
        scoring = self.settings.scoring
        version = RuleSource(rules, FeatureRegistry.from_settings(self.settings.features), "rules reload",
                             scoring.block_threshold).version
        if rules != self.rules:
            self.rules = self._rules_next = rules
        return version

    async def online_snapshots(self) -> dict[int, bytes]:
        """Each owned partition's online classifier, taken between two micro-batches."""
        async with self._lock:
            snapshots = {p: processor.online_snapshot() for p, processor in self.processors.items()}
        return {p: data for p, data in snapshots.items() if data is not None}

    def _install_pending(self) -> None:
        """Between micro-batches: every partition scores with the newest loaded models and rules."""
        served, self._served_next = self._served_next, None
        rules, self._rules_next = self._rules_next, None
        for processor in self.processors.values():
            if served is not None:
                processor.use_classifiers(served)
            if rules is not None:
                processor.use_rules(rules)

    def run_in_background(self) -> None:
        """Start the poll loop as a task (idempotent)."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def error(self) -> str | None:
        """What is wrong now (None when healthy): loop, delivery, commit, checkpoint and Kafka errors."""
        problems = dict(self.errors)
        delivery = self.delivery.status()
        if delivery["state"] != "ok":
            problems["delivery"] = (f"{delivery['undelivered']} outputs of partitions {delivery['partitions']} not "
                                    f"delivered for {delivery['since_s']} s ({delivery['error']}); those partitions "
                                    "do not advance until they are")
        waiting = self.health.waiting(self._fetch_times())
        if waiting:
            problems["kafka"] = waiting
        return "; ".join(problems.values()) or None

    def _set_error(self, where: str, message: str) -> None:
        self.errors[where] = message
        self.last_error = (time.time(), message)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self.step()
                self.errors.pop("loop", None)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Undelivered as exc:  # only while stopping: stop() then writes no checkpoint
                self._set_error("loop", f"stopped with {exc}; partitions {exc.owners} replay from their last checkpoint")
                log.error("%s", self.errors["loop"])
                return
            except Exception as exc:  # keep the loop alive; the error shows in status
                failures += 1
                self._set_error("loop", f"{type(exc).__name__}: {exc}")
                log.exception("scoring step failed")
                if self._mutating:  # the batch was half applied: take the partitions back to their checkpoints
                    self._mutating = False
                    await self._rewind()
                await asyncio.sleep(min(0.5 * failures, 5.0))

    async def stop(self) -> None:
        """Finish the in-flight batch, checkpoint every partition, disconnect."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        async with self._lock:
            if self._undelivered:
                log.error("not checkpointing partitions %s: outputs since their last checkpoint were not delivered; "
                          "they replay from there", sorted(self.processors))
            else:
                for partition in sorted(self.processors):
                    await self._checkpoint(partition)
                for stage in sorted(self.stages):
                    await self._checkpoint_stage(stage)
            if self.consumer is not None:
                for client in (self.consumer, self.producer):
                    await self._close(client)
                self.consumer = self.producer = None

    @staticmethod
    async def _close(client: Any) -> None:
        """Stop a Kafka client; with no broker answering, aiokafka's stop can fail (or leak a cancellation
        of its own tasks): the actor's stop goes on, unless it is itself being cancelled."""
        try:
            await client.stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("%s stopped with its own tasks cancelled (Kafka not answering)", type(client).__name__)
        except Exception as exc:  # noqa: BLE001 - stopping anyway
            log.warning("%s did not stop cleanly: %r", type(client).__name__, exc)

    # ---------------------------------------------------------------- assignment
    async def assign(self, partitions: list[int], stage_partitions: list[int]) -> None:
        """Own exactly these partitions (of transactions/labels, and of terminal.deltas):
        checkpoint and drop the others, restore the new ones from their checkpoints."""
        wanted = sorted(set(partitions))
        async with self._lock:
            for stage in sorted(set(self.stages) - set(stage_partitions)):
                await self._checkpoint_stage(stage)
                del self.stages[stage], self.stage_offsets[stage]
            for stage in sorted(set(stage_partitions) - set(self.stages)):
                self._restore_stage(stage)
            for partition in sorted(set(self.processors) - set(wanted)):
                await self._checkpoint(partition)
                del self.processors[partition]
                self.last_checkpoint.pop(partition, None)
                self._paused.discard(partition)
                self._paused_tx.discard(partition)
            arriving = [p for p in wanted if p not in self.processors]
            for partition in arriving:
                self.processors[partition] = self._restore(partition)
                self.processors[partition].use_classifiers(self.serving.served)
                if self.rules is not None:
                    self.processors[partition].use_rules(self.rules)
            tps = [TopicPartition(t, p) for p in wanted for t in (self.tx_topic, self.label_topic)]
            tps += [TopicPartition(self.deltas_topic, d) for d in sorted(self.stages)]
            risk = [TopicPartition(self.risk_topic, d) for d in range(self.stage_count)]
            self.consumer.assign(tps + risk)
            if self.risk_offsets is None:  # the broadcast table is read whole, from the start
                starts = await self.consumer.beginning_offsets(risk)
                self.risk_offsets = {tp.partition: starts[tp] for tp in risk}
            for tp in risk:
                self.consumer.seek(tp, self.risk_offsets[tp.partition])
            fresh_stages = [d for d in self.stages if d not in self.stage_offsets]
            if fresh_stages:
                starts = await self.consumer.beginning_offsets([TopicPartition(self.deltas_topic, d) for d in fresh_stages])
                for tp, offset in starts.items():
                    self.stage_offsets[tp.partition] = offset
            for stage in self.stages:
                self.consumer.seek(TopicPartition(self.deltas_topic, stage), self.stage_offsets[stage])
            fresh = [p for p in arriving if self.restored_from[p] is None]
            if fresh:
                tp_list = [TopicPartition(t, p) for p in fresh for t in (self.tx_topic, self.label_topic)]
                starts = await self.consumer.beginning_offsets(tp_list)
                for p in fresh:
                    self.processors[p].next_offset = starts[TopicPartition(self.tx_topic, p)]
                    self.processors[p].next_label_offset = starts[TopicPartition(self.label_topic, p)]
            for partition in wanted:
                processor = self.processors[partition]
                self.consumer.seek(TopicPartition(self.tx_topic, partition), processor.next_offset)
                self.consumer.seek(TopicPartition(self.label_topic, partition), processor.next_label_offset)
            restored = [p for p in arriving if self.restored_from[p] is not None]
            if restored:
                tp_list = [TopicPartition(t, p) for p in restored for t in (self.tx_topic, self.label_topic)]
                starts = await self.consumer.beginning_offsets(tp_list)
                behind = {tp: self._position(tp) for tp in tp_list if self._position(tp) < starts[tp]}
                await self._reset_out_of_range(behind)
            self._paused.clear()
            self._paused_tx.clear()
            freeze_long_lived_state()

    def _restore(self, partition: int) -> PartitionProcessor:
        checkpoint = self.store.load_latest(checkpoint_key(self.tx_topic, partition))
        if checkpoint is None:
            self.restored_from[partition] = None
            self.last_checkpoint[partition] = (time.time(), 0, -1)
            processor = PartitionProcessor(self.settings, partition, self.broadcast)
            processor.align = self.settings.stream.terminal_alignment
            return processor
        processor = PartitionProcessor.restore(self.settings, partition, self.broadcast, checkpoint.blobs, checkpoint.meta)
        processor.align = self.settings.stream.terminal_alignment
        self.restored_from[partition] = checkpoint.seq
        self.last_checkpoint[partition] = (checkpoint.created_ms / 1000.0, processor.counters.scored, checkpoint.seq)
        return processor

    # ---------------------------------------------------------------------- loop
    async def step(self) -> int:
        """Poll one micro-batch, score it, send, acknowledge, commit; returns events scored."""
        async with self._lock:
            if not self.processors:
                await asyncio.sleep(self.settings.stream.max_batch_wait_ms / 1000)
                return 0
            stream = self.settings.stream
            if self._served_next is not None or self._rules_next is not None:
                self._install_pending()
            phases = self.phases
            phases.start()
            try:
                polled = await self.consumer.getmany(timeout_ms=stream.max_batch_wait_ms, max_records=stream.max_batch_records)
            except OffsetOutOfRangeError as exc:
                await self._reset_out_of_range(exc.args[0] if exc.args else {})
                return 0
            beyond = self._beyond_end()
            if beyond:
                # the log ends before a checkpoint's offset: the topic was recreated or truncated
                await self._reset_out_of_range(beyond)
                return 0
            phases.lap("poll")
            self.health.observe(self._fetch_times())
            if not polled:
                # no records, yet what waits for the table must go on: with every partition waiting (or
                # paused), none may come, so the flushes and re-sends below are the only way it moves again
                scored = await self._release_and_publish()
                phases.start()  # the phase below is the checkpoint's alone, as in a step with records
                self._sample_rate()
                await self._checkpoint_if_due()
                phases.lap("checkpoint")
                return scored
            polled_ms = time.time() * 1000.0
            if self.first_poll_wall is None:
                self.first_poll_wall = polled_ms / 1000.0
            outgoing: list[Outgoing] = []
            oldest_ingest_ms: int | None = None
            scored = 0
            touched: list[int] = []
            self._mutating = True
            # the broadcast table and the stage first, so the scoring below sees the latest
            for tp, records in polled.items():
                if tp.topic == self.risk_topic and records:
                    for record in records:
                        self.broadcast.apply(decode_risk_update(record.value))
                    assert self.risk_offsets is not None
                    self.risk_offsets[tp.partition] = records[-1].offset + 1
                elif tp.topic == self.deltas_topic and records and tp.partition in self.stages:
                    stage = self.stages[tp.partition]
                    for record in records:
                        stage.apply(decode_delta_batch(record.value))
                    self.stage_offsets[tp.partition] = records[-1].offset + 1
                    self._stage_unsaved.add(tp.partition)
            phases.lap("stage")
            arriving = {tp.partition for tp, records in polled.items() if tp.topic == self.tx_topic and records}
            scored += self._release_waiting(arriving, outgoing, touched)
            for tp, records in polled.items():
                processor = self.processors.get(tp.partition)
                if processor is None or not records or tp.topic not in (self.tx_topic, self.label_topic):
                    continue
                if tp.topic == self.tx_topic:
                    output = processor.process_transactions(records)
                    scored += output.scored
                    touched.append(tp.partition)
                    first = records[0].timestamp
                    oldest_ingest_ms = first if oldest_ingest_ms is None else min(oldest_ingest_ms, first)
                else:
                    output = processor.process_labels(records)
                self._unsaved.add(tp.partition)
                self._take(tp.partition, output, outgoing)
                self._pause_or_resume(tp.partition, processor)
            phases.lap("score")
            outgoing += self._publish_terminal_updates()
            phases.lap("terminal")
            await self._deliver(outgoing)
            self._mutating = False
            phases.lap("ack")
            acked_ms = time.time() * 1000.0
            for tp, records in polled.items():
                if tp.topic == self.tx_topic and tp.partition in self.processors:
                    self._latencies.extend(acked_ms - r.timestamp for r in records)
                    self._fetch_delays.extend(polled_ms - r.timestamp for r in records)
            if oldest_ingest_ms is not None and self.metrics is not None:
                self.metrics.batch_latency_ms.observe(acked_ms - oldest_ingest_ms, tags={"actor": self.name})
            self.batches += 1
            self._sample_rate()
            phases.start()
            await self._commit(touched)
            phases.lap("commit")
            await self._checkpoint_if_due()
            phases.lap("checkpoint")
            return scored

    def _release_waiting(self, arriving: set[int], outgoing: list[Outgoing], touched: list[int]) -> int:
        """Score what the table now lets through of the waiting partitions (those in ``arriving`` release
        with their new records); returns the events scored."""
        scored = 0
        for partition, processor in self.processors.items():
            if processor.waiting and partition not in arriving:  # the table moved on: what it lets through
                output = processor.release_held()
                if output.scored:
                    scored += output.scored
                    touched.append(partition)
                    self._unsaved.add(partition)
                    self._take(partition, output, outgoing)
                self._pause_or_resume(partition, processor)
        return scored

    async def _release_and_publish(self) -> int:
        """A step that polled nothing: release what the table lets through, send the terminal updates
        that are due (timer, progress, re-sends), wait for them; returns the events scored.

        Without alignment nothing is held: this only sends the updates whose timer is due."""
        outgoing: list[Outgoing] = []
        touched: list[int] = []
        self._mutating = True
        scored = self._release_waiting(set(), outgoing, touched)
        outgoing += self._publish_terminal_updates()
        await self._deliver(outgoing)
        self._mutating = False
        if touched:
            await self._commit(touched)
        return scored

    async def _checkpoint_if_due(self) -> None:
        """Checkpoint a changed partition whose interval (time or events) has passed.

        One per CHECKPOINT_SPACING_S at most: each snapshot pauses scoring briefly,
        and spreading them keeps the pauses from adding up in the latency tail.
        """
        if time.monotonic() - self._last_snapshot >= CHECKPOINT_SPACING_S:
            due = [p for p in self._unsaved
                   if p in self.processors and p not in self._saving and self._checkpoint_due(p)]
            if due:
                oldest = min(due, key=lambda p: self.last_checkpoint.get(p, (0.0, 0, -1))[0])
                await self._checkpoint(oldest, wait=False)
        interval = self.settings.stream.checkpoint_interval_s
        for stage in sorted(self._stage_unsaved):
            if stage in self.stages and stage not in self._saving_stages and \
                    time.time() - self._stage_checkpoint.get(stage, 0.0) >= interval:
                await self._checkpoint_stage(stage, wait=False)

    async def _deliver(self, outgoing: list[Outgoing]) -> None:
        """Every record acknowledged (retried, or replaced when too large) before anything moves on."""
        if not outgoing:
            return
        try:
            await self.delivery.deliver(self.producer, outgoing, self._stopping)
        except Undelivered:
            self._undelivered = True
            raise

    async def _rewind(self) -> None:
        """Take every owned partition (and stage partition) back to its latest checkpoint and read on from there.

        After a step failed halfway, partition state may hold part of a batch whose
        outputs were not all sent: it is dropped, never checkpointed; the records
        are read again (alerts keep their ids, so a re-sent alert is the same alert).
        """
        async with self._lock:
            for task in [*self._saving.values(), *self._saving_stages.values()]:
                await self._settle(task)
            partitions, stages = sorted(self.processors), sorted(self.stages)
            log.warning("rewinding partitions %s and stage partitions %s to their checkpoints", partitions, stages)
            self.processors.clear()
            self.stages.clear()
            self.stage_offsets.clear()
            for pending in (self._progress_sent, self._stage_sent):
                pending.clear()
            self._unsaved.clear()
            self._stage_unsaved.clear()
            self.broadcast.table.take_updates()  # what the failed batch left in the outbox
        await self.assign(partitions, stages)

    def _fetch_times(self) -> list[int | None]:
        """Wall time (ms) of the latest fetch response of each owned transactions partition."""
        if self.consumer is None:
            return []
        assigned = self.consumer.assignment()
        tps = [TopicPartition(self.tx_topic, partition) for partition in self.processors]
        return [self.consumer.last_poll_timestamp(tp) if tp in assigned else None for tp in tps]

    def _publish_terminal_updates(self, force: bool = False) -> list[Outgoing]:
        """Send each owned partition's terminal deltas and each owned stage's changed terminals.

        At most every STAGE_FLUSH_S (updates accumulate meanwhile; the table only
        answers from buckets closed ``terminal_freshness_s`` ago), at once when a
        partition has just caught up (so a backlog's end completes the table), and
        always before a checkpoint (``force``): what a checkpoint covers was sent.

        Every RESEND_S, while the broadcast table is behind the progress a partition
        sent (or behind what an owned stage published), the progress and the stages'
        completeness go out again even if unchanged. A waiting partition's progress
        changes only when the table moves, so one delta batch that never reached its
        stage would otherwise hold every partition back for good (the embedded broker
        can skip a record for a reader while two producers append to one partition).
        """
        progress = {}
        for partition, processor in self.processors.items():
            tx_high = self.consumer.highwater(TopicPartition(self.tx_topic, partition))
            label_high = self.consumer.highwater(TopicPartition(self.label_topic, partition))
            progress[partition] = processor.progress_ms(
                tx_high is not None and processor.next_offset >= tx_high,
                label_high is not None and processor.next_label_offset >= label_high,
            )
        caught_up = any(t == IDLE and self._progress_sent.get(p) != IDLE for p, t in progress.items())
        # a partition waiting for the table moves as soon as the table does: progress goes out at once
        waiting = any(processor.waiting and self._progress_sent.get(p) != progress[p]
                      for p, processor in self.processors.items())  # fmt: skip
        stage_moved = any(stage.complete_through_ms != self._stage_sent.get(number) for number, stage in self.stages.items())
        aligned = self.settings.stream.terminal_alignment and (waiting or stage_moved)
        broadcast = self.broadcast
        resend = self.settings.stream.terminal_alignment and time.monotonic() - self._last_resend >= RESEND_S and (
            any(broadcast.complete_through_ms < self._progress_sent.get(p, UNKNOWN) for p in self.processors)
            or any(broadcast.progress.get(n) != self._stage_sent.get(n) for n in self.stages))
        if not (force or caught_up or aligned or resend or time.monotonic() - self._last_stage_flush >= STAGE_FLUSH_S):
            return []
        self._last_stage_flush = time.monotonic()
        if resend:
            self._last_resend = self._last_stage_flush
        sends = []
        for partition, processor in self.processors.items():
            through = progress[partition]
            progressed = resend or self._progress_sent.get(partition) != through
            for destination, batch in enumerate(processor.terminal_deltas(through, self.stage_count)):
                if batch.deltas or progressed:
                    sends.append(Outgoing(self.deltas_topic, encode_stage_message(batch), partition=destination,
                                          kind="stage", owner=partition))
            self._progress_sent[partition] = through
        for number, stage in self.stages.items():
            complete = stage.complete_through_ms
            if complete < IDLE:
                stage.expire(*broadcast.table.horizon(complete - self._retention_ms))
            if resend or stage.dirty or self._stage_sent.get(number) != complete:
                update = stage.flush(number)
                sends.append(Outgoing(self.risk_topic, encode_stage_message(update), partition=number, kind="stage"))
                self._stage_sent[number] = complete
        if self.processors:
            oldest = min(p.engine.watermark_ms for p in self.processors.values())
            self.broadcast.table.expire(oldest - self._retention_ms)
        return sends

    def _count(self, partition: int, scored: int, alerts: int, dead: int, shadow_alerts: int = 0) -> None:
        assert self.metrics is not None
        tags = {"actor": self.name, "partition": str(partition)}
        if scored:
            self.metrics.events.inc(scored, tags=tags)
        if alerts:
            self.metrics.alerts.inc(alerts, tags=tags)
        if dead:
            self.metrics.dead_letters.inc(dead, tags=tags)
        if shadow_alerts:
            self.metrics.challenger_alerts.inc(shadow_alerts, tags=tags)

    def _take(self, partition: int, output: Output, outgoing: list[Outgoing]) -> None:
        """What a partition's call produced, queued for delivery (and counted)."""
        if self.metrics is not None and (output.scored or output.dead_letters):
            self._count(partition, output.scored, len(output.alerts), len(output.dead_letters),
                        output.challenger_alerts)  # fmt: skip
        outgoing.extend(Outgoing(self.alert_topic, value, key, owner=partition) for key, value in output.alerts)
        outgoing.extend(Outgoing(self.dlq_topic, value, kind="dead_letter", owner=partition)
                        for value in output.dead_letters)  # fmt: skip
        outgoing.extend(Outgoing(topic, value, key, kind="rekeyed", owner=partition)
                        for topic, key, value in output.rekeyed)  # fmt: skip

    def _pause_or_resume(self, partition: int, processor: PartitionProcessor) -> None:
        """Stop fetching a partition's labels, or its transactions, while what it holds of them is at the bound."""
        for topic, full, paused in ((self.label_topic, processor.labels_full, self._paused),
                                    (self.tx_topic, processor.transactions_full, self._paused_tx)):  # fmt: skip
            tp = TopicPartition(topic, partition)
            if full and partition not in paused:
                self.consumer.pause(tp)
                paused.add(partition)
            elif not full and partition in paused:
                self.consumer.resume(tp)
                paused.discard(partition)

    async def _commit(self, partitions: list[int]) -> None:
        """Commit the consumed offsets to Kafka (for lag tooling; checkpoints are the source of truth).

        At most every COMMIT_INTERVAL_S: a commit is a broker round trip on the hot path.
        """
        self._commit_pending.update(partitions)
        if time.monotonic() - self._last_commit < COMMIT_INTERVAL_S:
            return
        partitions = sorted(p for p in self._commit_pending if p in self.processors)
        self._commit_pending.clear()
        self._last_commit = time.monotonic()
        offsets = {}
        for partition in partitions:
            processor = self.processors[partition]
            offsets[TopicPartition(self.tx_topic, partition)] = processor.next_offset
            offsets[TopicPartition(self.label_topic, partition)] = processor.next_label_offset
        if offsets:
            try:
                # bounded: with no coordinator answering, aiokafka's commit looks for one forever (a drain while
                # Kafka is down would never end)
                await asyncio.wait_for(self.consumer.commit(offsets), COMMIT_TIMEOUT_S)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:  # lag tooling only: checkpoints hold positions
                self._commit_pending.update(partitions)
                if "commit" not in self.errors:
                    log.warning("offset commit failed (%r); retrying with the next one", exc)
                self._set_error("commit", f"offset commit failed: {type(exc).__name__}: {exc}")
                return
            self.errors.pop("commit", None)
            self.last_commit_wall = time.time()

    def _position(self, tp: TopicPartition) -> int:
        processor = self.processors[tp.partition]
        return processor.next_offset if tp.topic == self.tx_topic else processor.next_label_offset

    def _beyond_end(self) -> dict[TopicPartition, int]:
        """Partitions whose next offset lies past the high watermark the broker reported."""
        beyond = {}
        for partition in self.processors:
            for topic in (self.tx_topic, self.label_topic):
                tp = TopicPartition(topic, partition)
                highwater = self.consumer.highwater(tp)
                if highwater is not None and self._position(tp) > highwater:
                    beyond[tp] = self._position(tp)
        return beyond

    async def _reset_out_of_range(self, positions: dict[TopicPartition, int]) -> None:
        """The documented policy: resume from the earliest retained offset and count the gap."""
        if not positions:
            return
        starts = await self.consumer.beginning_offsets(list(positions))
        for tp, offset in positions.items():
            processor = self.processors.get(tp.partition)
            start = starts[tp]
            gap = abs(offset - start)
            log.warning("%s offset %d is outside the log; resuming at %d (gap %d)", tp, offset, start, gap)
            if processor is not None:
                processor.counters.offset_gaps += gap
                if tp.topic == self.tx_topic:
                    processor.held.clear()
                    processor.next_offset = start
                else:
                    processor.held_labels.clear()
                    processor.next_label_offset = start
            if self.metrics is not None:
                self.metrics.offset_gaps.inc(gap, tags={"actor": self.name, "partition": str(tp.partition)})
            self.consumer.seek(tp, start)

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint_due(self, partition: int) -> bool:
        wall, scored, _ = self.last_checkpoint.get(partition, (0.0, 0, -1))
        stream = self.settings.stream
        processor = self.processors[partition]
        return (
            time.time() - wall >= stream.checkpoint_interval_s
            or processor.counters.scored - scored >= stream.checkpoint_interval_events
        )

    async def _checkpoint(self, partition: int, wait: bool = True) -> None:
        """Snapshot one partition and write it; its offsets are those of what was acknowledged.

        Only the snapshot runs in the loop; encoding and writing run in a thread
        while scoring goes on (``wait=False``, the periodic checkpoints) or are
        awaited (drain, release, rescale). One write per partition at a time: an
        earlier one still running is waited for first.
        """
        await self._settle(self._saving.get(partition))
        started = time.perf_counter()
        processor = self.processors[partition]
        await self._deliver(self._publish_terminal_updates(force=True))
        self._last_commit = 0.0
        await self._commit([partition])
        snapshot = processor.snapshot()
        self._last_snapshot = time.monotonic()
        self._unsaved.discard(partition)
        snapshot.meta["actor"] = self.name
        key = checkpoint_key(self.tx_topic, partition)
        scored = processor.counters.scored
        freeze_long_lived_state()  # a quiet point: keep the state out of full GC passes

        async def save() -> None:
            try:
                ref = await asyncio.to_thread(lambda: self.store.save(key, snapshot.blobs(), snapshot.meta))
            except Exception:
                self._unsaved.add(partition)  # the next due checkpoint tries again
                raise
            self.last_checkpoint[partition] = (time.time(), scored, ref.seq)
            if self.metrics is not None:
                self.metrics.checkpoint_seconds.observe(
                    time.perf_counter() - started, tags={"actor": self.name, "partition": str(partition)}
                )

        task = self._in_background(save(), self._saving, partition, f"partition {partition}")
        if wait:
            await task

    def _in_background(
        self, write: Any, running: dict[int, asyncio.Task[None]], key: int, what: str
    ) -> asyncio.Task[None]:
        """Run a checkpoint write as a task tracked in ``running`` until it ends; a failure shows in status."""
        task = asyncio.get_running_loop().create_task(write)
        running[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if running.get(key) is finished:
                del running[key]
            if finished.cancelled():
                return
            if finished.exception() is not None:
                self._set_error(f"checkpoint {what}", f"checkpoint of {what} failed: {finished.exception()!r}")
                log.error("checkpoint of %s failed", what, exc_info=finished.exception())
            else:
                self.errors.pop(f"checkpoint {what}", None)

        task.add_done_callback(done)
        return task

    @staticmethod
    async def _settle(task: asyncio.Task[None] | None) -> None:
        """Wait for a background write to finish (its failure was reported when it ended)."""
        if task is not None:
            with contextlib.suppress(Exception):
                await task

    def _restore_stage(self, stage: int) -> None:
        checkpoint = self.store.load_latest(checkpoint_key(self.deltas_topic, stage))
        sources = self.settings.kafka.topics.transactions.partitions
        if checkpoint is None:
            self.stages[stage] = TerminalStage(sources)
            self._stage_checkpoint[stage] = time.time()
            return
        self.stages[stage] = TerminalStage.from_bytes(checkpoint.blobs["stage"], sources)
        self.stage_offsets[stage] = int(checkpoint.meta["next_offset"])
        self._stage_checkpoint[stage] = checkpoint.created_ms / 1000.0

    async def _checkpoint_stage(self, stage: int, wait: bool = True) -> None:
        """Snapshot a terminal.deltas partition's stage and write it (in a thread, like :meth:`_checkpoint`)."""
        await self._settle(self._saving_stages.get(stage))
        blobs = {"stage": self.stages[stage].to_bytes()}
        meta = {"partition": stage, "topic": self.deltas_topic, "next_offset": self.stage_offsets.get(stage, 0),
                "actor": self.name}
        self._stage_checkpoint[stage] = time.time()
        self._stage_unsaved.discard(stage)

        async def save() -> None:
            try:
                await asyncio.to_thread(self.store.save, checkpoint_key(self.deltas_topic, stage), blobs, meta)
            except Exception:
                self._stage_unsaved.add(stage)  # the next due checkpoint tries again
                raise

        task = self._in_background(save(), self._saving_stages, stage, f"stage partition {stage}")
        if wait:
            await self._settle(task)

    async def checkpoint_all(self) -> None:
        async with self._lock:
            for partition in sorted(self.processors):
                await self._checkpoint(partition)
            for stage in sorted(self.stages):
                await self._checkpoint_stage(stage)

    # -------------------------------------------------------------------- status
    def _sample_rate(self) -> None:
        total = sum(p.counters.scored for p in self.processors.values())
        self._rate_samples.append((time.monotonic(), total))

    def events_per_s(self) -> float:
        samples = [s for s in self._rate_samples if s[0] >= time.monotonic() - 10.0]
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return 0.0
        return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])

    def latency_ms(self) -> dict[str, float | None]:
        """Percentiles of Kafka timestamp -> alerts acknowledged, per scored event."""
        return _percentiles(self._latencies)

    def reset_latency(self) -> None:
        self._latencies.clear()
        self._fetch_delays.clear()
        self.phases.clear()

    def latency_samples(self) -> list[float]:
        return list(self._latencies)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @staticmethod
    def status_pid() -> int:
        return os.getpid()

    def status(self) -> dict[str, Any]:
        """Per-partition positions, lag, counters and checkpoint age; per-actor rates."""
        now = time.time()
        self.health.observe(self._fetch_times())  # also while the loop waits on a delivery
        error = self.error
        if error is not None:  # what was wrong stays visible (with its time) after it cleared
            self.last_error = (now, error)
        partitions: dict[str, Any] = {}
        for partition, processor in sorted(self.processors.items()):
            highwater = None
            label_highwater = None
            if self.consumer is not None:
                highwater = self.consumer.highwater(TopicPartition(self.tx_topic, partition))
                label_highwater = self.consumer.highwater(TopicPartition(self.label_topic, partition))
            fetched_ms = None
            if self.consumer is not None and TopicPartition(self.tx_topic, partition) in self.consumer.assignment():
                fetched_ms = self.consumer.last_poll_timestamp(TopicPartition(self.tx_topic, partition))
            fetch_age_s = None if fetched_ms is None else round(max(0.0, now - fetched_ms / 1000.0), 3)
            lag = None if highwater is None else max(0, highwater - processor.next_offset)
            # a lag read from a fetch older than the grace is not the lag now: unknown, and said so
            stale = fetch_age_s is not None and fetch_age_s > self.settings.stream.kafka_wait_grace_s
            last_known_lag = lag
            if stale:
                lag = None
            if lag is not None and self.metrics is not None:
                self.metrics.lag.set(lag, tags={"actor": self.name, "partition": str(partition)})
            wall, _, seq = self.last_checkpoint.get(partition, (now, 0, -1))
            partitions[str(partition)] = {
                "next_offset": processor.next_offset,
                "highwater": highwater,
                "lag": lag,
                "last_known_lag": last_known_lag,
                "undelivered": sum(1 for o in self.delivery.pending if o.owner == partition),
                "fetch_age_s": fetch_age_s,
                "next_label_offset": processor.next_label_offset,
                "label_lag": None if label_highwater is None else max(0, label_highwater - processor.next_label_offset),
                "held_labels": len(processor.held_labels),
                "held_transactions": len(processor.held),
                "watermark_ms": processor.engine.watermark_ms,
                "checkpoint_seq": seq,
                "checkpoint_age_s": round(now - wall, 3),
                "restored_from": self.restored_from.get(partition),
                **{k: v for k, v in vars(processor.counters).items()},
                "late_events": processor.engine.stats.late_events,
                "accounts": len(processor.engine.accounts),
            }
        return {
            "actor": self.name,
            "pid": os.getpid(),
            "partitions": partitions,
            "events_per_s": round(self.events_per_s(), 1),
            "batches": self.batches,
            "latency_ms": self.latency_ms(),
            "fetch_delay_ms": _percentiles(self._fetch_delays),
            "phase_ms": self.phases.summary(),
            "running": self.running,
            "error": error,
            "errors": dict(self.errors),
            "last_error": None if self.last_error is None else {"time": self.last_error[0], "error": self.last_error[1]},
            "kafka": self.health.status(self._fetch_times()),
            "delivery": self.delivery.status(),
            "uptime_s": round(now - self.started_at, 1),
            "first_poll_wall": self.first_poll_wall,
            "last_commit_wall": self.last_commit_wall,
            "stages": {str(d): {"next_offset": self.stage_offsets.get(d), "complete_through_ms": st.complete_through_ms,
                                "terminals": len(st.terminals)} for d, st in sorted(self.stages.items())},
            "broadcast_complete_through_ms": self.broadcast.complete_through_ms,
            "serving": self.serving.status(),
            "rules_version": next(iter(self.processors.values())).scorer.model_versions.get("rules")
            if self.processors else None,
        }

    def entity_digests(self) -> dict[int, str]:
        """Digest of each owned partition's feature state (tests compare runs with it)."""
        return {p: proc.entity_state_digest() for p, proc in self.processors.items()}
