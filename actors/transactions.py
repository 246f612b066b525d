"""Exactly-once output (``kafka.exactly_once``): a micro-batch's outputs and input offsets in one Kafka transaction.

Each actor has a transactional producer (``transactional.id`` = client id + actor
name, stable across restarts of the actor, so a restarted actor fences its
predecessor and aborts what that one left open). :meth:`Transactions.commit`
sends each micro-batch's alerts and dead letters in the open transaction, and
at most once per ``stream.transaction_interval_ms`` (a transaction costs
several coordinator round trips: one per micro-batch halved the throughput of
a backlog), or before a checkpoint, a release or a stop, adds the owned
partitions' input offsets to it (``send_offsets_to_transaction``, the consumer
group ``<client_id>-scoring``) and commits. The terminal stage's records go beside the transaction with a
plain idempotent producer: they replace values, so one sent for a batch whose
transaction then aborted is sent again, the same, by the replay; inside the
transaction, every hop of the stage (partition -> stage -> every actor) would
wait for a commit. Consumers reading ``alerts`` with ``isolation.level=read_committed``
see a batch's alerts exactly when its offsets moved.

Checkpoints stay behind the committed offsets (a checkpoint is taken after
the transaction of the state it covers committed). A partition restored from
its checkpoint therefore replays records whose outputs were committed
already: :func:`read_replay_marks` reads the committed offsets (each with the
offset read so far in its metadata: dead letters are written when a record is
read, alerts when it is scored, which alignment can hold back), and the
partition replays up to them without output (:class:`~actors.partition.ReplayMarks`),
rebuilding its state.

A transaction that fails is aborted, the producer is replaced (its
successor's initialisation settles a commit whose outcome was not known), and
the loop takes the partitions back to their checkpoints: nothing of the
failed batch was visible, and nothing of it is checkpointed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from actors.clients import Clients, TopicNames, scoring_group
from actors.delivery import TOO_LARGE, Delivery, Outgoing, Undelivered, shrink
from actors.partition import PartitionProcessor, ReplayMarks
from configs import Settings

log = logging.getLogger(__name__)

#: Longest the committed offsets of arriving partitions may take to read (then the assignment is retried).
FETCH_COMMITTED_TIMEOUT_S = 30.0


class TransactionFailed(RuntimeError):
    """A transaction was aborted, and the micro-batches it held with it: the partitions must go back to their
    checkpoints."""


class Transactions:
    """Sends the micro-batches' outputs in the actor's open transaction and commits it with the input offsets."""

    def __init__(self, settings: Settings, clients: Clients, delivery: Delivery) -> None:
        self.clients = clients
        #: Sends the terminal stage's records with the plain producer, outside the transaction.
        self.delivery = delivery
        self.group_id = scoring_group(settings)
        self.dead_letter_topic = delivery.dead_letter_topic
        names = TopicNames.of(settings)
        self.tx_topic, self.label_topic = names.transactions, names.labels
        #: Offsets (and metadata) committed last, per input partition: only changes go into a transaction.
        self.committed: dict[TopicPartition, OffsetAndMetadata] = {}
        #: Transactions committed and aborted (status).
        self.commits = 0
        self.aborts = 0
        #: Records replaced by a smaller dead letter because they were too large to send.
        self.replaced = 0
        #: Wall time of the latest commit that moved offsets (benchmarks).
        self.last_commit_wall: float | None = None
        #: At most one commit per this interval (stream.transaction_interval_ms), unless forced.
        self.interval_s = settings.stream.transaction_interval_ms / 1000.0
        self._open_since: float | None = None
        self._last_commit = 0.0

    def offsets(self, processors: dict[int, PartitionProcessor]) -> dict[TopicPartition, OffsetAndMetadata]:
        """The owned partitions' positions that moved since the last commit; the metadata is the offset read
        so far (what a replay stays quiet before for dead letters)."""
        moved = {}
        for partition, processor in processors.items():
            at = processor.committed_positions()
            for tp, position in (
                (TopicPartition(self.tx_topic, partition), OffsetAndMetadata(at.next_offset, str(at.read_offset))),
                (TopicPartition(self.label_topic, partition),
                 OffsetAndMetadata(at.next_label_offset, str(at.read_label_offset))),
            ):  # fmt: skip
                if self.committed.get(tp) != position:
                    moved[tp] = position
        return moved

    @property
    def open(self) -> bool:
        """True while a transaction holds outputs not committed yet."""
        return self._open_since is not None

    async def commit(self, outgoing: list[Outgoing], processors: dict[int, PartitionProcessor],
                     stopping: asyncio.Event | None = None, force: bool = False) -> bool:
        """Send ``outgoing`` in the open transaction (begun if none is), and commit it with the moved offsets
        unless the last commit is less than ``stream.transaction_interval_ms`` ago (then a later call does; at
        once with ``force``: before a checkpoint, a release, a stop). The terminal stage's records go beside it
        with the plain producer and are acknowledged too. True when nothing is left uncommitted;
        TransactionFailed (or Undelivered while the job stops) when the transaction was aborted: every batch it
        held must be scored again."""
        stage = [record for record in outgoing if record.kind == "stage"]
        outgoing = [record for record in outgoing if record.kind != "stage"]
        # the stage's records replace values (a replay sends the same again): outside the transaction, at once
        staged = asyncio.ensure_future(self.delivery.deliver(self.clients.stage_producer, stage, stopping)) \
            if stage else None
        try:
            await self._guarded(self._transact(outgoing, processors, force), stopping)
        except BaseException:
            if staged is not None:
                staged.cancel()
            raise
        if staged is not None:
            await staged
        return not self.open

    async def _transact(self, outgoing: list[Outgoing], processors: dict[int, PartitionProcessor], force: bool) -> None:
        if outgoing:
            producer = await self._begun()
            futures = [await self._send(producer, record) for record in outgoing]
            await asyncio.gather(*futures)  # a refused record aborts now, not at the commit
        # at most one commit per interval: a batch after a quiet spell commits at once, a busy stream's batches
        # share transactions
        if not force and time.monotonic() - self._last_commit < self.interval_s:
            return
        offsets = self.offsets(processors)
        if not offsets and not self.open:
            return
        producer = await self._begun()
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self.group_id)
        await producer.commit_transaction()
        self._open_since, self._last_commit = None, time.monotonic()
        self.commits += 1
        self.committed.update(offsets)
        if offsets:
            self.last_commit_wall = time.time()

    async def abort(self) -> None:
        """Abort the open transaction (a rewind: the batches it holds are scored again); the producer is
        replaced."""
        if self._open_since is not None:
            self._open_since = None
            await self._abandon(self.clients.producer, RuntimeError("the partitions are rewound"))

    async def _begun(self) -> Any:
        """The producer, in a transaction (begun now if none is open)."""
        producer = await self.clients.ensure_producer()
        if self._open_since is None:
            await producer.begin_transaction()
            self._open_since = time.monotonic()
        return producer

    async def _guarded(self, work: Any, stopping: asyncio.Event | None) -> None:
        """Run ``work``; on failure abort the transaction, drop the producer and raise TransactionFailed."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.aborts += 1
            producer, self._open_since = self.clients.producer, None
            await self._abandon(producer, exc)
            error = f"{type(exc).__name__}: {exc}"[:300]
            if stopping is not None and stopping.is_set():
                raise Undelivered([], error) from exc
            raise TransactionFailed(f"transaction aborted ({error}); the partitions replay from their checkpoints") from exc

    async def _send(self, producer: Any, record: Outgoing) -> asyncio.Future[Any]:
        """Send one record; one too large for the producer is replaced by a small dead letter (a size refused
        by the broker aborts the transaction like any other failure)."""
        try:
            return await producer.send(record.topic, record.value, key=record.key,  # type: ignore[no-any-return]
                                       partition=record.partition)  # fmt: skip
        except TOO_LARGE as exc:
            smaller = shrink(record, self.dead_letter_topic, type(exc).__name__)
            if smaller is None:
                raise
            self.replaced += 1
            log.warning("a %s of %d bytes is too large to send (%s); sent as a dead letter without its bytes",
                        record.kind, len(record.value), type(exc).__name__)
            return await self._send(producer, smaller)

    async def _abandon(self, producer: Any, exc: BaseException) -> None:
        """Abort what can be aborted and drop the producer: the next one fences this one and settles its
        last transaction; what was committed is read back from Kafka when the partitions are restored."""
        log.warning("transaction aborted: %r", exc)
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.abort_transaction(), 10.0)
        except Exception as abort_error:  # the producer is dropped either way
            log.debug("abort failed: %r", abort_error)
        self.committed.clear()
        await self.clients.drop_producer()


async def read_replay_marks(consumer: Any, settings: Settings, processors: dict[int, PartitionProcessor]) -> None:
    """Give each of these restored partitions the committed offsets it replays to without output."""
    names = TopicNames.of(settings)
    tps = [TopicPartition(t, p) for p in processors for t in (names.transactions, names.labels)]
    # the consumer's group coordinator (what consumer.committed() asks), for the metadata as well
    committed = await asyncio.wait_for(consumer._coordinator.fetch_committed_offsets(tps), FETCH_COMMITTED_TIMEOUT_S)
    for partition, processor in processors.items():
        tx = committed.get(TopicPartition(names.transactions, partition))
        labels = committed.get(TopicPartition(names.labels, partition))
        marks = ReplayMarks.of(tx, labels)
        processor.replay = marks
        if marks is not None:
            log.info("partition %d replays quietly up to %s (outputs committed before)", partition, marks)
