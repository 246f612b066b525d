"""Terminal risk (complete buckets, freshness, known frauds, order independence, expiry),
pending labels, and the engine's label join."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from configs import FeatureSettings
from contracts import Label
from features.offline import PartitionedFeatures

T0 = 1_767_225_600_000
SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000

_layouts = st.sampled_from(
    [
        (4 * HOUR, HOUR, MINUTE),  # the module docstring's table
        (7 * DAY, HOUR, MINUTE),  # the shipped defaults
        (10 * MINUTE, MINUTE, 0),  # no freshness margin
        (90 * MINUTE, 20 * MINUTE, 7 * MINUTE),  # freshness not a divisor of the bucket
        (25 * MINUTE, 10 * MINUTE, 30 * SECOND),  # window not a multiple of the bucket
    ]
)
_terminal = st.sampled_from(("T1", "T2", "T3"))
_time = st.integers(T0, T0 + 2 * DAY)
_update = st.one_of(
    st.tuples(st.just("tx"), _terminal, _time, st.integers(1, 3)),
    st.tuples(st.just("fraud"), _terminal, _time, st.integers(0, 12 * HOUR)),  # known this long after
)


def _reference(updates, terminal: str, t: int, window_ms: int, bucket_ms: int, freshness_ms: int) -> tuple[int, int]:
    """Definition: buckets whose close time lies in (t - freshness - window, t - freshness],
    window rounded down to whole buckets (at least one); frauds also known by t - freshness."""
    span = max(1, window_ms // bucket_ms) * bucket_ms
    edge = t - freshness_ms

    def visible(event_time: int) -> bool:
        closes = (event_time // bucket_ms + 1) * bucket_ms
        return edge - span < closes <= edge

    transactions = sum(n for kind, term, time, n in updates if kind == "tx" and term == terminal and visible(time))
    frauds = sum(
        1 for kind, term, time, delay in updates
        if kind == "fraud" and term == terminal and visible(time) and time + delay <= edge
    )
    return transactions, frauds


def _apply(risk, update) -> None:
    kind, terminal, time, extra = update
    if kind == "tx":
        risk.record_transaction(terminal, time, extra)
    else:
        risk.record_fraud(terminal, time, known_at_ms=time + extra)


@given(
    layout=_layouts,
    updates=st.lists(_update, max_size=60),
    queries=st.lists(st.tuples(_terminal, st.integers(T0, T0 + 3 * DAY)), min_size=1, max_size=10),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=150, deadline=None)
def test_stats_follow_the_complete_bucket_rule_whatever_the_update_order(impl, layout, updates, queries, seed) -> None:
    window_ms, bucket_ms, freshness_ms = layout
    in_order = impl.terminal.TerminalRisk(window_ms, bucket_ms, freshness_ms)
    for update in updates:
        _apply(in_order, update)
    shuffled_updates = list(updates)
    random.Random(seed).shuffle(shuffled_updates)
    shuffled = impl.terminal.TerminalRisk(window_ms, bucket_ms, freshness_ms)
    rng = random.Random(seed + 1)
    for update in shuffled_updates:  # with queries in between, so the cached totals get used and updated
        if rng.random() < 0.3:
            terminal, t = queries[rng.randrange(len(queries))]
            shuffled.stats(terminal, t)
        _apply(shuffled, update)
    for terminal, t in queries:
        expected = _reference(updates, terminal, t, window_ms, bucket_ms, freshness_ms)
        assert in_order.stats(terminal, t) == expected
        assert shuffled.stats(terminal, t) == expected


@given(
    layout=_layouts,
    updates=st.lists(_update, max_size=60),
    through=st.integers(T0, T0 + 3 * DAY),
    later=st.lists(st.tuples(_terminal, st.integers(0, 2 * DAY)), min_size=1, max_size=10),
)
@settings(max_examples=150, deadline=None)
def test_expire_drops_nothing_a_later_query_can_see(impl, layout, updates, through, later) -> None:
    window_ms, bucket_ms, freshness_ms = layout
    kept = impl.terminal.TerminalRisk(window_ms, bucket_ms, freshness_ms)
    expired = impl.terminal.TerminalRisk(window_ms, bucket_ms, freshness_ms)
    for update in updates:
        _apply(kept, update)
        _apply(expired, update)
    for terminal, offset in later[:3]:
        expired.stats(terminal, through + offset)  # warm the cache before expiring
    dropped = expired.expire(through)
    for terminal, offset in later:
        assert expired.stats(terminal, through + offset) == kept.stats(terminal, through + offset)
    # and memory is bounded: every bucket left is still visible to some query at or after `through`
    # (frauds: see test_expire_forgets_old_frauds_whatever_their_label_order)
    span = max(1, window_ms // bucket_ms) * bucket_ms
    for counts in expired.terminals.values():
        assert counts.buckets or counts.frauds
        for bucket in counts.buckets:
            assert (bucket + 1) * bucket_ms > through - freshness_ms - span
    assert dropped == len(kept.terminals) - len(expired.terminals)


def _reference_recent(updates, terminal: str, t: int, layout, recent_ms: int) -> tuple[int, int | None]:
    """Definition: known frauds (as in :func:`_reference`) whose bucket is among the last
    ``recent_ms`` of the visible ones (at least one bucket, at most the window); the age is
    t minus the close time of the latest visible fraud's bucket."""
    window_ms, bucket_ms, freshness_ms = layout
    window_buckets = max(1, window_ms // bucket_ms)
    recent_buckets = min(window_buckets, max(1, recent_ms // bucket_ms))
    edge = t - freshness_ms
    closes = [
        (time // bucket_ms + 1) * bucket_ms
        for kind, term, time, delay in updates
        if kind == "fraud" and term == terminal and time + delay <= edge
    ]
    visible = [c for c in closes if edge - window_buckets * bucket_ms < c <= edge]
    if not visible:
        return 0, None
    recent = sum(1 for c in visible if edge - recent_buckets * bucket_ms < c)
    return recent, t - max(visible)


@given(
    layout=_layouts,
    recent_ms=st.sampled_from((SECOND, 10 * MINUTE, HOUR, DAY, 30 * DAY)),
    updates=st.lists(_update, max_size=60),
    queries=st.lists(st.tuples(_terminal, st.integers(T0, T0 + 3 * DAY)), min_size=1, max_size=10),
)
@settings(max_examples=150, deadline=None)
def test_recent_frauds_count_the_short_window_and_age_the_latest(impl, layout, recent_ms, updates, queries) -> None:
    risk = impl.terminal.TerminalRisk(*layout, recent_ms=recent_ms)
    for update in updates:
        _apply(risk, update)
    for terminal, t in queries:
        assert risk.recent_frauds(terminal, t) == _reference_recent(updates, terminal, t, layout, recent_ms)
        # the short window is part of the long one
        assert risk.recent_frauds(terminal, t)[0] <= risk.stats(terminal, t)[1]


def test_late_chargeback_does_not_mark_the_terminal_now(impl) -> None:
    risk = impl.terminal.TerminalRisk(window_ms=7 * DAY, bucket_ms=HOUR, freshness_ms=MINUTE, recent_ms=DAY)
    risk.record_fraud("T1", T0, known_at_ms=T0 + 3 * DAY)  # charged back three days later
    assert risk.recent_frauds("T1", T0 + 3 * DAY + HOUR) == (0, 3 * DAY)  # known, but paid three days ago
    assert risk.stats("T1", T0 + 3 * DAY + HOUR) == (0, 1)
    risk.record_fraud("T1", T0 + 3 * DAY, known_at_ms=T0 + 3 * DAY + 2 * HOUR)  # a call the same morning
    assert risk.recent_frauds("T1", T0 + 3 * DAY + 3 * HOUR) == (1, 2 * HOUR)


def test_expire_forgets_old_frauds_whatever_their_label_order(impl) -> None:
    risk = impl.terminal.TerminalRisk(window_ms=4 * HOUR, bucket_ms=HOUR, freshness_ms=MINUTE)
    risk.record_fraud("T1", T0 + 10 * HOUR, known_at_ms=T0 + 10 * HOUR + MINUTE)  # a quick report
    risk.record_fraud("T1", T0 + HOUR, known_at_ms=T0 + 11 * HOUR)  # a chargeback for an older one
    risk.expire(T0 + 10 * HOUR)  # no query at or after this sees bucket 1 (window: 4 buckets)
    assert [bucket for bucket, _ in risk.terminals["T1"].frauds] == [(T0 + 10 * HOUR) // HOUR]


def test_docstring_table_hand_built(impl) -> None:
    risk = impl.terminal.TerminalRisk(window_ms=4 * HOUR, bucket_ms=HOUR, freshness_ms=MINUTE)
    for minute in (5, 20, 70):
        risk.record_transaction("T1", T0 + minute * MINUTE)
    risk.record_fraud("T1", T0 + 20 * MINUTE, known_at_ms=T0 + 90 * MINUTE)
    assert risk.stats("T1", T0 + HOUR + MINUTE - 1) == (0, 0)  # bucket [0h, 1h) closed 59.999 s ago
    assert risk.stats("T1", T0 + HOUR + MINUTE) == (2, 0)  # closed a minute ago; label not known yet
    assert risk.stats("T1", T0 + 91 * MINUTE - 1) == (2, 0)  # known at 90 min: visible from 91 min
    assert risk.stats("T1", T0 + 91 * MINUTE) == (2, 1)
    assert risk.stats("T1", T0 + 2 * HOUR + MINUTE) == (3, 1)
    assert risk.stats("T1", T0 + 5 * HOUR + MINUTE) == (1, 0)  # [0h, 1h) left the 4-hour window
    assert risk.stats("T2", T0 + 2 * HOUR) == (0, 0)


def test_expire_leaves_no_stale_cached_total(impl) -> None:
    risk = impl.terminal.TerminalRisk(window_ms=4 * HOUR, bucket_ms=HOUR, freshness_ms=MINUTE)
    risk.record_transaction("T1", 5 * MINUTE)  # bucket 0
    risk.record_transaction("T1", 5 * HOUR + 5 * MINUTE)  # bucket 5
    assert risk.stats("T1", 7 * HOUR) == (1, 0)  # caches head 5, total 1
    risk.expire(6 * HOUR)  # drops bucket 0
    assert risk.stats("T1", 30 * MINUTE) == (0, 0)  # head -1: nothing visible; actual (1, 0)


# --------------------------------------------------------------------------- pending labels


def test_pending_labels_bounded_by_count_oldest_first(impl) -> None:
    pending = impl.terminal.PendingLabels(max_entries=3, ttl_ms=DAY)
    for i in range(5):
        pending.add(f"t{i}", ("T1",), T0 + i)
    assert len(pending) == 3 and pending.evicted == 2
    assert pending.pop("t0") is None and pending.pop("t1") is None
    assert pending.pop("t4") == (("T1",), T0 + 4)
    assert pending.pop("t4") is None  # a label joins once


def test_pending_labels_expire_by_event_time_behind_the_watermark(impl) -> None:
    pending = impl.terminal.PendingLabels(max_entries=100, ttl_ms=DAY)
    pending.add("old", ("T1",), T0)
    pending.add("edge", None, T0 + HOUR)
    pending.add("new", ("T2",), T0 + 2 * HOUR)
    assert pending.expire(watermark_ms=T0 + DAY + HOUR) == 1  # 'edge' is exactly a TTL old: kept
    assert list(pending.entries) == ["edge", "new"] and pending.expired == 1
    assert pending.expire(watermark_ms=T0 + 10 * DAY) == 2
    assert len(pending) == 0 and pending.expired == 3


# --------------------------------------------------------------------------- the engine's label join


def _counts(engine, vector: list[float]) -> tuple[float, ...]:
    index = engine.registry.index
    return tuple(vector[index(name)] for name in ("terminal_tx_count", "terminal_fraud_count", "terminal_fraud_rate"))


def test_fraud_label_raises_terminal_fraud_count_after_freshness_and_bucket_rule(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())  # hour buckets, one minute of freshness, 7 days
    fraud = tx(T0 + 10 * MINUTE, "A", terminal_id="T1")
    engine.transform_one(fraud)
    engine.transform_one(tx(T0 + 20 * MINUTE, "B", terminal_id="T1"))
    assert engine.observe_label(Label(transaction_id=fraud.transaction_id, account_id="A", label="fraud",
                                      label_time=T0 + 30 * MINUTE))
    assert engine.stats.labels == 1 and engine.stats.labels_unmatched == 0
    during, _ = engine.transform_one(tx(T0 + 50 * MINUTE, "C", terminal_id="T1"))
    assert _counts(engine, during) == (0.0, 0.0, 0.0)  # the bucket is not complete yet
    too_fresh, _ = engine.transform_one(tx(T0 + HOUR + 30 * SECOND, "C", terminal_id="T1"))
    assert _counts(engine, too_fresh) == (0.0, 0.0, 0.0)  # closed 30 s ago
    after, _ = engine.transform_one(tx(T0 + HOUR + MINUTE, "C", terminal_id="T1"))
    assert _counts(engine, after) == (3.0, 1.0, 1 / 3)  # 10, 20 and 50 min; one fraud
    elsewhere, _ = engine.transform_one(tx(T0 + HOUR + MINUTE, "C", terminal_id="T2"))
    assert _counts(engine, elsewhere) == (0.0, 0.0, 0.0)
    gone, _ = engine.transform_one(tx(T0 + 8 * DAY, "C", terminal_id="T1"))
    assert _counts(engine, gone)[:2] == (0.0, 0.0)  # out of the 7-day window


def test_fraud_counts_only_once_its_label_time_is_freshness_behind(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())
    fraud = tx(T0 + 10 * MINUTE, "A", terminal_id="T1")
    engine.transform_one(fraud)
    engine.observe_label(Label(transaction_id=fraud.transaction_id, account_id="A", label="fraud",
                               label_time=T0 + 3 * HOUR))
    before, _ = engine.transform_one(tx(T0 + 3 * HOUR + MINUTE - 1, "B", terminal_id="T1"))
    after, _ = engine.transform_one(tx(T0 + 3 * HOUR + MINUTE, "B", terminal_id="T1"))
    assert _counts(engine, before) == (1.0, 0.0, 0.0)
    assert _counts(engine, after) == (1.0, 1.0, 1.0)


def test_genuine_and_unknown_labels(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())
    genuine = tx(T0, "A", terminal_id="T1")
    engine.transform_one(genuine)
    assert engine.observe_label(Label(transaction_id=genuine.transaction_id, account_id="A", label="genuine",
                                      label_time=T0 + MINUTE))
    assert not engine.observe_label(Label(transaction_id="never-scored", account_id="A", label="fraud",
                                          label_time=T0 + MINUTE))
    assert not engine.observe_label(Label(transaction_id=genuine.transaction_id, account_id="A", label="fraud",
                                          label_time=T0 + 2 * MINUTE))  # joined already
    assert (engine.stats.labels, engine.stats.labels_unmatched) == (3, 2)
    vector, _ = engine.transform_one(tx(T0 + 2 * HOUR, "B", terminal_id="T1"))
    assert _counts(engine, vector) == (1.0, 0.0, 0.0)  # a genuine label is no fraud


def test_pending_labels_evicted_by_count_become_unmatched(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(pending_labels_max=2))
    first = tx(T0, "A", terminal_id="T1")
    for transaction in (first, tx(T0 + 1, "A"), tx(T0 + 2, "A")):
        engine.transform_one(transaction)
    assert engine.pending.evicted == 1 and len(engine.pending) == 2
    assert not engine.observe_label(Label(transaction_id=first.transaction_id, account_id="A", label="fraud",
                                          label_time=T0 + MINUTE))
    assert engine.stats.labels_unmatched == 1


def test_pending_labels_expire_at_sweeps_by_event_time(impl, tx) -> None:
    config = FeatureSettings(pending_labels_ttl_days=1.0, sweep_interval_s=3600, allowed_lateness_s=0)
    engine = impl.engine.FeatureEngine(config)
    old = tx(T0 + 10 * MINUTE, "A", terminal_id="T1")
    engine.transform_one(old)
    engine.transform_one(tx(T0 + DAY + 5 * MINUTE, "B"))  # sweep at 24h: 'old' is 23h55m behind, kept
    assert old.transaction_id in engine.pending.entries
    engine.transform_one(tx(T0 + DAY + HOUR, "B"))  # sweep at 25h
    assert old.transaction_id not in engine.pending.entries and engine.pending.expired == 1
    assert not engine.observe_label(Label(transaction_id=old.transaction_id, account_id="A", label="fraud",
                                          label_time=T0 + DAY + HOUR))


def test_partitions_sharing_a_table_see_each_others_transactions_and_frauds(tx) -> None:
    topic = PartitionedFeatures(FeatureSettings(), partitions=4)
    accounts = [f"A{i}" for i in range(40)]
    by_partition: dict[int, str] = {}
    for account in accounts:
        by_partition.setdefault(topic.partition_of(account), account)
    assert len(by_partition) == 4
    (p, a), (q, b) = list(by_partition.items())[:2]
    fraud = tx(T0 + 10 * MINUTE, a, terminal_id="T1")
    topic.engines[p].transform_one(fraud)
    topic.engines[p].observe_label(Label(transaction_id=fraud.transaction_id, account_id=a, label="fraud",
                                         label_time=T0 + 20 * MINUTE))
    vector, _ = topic.engines[q].transform_one(tx(T0 + 2 * HOUR, b, terminal_id="T1"))
    assert _counts(topic.engines[q], vector) == (1.0, 1.0, 1.0)


def test_fraud_count_never_exceeds_transaction_count(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())  # lateness 5 min
    counted = tx(T0 + 10 * MINUTE, "A", terminal_id="T1")
    engine.transform_one(counted)
    engine.transform_one(tx(T0 + 20 * MINUTE, "B", terminal_id="T2"))
    late = tx(T0 + 5 * MINUTE, "C", terminal_id="T1")
    assert engine.transform_one(late)[1]
    for transaction in (counted, late):
        engine.observe_label(Label(transaction_id=transaction.transaction_id, account_id=transaction.account_id,
                                   label="fraud", label_time=T0 + 25 * MINUTE))
    vector, _ = engine.transform_one(tx(T0 + HOUR + 2 * MINUTE, "D", terminal_id="T1"))
    transactions, frauds, rate = _counts(engine, vector)
    assert frauds <= transactions and rate <= 1.0  # actual: 1 transaction, 2 frauds, rate 2.0


def test_shared_terminal_table_answer_does_not_depend_on_other_partitions_progress(tx) -> None:
    config = FeatureSettings(terminal_window_days=1.0)
    topic = PartitionedFeatures(config, partitions=2)
    behind, ahead = topic.engines
    behind.transform_one(tx(T0 + 10 * MINUTE, "B", terminal_id="T1"))
    vector, _ = behind.transform_one(tx(T0 + 5 * HOUR, "B", terminal_id="T1"))
    assert _counts(behind, vector)[0] == 1.0
    ahead.transform_one(tx(T0 + 3 * DAY, "A", terminal_id="T9"))  # another partition is days ahead
    vector, late = behind.transform_one(tx(T0 + 5 * HOUR + MINUTE, "B", terminal_id="T1"))
    assert not late
    assert _counts(behind, vector)[0] == 1.0  # actual: 0.0, the bucket was expired by the other engine


# --------------------------------------------------------------------------- delay-aware day windows


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("tx"), st.integers(0, 60), st.integers(1, 3)),
            st.tuples(st.just("fraud"), st.integers(0, 60), st.integers(0, 20)),  # known this many days later
            st.tuples(st.just("set"), st.integers(0, 60), st.integers(0, 4)),  # a broadcast update replaces a day
            st.tuples(st.just("query"), st.integers(0, 3), st.integers(0, 23)),  # days forward, hour
        ),
        max_size=120,
    ),
    windows=st.sampled_from([(1, 7, 30), (2, 5), (1,), (3, 4, 40)]),
    delay_days=st.sampled_from([0, 1, 7]),
)
@settings(max_examples=150, deadline=None)
def test_day_windows_slide_exactly_like_their_definition(impl, steps, windows, delay_days) -> None:
    """Dense and sparse keys, cached totals slid day by day or recomputed after jumps and updates:
    always the sum over the days of the window and the known frauds among them."""
    risk = impl.terminal.TerminalRisk(window_ms=DAY, bucket_ms=HOUR, freshness_ms=MINUTE,
                                      day_windows=windows, delay_ms=delay_days * DAY)
    days: dict[int, int] = {}
    frauds: list[tuple[int, int]] = []
    clock = T0 + 20 * DAY
    for kind, a, b in steps:
        if kind == "tx":
            risk.record_day("K", T0 + a * DAY + HOUR, b)
            days[T0 // DAY + a] = days.get(T0 // DAY + a, 0) + b
        elif kind == "fraud":
            risk.record_fraud("K", T0 + a * DAY + HOUR, known_at_ms=T0 + (a + b) * DAY)
            frauds.append((T0 // DAY + a, T0 + (a + b) * DAY))
        elif kind == "set":
            risk.set_buckets("K", [], None, [(T0 // DAY + a, b)])
            days[T0 // DAY + a] = b
        else:
            clock += a * DAY + b * HOUR
            out: list[float] = []
            risk.delayed_into("K", clock, out)
            head = (clock - delay_days * DAY - MINUTE) // DAY - 1
            expected: list[float] = []
            for w in windows:
                n = sum(count for day, count in days.items() if head - w < day <= head)
                known = sum(1 for day, known_at in frauds if head - w < day <= head and known_at <= clock - MINUTE)
                expected += [float(n), known / n if n else 0.0]
            if not any(days.values()):
                expected = [0.0] * (2 * len(windows))
            assert out == expected, (kind, clock, head)
