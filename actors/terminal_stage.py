"""The cross-partition terminal stage (DESIGN.md decision 8), without the I/O.

A terminal is used by accounts of every partition, so no scoring partition
sees all of its traffic. The flow:

1. every scoring partition's engine records terminal updates into an outbox
   (:meth:`features.TerminalRisk.publish_updates`); the partition folds them
   into its own share of the table (:class:`SourceShare`, part of the
   partition's checkpointed state) and sends the *cumulative* values of what
   changed as :class:`DeltaBatch` records to ``terminal.deltas``, routed by the
   terminal's key (murmur2, like Kafka), one record per stage partition, each
   carrying the source partition's progress;
2. the actor owning a ``terminal.deltas`` partition keeps every source's share
   of its terminals (:class:`TerminalStage`) and publishes, for each terminal
   it changed, the summed totals of the buckets that changed and the fraud list
   if it changed (:class:`RiskUpdate`) to the same partition of
   ``terminal.risk`` (proportional to what changed, not to a terminal's week of
   buckets);
3. every actor reads all of ``terminal.risk`` into one broadcast table
   (:class:`BroadcastRisk`) that its engines read.

Every step replaces rather than increments (a source's cumulative count per
bucket, a bucket's total, a terminal's fraud list), so a partition that
restarts from its checkpoint and replays re-sends values the stage already
had, and a reader that reads ``terminal.risk`` again from the start arrives at
the same table: nothing is counted twice. Buckets too old for any window are
dropped by the stage and by every reader on its own (by event time), never
published. The table answers from buckets that
closed at least ``terminal_freshness_s`` ago (:mod:`features.terminal`), so the
broadcast view and the offline builder agree once every partition's updates
for those buckets are in; ``complete_through_ms`` says how far that holds.

>>> from features import FeatureEngine
>>> from configs import FeatureSettings
>>> settings = FeatureSettings(terminal_bucket_s=3600, terminal_freshness_s=60)
>>> shares = [SourceShare(FeatureEngine.terminal_risk_for(settings), source=s) for s in (0, 1)]
>>> stage = TerminalStage(sources=2)
>>> for batch in shares[0].absorb([("T1", 0, 3)], [], through_ms=7_200_000, stage_partitions=1):
...     stage.apply(batch)
>>> for batch in shares[1].absorb([("T1", 0, 2)], [("T1", 0, 4_000_000)], through_ms=5_000_000, stage_partitions=1):
...     stage.apply(batch)
>>> update = stage.flush(partition=0)
>>> update.complete_through_ms, update.states
(5000000, [TerminalState(terminal='T1', buckets=[(0, 5)], frauds=[(0, 4000000)], days=[])])
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

_DAY_MS = 86_400_000

#: Progress of a partition that has nothing left to read (idle): it holds nobody back.
IDLE = 2**62
#: Progress of a source not heard from yet.
UNKNOWN = -(2**62)
UNKNOWN_LOW = 2**62


class TerminalDelta(msgspec.Struct, array_like=True):
    """One source's values for one key (a terminal, or another entity's key): (bucket, cumulative
    transactions) of the buckets that changed, the source's whole fraud list when it changed (else
    None), and (day, cumulative transactions) of the days that changed."""

    terminal: str
    buckets: list[tuple[int, int]]
    frauds: list[tuple[int, int]] | None
    days: list[tuple[int, int]] = []


class DeltaBatch(msgspec.Struct):
    """What one scoring partition sends one stage partition after a micro-batch.

    ``through_ms``: every transaction (and label) of ``source`` with event time
    before it is included in this or an earlier batch.
    """

    source: int
    through_ms: int
    deltas: list[TerminalDelta]


class TerminalState(msgspec.Struct, array_like=True):
    """What changed at a terminal, summed over every source: the new totals of the buckets that
    changed (each replaces the reader's value), and the whole fraud list when it changed (else None)."""

    terminal: str
    buckets: list[tuple[int, int]]
    frauds: list[tuple[int, int]] | None
    days: list[tuple[int, int]] = []


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


class SourceShare:
    """One scoring partition's own contribution to every terminal (checkpointed with the partition)."""

    def __init__(self, table: TerminalRisk, source: int) -> None:
        self.table = table
        self.source = source

    def absorb(
        self,
        transactions: list[tuple[str, int, int]],
        frauds: list[tuple[str, int, int]],
        through_ms: int,
        stage_partitions: int,
        days: list[tuple[str, int, int]] = (),  # type: ignore[assignment]
    ) -> list[DeltaBatch]:
        """Fold an outbox into the share; one DeltaBatch per stage partition (even empty: progress).

        >>> from configs import FeatureSettings
        >>> from features import FeatureEngine
        >>> share = SourceShare(FeatureEngine.terminal_risk_for(FeatureSettings()), source=0)
        >>> [len(b.deltas) for b in share.absorb([("T1", 0, 1), ("T1", 0, 1)], [], 10, 2)]
        [1, 0]
        >>> share.absorb([("T1", 0, 1)], [], 20, 1)[0].deltas   # cumulative: a replay re-sends the same value
        [TerminalDelta(terminal='T1', buckets=[(0, 3)], frauds=None, days=[])]
        """
        table = self.table
        size = table.bucket_ms
        changed: dict[str, set[int]] = defaultdict(set)
        for terminal, bucket, count in transactions:
            table.record_transaction(terminal, bucket * size, count)
            changed[terminal].add(bucket)
        fraud_terminals = set()
        for terminal, bucket, known_at in frauds:
            table.record_fraud(terminal, bucket * size, known_at)
            fraud_terminals.add(terminal)
        changed_days: dict[str, set[int]] = defaultdict(set)
        for key, day, count in days:
            table.record_day(key, day * _DAY_MS, count)
            changed_days[key].add(day)
        batches = [DeltaBatch(source=self.source, through_ms=through_ms, deltas=[]) for _ in range(stage_partitions)]
        for terminal in sorted(set(changed) | fraud_terminals | set(changed_days)):
            destination = partition_for(terminal.encode(), stage_partitions)
            batches[destination].deltas.append(
                TerminalDelta(
                    terminal,
                    table.bucket_values(terminal, sorted(changed.get(terminal, ()))),
                    sorted(table.frauds_of(terminal)) if terminal in fraud_terminals else None,
                    table.day_values(terminal, sorted(changed_days.get(terminal, ()))),
                )
            )
        return batches


def _trim(per_source: dict[int, dict[int, int]], oldest: int) -> None:
    """Drop every source's buckets (or days) at or before ``oldest``."""
    for source, values in per_source.items():
        if any(k <= oldest for k in values):
            per_source[source] = {k: n for k, n in values.items() if k > oldest}


class _Shares:
    __slots__ = ("buckets", "day_low", "days", "frauds", "low")

    def __init__(self) -> None:
        #: No bucket (of any source, transactions or frauds) is below this one.
        self.low = UNKNOWN_LOW
        #: source -> bucket -> cumulative transactions
        self.buckets: dict[int, dict[int, int]] = {}
        #: source -> frauds as (bucket, known_at)
        self.frauds: dict[int, list[tuple[int, int]]] = {}
        #: source -> day -> cumulative transactions; no day is below ``day_low``
        self.days: dict[int, dict[int, int]] = {}
        self.day_low = UNKNOWN_LOW


class TerminalStage:
    """One ``terminal.deltas`` partition: every source's share of its terminals, summed on publish."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.terminals: dict[str, _Shares] = {}
        self.progress: dict[int, int] = {}
        #: terminal -> buckets changed since the last flush; terminals whose frauds changed; days changed
        self._dirty: dict[str, set[int]] = {}
        self._dirty_frauds: set[str] = set()
        self._dirty_days: dict[str, set[int]] = {}
        self._expired_through = UNKNOWN
        self._expired_day = UNKNOWN

    def apply(self, batch: DeltaBatch) -> None:
        source = batch.source
        for delta in batch.deltas:
            shares = self.terminals.get(delta.terminal)
            if shares is None:
                shares = self.terminals[delta.terminal] = _Shares()
            mine = shares.buckets.setdefault(source, {})
            dirty = self._dirty.get(delta.terminal)
            if dirty is None:
                dirty = self._dirty[delta.terminal] = set()
            for bucket, count in delta.buckets:
                mine[bucket] = count
                dirty.add(bucket)
                if bucket < shares.low:
                    shares.low = bucket
            if delta.frauds is not None:
                shares.frauds[source] = list(delta.frauds)
                self._dirty_frauds.add(delta.terminal)
                for bucket, _ in delta.frauds:
                    if bucket < shares.low:
                        shares.low = bucket
            if delta.days:
                my_days = shares.days.setdefault(source, {})
                dirty_days = self._dirty_days.setdefault(delta.terminal, set())
                for day, count in delta.days:
                    my_days[day] = count
                    dirty_days.add(day)
                    if day < shares.day_low:
                        shares.day_low = day
        self.progress[source] = batch.through_ms

    @property
    def complete_through_ms(self) -> int:
        """Every source's updates before this time are in."""
        return min((self.progress.get(s, UNKNOWN) for s in range(self.sources)), default=UNKNOWN)

    def state(self, terminal: str) -> TerminalState:
        """The terminal's whole summed state over every source."""
        shares = self.terminals.get(terminal)
        if shares is None:
            return TerminalState(terminal, [], [])
        total: dict[int, int] = defaultdict(int)
        for buckets in shares.buckets.values():
            for bucket, count in buckets.items():
                total[bucket] += count
        day_total: dict[int, int] = defaultdict(int)
        for days in shares.days.values():
            for day, count in days.items():
                day_total[day] += count
        return TerminalState(terminal, sorted(total.items()), self._frauds(shares), sorted(day_total.items()))

    @staticmethod
    def _frauds(shares: _Shares) -> list[tuple[int, int]]:
        return sorted(f for source_frauds in shares.frauds.values() for f in source_frauds)

    def _change(self, terminal: str, buckets: set[int], days: set[int]) -> TerminalState:
        """The summed totals of the changed buckets and days, and the frauds when they changed."""
        shares = self.terminals.get(terminal)
        if shares is None:  # expired since it changed: readers expire by time themselves
            return TerminalState(terminal, [], None)
        sources = list(shares.buckets.values())
        totals = [(b, sum(source.get(b, 0) for source in sources)) for b in sorted(buckets)]
        day_sources = list(shares.days.values())
        day_totals = [(d, sum(source.get(d, 0) for source in day_sources)) for d in sorted(days)]
        frauds = self._frauds(shares) if terminal in self._dirty_frauds else None
        return TerminalState(terminal, totals, frauds, day_totals)

    def expire(self, oldest_bucket: int, oldest_day: int = UNKNOWN, fraud_bucket: int | None = None) -> None:
        """Forget buckets at or before ``oldest_bucket``, frauds of buckets at or before ``fraud_bucket``
        (default: ``oldest_bucket``) and days at or before ``oldest_day``.

        Nothing is re-published: no window can see them any more, and readers
        expire their broadcast table by time themselves. Only keys holding such
        a bucket (or day) are looked at, and only when the bound moved.
        """
        fraud_bucket = oldest_bucket if fraud_bucket is None else fraud_bucket
        if oldest_bucket > self._expired_through:
            self._expired_through = oldest_bucket
            for terminal in [t for t, shares in self.terminals.items() if shares.low <= oldest_bucket]:
                shares = self.terminals[terminal]
                _trim(shares.buckets, oldest_bucket)
                for source, frauds in shares.frauds.items():
                    if any(b <= fraud_bucket for b, _ in frauds):
                        shares.frauds[source] = [f for f in frauds if f[0] > fraud_bucket]
                shares.low = min(
                    [b for buckets in shares.buckets.values() for b in buckets]
                    + [b for frauds in shares.frauds.values() for b, _ in frauds],
                    default=UNKNOWN_LOW,
                )
                self._drop_if_empty(terminal, shares)
        if oldest_day > self._expired_day:
            self._expired_day = oldest_day
            for terminal in [t for t, shares in self.terminals.items() if shares.day_low <= oldest_day]:
                shares = self.terminals[terminal]
                _trim(shares.days, oldest_day)
                shares.day_low = min((d for days in shares.days.values() for d in days), default=UNKNOWN_LOW)
                self._drop_if_empty(terminal, shares)

    def _drop_if_empty(self, terminal: str, shares: _Shares) -> None:
        if not any(shares.buckets.values()) and not any(shares.frauds.values()) and not any(shares.days.values()):
            del self.terminals[terminal]

    def flush(self, partition: int) -> RiskUpdate:
        """What changed since the last flush: changed buckets' totals, changed fraud lists.

        Proportional to what changed, not to the terminals' whole history, so a
        flush costs the same at hour 1 and at day 7.
        """
        dirty, dirty_days = self._dirty, self._dirty_days
        for terminal in self._dirty_frauds | set(dirty_days):
            dirty.setdefault(terminal, set())
        states = [self._change(terminal, dirty[terminal], dirty_days.get(terminal, set())) for terminal in sorted(dirty)]
        self._dirty = {}
        self._dirty_frauds = set()
        self._dirty_days = {}
        return RiskUpdate(partition=partition, complete_through_ms=self.complete_through_ms, states=states)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty) or bool(self._dirty_frauds) or bool(self._dirty_days)

    def to_bytes(self) -> bytes:
        """The stage's state (every source's share and progress) for a checkpoint."""
        rows = [
            _ShareRow(terminal, source, sorted(shares.buckets.get(source, {}).items()), shares.frauds.get(source),
                      sorted(shares.days.get(source, {}).items()))
            for terminal, shares in sorted(self.terminals.items())
            for source in sorted(set(shares.buckets) | set(shares.frauds) | set(shares.days))
        ]  # fmt: skip
        dirty = [(t, sorted(self._dirty.get(t, ())), t in self._dirty_frauds, sorted(self._dirty_days.get(t, ())))
                 for t in sorted(set(self._dirty) | self._dirty_frauds | set(self._dirty_days))]  # fmt: skip
        return _encoder.encode(_StageState(rows=rows, progress=sorted(self.progress.items()), changed=dirty))

    @classmethod
    def from_bytes(cls, data: bytes, sources: int) -> TerminalStage:
        """A stage in the state :meth:`to_bytes` recorded.

        >>> stage = TerminalStage(sources=1)
        >>> stage.apply(DeltaBatch(source=0, through_ms=5, deltas=[TerminalDelta("T1", [(3, 2)], [(3, 9)])]))
        >>> TerminalStage.from_bytes(stage.to_bytes(), sources=1).flush(0) == stage.flush(0)
        True
        """
        state = msgspec.json.decode(data, type=_StageState)
        stage = cls(sources)
        for row in state.rows:
            shares = stage.terminals.get(row.terminal)
            if shares is None:
                shares = stage.terminals[row.terminal] = _Shares()
            shares.buckets[row.source] = dict(row.buckets)
            if row.frauds is not None:
                shares.frauds[row.source] = list(row.frauds)
            if row.days:
                shares.days[row.source] = dict(row.days)
                shares.day_low = min(shares.day_low, *(d for d, _ in row.days))
            shares.low = min([shares.low, *(b for b, _ in row.buckets), *(b for b, _ in row.frauds or [])])
        stage.progress = dict(state.progress)
        for terminal, buckets, frauds, days in state.changed:
            stage._dirty[terminal] = set(buckets)
            if frauds:
                stage._dirty_frauds.add(terminal)
            if days:
                stage._dirty_days[terminal] = set(days)
        return stage


class _ShareRow(msgspec.Struct, array_like=True):
    terminal: str
    source: int
    buckets: list[tuple[int, int]]
    frauds: list[tuple[int, int]] | None
    days: list[tuple[int, int]] = []


class _StageState(msgspec.Struct):
    rows: list[_ShareRow]
    progress: list[tuple[int, int]]
    #: (terminal, buckets changed since the last flush, frauds changed, days changed)
    changed: list[tuple[str, list[int], bool, list[int]]] = []


class BroadcastRisk:
    """Every stage partition's terminals in one table (what the engines read)."""

    def __init__(self, table: TerminalRisk, stages: int) -> None:
        self.table = table
        self.stages = stages
        self.progress: dict[int, int] = {}

    def apply(self, update: RiskUpdate) -> None:
        set_buckets = self.table.set_buckets
        for state in update.states:
            set_buckets(state.terminal, state.buckets, state.frauds, state.days)
        self.progress[update.partition] = update.complete_through_ms

    @property
    def complete_through_ms(self) -> int:
        return min((self.progress.get(s, UNKNOWN) for s in range(self.stages)), default=UNKNOWN)
