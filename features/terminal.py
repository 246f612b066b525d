"""Entity risk: transactions and known frauds at a terminal (or merchant, device) over windows.

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

The same table keeps, per key, transactions per *day* for the delay-aware
windows (Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud
Detection*, ch. 3): counts and known-fraud ratios over the last 1, 7, 30
complete days ending ``delay_ms`` before the query time, the span whose labels
are already in. Other entities than terminals (merchants, devices) are keys of
their own namespace (:func:`entity_key`) and have only the daily counts.

>>> D = 86_400_000
>>> risk = TerminalRisk(window_ms=D, bucket_ms=3_600_000, freshness_ms=0, day_windows=(1, 7), delay_ms=2 * D)
>>> for day in (0, 1, 1, 5):
...     risk.record_day("T1", day * D + 1)
>>> risk.record_fraud("T1", 1 * D + 1, known_at_ms=3 * D)
>>> out: list[float] = []
>>> risk.delayed_into("T1", 3 * D + 5, out)    # days [..., 0]: complete two days before day 3
>>> out
[1.0, 0.0, 1.0, 0.0]
>>> out.clear(); risk.delayed_into("T1", 4 * D + 5, out); out   # day 1: 2 payments, 1 known fraud
[2.0, 0.5, 3.0, 0.3333333333333333]
"""

from __future__ import annotations

from collections import deque

_NO_HEAD = -(2**62)
_NO_LOW = 2**62
_DAY_MS = 86_400_000
#: Separates an entity kind from its id in a table key (ids may hold any printable character).
KEY_SEPARATOR = "\x1f"


def entity_key(kind: str, entity_id: str) -> str:
    """The table key of a non-terminal entity: terminals are keyed by their id alone.

    >>> entity_key("merchant", "M7")
    'merchant\\x1fM7'
    """
    return kind + KEY_SEPARATOR + entity_id


def _values(table: dict[int, int] | None, keys: list[int]) -> list[tuple[int, int]]:
    """(key, value) of the given keys of a bucket or day table (0 where none, or no table)."""
    if table is None:
        return [(k, 0) for k in keys]
    get = table.get
    return [(k, get(k, 0)) for k in keys]


class _TerminalCounts:
    __slots__ = ("buckets", "cache_head", "cache_total", "day_head", "day_row", "day_totals", "days", "frauds", "low")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        #: No bucket is below this one (the oldest recorded, or where expiry stopped).
        self.low = _NO_LOW
        #: (bucket of the fraudulent transaction, when its label became known)
        self.frauds: list[tuple[int, int]] = []
        self.cache_head = _NO_HEAD
        self.cache_total = 0
        #: day -> transactions (the delay-aware windows)
        self.days: dict[int, int] = {}
        #: The last day of the cached window totals (``day_totals``, one per day window).
        self.day_head = _NO_HEAD
        self.day_totals: list[int] = []
        #: The features of those totals without known frauds: (count, 0.0) per window.
        self.day_row: list[float] = []


