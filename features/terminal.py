"""Terminal risk: transactions and known frauds at a terminal over a window.

A terminal is seen from many accounts, so from every partition. Its table
answers only from *complete* buckets that closed at least ``freshness_ms``
before the query time, and counts a fraud only once its label had arrived by
``t - freshness_ms``. The answer therefore does not depend on the order in
which partitions' updates were applied, as long as every update older than the
freshness bound is in: the offline builder, a single actor and a fleet of
actors sharing a broadcast table compute the same values.

>>> risk = TerminalRisk(window_ms=4 * 3_600_000, bucket_ms=3_600_000, freshness_ms=60_000)
>>> for minute in (5, 20, 70):
...     risk.record_transaction("T1", minute * 60_000)
>>> risk.record_fraud("T1", 20 * 60_000, known_at_ms=90 * 60_000)
>>> risk.stats("T1", 100 * 60_000)   # buckets [0h,1h) complete; fraud known at 90 min
(2, 1)
>>> risk.stats("T1", 80 * 60_000)    # the label had not arrived yet
(2, 0)
>>> risk.stats("T1", 60 * 60_000)    # bucket [0h,1h) closed less than a minute ago
(0, 0)
"""

from __future__ import annotations

from collections import deque


_NO_HEAD = -(2**62)
_NO_LOW = 2**62


class _TerminalCounts:
    __slots__ = ("buckets", "frauds", "cache_head", "cache_total", "low")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        #: No bucket is below this one (the oldest recorded, or where expiry stopped).
        self.low = _NO_LOW
        #: (bucket of the fraudulent transaction, when its label became known)
        self.frauds: list[tuple[int, int]] = []
        self.cache_head = _NO_HEAD
        self.cache_total = 0


