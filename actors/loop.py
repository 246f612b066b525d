"""The scoring loop of one actor: poll → score → send → acknowledge → commit, one micro-batch per step.

:class:`ScoringLoop` polls every owned partition with one ``getmany``, hands
each partition's records to its :class:`~actors.partition.PartitionProcessor`,
sends the alerts, dead letters and terminal updates, and only once every send
is acknowledged lets the partitions advance: offsets committed
(:class:`OffsetCommitter`), checkpoints started when due. Everything per event
happens in this process (DESIGN.md decision 1); per micro-batch the loop only
calls into the other parts.

A step that fails halfway has left partition state holding part of a batch
whose outputs were not all sent: the loop takes every owned partition back to
its latest checkpoint and reads on from there (alerts keep their ids, so a
re-sent alert is the same alert).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from actors.checkpointing import Checkpointer
from actors.clients import Clients
from actors.delivery import Delivery, Outgoing, Undelivered
from actors.health import KafkaHealth
from actors.ownership import Ownership
from actors.partition import Output
from actors.reloads import Reloads
from actors.stats import ErrorLog, LoopStats
from actors.terminal_io import TerminalIO
from actors.transactions import TransactionFailed, Transactions
from configs import Settings

log = logging.getLogger(__name__)

#: Input offsets are committed to Kafka at most this often (and at every checkpoint).
COMMIT_INTERVAL_S = 0.25
#: Longest an offset commit may take (commits are for lag tooling; the checkpoints hold the positions).
COMMIT_TIMEOUT_S = 10.0


class OffsetCommitter:
    """Commits the consumed offsets of the owned partitions to Kafka (for lag tooling; checkpoints are the
    source of truth), at most every COMMIT_INTERVAL_S: a commit is a broker round trip on the hot path."""

    def __init__(self, settings: Settings, clients: Clients, ownership: Ownership, errors: ErrorLog) -> None:
        topics = settings.kafka.topics
        self.tx_topic = topics.transactions.name
        self.label_topic = topics.labels.name
        self.clients = clients
        self.ownership = ownership
        self.errors = errors
        self.transactional = settings.kafka.exactly_once
        #: Partitions that advanced since their last commit.
        self.pending: set[int] = set()
        self._last_commit = 0.0
        #: Wall time of the latest offset commit (benchmarks).
        self.last_commit_wall: float | None = None

    def due_now(self) -> None:
        """The next commit goes out at once, whatever the interval (a checkpoint's)."""
        self._last_commit = 0.0

    async def commit(self, partitions: list[int]) -> None:
        """Commit these partitions' positions, and those still pending, once the interval has passed;
        a failed commit keeps them pending for the next one and shows in status. With exactly-once, the
        offsets go into each batch's transaction instead (:mod:`actors.transactions`)."""
        if self.transactional:
            return
        self.pending.update(partitions)
        if time.monotonic() - self._last_commit < COMMIT_INTERVAL_S:
            return
        processors = self.ownership.processors
        partitions = sorted(p for p in self.pending if p in processors)
        self.pending.clear()
        self._last_commit = time.monotonic()
        offsets = {}
        for partition in partitions:
            processor = processors[partition]
            offsets[TopicPartition(self.tx_topic, partition)] = processor.next_offset
            offsets[TopicPartition(self.label_topic, partition)] = processor.next_label_offset
        if offsets:
            try:
                # bounded: with no coordinator answering, aiokafka's commit looks for one forever (a drain while
                # Kafka is down would never end)
                await asyncio.wait_for(self.clients.consumer.commit(offsets), COMMIT_TIMEOUT_S)
            except (KafkaError, OSError, TimeoutError) as exc:  # lag tooling only: checkpoints hold positions
                self.pending.update(partitions)
                if "commit" not in self.errors.errors:
                    log.warning("offset commit failed (%r); retrying with the next one", exc)
                self.errors.set("commit", f"offset commit failed: {type(exc).__name__}: {exc}")
                return
            self.errors.clear("commit")
            self.last_commit_wall = time.time()


class ScoringLoop:
    """Runs the steps as one asyncio task; each step holds the worker's lock (partition state is only changed
    between two micro-batches)."""

    def __init__(self, settings: Settings, name: str, *, lock: asyncio.Lock, clients: Clients, ownership: Ownership,
                 checkpoints: Checkpointer, terminal: TerminalIO, commits: OffsetCommitter, reloads: Reloads,
                 delivery: Delivery, health: KafkaHealth, stats: LoopStats, errors: ErrorLog,
                 transactions: Transactions | None = None) -> None:
        self.settings = settings
        self.name = name
        self.lock = lock
        self.clients = clients
        self.ownership = ownership
        self.checkpoints = checkpoints
        self.terminal = terminal
        self.commits = commits
        self.reloads = reloads
        self.delivery = delivery
        self.health = health
        self.stats = stats
        self.errors = errors
        #: Exactly-once: each batch's outputs and offsets in one Kafka transaction (None: at-least-once).
        self.transactions = transactions
        topics = settings.kafka.topics
        self.tx_topic = topics.transactions.name
        self.label_topic = topics.labels.name
        self.alert_topic = topics.alerts.name
        self.dlq_topic = topics.dead_letters.name
        #: True once outputs could not be delivered before a stop: nothing may be checkpointed after that.
        self.undelivered = False
        #: True while a step is changing partition state (an exception then rewinds the partitions).
        self._mutating = False
        #: Batches whose outputs wait in the open transaction (exactly-once): measured at its commit.
        self._unmeasured: list[tuple[dict[TopicPartition, list[Any]], float, int | None]] = []
        #: The partitions and stage partitions a rewind has dropped and not yet got back (it is retried).
        self._rewind_to: tuple[list[int], list[int]] | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ running
    @property
    def last_commit_wall(self) -> float | None:
        """Wall time of the latest commit of input offsets (in a transaction with exactly-once)."""
        return self.commits.last_commit_wall if self.transactions is None else self.transactions.last_commit_wall

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def run_in_background(self) -> None:
        """Start the loop as a task (idempotent)."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def finish(self) -> None:
        """Let the in-flight step end and stop the task."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._rewind_to is not None:
                    await self._rewind()
                await self.step()
                self.errors.clear("loop")
                failures = 0
            except asyncio.CancelledError:
                raise
            except Undelivered as exc:  # only while stopping: stop() then writes no checkpoint
                self.errors.set("loop", f"stopped with {exc}; partitions {exc.owners} replay from their last checkpoint")
                log.error("%s", self.errors.errors["loop"])
                return
            except Exception as exc:  # keep the loop alive; the error shows in status
                failures += 1
                self.errors.set("loop", f"{type(exc).__name__}: {exc}")
                log.exception("scoring step failed")
                # the batch was half applied, or an aborted transaction took batches' outputs with it: take the
                # partitions back to their checkpoints
                if self._mutating or isinstance(exc, TransactionFailed):
                    self._mutating = False
                    await self._drop_for_rewind()
                await asyncio.sleep(min(0.5 * failures, 5.0))

    async def _drop_for_rewind(self) -> None:
        """After a step failed halfway, partition state may hold part of a batch whose outputs were not all
        sent (or whose transaction was aborted): it is dropped, never checkpointed, and :meth:`_rewind` takes
        every owned partition (and stage partition) back to its latest checkpoint before the next step; the
        records are read again (alerts keep their ids, so a re-sent alert is the same alert)."""
        async with self.lock:
            if self.transactions is not None:  # what the open transaction holds is scored again too
                await self.transactions.abort()
            self._unmeasured.clear()
            await self.checkpoints.settle_all()
            self._rewind_to = self.ownership.drop_all()
            self.terminal.forget()
            self.checkpoints.forget_changes()

    async def _rewind(self) -> None:
        """Restore what :meth:`_drop_for_rewind` dropped; retried before each step until it succeeds (it
        needs Kafka: the positions, and with exactly-once a producer and the committed offsets)."""
        async with self.lock:
            if self.transactions is not None:
                await self.clients.ensure_producer()  # before the committed offsets: it settles our last commit
            assert self._rewind_to is not None
            await self.ownership.assign(*self._rewind_to)
            self._rewind_to = None

    # --------------------------------------------------------------------- step
    async def step(self) -> int:
        """Poll one micro-batch, score it, send, acknowledge, commit; returns events scored."""
        async with self.lock:
            if not self.ownership.processors:
                await asyncio.sleep(self.settings.stream.max_batch_wait_ms / 1000)
                return 0
            if self.reloads.pending:
                self.reloads.install(self.ownership.processors)
            phases = self.stats.phases
            phases.start()
            polled = await self._poll()
            if polled is None:
                return 0
            phases.lap("poll")
            self.health.observe(self.ownership.fetch_times())
            if not polled:
                return await self._quiet_step()
            return await self._batch_step(polled)

    async def _poll(self) -> dict[TopicPartition, list[Any]] | None:
        """One getmany; None when a position was outside the log (it was reset: the step ends there)."""
        stream = self.settings.stream
        try:
            polled: dict[TopicPartition, list[Any]] = await self.clients.consumer.getmany(
                timeout_ms=stream.max_batch_wait_ms, max_records=stream.max_batch_records)
        except OffsetOutOfRangeError as exc:
            await self.ownership.reset_out_of_range(exc.args[0] if exc.args else {})
            return None
        beyond = self.ownership.beyond_end()
        if beyond:
            # the log ends before a checkpoint's offset: the topic was recreated or truncated
            await self.ownership.reset_out_of_range(beyond)
            return None
        return polled

    async def _quiet_step(self) -> int:
        """A poll with no records, yet what waits for the table must go on: with every partition waiting (or
        paused), none may come, so releasing, the terminal updates that are due (timer, progress, re-sends)
        and their delivery are the only way it moves again. Returns the events scored.

        Without alignment nothing is held: this only sends the updates whose timer is due."""
        outgoing: list[Outgoing] = []
        touched: list[int] = []
        self._mutating = True
        scored = self._release_waiting(set(), outgoing, touched)
        outgoing += self.terminal.publish()
        await self.deliver(outgoing)
        self._mutating = False
        self._measure_committed()
        if touched:
            await self.commits.commit(touched)
        phases = self.stats.phases
        phases.start()  # the phase below is the checkpoint's alone, as in a step with records
        self._sample_rate()
        await self._checkpoint_if_due()
        phases.lap("checkpoint")
        return scored

    async def _batch_step(self, polled: dict[TopicPartition, list[Any]]) -> int:
        """Score a polled micro-batch, deliver what it produced, then commit and checkpoint when due."""
        phases = self.stats.phases
        polled_ms = time.time() * 1000.0
        if self.stats.first_poll_wall is None:
            self.stats.first_poll_wall = polled_ms / 1000.0
        outgoing: list[Outgoing] = []
        touched: list[int] = []
        self._mutating = True
        # the broadcast table and the stage first, so the scoring below sees the latest
        self.terminal.apply(polled)
        phases.lap("stage")
        scored, oldest_ingest_ms = self._score(polled, outgoing, touched)
        phases.lap("score")
        outgoing += self.terminal.publish()
        phases.lap("terminal")
        await self.deliver(outgoing)
        self._mutating = False
        phases.lap("ack")
        self._unmeasured.append((polled, polled_ms, oldest_ingest_ms))
        self._measure_committed()
        phases.start()
        await self.commits.commit(touched)
        phases.lap("commit")
        await self._checkpoint_if_due()
        phases.lap("checkpoint")
        return scored

    def _score(self, polled: dict[TopicPartition, list[Any]], outgoing: list[Outgoing],
               touched: list[int]) -> tuple[int, int | None]:
        """Each owned partition's transactions and labels through its processor, outputs queued in
        ``outgoing``; returns the events scored and the oldest Kafka timestamp of the transactions."""
        processors = self.ownership.processors
        tx_topic, label_topic = self.tx_topic, self.label_topic
        unsaved = self.checkpoints.unsaved
        arriving = {tp.partition for tp, records in polled.items() if tp.topic == tx_topic and records}
        scored = self._release_waiting(arriving, outgoing, touched)
        oldest_ingest_ms: int | None = None
        for tp, records in polled.items():
            processor = processors.get(tp.partition)
            if processor is None or not records or tp.topic not in (tx_topic, label_topic):
                continue
            if tp.topic == tx_topic:
                output = processor.process_transactions(records)
                scored += output.scored
                touched.append(tp.partition)
                first = records[0].timestamp
                oldest_ingest_ms = first if oldest_ingest_ms is None else min(oldest_ingest_ms, first)
            else:
                output = processor.process_labels(records)
            unsaved.add(tp.partition)
            self._take(tp.partition, output, outgoing)
            self.ownership.pause_or_resume(tp.partition, processor)
        return scored, oldest_ingest_ms

    def _release_waiting(self, arriving: set[int], outgoing: list[Outgoing], touched: list[int]) -> int:
        """Score what the table now lets through of the waiting partitions (those in ``arriving`` release
        with their new records); returns the events scored."""
        scored = 0
        for partition, processor in self.ownership.processors.items():
            if processor.waiting and partition not in arriving:  # the table moved on: what it lets through
                output = processor.release_held()
                if output.scored:
                    scored += output.scored
                    touched.append(partition)
                    self.checkpoints.unsaved.add(partition)
                    self._take(partition, output, outgoing)
                self.ownership.pause_or_resume(partition, processor)
        return scored

    def _measure_committed(self) -> None:
        """The batches whose outputs are acknowledged (with exactly-once: committed) are measured now."""
        if self.transactions is not None and self.transactions.open:
            return
        acked_ms = time.time() * 1000.0
        for polled, polled_ms, oldest_ingest_ms in self._unmeasured:
            self._measure(polled, polled_ms, oldest_ingest_ms, acked_ms)
        self._unmeasured.clear()

    def _measure(self, polled: dict[TopicPartition, list[Any]], polled_ms: float, oldest_ingest_ms: int | None,
                 acked_ms: float) -> None:
        """Once the batch is acknowledged: its latencies, the batch count and the event rate."""
        processors = self.ownership.processors
        for tp, records in polled.items():
            if tp.topic == self.tx_topic and tp.partition in processors:
                self.stats.record_latencies(records, polled_ms, acked_ms)
        metrics = self.clients.metrics
        if oldest_ingest_ms is not None and metrics is not None:
            metrics.batch_latency_ms.observe(acked_ms - oldest_ingest_ms, tags={"actor": self.name})
        self.stats.batches += 1
        self._sample_rate()

    def _sample_rate(self) -> None:
        self.stats.sample_rate(sum(p.counters.scored for p in self.ownership.processors.values()))

    async def _checkpoint_if_due(self) -> None:
        ownership = self.ownership
        await self.checkpoints.save_due(ownership.processors, ownership.stages, ownership.stage_offsets)

    # ----------------------------------------------------------- send and commit
    def _take(self, partition: int, output: Output, outgoing: list[Outgoing]) -> None:
        """What a partition's call produced, queued for delivery (and counted)."""
        metrics = self.clients.metrics
        if metrics is not None and (output.scored or output.dead_letters):
            tags = {"actor": self.name, "partition": str(partition)}
            if output.scored:
                metrics.events.inc(output.scored, tags=tags)
            if output.alerts:
                metrics.alerts.inc(len(output.alerts), tags=tags)
            if output.dead_letters:
                metrics.dead_letters.inc(len(output.dead_letters), tags=tags)
            if output.challenger_alerts:
                metrics.challenger_alerts.inc(output.challenger_alerts, tags=tags)
        outgoing.extend(Outgoing(self.alert_topic, value, key, owner=partition) for key, value in output.alerts)
        outgoing.extend(Outgoing(self.dlq_topic, value, kind="dead_letter", owner=partition)
                        for value in output.dead_letters)  # fmt: skip
        outgoing.extend(Outgoing(topic, value, key, kind="rekeyed", owner=partition)
                        for topic, key, value in output.rekeyed)  # fmt: skip

    async def deliver(self, outgoing: list[Outgoing], force: bool = False) -> None:
        """Every record acknowledged (retried, or replaced when too large) before anything moves on; with
        exactly-once, the records sent in the open transaction, committed with the moved input offsets when it
        is due (``force``: now)."""
        try:
            if self.transactions is not None:
                await self.transactions.commit(outgoing, self.ownership.processors, self._stopping, force)
            elif outgoing:
                await self.delivery.deliver(self.clients.producer, outgoing, self._stopping)
        except Undelivered:
            self.undelivered = True
            raise

    async def send_before_snapshot(self, partition: int) -> None:
        """What a partition's checkpoint covers is sent and acknowledged, and its offsets committed."""
        await self.deliver(self.terminal.publish(force=True), force=True)
        self.commits.due_now()
        await self.commits.commit([partition])