class TerminalRisk:
    """Per-terminal transaction counts in event-time buckets and known frauds."""

    def __init__(
        self,
        window_ms: int,
        bucket_ms: int,
        freshness_ms: int,
        recent_ms: int | None = None,
        day_windows: tuple[int, ...] = (),
        delay_ms: int = 0,
    ) -> None:
        self.window_ms = window_ms
        self.bucket_ms = bucket_ms
        self.freshness_ms = freshness_ms
        self.window_buckets = max(1, window_ms // bucket_ms)
        #: The short window of :meth:`recent_frauds` (at most the whole window).
        self.recent_buckets = min(self.window_buckets, max(1, (recent_ms or window_ms) // bucket_ms))
        #: Delay-aware windows in days, ascending, ending ``delay_ms`` before the query time.
        self.day_windows: tuple[int, ...] = tuple(sorted(day_windows))
        self.day_span: int = self.day_windows[-1] if self.day_windows else 0
        self._day_zeros: list[float] = [0.0] * (2 * len(self.day_windows))
        self.delay_ms = delay_ms
        self.terminals: dict[str, _TerminalCounts] = {}
        self._expired_through = -(2**62)
        #: Publishing mode (see :meth:`publish_updates`): (terminal, bucket, count),
        #: (terminal, bucket, known_at) and (key, day, count) collected instead of applied.
        self.outbox: list[tuple[str, int, int]] | None = None
        self.fraud_outbox: list[tuple[str, int, int]] = []
        self.day_outbox: list[tuple[str, int, int]] = []

    def publish_updates(self) -> None:
        """Collect updates for a keyed stage instead of applying them.

        A scoring actor's engines read a broadcast table that the stage keeps
        complete; what they record goes out through the outbox (see
        :meth:`take_updates`) and comes back through :meth:`set_buckets`.
        """
        self.outbox = []

    def take_updates(
        self,
    ) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]], list[tuple[str, int, int]]]:
        """The collected (transactions, frauds, days) updates, emptying the outbox."""
        outbox, frauds, days = self.outbox or [], self.fraud_outbox, self.day_outbox
        if self.outbox is not None:
            self.outbox = []
        self.fraud_outbox = []
        self.day_outbox = []
        return outbox, frauds, days

    def bucket_values(self, terminal_id: str, buckets: list[int]) -> list[tuple[int, int]]:
        """(bucket, transactions) of the given buckets of a terminal (0 where none)."""
        counts = self.terminals.get(terminal_id)
        return _values(counts.buckets if counts is not None else None, buckets)

    def day_values(self, key: str, days: list[int]) -> list[tuple[int, int]]:
        """(day, transactions) of the given days of a key (0 where none)."""
        counts = self.terminals.get(key)
        return _values(counts.days if counts is not None else None, days)

    def frauds_of(self, terminal_id: str) -> list[tuple[int, int]]:
        """A terminal's frauds as (bucket, known_at), in the order recorded."""
        counts = self.terminals.get(terminal_id)
        return list(counts.frauds) if counts is not None else []

    def set_buckets(
        self,
        terminal_id: str,
        buckets: list[tuple[int, int]],
        frauds: list[tuple[int, int]] | None,
        days: list[tuple[int, int]] | None = None,
    ) -> None:
        """Set the given buckets' (and days') counts (0 removes one) and, unless None, the whole fraud list.

        Setting replaces, so applying the same update twice changes nothing (a
        broadcast update read again after a restart).
        """
        counts = self.terminals.get(terminal_id)
        if counts is None:
            if not buckets and not frauds and not days:
                return
            counts = self.terminals[terminal_id] = _TerminalCounts()
        if days:
            self._set_days(counts, days)
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
        if not table and not counts.frauds and not counts.days:
            del self.terminals[terminal_id]

    @staticmethod
    def _set_days(counts: _TerminalCounts, days: list[tuple[int, int]]) -> None:
        table = counts.days
        for day, value in days:
            if value:
                table[day] = value
            else:
                table.pop(day, None)
            if day <= counts.day_head:  # a day the cached totals include (or will slide over)
                counts.day_head = _NO_HEAD

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

    def record_day(self, key: str, event_time_ms: int, count: int = 1) -> None:
        """Count a transaction of the key on its day (the delay-aware windows)."""
        self._count_day(key, None, event_time_ms, count)

    def _count_day(self, key: str, counts: _TerminalCounts | None, event_time_ms: int, count: int) -> None:
        """:meth:`record_day`, given the key's entry when the caller looked it up already."""
        day = event_time_ms // _DAY_MS
        if self.outbox is not None:
            self.day_outbox.append((key, day, count))
            return
        if counts is None:
            counts = self.terminals.get(key)
            if counts is None:
                counts = self.terminals[key] = _TerminalCounts()
        counts.days[day] = counts.days.get(day, 0) + count
        if day <= counts.day_head:
            counts.day_head = _NO_HEAD

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
            if step > 0 and cached != _NO_HEAD and 2 * step < len(buckets):
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

    def _day_head(self, event_time_ms: int) -> int:
        """The last complete day the delay-aware windows see at ``event_time_ms``."""
        return (event_time_ms - self.delay_ms - self.freshness_ms) // _DAY_MS - 1

    def delayed_into(self, key: str, event_time_ms: int, out: list[float], record: bool = False) -> None:
        """Append (transactions, known-fraud ratio) of each day window ending ``delay_ms`` before t;
        then, when ``record``, count this transaction on its day (one lookup for both).

        A window of w days holds the w complete days up to the last one closed
        by ``t - delay - freshness``; a fraud counts when its transaction's day
        is in the window and its label had arrived by ``t - freshness``. The
        totals are cached per key until the day moves (or an update touches a
        cached day).
        """
        counts = self.terminals.get(key)
        if counts is None or not counts.days:
            out.extend(self._day_zeros)
            if record:
                self._count_day(key, counts, event_time_ms, 1)
            return
        head = self._day_head(event_time_ms)
        if counts.day_head != head:
            totals = counts.day_totals = self._window_totals(counts, head)
            row: list[float] = []
            for n in totals:
                row.append(float(n))
                row.append(0.0)
            counts.day_row = row
            counts.day_head = head
        if not counts.frauds:
            out.extend(counts.day_row)
        else:
            totals = counts.day_totals
            known = self._known_frauds(counts.frauds, head, event_time_ms - self.freshness_ms)
            for i in range(len(totals)):
                n = totals[i]
                out.append(float(n))
                out.append(known[i] / n if n else 0.0)
        if record:
            self._count_day(key, counts, event_time_ms, 1)

    def _window_totals(self, counts: _TerminalCounts, head: int) -> list[int]:
        """Transactions per day window ending at day ``head``: one pass over a sparse key's days,
        else slid from the cached totals (two lookups per window and day moved), else summed."""
        windows = self.day_windows
        days = counts.days
        totals: list[int]
        if len(days) <= 2 * len(windows) + 2:
            totals = [0] * len(windows)
            for day, n in days.items():
                age = head - day
                if age >= 0:
                    for i in range(len(windows)):
                        if age < windows[i]:
                            totals[i] += n
            return totals
        get = days.get
        old = counts.day_head
        step = head - old
        slide = old != _NO_HEAD and step > 0
        entering = 0
        if slide:
            for day in range(old + 1, head + 1):
                entering += get(day, 0)
        totals = []
        for i in range(len(windows)):
            w = windows[i]
            total = 0
            if slide and step < w:  # the cached total, plus the days entering, minus those leaving
                total = counts.day_totals[i] + entering
                for day in range(old - w + 1, head - w + 1):
                    total -= get(day, 0)
            else:
                for day in range(head - w + 1, head + 1):
                    total += get(day, 0)
            totals.append(total)
        return totals

    def _known_frauds(self, frauds: list[tuple[int, int]], head: int, visible_at: int) -> list[int]:
        """Per day window, the frauds of its days whose label had arrived by ``visible_at``."""
        windows = self.day_windows
        known = [0] * len(windows)
        per_day = _DAY_MS // self.bucket_ms if _DAY_MS % self.bucket_ms == 0 else 0
        for bucket, known_at in frauds:
            if known_at > visible_at:
                continue
            day = bucket // per_day if per_day else bucket * self.bucket_ms // _DAY_MS
            age = head - day
            if age < 0:
                continue
            for i in range(len(windows)):
                if age < windows[i]:
                    known[i] += 1
        return known

    def horizon(self, through_ms: int) -> tuple[int, int, int]:
        """(bucket, day, fraud bucket) at or before which no query after ``through_ms`` looks: what expiry
        drops. A fraud is kept while an hourly or a daily window can see its bucket."""
        oldest_bucket = self._head(through_ms) - self.window_buckets
        if not self.day_windows:
            return oldest_bucket, _NO_HEAD, oldest_bucket
        oldest_day = self._day_head(through_ms) - self.day_span
        return oldest_bucket, oldest_day, min(oldest_bucket, ((oldest_day + 1) * _DAY_MS) // self.bucket_ms - 1)

    def expire(self, through_ms: int) -> int:
        """Forget buckets, days and frauds no window after ``through_ms`` can see; drop empty terminals.

        Engines sharing the table all call this; only the first call past a
        point does the work.
        """
        oldest, oldest_day, fraud_oldest = self.horizon(through_ms)
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
            if counts.days and min(counts.days) <= oldest_day:
                counts.days = {d: n for d, n in counts.days.items() if d > oldest_day}
                counts.day_head = _NO_HEAD
            if counts.frauds:  # in label order, not bucket order: check them all
                counts.frauds = [f for f in counts.frauds if f[0] > fraud_oldest]
            if not counts.buckets and not counts.frauds and not counts.days:
                del self.terminals[terminal_id]
                dropped += 1
        return dropped


class PendingLabels:
    """Scored transactions waiting for their label: transaction_id -> (entity keys, event time).

    The keys are where the transaction's fraud will count: its terminal and
    the keys of the other entities with delay-aware windows (None for a late
    transaction, which counted nowhere).

    Bounded by count (oldest evicted first) and by event-time age. A plain dict
    holds the entries and a deque their arrival order (ids a label already
    took are skipped when they reach the front), which costs far less memory
    per entry than an OrderedDict's linked nodes.

    >>> pending = PendingLabels(max_entries=2, ttl_ms=10_000)
    >>> pending.add("t1", ("T1",), 1_000); pending.add("t2", None, 2_000); pending.add("t3", ("T9",), 3_000)
    >>> pending.evicted, pending.pop("t1"), pending.pop("t3")
    (1, None, (('T9',), 3000))
    """

    def __init__(self, max_entries: int, ttl_ms: int) -> None:
        self.max_entries = max_entries
        self.ttl_ms = ttl_ms
        self.entries: dict[str, tuple[tuple[str, ...] | None, int]] = {}
        self.order: deque[str] = deque()
        self.evicted = 0
        self.expired = 0
        #: Ids taken by a label or added twice: while 0, the dict itself is in arrival order.
        self.irregular = 0

    def add(self, transaction_id: str, keys: tuple[str, ...] | None, event_time_ms: int) -> None:
        entries = self.entries
        size = len(entries)
        entries[transaction_id] = (keys, event_time_ms)
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

    def pop(self, transaction_id: str) -> tuple[tuple[str, ...] | None, int] | None:
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

    def columns(self) -> tuple[list[str], list[tuple[str, ...] | None], list[int]]:
        """Transaction ids, entity keys and event times of every entry, oldest first."""
        entries = self.entries
        if self.irregular == 0:
            values = list(entries.values())
            return list(entries), [v[0] for v in values], [v[1] for v in values]
        rows = self.in_order()
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def in_order(self) -> list[tuple[str, tuple[str, ...] | None, int]]:
        """(transaction_id, entity keys, event time) of every entry, oldest first."""
        entries = self.entries
        out: list[tuple[str, tuple[str, ...] | None, int]] = []
        seen: set[str] = set()
        for transaction_id in self.order:
            entry = entries.get(transaction_id)
            if entry is not None and transaction_id not in seen:
                seen.add(transaction_id)
                out.append((transaction_id, entry[0], entry[1]))
        return out

    def __len__(self) -> int:
        return len(self.entries)