class TerminalRisk:
    """Per-terminal transaction counts in event-time buckets and known frauds."""

    def __init__(self, window_ms: int, bucket_ms: int, freshness_ms: int, recent_ms: int | None = None) -> None:
        self.window_ms = window_ms
        self.bucket_ms = bucket_ms
        self.freshness_ms = freshness_ms
        self.window_buckets = max(1, window_ms // bucket_ms)
        #: The short window of :meth:`recent_frauds` (at most the whole window).
        self.recent_buckets = min(self.window_buckets, max(1, (recent_ms or window_ms) // bucket_ms))
        self.terminals: dict[str, _TerminalCounts] = {}
        self._expired_through = -(2**62)
        #: Publishing mode (see :meth:`publish_updates`): (terminal, bucket, count) and
        #: (terminal, bucket, known_at) collected instead of applied.
        self.outbox: list[tuple[str, int, int]] | None = None
        self.fraud_outbox: list[tuple[str, int, int]] = []

    def publish_updates(self) -> None:
        """Collect updates for a keyed stage instead of applying them.

        A scoring actor's engines read a broadcast table that the stage keeps
        complete; what they record goes out through the outbox (see
        :meth:`take_updates`) and comes back through :meth:`set_buckets`.
        """
        self.outbox = []

    def take_updates(self) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
        """The collected (transactions, frauds) updates, emptying the outbox."""
        outbox, frauds = self.outbox or [], self.fraud_outbox
        if self.outbox is not None:
            self.outbox = []
        self.fraud_outbox = []
        return outbox, frauds

    def bucket_values(self, terminal_id: str, buckets: list[int]) -> list[tuple[int, int]]:
        """(bucket, transactions) of the given buckets of a terminal (0 where none)."""
        counts = self.terminals.get(terminal_id)
        if counts is None:
            return [(b, 0) for b in buckets]
        get = counts.buckets.get
        return [(b, get(b, 0)) for b in buckets]

    def frauds_of(self, terminal_id: str) -> list[tuple[int, int]]:
        """A terminal's frauds as (bucket, known_at), in the order recorded."""
        counts = self.terminals.get(terminal_id)
        return list(counts.frauds) if counts is not None else []

    def set_buckets(
        self, terminal_id: str, buckets: list[tuple[int, int]], frauds: list[tuple[int, int]] | None
    ) -> None:
        """Set the given buckets' counts (0 removes one) and, unless None, the whole fraud list.

        Setting replaces, so applying the same update twice changes nothing (a
        broadcast update read again after a restart).
        """
        counts = self.terminals.get(terminal_id)
        if counts is None:
            if not buckets and not frauds:
                return
            counts = self.terminals[terminal_id] = _TerminalCounts()
        table = counts.buckets
        head = counts.cache_head
        window = self.window_buckets
        for bucket, value in buckets:
            old = table.get(bucket, 0)
            if value:
                table[bucket] = value
                if bucket < counts.low:
                    counts.low = bucket
            elif old:
                del table[bucket]
            if head != _NO_HEAD and head - window < bucket <= head:
                counts.cache_total += value - old
        if frauds is not None:
            counts.frauds = list(frauds)
        if not table and not counts.frauds:
            del self.terminals[terminal_id]

    def record_transaction(self, terminal_id: str, event_time_ms: int, count: int = 1) -> None:
        outbox = self.outbox
        if outbox is not None:
            outbox.append((terminal_id, event_time_ms // self.bucket_ms, count))
            return
        counts = self.terminals.get(terminal_id)
        if counts is None:
            counts = self.terminals[terminal_id] = _TerminalCounts()
        bucket = event_time_ms // self.bucket_ms
        counts.buckets[bucket] = counts.buckets.get(bucket, 0) + count
        if bucket < counts.low:
            counts.low = bucket
        head = counts.cache_head
        if head - self.window_buckets < bucket <= head:
            counts.cache_total += count

    def record_fraud(self, terminal_id: str, event_time_ms: int, known_at_ms: int) -> None:
        if self.outbox is not None:
            self.fraud_outbox.append((terminal_id, event_time_ms // self.bucket_ms, known_at_ms))
            return
        counts = self.terminals.get(terminal_id)
        if counts is None:
            counts = self.terminals[terminal_id] = _TerminalCounts()
        counts.frauds.append((event_time_ms // self.bucket_ms, known_at_ms))

    def _head(self, event_time_ms: int) -> int:
        """The last complete bucket visible at ``event_time_ms``."""
        return (event_time_ms - self.freshness_ms) // self.bucket_ms - 1

    def stats(self, terminal_id: str, event_time_ms: int) -> tuple[int, int]:
        """(transactions, known frauds) at the terminal in the window visible at t."""
        counts = self.terminals.get(terminal_id)
        if counts is None:
            return 0, 0
        head = self._head(event_time_ms)
        first = head - self.window_buckets
        cached = counts.cache_head
        if head != cached:
            buckets = counts.buckets
            step = head - cached
            if 0 < step and cached != _NO_HEAD and 2 * step < len(buckets):
                # slide: buckets entering (cached, head], leaving (cached - n, first]
                get = buckets.get
                total = counts.cache_total
                for b in range(cached + 1, head + 1):
                    total += get(b, 0)
                for b in range(cached - self.window_buckets + 1, first + 1):
                    total -= get(b, 0)
                counts.cache_total = total
            else:
                counts.cache_total = sum(n for b, n in buckets.items() if first < b <= head)
            counts.cache_head = head
        frauds = 0
        if counts.frauds:
            visible_at = event_time_ms - self.freshness_ms
            for bucket, known_at in counts.frauds:
                if first < bucket <= head and known_at <= visible_at:
                    frauds += 1
        return counts.cache_total, frauds

    def recent_frauds(self, terminal_id: str, event_time_ms: int) -> tuple[int, int | None]:
        """(known frauds in the last ``recent_buckets`` visible buckets, ms since the latest one's bucket closed).

        The same visibility as :meth:`stats` (complete buckets, labels arrived
        by ``t - freshness``), over the short window; the age looks at the whole
        window and is None when no fraud there is known. A label arriving long
        after its transaction counts only while that transaction's bucket is in
        the window: a chargeback weeks later does not mark the terminal today.

        >>> risk = TerminalRisk(window_ms=48 * 3_600_000, bucket_ms=3_600_000, freshness_ms=0, recent_ms=6 * 3_600_000)
        >>> risk.record_fraud("T1", 30 * 60_000, known_at_ms=2 * 3_600_000)   # bucket 0, known at 2 h
        >>> risk.recent_frauds("T1", 3 * 3_600_000), risk.recent_frauds("T1", 10 * 3_600_000)
        ((1, 7200000), (0, 32400000))
        """
        counts = self.terminals.get(terminal_id)
        if counts is None or not counts.frauds:
            return 0, None
        head = self._head(event_time_ms)
        first, recent_first = head - self.window_buckets, head - self.recent_buckets
        visible_at = event_time_ms - self.freshness_ms
        recent = 0
        latest = _NO_HEAD
        for bucket, known_at in counts.frauds:
            if first < bucket <= head and known_at <= visible_at:
                if bucket > recent_first:
                    recent += 1
                if bucket > latest:
                    latest = bucket
        if latest == _NO_HEAD:
            return 0, None
        return recent, event_time_ms - (latest + 1) * self.bucket_ms

    def expire(self, through_ms: int) -> int:
        """Forget buckets and frauds no window after ``through_ms`` can see; drop empty terminals.

        Engines sharing the table all call this; only the first call past a
        point does the work.
        """
        oldest = self._head(through_ms) - self.window_buckets
        if oldest <= self._expired_through:
            return 0
        self._expired_through = oldest
        dropped = 0
        for terminal_id in list(self.terminals):
            counts = self.terminals[terminal_id]
            buckets = counts.buckets
            if buckets and counts.low <= oldest:
                if oldest - counts.low < len(buckets):
                    for b in range(counts.low, oldest + 1):
                        buckets.pop(b, None)
                else:
                    counts.buckets = buckets = {b: n for b, n in buckets.items() if b > oldest}
                counts.low = oldest + 1
                counts.cache_head = _NO_HEAD
                counts.cache_total = 0
            if counts.frauds:  # in label order, not bucket order: check them all
                counts.frauds = [f for f in counts.frauds if f[0] > oldest]
            if not counts.buckets and not counts.frauds:
                del self.terminals[terminal_id]
                dropped += 1
        return dropped


class PendingLabels:
    """Scored transactions waiting for their label: transaction_id -> (terminal, event time).

    Bounded by count (oldest evicted first) and by event-time age. A plain dict
    holds the entries and a deque their arrival order (ids a label already
    took are skipped when they reach the front), which costs far less memory
    per entry than an OrderedDict's linked nodes.

    >>> pending = PendingLabels(max_entries=2, ttl_ms=10_000)
    >>> pending.add("t1", "T1", 1_000); pending.add("t2", None, 2_000); pending.add("t3", "T9", 3_000)
    >>> pending.evicted, pending.pop("t1"), pending.pop("t3")
    (1, None, ('T9', 3000))
    """

    def __init__(self, max_entries: int, ttl_ms: int) -> None:
        self.max_entries = max_entries
        self.ttl_ms = ttl_ms
        self.entries: dict[str, tuple[str | None, int]] = {}
        self.order: deque[str] = deque()
        self.evicted = 0
        self.expired = 0
        #: Ids taken by a label or added twice: while 0, the dict itself is in arrival order.
        self.irregular = 0

    def add(self, transaction_id: str, terminal_id: str | None, event_time_ms: int) -> None:
        entries = self.entries
        size = len(entries)
        entries[transaction_id] = (terminal_id, event_time_ms)
        if len(entries) == size:
            self.irregular += 1
        order = self.order
        order.append(transaction_id)
        if len(entries) > self.max_entries:
            while order:
                if entries.pop(order.popleft(), None) is not None:
                    self.evicted += 1
                    break
        elif len(order) > 2 * len(entries) + 1024:
            # ids whose labels arrived pile up behind live ones: keep the order list bounded
            self.order = deque(k for k in order if k in entries)

    def pop(self, transaction_id: str) -> tuple[str | None, int] | None:
        entry = self.entries.pop(transaction_id, None)
        if entry is not None:
            self.irregular += 1
        return entry

    def expire(self, watermark_ms: int) -> int:
        """Drop entries older than the TTL behind the watermark.

        Entries are in arrival order, which is event order up to the lateness,
        so the scan stops at the first entry still inside the TTL.
        """
        cutoff = watermark_ms - self.ttl_ms
        entries, order = self.entries, self.order
        dropped = 0
        while order:
            entry = entries.get(order[0])
            if entry is not None:
                if entry[1] >= cutoff:
                    break
                del entries[order[0]]
                dropped += 1
            order.popleft()
        self.expired += dropped
        return dropped

    def copy(self) -> PendingLabels:
        """An independent copy (C-level copies of the dict and the order; cheap enough between batches)."""
        other = PendingLabels(self.max_entries, self.ttl_ms)
        other.entries = dict(self.entries)
        other.order = deque(self.order)
        other.evicted, other.expired, other.irregular = self.evicted, self.expired, self.irregular
        return other

    def columns(self) -> tuple[list[str], list[str | None], list[int]]:
        """Transaction ids, terminals and event times of every entry, oldest first."""
        entries = self.entries
        if self.irregular == 0:
            values = list(entries.values())
            return list(entries), [v[0] for v in values], [v[1] for v in values]
        rows = self.in_order()
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def in_order(self) -> list[tuple[str, str | None, int]]:
        """(transaction_id, terminal, event time) of every entry, oldest first."""
        entries = self.entries
        out: list[tuple[str, str | None, int]] = []
        seen: set[str] = set()
        for transaction_id in self.order:
            entry = entries.get(transaction_id)
            if entry is not None and transaction_id not in seen:
                seen.add(transaction_id)
                out.append((transaction_id, entry[0], entry[1]))
        return out

    def __len__(self) -> int:
        return len(self.entries)
