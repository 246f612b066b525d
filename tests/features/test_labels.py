"""features/labels.py: the one rule by which labels join the stream in event time (producer, builder, partitions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Label, Transaction
from features.labels import NO_CLOCK, LabelQueue, interleave, release_order

T0 = 1_767_225_600_000


def _queue(times: list[int], items: list[str] | None = None) -> LabelQueue[str]:
    queue: LabelQueue[str] = LabelQueue()
    queue.extend(times, items if items is not None else [f"l{i}" for i in range(len(times))])
    return queue


def test_columns_in_release_order_come_out_when_the_clock_reaches_them() -> None:
    """What the backtest does with the labelled rows of a partition: ties by transaction id, then by position."""
    ids, fraud, times = ["b", "a", "c", "d"], [True, False, False, True], np.array([20, 20, 10, 40])
    order = release_order(times, ids)
    queue: LabelQueue[int] = LabelQueue()
    queue.extend(times[order].tolist(), order.tolist())

    def due(clock_ms: int) -> tuple[list[str], list[bool]]:
        rows = queue.advance(clock_ms)
        return [ids[i] for i in rows], [fraud[i] for i in rows]

    assert due(9) == ([], [])
    assert due(20) == (["c", "a", "b"], [False, False, True])
    assert due(30) == ([], []) and due(40) == (["d"], [True]) and due(1_000) == ([], [])


def test_release_order_is_label_time_then_transaction_id_and_stable_for_full_ties() -> None:
    times = [30, 10, 30, 10, 30]
    ids = ["x", "b", "a", "a", "a"]
    assert release_order(times, ids).tolist() == [3, 1, 2, 4, 0]
    assert release_order([], []).tolist() == []


def test_a_label_is_due_at_its_own_time_and_ties_leave_together() -> None:
    queue = _queue([10, 10, 10, 11])
    assert queue.release(9) == []
    assert queue.release(10) == ["l0", "l1", "l2"]  # label_time <= clock: due at exactly its time
    assert len(queue) == 1 and queue.head_ms == 11 and queue.head == "l3"


def test_out_of_order_labels_never_overtake_the_one_before_them() -> None:
    """In offset order, as a Kafka partition delivers them: one due early waits behind one due later."""
    queue = _queue([50, 20, 30, 60])
    assert queue.release(40) == []  # l1 and l2 are due, but l0 is not
    assert queue.head_ms == 50 and len(queue) == 4
    assert queue.release(55) == ["l0", "l1", "l2"]
    assert list(queue) == ["l3"]


def test_an_explicit_clock_may_go_back_but_advance_never_does() -> None:
    queue = _queue([10, 20, 30])
    assert queue.advance(25) == ["l0", "l1"] and queue.clock_ms == 25
    assert queue.advance(5) == [] and queue.clock_ms == 25
    queue.push(15, "late")  # queued behind l2 (30): waits for it
    assert queue.release(20) == [] and queue.clock_ms == 25  # release never moves the queue's clock
    assert queue.advance(30) == ["l2", "late"]


def test_labels_due_at_the_end_follow_the_last_transaction() -> None:
    queue = _queue([10, 99, 98])
    assert queue.advance(50) == ["l0"]
    assert queue.release_all() == ["l1", "l2"]
    assert len(queue) == 0 and queue.head_ms is None and queue.head is None and queue.release_all() == []


def test_clear_drops_the_labels_and_keeps_the_clock() -> None:
    queue = _queue([10, 20])
    queue.tick(15)
    queue.clear()
    assert len(queue) == 0 and list(queue) == [] and queue.clock_ms == 15
    queue.push(12, "again")
    assert queue.advance(0) == ["again"]


def test_extend_refuses_times_and_items_of_different_lengths() -> None:
    queue = _queue([1])
    with pytest.raises(ValueError, match="one label time per item"):
        queue.extend([2, 3], ["x"])
    assert list(queue) == ["l0"] and queue.head_ms == 1


def test_a_long_queue_is_compacted_without_losing_its_order() -> None:
    times = list(range(20_000))
    queue = _queue(times)
    released: list[str] = []
    for clock in range(0, 20_000, 997):
        released += queue.release(clock)
        assert len(queue) == 20_000 - len(released)
        assert queue.head_ms == (clock + 1 if clock + 1 < 20_000 else None)
    released += queue.release_all()
    assert released == [f"l{i}" for i in times]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 50), max_size=30),
    st.lists(st.lists(st.integers(-5, 60), max_size=6), max_size=8),
)
def test_release_is_the_longest_due_prefix(times: list[int], clocks: list[list[int]]) -> None:
    """Against the rule written out: from the head, take labels while the clock has reached them."""
    queue = _queue(times)
    pending = list(enumerate(times))
    for group in clocks:
        for clock in group:
            expected = []
            while pending and pending[0][1] <= clock:
                expected.append(f"l{pending.pop(0)[0]}")
            assert queue.release(clock) == expected
        assert [f"l{i}" for i, _ in pending] == list(queue)
    assert queue.clock_ms == NO_CLOCK


# ------------------------------------------------------------------------------------------ interleave


def _tx(event_time: int, transaction_id: str) -> Transaction:
    return Transaction(transaction_id=transaction_id, account_id="A1", event_time=event_time, amount=1.0)


def _label(transaction_id: str, label_time: int, label: str = "fraud") -> Label:
    return Label(transaction_id=transaction_id, account_id="A1", label=label, label_time=label_time)  # type: ignore[arg-type]


def test_interleave_releases_ties_by_transaction_id_after_the_transaction_that_reaches_them() -> None:
    txs = [_tx(T0, "t0"), _tx(T0 + 5, "t5"), _tx(T0 + 3, "t3")]
    labels = [_label("z", T0 + 5), _label("a", T0 + 5), _label("m", T0 + 4), _label("end", T0 + 6)]
    order = [e.transaction_id + (":label" if isinstance(e, Label) else "") for e in interleave(txs, labels)]
    assert order == ["t0", "t5", "m:label", "a:label", "z:label", "t3", "end:label"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=25), st.lists(st.tuples(st.integers(0, 50), st.sampled_from("abc")),
                                                           max_size=15))
def test_interleave_puts_each_label_after_the_first_transaction_whose_clock_reaches_it(
    event_offsets: list[int], label_specs: list[tuple[int, str]]
) -> None:
    txs = [_tx(T0 + t, f"t{i}") for i, t in enumerate(event_offsets)]
    labels = [_label(tid, T0 + t) for t, tid in label_specs]
    events = list(interleave(txs, labels))
    assert [e for e in events if isinstance(e, Transaction)] == txs
    released = [e for e in events if isinstance(e, Label)]
    assert released == sorted(labels, key=lambda lab: (lab.label_time, lab.transaction_id))  # type: ignore[arg-type, return-value]
    clock, previous = NO_CLOCK, NO_CLOCK  # the clock after the latest transaction, and before it
    for position, event in enumerate(events):
        if isinstance(event, Transaction):
            previous, clock = clock, max(clock, event.event_time)  # type: ignore[call-overload]
        elif event.label_time <= clock:  # type: ignore[operator]
            assert previous < event.label_time  # right after the first transaction whose clock reached it
        else:  # never reached: pending at the end, after every transaction
            assert not any(isinstance(later, Transaction) for later in events[position:])
