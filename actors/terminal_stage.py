"""The cross-partition terminal stage (DESIGN.md decision 8), without the I/O.

A terminal is used by accounts of every partition, so no scoring partition
sees all of its traffic. The flow:

1. every scoring partition's engine records terminal updates into an outbox
   (:meth:`features.TerminalRisk.publish_updates`); after each micro-batch the
   actor sends them as :class:`DeltaBatch` records to ``terminal.deltas``,
   routed by the terminal's key (murmur2, like Kafka), one record per
   destination partition, each carrying the source partition's progress;
2. the actor owning a ``terminal.deltas`` partition folds them into that
   partition's share of the table (:class:`TerminalStage`) and publishes the
   full, current state of every terminal it changed (:class:`RiskUpdate`) to
   the same partition of ``terminal.risk``;
3. every actor reads all of ``terminal.risk`` into one broadcast table
   (:class:`BroadcastRisk`) that its engines read.

A terminal's state is replaced, never incremented, on the broadcast side, so
applying an update twice (a replay after a restart) changes nothing, and with
log compaction on ``terminal.risk`` a new reader needs only the latest record
per terminal. The table answers from buckets that closed at least
``terminal_freshness_s`` ago (:mod:`features.terminal`), so the broadcast view
and the offline builder agree once every partition's updates for those buckets
are in; ``complete_through_ms`` says how far that holds.

>>> from features import FeatureEngine
>>> from configs import FeatureSettings
>>> settings = FeatureSettings(terminal_bucket_s=3600, terminal_freshness_s=60)
>>> stage = TerminalStage(FeatureEngine.terminal_risk_for(settings), sources=2)
>>> stage.apply(DeltaBatch(source=0, through_ms=7_200_000, deltas=[TerminalDelta("T1", [(0, 3)], [])]))
>>> stage.apply(DeltaBatch(source=1, through_ms=5_000_000, deltas=[TerminalDelta("T1", [(0, 2)], [(0, 4_000_000)])]))
>>> update = stage.flush(partition=0)
>>> update.complete_through_ms, update.states
(5000000, [TerminalState(terminal='T1', buckets=[(0, 5)], frauds=[(0, 4000000)])])
>>> view = BroadcastRisk(FeatureEngine.terminal_risk_for(settings), stages=1)
>>> view.apply(update)
>>> view.table.stats("T1", 7_200_000), view.complete_through_ms
((5, 1), 5000000)
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from contracts.partitioning import partition_for
from features import TerminalRisk

#: Progress of a partition that has nothing left to read (idle): it holds nobody back.
IDLE = 2**62
#: Progress of a source not heard from yet.
UNKNOWN = -(2**62)


class TerminalDelta(msgspec.Struct, array_like=True):
    """Updates to one terminal: (bucket, transactions) and frauds as (bucket, known_at_ms)."""

    terminal: str
    buckets: list[tuple[int, int]]
    frauds: list[tuple[int, int]]


class DeltaBatch(msgspec.Struct):
    """What one scoring partition sends one stage partition after a micro-batch.

    ``through_ms``: every transaction (and label) of ``source`` with event time
    before it is included in this or an earlier batch.
    """

    source: int
    through_ms: int
    deltas: list[TerminalDelta]


class TerminalState(msgspec.Struct, array_like=True):
    """A terminal's whole current state (replaces what a reader had)."""

    terminal: str
    buckets: list[tuple[int, int]]
    frauds: list[tuple[int, int]]


class RiskUpdate(msgspec.Struct):
    """A stage partition's changed terminals and how far its table is complete."""

    partition: int
    complete_through_ms: int
    states: list[TerminalState]


_delta_decoder = msgspec.json.Decoder(DeltaBatch)
_update_decoder = msgspec.json.Decoder(RiskUpdate)
_encoder = msgspec.json.Encoder()


def encode(message: DeltaBatch | RiskUpdate) -> bytes:
    return _encoder.encode(message)


def decode_delta_batch(raw: bytes) -> DeltaBatch:
    return _delta_decoder.decode(raw)


def decode_risk_update(raw: bytes) -> RiskUpdate:
    return _update_decoder.decode(raw)


def route_updates(
    source: int,
    through_ms: int,
    transactions: list[tuple[str, int, int]],
    frauds: list[tuple[str, int, int]],
    stage_partitions: int,
) -> list[DeltaBatch]:
    """One DeltaBatch per stage partition (even empty: it carries the progress).

    >>> [len(b.deltas) for b in route_updates(0, 10, [("T1", 0, 1), ("T1", 0, 1)], [], 2)]
    [1, 0]
    """
    merged: dict[str, dict[int, int]] = defaultdict(dict)
    for terminal, bucket, count in transactions:
        counts = merged[terminal]
        counts[bucket] = counts.get(bucket, 0) + count
    fraud_lists: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for terminal, bucket, known_at in frauds:
        fraud_lists[terminal].append((bucket, known_at))
    batches = [DeltaBatch(source=source, through_ms=through_ms, deltas=[]) for _ in range(stage_partitions)]
    for terminal in sorted(set(merged) | set(fraud_lists)):
        destination = partition_for(terminal.encode(), stage_partitions)
        batches[destination].deltas.append(
            TerminalDelta(terminal, sorted(merged.get(terminal, {}).items()), fraud_lists.get(terminal, []))
        )
    return batches


class TerminalStage:
    """One ``terminal.deltas`` partition's share of the terminal table, fed by every source."""

    def __init__(self, table: TerminalRisk, sources: int) -> None:
        self.table = table
        self.sources = sources
        self.progress: dict[int, int] = {}
        self._dirty: set[str] = set()

    def apply(self, batch: DeltaBatch) -> None:
        table = self.table
        size = table.bucket_ms
        for delta in batch.deltas:
            for bucket, count in delta.buckets:
                table.record_transaction(delta.terminal, bucket * size, count)
            for bucket, known_at in delta.frauds:
                table.record_fraud(delta.terminal, bucket * size, known_at)
            self._dirty.add(delta.terminal)
        self.progress[batch.source] = batch.through_ms

    @property
    def complete_through_ms(self) -> int:
        """Every source's updates before this time are in."""
        return min((self.progress.get(s, UNKNOWN) for s in range(self.sources)), default=UNKNOWN)

    def expire(self, through_ms: int) -> None:
        """Forget what no query after ``through_ms`` can see; expired terminals are re-published."""
        before = set(self.table.terminals)
        self.table.expire(through_ms)
        self._dirty |= before - set(self.table.terminals)

    def flush(self, partition: int) -> RiskUpdate:
        """The changed terminals' full states since the last flush."""
        states = []
        for terminal in sorted(self._dirty):
            buckets, frauds = self.table.terminal_state(terminal)
            states.append(TerminalState(terminal, sorted(buckets.items()), frauds))
        self._dirty.clear()
        return RiskUpdate(partition=partition, complete_through_ms=self.complete_through_ms, states=states)


class BroadcastRisk:
    """Every stage partition's terminals in one table (what the engines read)."""

    def __init__(self, table: TerminalRisk, stages: int) -> None:
        self.table = table
        self.stages = stages
        self.progress: dict[int, int] = {}

    def apply(self, update: RiskUpdate) -> None:
        replace = self.table.replace_terminal
        for state in update.states:
            replace(state.terminal, dict(state.buckets), list(state.frauds))
        self.progress[update.partition] = update.complete_through_ms

    @property
    def complete_through_ms(self) -> int:
        return min((self.progress.get(s, UNKNOWN) for s in range(self.stages)), default=UNKNOWN)
