"""Which partitions one actor owns, and where it reads each of them.

:class:`Ownership` holds the owned partitions of ``transactions``/``labels``
(a :class:`~actors.partition.PartitionProcessor` each) and of
``terminal.deltas`` (a :class:`~actors.terminal_stage.TerminalStage` each),
with the read positions of those and of ``terminal.risk``. :meth:`Ownership.assign`
is every change of ownership (start, release, rescale, a rewind): partitions
that leave are checkpointed and dropped, those that arrive are restored from
their checkpoints, and the consumer is assigned and positioned on all of them.

Offsets outside the log. When a checkpoint's offset is older than the log's
first retained offset, or newer than its end (the topic was recreated or
truncated), the partition resumes from the earliest retained offset: no record
still in the log goes unscored. The distance between the checkpoint's offset
and where reading resumed is counted as ``offset_gaps`` (status, metrics).
"""

from __future__ import annotations

import logging

from aiokafka import TopicPartition

from actors.checkpointing import Checkpointer
from actors.clients import Clients, TopicNames
from actors.messages import PartitionCheckpointMeta, StageCheckpointMeta
from actors.partition import PartitionProcessor
from actors.reloads import Reloads
from actors.terminal_stage import BroadcastRisk, TerminalStage
from actors.transactions import read_replay_marks
from configs import Settings
from features.runtime import freeze_long_lived_state

log = logging.getLogger(__name__)


