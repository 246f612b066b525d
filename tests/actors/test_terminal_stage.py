"""The keyed terminal stage and its broadcast table agree with one table that saw everything."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.terminal_stage import (
    IDLE,
    BroadcastRisk,
    RiskUpdate,
    SourceShare,
    TerminalStage,
    decode_delta_batch,
    decode_risk_update,
    encode,
)
from configs import FeatureSettings
from contracts.partitioning import partition_for
from features import FeatureEngine, TerminalRisk

HOUR = 3_600_000
SETTINGS = FeatureSettings(terminal_window_days=1.0, terminal_bucket_s=3600, terminal_freshness_s=60)


def _table() -> TerminalRisk:
    return FeatureEngine.terminal_risk_for(SETTINGS)


events = st.lists(
    st.tuples(
        st.sampled_from(["T1", "T2", "T3", "T4", "T5"]),  # terminal
        st.integers(0, 48 * HOUR),  # event time
        st.integers(0, 3),  # source partition
        st.one_of(st.none(), st.integers(0, 6 * HOUR)),  # fraud label delay
    ),
    max_size=120,
)


@given(events, st.integers(1, 3), st.integers(1, 4), st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_stage_and_broadcast_equal_one_table_that_saw_everything(events, stage_partitions, rounds, replayer) -> None:
    sources = 4
    direct = _table()
    for terminal, t, _, delay in events:
        direct.record_transaction(terminal, t)
        if delay is not None:
            direct.record_fraud(terminal, t, t + delay)

    stages = [TerminalStage(sources) for _ in range(stage_partitions)]
    view = BroadcastRisk(_table(), stage_partitions)

    def send(share: SourceShare, chunk: list) -> None:
        transactions = [(terminal, t // HOUR, 1) for terminal, t, _, _ in chunk]
        frauds = [(terminal, t // HOUR, t + delay) for terminal, t, _, delay in chunk if delay is not None]
        for destination, batch in enumerate(share.absorb(transactions, frauds, IDLE, stage_partitions)):
            stages[destination].apply(decode_delta_batch(encode(batch)))  # through the wire format

    for source in range(sources):
        mine = [e for e in events if e[2] == source]
        share = SourceShare(_table(), source)
        size = max(1, len(mine) // rounds)
        chunks = [mine[i : i + size] for i in range(0, len(mine), size)] or [[]]
        for chunk in chunks:
            send(share, chunk)
        if source == replayer and len(chunks) > 1:
            # a restart: the share comes back from a checkpoint after the first chunk, the rest is replayed
            restored = SourceShare(_table(), source)
            restored.absorb([(terminal, t // HOUR, 1) for terminal, t, _, _ in chunks[0]],
                            [(terminal, t // HOUR, t + d) for terminal, t, _, d in chunks[0] if d is not None],
                            IDLE, stage_partitions)
            for chunk in chunks[1:]:
                send(restored, chunk)
    for partition, stage in enumerate(stages):
        update = decode_risk_update(encode(stage.flush(partition)))
        view.apply(update)
        view.apply(update)  # a replayed update changes nothing
    assert view.complete_through_ms == IDLE
    for terminal in ["T1", "T2", "T3", "T4", "T5"]:
        for t in range(0, 56 * HOUR, HOUR // 2):
            assert view.table.stats(terminal, t) == direct.stats(terminal, t), (terminal, t)


def test_each_terminal_lives_on_the_stage_partition_of_its_key() -> None:
    share = SourceShare(_table(), source=2)
    batches = share.absorb([(f"T{i}", 0, 1) for i in range(20)], [("T3", 0, 500)], 1000, 3)
    assert [b.source for b in batches] == [2, 2, 2] and {b.through_ms for b in batches} == {1000}
    for destination, batch in enumerate(batches):
        for delta in batch.deltas:
            assert partition_for(delta.terminal.encode(), 3) == destination
    (t3,) = [d for b in batches for d in b.deltas if d.terminal == "T3"]
    assert t3.buckets == [(0, 1)] and t3.frauds == [(0, 500)]


def test_completeness_is_the_slowest_source_and_unknown_sources_hold_it_back() -> None:
    stage = TerminalStage(sources=3)
    shares = [SourceShare(_table(), s) for s in range(3)]
    for source, through in [(0, 5 * HOUR), (1, 2 * HOUR)]:
        stage.apply(shares[source].absorb([], [], through, 1)[0])
    assert stage.complete_through_ms < 0  # source 2 not heard from
    stage.apply(shares[2].absorb([], [], IDLE, 1)[0])
    assert stage.complete_through_ms == 2 * HOUR
    stage.apply(shares[1].absorb([], [], 9 * HOUR, 1)[0])
    assert stage.complete_through_ms == 5 * HOUR


def test_updates_carry_only_what_changed_and_expiry_is_each_readers_own() -> None:
    stage = TerminalStage(sources=2)
    shares = [SourceShare(_table(), s) for s in range(2)]
    stage.apply(shares[0].absorb([("T1", b, 1) for b in range(30)] + [("T2", 40, 1)], [], HOUR, 1)[0])
    view = BroadcastRisk(_table(), stages=1)
    view.apply(stage.flush(0))
    assert set(view.table.terminals) == {"T1", "T2"} and len(view.table.terminals["T1"].buckets) == 30
    # one more transaction at T1, from the other source: one bucket's new total goes out, not 30
    stage.apply(shares[1].absorb([("T1", 29, 1)], [("T1", 29, 31 * HOUR)], 2 * HOUR, 1)[0])
    update = stage.flush(0)
    assert isinstance(update, RiskUpdate)
    assert [(s.terminal, s.buckets, s.frauds) for s in update.states] == [("T1", [(29, 2)], [(29, 31 * HOUR)])]
    assert stage.flush(0).states == []  # nothing changed since
    view.apply(update)
    assert view.table.stats("T1", 32 * HOUR) == (24, 1)  # buckets 7..29 (29 holds 2); the fraud known at 31 h
    assert view.table.terminals["T1"].buckets[29] == 2
    stage.expire(oldest_bucket=39)
    assert stage.flush(0).states == [] and set(stage.terminals) == {"T2"}  # expiry publishes nothing
    view.table.expire(64 * HOUR + 60_000)  # the reader expires by event time on its own (through bucket 39)
    assert view.table.terminals["T1"].buckets == {}  # the delay-aware windows still see the fraud (37 days)
    assert view.table.terminals["T1"].frauds == [(29, 31 * HOUR)]
    view.table.expire(38 * 24 * HOUR + 64 * HOUR)
    assert set(view.table.terminals) == set()


def test_days_travel_through_the_stage_and_expire_on_their_own_horizon() -> None:
    """Day counts of terminals and other entities' keys: summed over sources, published when they change,
    restored from a checkpoint, and dropped by the stage once no delay-aware window sees them."""
    stage = TerminalStage(sources=2)
    shares = [SourceShare(_table(), s) for s in range(2)]
    key = "merchant\x1fM1"
    stage.apply(shares[0].absorb([], [], HOUR, 1, days=[(key, 3, 2), ("T1", 3, 1)])[0])
    stage.apply(shares[1].absorb([], [], HOUR, 1, days=[(key, 3, 1), (key, 4, 1)])[0])
    stage = TerminalStage.from_bytes(stage.to_bytes(), sources=2)  # a checkpoint in between
    update = stage.flush(0)
    assert [(s.terminal, s.days) for s in update.states] == [("T1", [(3, 1)]), (key, [(3, 3), (4, 1)])]
    view = BroadcastRisk(_table(), stages=1)
    view.apply(update)
    assert view.table.terminals[key].days == {3: 3, 4: 1}
    stage.apply(shares[0].absorb([], [], 2 * HOUR, 1, days=[(key, 4, 1)])[0])  # cumulative: day 4 is 2 + 1 now
    assert [(s.terminal, s.days) for s in stage.flush(0).states] == [(key, [(4, 2)])]
    stage.expire(oldest_bucket=10_000, oldest_day=3)
    assert set(stage.terminals) == {key} and stage.state(key).days == [(4, 2)]
    stage.expire(oldest_bucket=10_001, oldest_day=4)
    assert stage.terminals == {}


def test_set_buckets_keeps_the_window_cache_exact() -> None:
    direct, view = _table(), _table()
    for b in (1, 2, 3, 5):
        direct.record_transaction("T1", b * HOUR, b)
    view.set_buckets("T1", [(b, b) for b in (1, 2, 3, 5)], None)
    assert view.stats("T1", 6 * HOUR + 120_000) == direct.stats("T1", 6 * HOUR + 120_000)  # fills the cache
    direct.record_transaction("T1", 3 * HOUR, 4)
    view.set_buckets("T1", [(3, 7), (2, 0)], [(5, 6 * HOUR)])
    direct.record_fraud("T1", 5 * HOUR, 6 * HOUR)
    direct.terminals["T1"].buckets.pop(2)
    direct.terminals["T1"].cache_head = -(2**62)  # recompute from scratch
    for t in (6 * HOUR + 120_000, 7 * HOUR + 120_000, 30 * HOUR):
        assert view.stats("T1", t) == direct.stats("T1", t)
    view.set_buckets("T1", [(1, 0), (3, 0), (5, 0)], [])
    assert "T1" not in view.terminals
