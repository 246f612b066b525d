"""The terminal stage's traffic of one actor: what it reads of terminal.deltas and terminal.risk, what it sends.

In: the polled ``terminal.risk`` records go into the broadcast table every
engine of the actor reads, and the polled ``terminal.deltas`` records of the
stage partitions it owns into their :class:`~actors.terminal_stage.TerminalStage`.
Out (:meth:`TerminalIO.publish`): each owned partition's deltas and progress to
``terminal.deltas``, each owned stage's changed terminals and completeness to
``terminal.risk``, as :class:`~actors.delivery.Outgoing` records the loop
delivers with the batch's alerts. The state is in
:mod:`actors.terminal_stage` and :mod:`actors.partition`; this module decides
when to send.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from aiokafka import TopicPartition

from actors.checkpointing import Checkpointer
from actors.clients import Clients, TopicNames
from actors.delivery import Outgoing
from actors.ownership import Ownership
from actors.terminal_stage import IDLE, UNKNOWN, BroadcastRisk, decode_delta_batch, decode_risk_update
from actors.terminal_stage import encode as encode_stage_message
from configs import Settings

#: Terminal-stage updates are sent at most this often (well inside terminal_freshness_s).
STAGE_FLUSH_S = 0.5
#: Progress (and stage completeness) the broadcast table has not caught up with is sent again this often.
RESEND_S = 1.0


class StageRecord(Protocol):
    """What the stage needs of a consumed terminal.deltas or terminal.risk record (the actors wrote it)."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes: ...


class TerminalIO:
    """Applies the polled stage traffic, and decides what goes out to the stage and when."""

    def __init__(self, settings: Settings, clients: Clients, ownership: Ownership, checkpoints: Checkpointer,
                 broadcast: BroadcastRisk) -> None:
        self.settings = settings
        self.clients = clients
        self.ownership = ownership
        self.checkpoints = checkpoints
        self.broadcast = broadcast
        self.tx_topic, self.label_topic, self.deltas_topic, self.risk_topic, self.stage_count = TopicNames.of(settings)
        #: Progress last sent to the stage, per owned partition; completeness last published, per owned stage.
        self._progress_sent: dict[int, int] = {}
        self._stage_sent: dict[int, int] = {}
        self._last_stage_flush = 0.0
        self._last_resend = 0.0
        self._retention_ms = max(settings.features.allowed_lateness_s * 1000, 86_400_000)

    def apply(self, polled: Mapping[TopicPartition, Sequence[StageRecord]]) -> None:
        """The polled broadcast-table updates into the table, the polled deltas into the owned stages."""
        ownership = self.ownership
        for tp, records in polled.items():
            if tp.topic == self.risk_topic and records:
                for record in records:
                    self.broadcast.apply(decode_risk_update(record.value))
                assert ownership.risk_offsets is not None
                ownership.risk_offsets[tp.partition] = records[-1].offset + 1
            elif tp.topic == self.deltas_topic and records and tp.partition in ownership.stages:
                stage = ownership.stages[tp.partition]
                for record in records:
                    stage.apply(decode_delta_batch(record.value))
                ownership.stage_offsets[tp.partition] = records[-1].offset + 1
                self.checkpoints.stage_unsaved.add(tp.partition)

    def forget(self) -> None:
        """A rewind: nothing counts as sent, and what the failed batch left in the table's outbox is dropped."""
        self._progress_sent.clear()
        self._stage_sent.clear()
        self.broadcast.table.take_updates()

    def publish(self, force: bool = False) -> list[Outgoing]:
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
        progress = self._progress()
        resend = self._resend_due()
        if not (force or resend or self._flush_due(progress)):
            return []
        self._last_stage_flush = time.monotonic()
        if resend:
            self._last_resend = self._last_stage_flush
        sends = self._partition_sends(progress, resend)
        sends += self._stage_sends(resend)
        processors = self.ownership.processors
        if processors:
            oldest = min(p.engine.watermark_ms for p in processors.values())
            self.broadcast.table.expire(oldest - self._retention_ms)
        return sends

    def _progress(self) -> dict[int, int]:
        """Each owned partition's progress: the event time before which all its transactions and labels are in."""
        consumer = self.clients.consumer
        progress = {}
        for partition, processor in self.ownership.processors.items():
            tx_high = consumer.highwater(TopicPartition(self.tx_topic, partition))
            label_high = consumer.highwater(TopicPartition(self.label_topic, partition))
            progress[partition] = processor.progress_ms(
                tx_high is not None and processor.next_offset >= tx_high,
                label_high is not None and processor.next_label_offset >= label_high,
            )
        return progress

    def _flush_due(self, progress: dict[int, int]) -> bool:
        """A partition just caught up, alignment waits for a move, or the flush timer is due."""
        processors, stages = self.ownership.processors, self.ownership.stages
        caught_up = any(t == IDLE and self._progress_sent.get(p) != IDLE for p, t in progress.items())
        # a partition waiting for the table moves as soon as the table does: progress goes out at once
        waiting = any(processor.waiting and self._progress_sent.get(p) != progress[p]
                      for p, processor in processors.items())  # fmt: skip
        stage_moved = any(stage.complete_through_ms != self._stage_sent.get(number) for number, stage in stages.items())
        aligned = self.settings.stream.terminal_alignment and (waiting or stage_moved)
        return caught_up or aligned or time.monotonic() - self._last_stage_flush >= STAGE_FLUSH_S

    def _resend_due(self) -> bool:
        """With alignment, every RESEND_S while the table is behind what was sent."""
        broadcast = self.broadcast
        return self.settings.stream.terminal_alignment and time.monotonic() - self._last_resend >= RESEND_S and (
            any(broadcast.complete_through_ms < self._progress_sent.get(p, UNKNOWN) for p in self.ownership.processors)
            or any(broadcast.progress.get(n) != self._stage_sent.get(n) for n in self.ownership.stages))

    def _partition_sends(self, progress: dict[int, int], resend: bool) -> list[Outgoing]:
        """Each owned partition's deltas, one record per stage partition (all of them when its progress moved)."""
        sends = []
        for partition, processor in self.ownership.processors.items():
            through = progress[partition]
            progressed = resend or self._progress_sent.get(partition) != through
            for destination, batch in enumerate(processor.terminal_deltas(through, self.stage_count)):
                if batch.deltas or progressed:
                    sends.append(Outgoing(self.deltas_topic, encode_stage_message(batch), partition=destination,
                                          kind="stage", owner=partition))
            self._progress_sent[partition] = through
        return sends

    def _stage_sends(self, resend: bool) -> list[Outgoing]:
        """Each owned stage's changed terminals (and completeness), after expiring what no window reads."""
        sends = []
        for number, stage in self.ownership.stages.items():
            complete = stage.complete_through_ms
            if complete < IDLE:
                stage.expire(*self.broadcast.table.horizon(complete - self._retention_ms))
            if resend or stage.dirty or self._stage_sent.get(number) != complete:
                update = stage.flush(number)
                sends.append(Outgoing(self.risk_topic, encode_stage_message(update), partition=number, kind="stage"))
                self._stage_sent[number] = complete
        return sends
