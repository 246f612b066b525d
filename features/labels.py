"""Labels join the stream in event time: the one rule the producer, the offline builder, the actors and replays share.

A label is *due* once the event-time clock of the stream it joins (the
largest event time seen so far) has reached its ``label_time``. Labels leave a
:class:`LabelQueue` in the order they were queued and never overtake one
another: a label already due waits behind one queued before it that is not, as
a Kafka partition delivers them. Queued in :func:`release_order` (label time,
ties by transaction id: what the producer sends), that is label-time order.

Who applies the rule:

- :func:`pipelines.produce.produce_history` sends each label once the clock of
  the transactions sent passes it (:meth:`LabelQueue.advance` per transaction);
- :func:`interleave` (the offline builder's order of events) does the same with records;
- a scoring partition (:class:`models.pipeline.PartitionPipeline`, used by
  the actors and the backtest) queues the labels it reads and releases them
  after each micro-batch, at its engine's event-time clock (:meth:`LabelQueue.release`).

Pure code: no Kafka, Ray or MLflow, no clock (event time is an argument).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from contracts import Label, Transaction

T = TypeVar("T")

#: The clock before any event: every label time is above it.
NO_CLOCK = -(2**62)
#: Released entries are dropped from the front once there are this many and they are half the queue or more.
_COMPACT_AT = 4_096


def release_order(label_time_ms: npt.ArrayLike, transaction_ids: Sequence[str]) -> npt.NDArray[np.intp]:
    """Positions of labels in the order they are released: by label time, ties by transaction id (stable).

    >>> release_order([20, 20, 10, 40], ["b", "a", "c", "d"]).tolist()
    [2, 1, 0, 3]
    """
    times = np.asarray(label_time_ms, dtype=np.int64)
    by_id = np.array(sorted(range(len(transaction_ids)), key=transaction_ids.__getitem__), dtype=np.intp)
    ordered: npt.NDArray[np.intp] = by_id[np.argsort(times[by_id], kind="stable")]
    return ordered


class LabelQueue(Generic[T]):
    """Labels (any payload: records, row positions) waiting for the event-time clock, released in queue order.

    :meth:`release` hands out, from the head, the labels whose label time the
    given clock has reached, stopping at the first that it has not (a label
    never overtakes one queued before it). :meth:`advance` first moves the
    queue's own clock (:attr:`clock_ms`, the largest event time it was given)
    to an event's time: what a stream read one record at a time does.

    >>> queue = LabelQueue[str]()
    >>> queue.extend([20, 10, 30], ["a", "b", "c"])
    >>> queue.release(15), queue.release(25), len(queue), queue.head_ms  # "b" was due at 15, but queued after "a"
    ([], ['a', 'b'], 1, 30)
    >>> queue.advance(40), queue.advance(35), queue.clock_ms  # the clock never goes back
    (['c'], [], 40)
    """

    __slots__ = ("_due_ms", "_head", "_items", "clock_ms")

    def __init__(self) -> None:
        #: Label time and payload of every queued entry; those before ``_head`` were released.
        self._due_ms: list[int] = []
        self._items: list[T] = []
        self._head = 0
        #: The queue's event-time clock: the largest event time :meth:`advance` or :meth:`tick` was given.
        self.clock_ms = NO_CLOCK

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __iter__(self) -> Iterator[T]:
        """The labels still queued, head first."""
        return islice(self._items, self._head, None)

    @property
    def head_ms(self) -> int | None:
        """The label time of the head (the next label to be released), None when the queue is empty."""
        return self._due_ms[self._head] if self._head < len(self._due_ms) else None

    @property
    def head(self) -> T | None:
        """The next label to be released, None when the queue is empty."""
        return self._items[self._head] if self._head < len(self._items) else None

    def push(self, label_time_ms: int, item: T) -> None:
        """Queue one label behind the others."""
        self._due_ms.append(label_time_ms)
        self._items.append(item)

    def extend(self, label_time_ms: Iterable[int], items: Iterable[T]) -> None:
        """Queue labels behind the others, in the order given (one label time per item)."""
        start = len(self._items)
        self._due_ms.extend(label_time_ms)
        self._items.extend(items)
        if len(self._due_ms) != len(self._items):
            del self._due_ms[start:], self._items[start:]
            raise ValueError("LabelQueue.extend: give one label time per item")

    def release(self, clock_ms: int) -> list[T]:
        """Remove and return the labels due at ``clock_ms`` (label time at most the clock), head first."""
        due_ms, head = self._due_ms, self._head
        end, size = head, len(due_ms)
        while end < size and due_ms[end] <= clock_ms:
            end += 1
        if end == head:
            return []
        released = self._items[head:end]
        if end == size:
            due_ms.clear()
            self._items.clear()
            end = 0
        elif end >= _COMPACT_AT and 2 * end >= size:
            del due_ms[:end], self._items[:end]
            end = 0
        self._head = end
        return released

    def tick(self, event_time_ms: int) -> int:
        """Move the queue's clock to ``event_time_ms`` if that is later; the clock."""
        self.clock_ms = max(self.clock_ms, event_time_ms)
        return self.clock_ms

    def advance(self, event_time_ms: int) -> list[T]:
        """The labels an event at ``event_time_ms`` makes due: :meth:`tick`, then :meth:`release` at the clock."""
        clock = self.clock_ms
        if event_time_ms > clock:  # tick, inline: called once per event by the producer and builder
            self.clock_ms = clock = event_time_ms
        head = self._head
        if head < len(self._due_ms) and self._due_ms[head] <= clock:
            return self.release(clock)
        return []

    def release_all(self) -> list[T]:
        """Remove and return every label still queued (the stream ended), head first."""
        released = self._items[self._head :]
        self.clear()
        return released

    def clear(self) -> None:
        """Drop every queued label (the clock stays)."""
        self._due_ms.clear()
        self._items.clear()
        self._head = 0


def interleave(transactions: Iterable[Transaction], labels: Iterable[Label]) -> Iterator[Transaction | Label]:
    """Transactions in the given order, each followed by the labels its event time releases.

    Labels are queued in :func:`release_order` and released once the largest
    event time so far reaches their ``label_time`` (:meth:`LabelQueue.advance`);
    labels still pending at the end follow the last transaction.

    >>> T = 1_767_225_600_000
    >>> txs = [Transaction(transaction_id=f"t{i}", account_id="a", event_time=T + i, amount=1.0) for i in range(3)]
    >>> lab = Label(transaction_id="t0", account_id="a", label="fraud", label_time=T + 1)
    >>> [getattr(e, "amount", "label") for e in interleave(txs, [lab])]
    [1.0, 1.0, 'label', 1.0]
    """
    pending = list(labels)
    times: list[int] = [label.label_time for label in pending]
    order = release_order(times, [label.transaction_id for label in pending]).tolist()
    queue: LabelQueue[Label] = LabelQueue()
    queue.extend([times[i] for i in order], [pending[i] for i in order])
    advance = queue.advance
    for tx in transactions:
        yield tx
        due = advance(tx.event_time)
        if due:
            yield from due
    yield from queue.release_all()