class Ownership:
    """The owned partitions and stage partitions, their read positions, and which of them are paused."""

    def __init__(self, settings: Settings, name: str, clients: Clients, checkpoints: Checkpointer,
                 broadcast: BroadcastRisk, reloads: Reloads) -> None:
        self.settings = settings
        self.name = name
        self.clients = clients
        self.checkpoints = checkpoints
        self.broadcast = broadcast
        self.reloads = reloads
        self.tx_topic, self.label_topic, self.deltas_topic, self.risk_topic, self.stage_count = TopicNames.of(settings)
        self.processors: dict[int, PartitionProcessor] = {}
        #: The terminal.deltas partitions this actor aggregates, and where each is read.
        self.stages: dict[int, TerminalStage] = {}
        self.stage_offsets: dict[int, int] = {}
        #: Where each terminal.risk partition is read (the broadcast table is read whole, from the start).
        self.risk_offsets: dict[int, int] | None = None
        #: partition -> sequence of the checkpoint it was restored from (None: it started empty).
        self.restored_from: dict[int, int | None] = {}
        #: Partitions whose labels / transactions are paused (what they hold is at its bound).
        self.paused: set[int] = set()
        self.paused_tx: set[int] = set()

    # --------------------------------------------------------------- assignment
    async def assign(self, partitions: list[int], stage_partitions: list[int]) -> None:
        """Own exactly these partitions (of transactions/labels, and of terminal.deltas): checkpoint and drop
        the others, restore the new ones from their checkpoints (the caller holds the worker's lock)."""
        wanted = sorted(set(partitions))
        for stage in sorted(set(self.stages) - set(stage_partitions)):
            await self.checkpoints.save_stage(stage, self.stages[stage], self.stage_offsets.get(stage, 0))
            del self.stages[stage], self.stage_offsets[stage]
        for stage in sorted(set(stage_partitions) - set(self.stages)):
            self._restore_stage(stage)
        for partition in sorted(set(self.processors) - set(wanted)):
            await self.checkpoints.save_partition(partition, self.processors[partition])
            del self.processors[partition]
            self.checkpoints.forget(partition)
            self.paused.discard(partition)
            self.paused_tx.discard(partition)
        arriving = [p for p in wanted if p not in self.processors]
        for partition in arriving:
            self.processors[partition] = self._restore(partition)
            self.reloads.configure(self.processors[partition])
        try:
            await self._position_consumer(wanted, arriving)
        except BaseException:  # (Kafka away) restored whole next time, positions and replay marks with them
            for partition in arriving:
                del self.processors[partition]
            raise
        self.paused.clear()
        self.paused_tx.clear()
        freeze_long_lived_state()

    def _restore(self, partition: int) -> PartitionProcessor:
        """The partition as its latest checkpoint left it, or empty."""
        checkpoint = self.checkpoints.load_partition(partition)
        if checkpoint is None:
            self.restored_from[partition] = None
            self.checkpoints.started(partition, None, 0)
            processor = PartitionProcessor(self.settings, partition, self.broadcast)
            processor.align = self.settings.stream.terminal_alignment
            return processor
        meta = PartitionCheckpointMeta.from_store(checkpoint.meta)
        processor = PartitionProcessor.restore(self.settings, partition, self.broadcast, checkpoint.blobs, meta)
        processor.align = self.settings.stream.terminal_alignment
        self.restored_from[partition] = checkpoint.seq
        self.checkpoints.started(partition, checkpoint, processor.counters.scored)
        return processor

    def _restore_stage(self, stage: int) -> None:
        checkpoint = self.checkpoints.load_stage(stage)
        sources = self.settings.kafka.topics.transactions.partitions
        if checkpoint is None:
            self.stages[stage] = TerminalStage(sources)
            return
        self.stages[stage] = TerminalStage.from_bytes(checkpoint.blobs["stage"], sources)
        self.stage_offsets[stage] = StageCheckpointMeta.from_store(checkpoint.meta).next_offset

    async def _position_consumer(self, wanted: list[int], arriving: list[int]) -> None:
        """Assign the consumer every owned partition and all of terminal.risk, and seek each to where it is read."""
        consumer = self.clients.consumer
        tps = [TopicPartition(t, p) for p in wanted for t in (self.tx_topic, self.label_topic)]
        tps += [TopicPartition(self.deltas_topic, d) for d in sorted(self.stages)]
        risk = [TopicPartition(self.risk_topic, d) for d in range(self.stage_count)]
        consumer.assign(tps + risk)
        if self.risk_offsets is None:  # the broadcast table is read whole, from the start
            starts = await consumer.beginning_offsets(risk)
            self.risk_offsets = {tp.partition: starts[tp] for tp in risk}
        for tp in risk:
            consumer.seek(tp, self.risk_offsets[tp.partition])
        fresh_stages = [d for d in self.stages if d not in self.stage_offsets]
        if fresh_stages:
            starts = await consumer.beginning_offsets([TopicPartition(self.deltas_topic, d) for d in fresh_stages])
            for tp, offset in starts.items():
                self.stage_offsets[tp.partition] = offset
        for stage in self.stages:
            consumer.seek(TopicPartition(self.deltas_topic, stage), self.stage_offsets[stage])
        fresh = [p for p in arriving if self.restored_from[p] is None]
        if fresh:
            tp_list = [TopicPartition(t, p) for p in fresh for t in (self.tx_topic, self.label_topic)]
            starts = await consumer.beginning_offsets(tp_list)
            for p in fresh:
                self.processors[p].next_offset = starts[TopicPartition(self.tx_topic, p)]
                self.processors[p].next_label_offset = starts[TopicPartition(self.label_topic, p)]
        for partition in wanted:
            # where reading goes on: a partition kept through a reassignment still holds what it read and did
            # not apply yet (transactions waiting for the table, labels not due), so it resumes after those,
            # not at its next offsets, which would read them a second time; one just restored holds nothing
            processor = self.processors[partition]
            consumer.seek(TopicPartition(self.tx_topic, partition), processor.read_offset)
            consumer.seek(TopicPartition(self.label_topic, partition), processor.read_label_offset)
        if self.settings.kafka.exactly_once and arriving:
            await read_replay_marks(consumer, self.settings, {p: self.processors[p] for p in arriving})
        restored = [p for p in arriving if self.restored_from[p] is not None]
        if restored:
            tp_list = [TopicPartition(t, p) for p in restored for t in (self.tx_topic, self.label_topic)]
            starts = await consumer.beginning_offsets(tp_list)
            behind = {tp: self.position(tp) for tp in tp_list if self.position(tp) < starts[tp]}
            await self.reset_out_of_range(behind)

    def drop_all(self) -> tuple[list[int], list[int]]:
        """Forget every owned partition and stage partition (a rewind); returns them, to assign them again."""
        partitions, stages = sorted(self.processors), sorted(self.stages)
        log.warning("rewinding partitions %s and stage partitions %s to their checkpoints", partitions, stages)
        self.processors.clear()
        self.stages.clear()
        self.stage_offsets.clear()
        return partitions, stages

    # ------------------------------------------------------------------ offsets
    def position(self, tp: TopicPartition) -> int:
        """The next offset to read of an owned transactions or labels partition."""
        processor = self.processors[tp.partition]
        return processor.next_offset if tp.topic == self.tx_topic else processor.next_label_offset

    def beyond_end(self) -> dict[TopicPartition, int]:
        """Partitions whose next offset lies past the high watermark the broker reported."""
        beyond = {}
        for partition in self.processors:
            for topic in (self.tx_topic, self.label_topic):
                tp = TopicPartition(topic, partition)
                highwater = self.clients.consumer.highwater(tp)
                if highwater is not None and self.position(tp) > highwater:
                    beyond[tp] = self.position(tp)
        return beyond

    async def reset_out_of_range(self, positions: dict[TopicPartition, int]) -> None:
        """The documented policy: resume from the earliest retained offset and count the gap."""
        if not positions:
            return
        consumer = self.clients.consumer
        starts = await consumer.beginning_offsets(list(positions))
        for tp, offset in positions.items():
            processor = self.processors.get(tp.partition)
            start = starts[tp]
            gap = abs(offset - start)
            log.warning("%s offset %d is outside the log; resuming at %d (gap %d)", tp, offset, start, gap)
            if processor is not None:
                processor.counters.offset_gaps += gap
                if tp.topic == self.tx_topic:
                    processor.resume_transactions_at(start)
                else:
                    processor.resume_labels_at(start)
            metrics = self.clients.metrics
            if metrics is not None:
                metrics.offset_gaps.inc(gap, tags={"actor": self.name, "partition": str(tp.partition)})
            consumer.seek(tp, start)

    # ------------------------------------------------------------------ fetching
    def pause_or_resume(self, partition: int, processor: PartitionProcessor) -> None:
        """Stop fetching a partition's labels, or its transactions, while what it holds of them is at the bound."""
        consumer = self.clients.consumer
        for topic, full, paused in ((self.label_topic, processor.labels_full, self.paused),
                                    (self.tx_topic, processor.transactions_full, self.paused_tx)):  # fmt: skip
            tp = TopicPartition(topic, partition)
            if full and partition not in paused:
                consumer.pause(tp)
                paused.add(partition)
            elif not full and partition in paused:
                consumer.resume(tp)
                paused.discard(partition)

    def fetch_times(self) -> list[int | None]:
        """Wall time (ms) of the latest fetch response of each owned transactions partition."""
        consumer = self.clients.consumer
        if consumer is None:
            return []
        assigned = consumer.assignment()
        tps = [TopicPartition(self.tx_topic, partition) for partition in self.processors]
        return [consumer.last_poll_timestamp(tp) if tp in assigned else None for tp in tps]
