"""Sliding event-time windows over one entity's events.

An :class:`EventWindow` keeps the entity's events sorted by event time with a
prefix sum of amounts, so every window aggregate is two binary searches and a
subtraction, whatever the window length, and an out-of-order event is inserted
where it belongs. Expiry follows the watermark, never the wall clock.

>>> window = EventWindow()
>>> for t, amount in [(1_000, 10.0), (5_000, 20.0), (3_000, 5.0)]:   # one event out of order
...     end = window.insert(t, amount)
>>> window.times
[1000, 3000, 5000]
>>> window.aggregate(5_000, 3_000)     # (count, sum) of events in (2000, 5000]
(2, 25.0)
>>> window.expire(through=1_000)      # drop events at or before 1000 (lazily, in chunks)
0
>>> window.expire(through=1_000, min_chunk=1)
1
>>> window.aggregate(5_000, 10_000)
(2, 25.0)
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

#: Steps a window start walks from its hint before a binary search takes over.
_MAX_STEPS = 8


class EventWindow:
    """Events of one entity in event-time order: times (epoch ms), amounts, prefix sums.

    ``prefix[k]`` is always the left-to-right sum of ``amounts[:k]`` (recomputed
    after an insertion in the middle or an expiry), so results do not depend on
    how the state got there: a restored checkpoint computes the same values.
    """

    __slots__ = ("amounts", "prefix", "starts", "times")

    def __init__(self, times: list[int] | None = None, amounts: list[float] | None = None) -> None:
        self.times: list[int] = times if times is not None else []
        self.amounts: list[float] = amounts if amounts is not None else []
        self.prefix: list[float] = list(accumulate(self.amounts, initial=0.0))
        #: Where each window started at the previous query: a hint, never trusted.
        self.starts: list[int] = []

    def __len__(self) -> int:
        return len(self.times)

    def insert(self, event_time_ms: int, amount: float) -> int:
        """Add an event; return the index just past it (the end of windows ending at it)."""
        times = self.times
        if not times or event_time_ms >= times[-1]:
            times.append(event_time_ms)
            self.amounts.append(amount)
            self.prefix.append(self.prefix[-1] + amount)
            return len(times)
        index = bisect_right(times, event_time_ms)
        times.insert(index, event_time_ms)
        self.amounts.insert(index, amount)
        self.prefix[index + 1 :] = list(accumulate(self.amounts[index:], initial=self.prefix[index]))[1:]
        return index + 1

    def end_index(self, event_time_ms: int) -> int:
        """Index just past the last event at or before ``event_time_ms``."""
        return bisect_right(self.times, event_time_ms)

    def aggregate(self, event_time_ms: int, window_ms: int, end: int | None = None) -> tuple[int, float]:
        """(count, sum) of events in ``(event_time_ms - window_ms, event_time_ms]``."""
        hi = self.end_index(event_time_ms) if end is None else end
        lo = bisect_right(self.times, event_time_ms - window_ms, 0, hi)
        return hi - lo, self.prefix[hi] - self.prefix[lo]

    def aggregates_into(
        self, event_time_ms: int, windows_ms: tuple[int, ...], end: int, out: list[float], floor_ms: int = -(2**62)
    ) -> None:
        """Append count, sum and mean for each window (ascending) to ``out``.

        Only events after ``floor_ms`` count: the retention horizon, behind which
        expiry may or may not have dropped events yet (it works in chunks), so that
        a late event's windows never depend on expiry timing.

        Each window's start is found from where it was at the previous query
        (a hint: a few steps forward or back, else a binary search), so a new
        in-order event costs about one step per window whatever its length.
        """
        times, prefix, starts = self.times, self.prefix, self.starts
        top = prefix[end]
        if len(starts) != len(windows_ms):
            starts = self.starts = [end] * len(windows_ms)
        for w in range(len(windows_ms)):
            threshold = event_time_ms - windows_ms[w]
            if threshold < floor_ms:
                threshold = floor_ms
            lo = starts[w]
            if lo > end:
                lo = end
            steps = 0
            while lo < end and times[lo] <= threshold:
                lo += 1
                steps += 1
                if steps == _MAX_STEPS:
                    lo = bisect_right(times, threshold, lo, end)
                    break
            steps = 0
            while lo > 0 and times[lo - 1] > threshold:
                lo -= 1
                steps += 1
                if steps == _MAX_STEPS:
                    lo = bisect_right(times, threshold, 0, lo)
                    break
            starts[w] = lo
            count = end - lo
            total = top - prefix[lo]
            out.append(float(count))
            out.append(total)
            out.append(total / count if count else 0.0)

    def previous_time(self, end: int) -> int | None:
        """Event time of the event before index ``end - 1`` (the one just inserted)."""
        return self.times[end - 2] if end >= 2 else None

    def expire(self, through: int, min_chunk: int = 8) -> int:
        """Drop events at or before ``through`` once at least ``min_chunk`` have expired.

        Expired events are outside every future window already; dropping them in
        chunks keeps the prefix recomputation off most events. Returns the number dropped.
        """
        times = self.times
        if not times or times[0] > through:
            return 0
        count = bisect_right(times, through)
        if count < min_chunk and count < len(times):
            return 0
        return self.drop_oldest(count)

    def drop_oldest(self, count: int) -> int:
        """Drop the ``count`` oldest events (bounded memory); returns the number dropped."""
        count = min(count, len(self.times))
        if count <= 0:
            return 0
        del self.times[:count]
        del self.amounts[:count]
        self.prefix = list(accumulate(self.amounts, initial=0.0))
        starts = self.starts
        for w in range(len(starts)):
            starts[w] = starts[w] - count if starts[w] > count else 0
        return count
