"""When an actor's partitions and stage partitions are checkpointed, and the writes themselves.

A partition is checkpointed once it changed and its interval has passed
(``stream.checkpoint_interval_s`` or ``checkpoint_interval_events``), one per
CHECKPOINT_SPACING_S at most; a stage partition once it changed and
``checkpoint_interval_s`` has passed; and every one of them on release, drain
and on demand. Only the snapshot (copies) runs in the loop: encoding and
writing run in a thread while scoring goes on, one write per partition at a
time. A write that fails shows in status and leaves the partition changed, so
the next due checkpoint tries again.

What a partition's checkpoint covers was sent and committed first: the
``before_snapshot`` hook (the worker's: terminal updates out and acknowledged,
offsets committed) runs before every snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import msgspec

from actors.clients import Clients
from actors.messages import StageCheckpointMeta
from actors.partition import PartitionProcessor
from actors.stats import ErrorLog
from actors.terminal_stage import TerminalStage
from configs import Settings
from connectors.checkpoint import Checkpoint
from features.runtime import freeze_long_lived_state

log = logging.getLogger(__name__)

#: Periodic partition checkpoints of one actor are at least this far apart.
CHECKPOINT_SPACING_S = 1.0
#: A partition never checkpointed: (wall time, events scored, sequence).
NEVER = (0.0, 0, -1)


def checkpoint_key(topic: str, partition: int) -> str:
    """The checkpoint store key of a partition: ``<transactions topic>-<partition>``.

    >>> checkpoint_key("transactions", 3)
    'transactions-3'
    """
    return f"{topic}-{partition}"


async def settle(task: asyncio.Task[None] | None) -> None:
    """Wait for a background write to finish (its failure was reported when it ended)."""
    if task is not None:
        with contextlib.suppress(Exception):
            await task


class Checkpointer:
    """Decides which partition and stage partition is due, and writes their checkpoints off the loop."""

    def __init__(self, settings: Settings, name: str, clients: Clients, errors: ErrorLog,
                 before_snapshot: Callable[[int], Awaitable[None]]) -> None:
        self.settings = settings
        self.name = name
        self.clients = clients
        self.errors = errors
        self._before_snapshot = before_snapshot
        topics = settings.kafka.topics
        self.transactions_topic = topics.transactions.name
        self.deltas_topic = topics.terminal_deltas.name
        #: partition -> (wall time, events scored, sequence) of its latest checkpoint (or of its start).
        self.last_checkpoint: dict[int, tuple[float, int, int]] = {}
        #: Partitions and stage partitions changed since their last checkpoint (the loop adds to them).
        self.unsaved: set[int] = set()
        self.stage_unsaved: set[int] = set()
        #: stage partition -> wall time of its latest checkpoint (or of its start).
        self.stage_saved_at: dict[int, float] = {}
        #: Writes running in a thread while scoring goes on (partition / stage partition -> task).
        self.saving: dict[int, asyncio.Task[None]] = {}
        self.saving_stages: dict[int, asyncio.Task[None]] = {}
        #: Monotonic time of the latest partition snapshot (periodic ones are spaced from it).
        self.last_snapshot = 0.0

    # ------------------------------------------------------------------ loading
    def load_partition(self, partition: int) -> Checkpoint | None:
        """The partition's latest complete checkpoint (None: it starts empty)."""
        checkpoint: Checkpoint | None = self.clients.store.load_latest(checkpoint_key(self.transactions_topic, partition))
        return checkpoint

    def started(self, partition: int, checkpoint: Checkpoint | None, scored: int) -> None:
        """A partition now owned counts its checkpoint interval from its checkpoint (or from now, if none)."""
        if checkpoint is None:
            self.last_checkpoint[partition] = (time.time(), 0, -1)
        else:
            self.last_checkpoint[partition] = (checkpoint.created_ms / 1000.0, scored, checkpoint.seq)

    def load_stage(self, stage: int) -> Checkpoint | None:
        """The stage partition's latest complete checkpoint; its interval counts from there (or from now)."""
        checkpoint: Checkpoint | None = self.clients.store.load_latest(checkpoint_key(self.deltas_topic, stage))
        self.stage_saved_at[stage] = time.time() if checkpoint is None else checkpoint.created_ms / 1000.0
        return checkpoint

    def forget(self, partition: int) -> None:
        """A released partition is no longer scheduled."""
        self.last_checkpoint.pop(partition, None)

    def forget_changes(self) -> None:
        """After a rewind nothing owned holds a change: it is all read again from the checkpoints."""
        self.unsaved.clear()
        self.stage_unsaved.clear()

    # --------------------------------------------------------------- scheduling
    def partition_due(self, partition: int, scored: int, now: float) -> bool:
        """True once the partition's interval has passed: in wall time, or in events scored (``scored`` now)."""
        wall, scored_then, _ = self.last_checkpoint.get(partition, NEVER)
        stream = self.settings.stream
        return now - wall >= stream.checkpoint_interval_s or scored - scored_then >= stream.checkpoint_interval_events

    def next_partition(self, processors: Mapping[int, PartitionProcessor], now: float | None = None,
                       now_monotonic: float | None = None) -> int | None:
        """The changed, due partition with the oldest checkpoint, unless one was snapshotted less than
        CHECKPOINT_SPACING_S ago (each snapshot pauses scoring briefly: spread, the pauses do not add up in
        the latency tail). A partition whose previous write still runs is not due."""
        if (time.monotonic() if now_monotonic is None else now_monotonic) - self.last_snapshot < CHECKPOINT_SPACING_S:
            return None
        now = time.time() if now is None else now
        due = [p for p in self.unsaved if p in processors and p not in self.saving
               and self.partition_due(p, processors[p].counters.scored, now)]  # fmt: skip
        if not due:
            return None
        return min(due, key=lambda p: self.last_checkpoint.get(p, NEVER)[0])

    def due_stages(self, stages: Mapping[int, TerminalStage], now: float | None = None) -> list[int]:
        """The changed stage partitions whose interval has passed (and whose previous write has ended)."""
        interval = self.settings.stream.checkpoint_interval_s
        now = time.time() if now is None else now
        return [stage for stage in sorted(self.stage_unsaved)
                if stage in stages and stage not in self.saving_stages
                and now - self.stage_saved_at.get(stage, 0.0) >= interval]  # fmt: skip

    async def save_due(self, processors: Mapping[int, PartitionProcessor], stages: Mapping[int, TerminalStage],
                       stage_offsets: Mapping[int, int]) -> None:
        """Start the writes that are due (after a step); scoring goes on meanwhile."""
        partition = self.next_partition(processors)
        if partition is not None:
            await self.save_partition(partition, processors[partition], wait=False)
        for stage in self.due_stages(stages):
            await self.save_stage(stage, stages[stage], stage_offsets.get(stage, 0), wait=False)

    async def save_all(self, processors: Mapping[int, PartitionProcessor], stages: Mapping[int, TerminalStage],
                       stage_offsets: Mapping[int, int]) -> None:
        """Checkpoint every partition and stage partition, each write awaited (drain, on demand)."""
        for partition in sorted(processors):
            await self.save_partition(partition, processors[partition])
        for stage in sorted(stages):
            await self.save_stage(stage, stages[stage], stage_offsets.get(stage, 0))

    # ------------------------------------------------------------------ writing
    async def save_partition(self, partition: int, processor: PartitionProcessor, wait: bool = True) -> None:
        """Snapshot one partition and write it; its offsets are those of what was acknowledged.

        Only the snapshot runs in the loop; encoding and writing run in a thread
        while scoring goes on (``wait=False``, the periodic checkpoints) or are
        awaited (drain, release, rescale). One write per partition at a time: an
        earlier one still running is waited for first.
        """
        await settle(self.saving.get(partition))
        started = time.perf_counter()
        await self._before_snapshot(partition)
        snapshot = processor.snapshot()
        self.last_snapshot = time.monotonic()
        self.unsaved.discard(partition)
        meta = msgspec.structs.replace(snapshot.meta, actor=self.name).to_store()
        key = checkpoint_key(self.transactions_topic, partition)
        scored = processor.counters.scored
        freeze_long_lived_state()  # a quiet point: keep the state out of full GC passes

        async def save() -> None:
            try:
                ref = await asyncio.to_thread(lambda: self.clients.store.save(key, snapshot.blobs(), meta))
            except Exception:
                self.unsaved.add(partition)  # the next due checkpoint tries again
                raise
            self.last_checkpoint[partition] = (time.time(), scored, ref.seq)
            metrics = self.clients.metrics
            if metrics is not None:
                metrics.checkpoint_seconds.observe(
                    time.perf_counter() - started, tags={"actor": self.name, "partition": str(partition)}
                )

        task = self._in_background(save(), self.saving, partition, f"partition {partition}")
        if wait:
            await task

    async def save_stage(self, number: int, stage: TerminalStage, next_offset: int, wait: bool = True) -> None:
        """Snapshot a terminal.deltas partition's stage and write it (in a thread, like :meth:`save_partition`)."""
        await settle(self.saving_stages.get(number))
        blobs = {"stage": stage.to_bytes()}
        meta = StageCheckpointMeta(partition=number, topic=self.deltas_topic, next_offset=next_offset,
                                   actor=self.name).to_store()
        self.stage_saved_at[number] = time.time()
        self.stage_unsaved.discard(number)

        async def save() -> None:
            try:
                await asyncio.to_thread(self.clients.store.save, checkpoint_key(self.deltas_topic, number), blobs, meta)
            except Exception:
                self.stage_unsaved.add(number)  # the next due checkpoint tries again
                raise

        task = self._in_background(save(), self.saving_stages, number, f"stage partition {number}")
        if wait:
            await settle(task)

    async def settle_all(self) -> None:
        """Wait for every write still running (a rewind reads the checkpoints they write)."""
        for task in [*self.saving.values(), *self.saving_stages.values()]:
            await settle(task)

    def _in_background(self, write: Coroutine[Any, Any, None], running: dict[int, asyncio.Task[None]], key: int,
                       what: str) -> asyncio.Task[None]:
        """Run a checkpoint write as a task tracked in ``running`` until it ends; a failure shows in status."""
        task = asyncio.get_running_loop().create_task(write)
        running[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if running.get(key) is finished:
                del running[key]
            if finished.cancelled():
                return
            if finished.exception() is not None:
                self.errors.set(f"checkpoint {what}", f"checkpoint of {what} failed: {finished.exception()!r}")
                log.error("checkpoint of %s failed", what, exc_info=finished.exception())
            else:
                self.errors.clear(f"checkpoint {what}")

        task.add_done_callback(done)
        return task
