"""Checkpoints: engine state through Arrow bytes and back, continuing exactly where it stopped
(also from a pure-Python engine into the selected, possibly compiled, one); layout mismatches
refused; the terminal table's round trip."""

from __future__ import annotations

import dataclasses

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import FeatureSettings
from contracts import Label, Transaction
from features import FeatureEngine
from features.state import (
    ACCOUNT_STATE_SCHEMA,
    PENDING_LABELS_SCHEMA,
    EngineSnapshot,
    SnapshotMismatch,
    restore_engine,
    take_snapshot,
    terminal_from_batches,
    terminal_to_batches,
)

T0 = 1_767_225_600_000
SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000

SMALL = FeatureSettings(
    windows_s=(5, 60, 600),
    allowed_lateness_s=30,
    terminal_bucket_s=60,
    terminal_window_days=0.01,
    terminal_freshness_s=30,
    sweep_interval_s=120,
    entity_ttl_days=0.005,  # 7.2 min: accounts expire within a stream
    pending_labels_max=8,
    pending_labels_ttl_days=0.01,
    location_trail=2,
    max_events_per_account=6,
    account_fraud_window_days=0.004,  # 345.6 s: known frauds leave the window within a stream
)

_step = st.tuples(
    st.sampled_from(("tx",) * 6 + ("tx_behind", "label")),
    st.one_of(st.integers(0, 5_000), st.integers(0, 10 * MINUTE)),
    st.sampled_from(("A1", "A2", "A3", "A4")),
    st.integers(0, 100_000),
    st.sampled_from(("M1", "M2", None)),
    st.sampled_from(("FR", "DE", None)),
    st.sampled_from(("T1", "T2", None)),
    st.booleans(),  # located
    st.integers(0, 10**6),  # free choice: how far behind, which transaction a label is for, fraud or not
)


def _events(steps) -> list[Transaction | Label]:
    clock = T0 + 5 * HOUR + 59 * MINUTE  # start just before an hour boundary
    out: list[Transaction | Label] = []
    scored: list[Transaction] = []
    for i, (kind, gap, account, cents, merchant, country, terminal, located, choice) in enumerate(steps):
        clock += gap
        if kind == "label":
            if scored:
                target = scored[choice % len(scored)]
                out.append(Label(transaction_id=target.transaction_id, account_id=target.account_id,
                                 label="fraud" if choice % 3 else "genuine", label_time=clock))
            continue
        back = 0 if kind == "tx" else choice % (15 * MINUTE)
        tx = Transaction(
            transaction_id=f"t{i}", account_id=account, event_time=clock - back, amount=cents / 100,
            merchant_id=merchant, country=country, terminal_id=terminal,
            lat=48.0 + (choice % 7) if located else None, lon=2.0 + (choice % 5) if located else None,
        )
        scored.append(tx)
        out.append(tx)
    return out


def _feed(engine, events) -> list[tuple[list[float], bool] | bool]:
    return [engine.observe_label(e) if isinstance(e, Label) else engine.transform_one(e) for e in events]


def _round_trip(engine, config: FeatureSettings) -> FeatureEngine:
    """Snapshot any engine to bytes and restore it as the selected implementation."""
    blob = take_snapshot(engine).to_bytes()
    return restore_engine(config, EngineSnapshot.from_bytes(blob),
                          terminal_from_batches(config, *terminal_to_batches(engine.terminal_risk)))


@pytest.mark.parametrize("config", [SMALL, FeatureSettings()], ids=["small", "default"])
@given(steps=st.lists(_step, min_size=15, max_size=60), cut=st.integers(0, 60))
@settings(max_examples=60, deadline=None)
def test_restored_engine_continues_exactly_like_the_one_that_never_stopped(impl, config, steps, cut) -> None:
    events = _events(steps)
    cut = min(cut, len(events))
    uninterrupted = impl.engine.FeatureEngine(config)
    expected = _feed(uninterrupted, events)

    first = impl.engine.FeatureEngine(config)
    head = _feed(first, events[:cut])
    restored = _round_trip(first, config)
    tail = _feed(restored, events[cut:])
    assert head + tail == expected  # vectors, late flags and label joins, exactly

    assert dataclasses.asdict(restored.stats) == dataclasses.asdict(uninterrupted.stats)
    assert restored.pending.evicted == uninterrupted.pending.evicted
    assert restored.pending.expired == uninterrupted.pending.expired
    final, reference = take_snapshot(restored), take_snapshot(uninterrupted)
    assert final.accounts.equals(reference.accounts)
    assert final.pending.equals(reference.pending)
    assert final.meta == reference.meta
    assert all(a.equals(b) for a, b in zip(terminal_to_batches(restored.terminal_risk),
                                           terminal_to_batches(uninterrupted.terminal_risk), strict=True))


def test_snapshot_of_a_fresh_engine_round_trips() -> None:
    config = FeatureSettings()
    restored = _round_trip(FeatureEngine(config), config)
    assert restored.accounts == {} and len(restored.pending) == 0
    snapshot = take_snapshot(restored)
    assert snapshot.accounts.schema.equals(ACCOUNT_STATE_SCHEMA)
    assert snapshot.pending.schema.equals(PENDING_LABELS_SCHEMA)
    tx = Transaction(transaction_id="t", account_id="A", event_time=T0, amount=3.0)
    assert restored.transform_one(tx) == FeatureEngine(config).transform_one(tx)


def test_snapshot_bytes_are_self_describing_and_compressed() -> None:
    engine = FeatureEngine(FeatureSettings())
    for i in range(200):
        engine.transform_one(Transaction(transaction_id=f"t{i}", account_id=f"A{i % 20}", event_time=T0 + i * SECOND,
                                         amount=float(i % 7), merchant_id="M1", country="FR"))
    snapshot = take_snapshot(engine)
    compressed, plain = snapshot.to_bytes(), snapshot.to_bytes(compression=None)
    assert len(compressed) < len(plain)
    for blob in (compressed, plain):
        back = EngineSnapshot.from_bytes(blob)
        assert back.accounts.equals(snapshot.accounts) and back.pending.equals(snapshot.pending)
        assert back.meta == snapshot.meta
    assert snapshot.meta["feature_version"] == engine.registry.version
    assert snapshot.meta["max_event_time_ms"] == T0 + 199 * SECOND
    assert snapshot.accounts.num_rows == 20 and snapshot.pending.num_rows == 200


@pytest.mark.parametrize(
    "change",
    [{"windows_s": (600, 3600)}, {"ewma_alpha": 0.5}, {"night_hours": (22, 6)}, {"terminal_bucket_s": 1800}],
)
def test_snapshot_with_another_feature_layout_is_refused(change: dict) -> None:
    taken = FeatureSettings()
    engine = FeatureEngine(taken)
    engine.transform_one(Transaction(transaction_id="t", account_id="A", event_time=T0, amount=1.0))
    snapshot = EngineSnapshot.from_bytes(take_snapshot(engine).to_bytes())
    other = msgspec.structs.replace(taken, **change)
    with pytest.raises(SnapshotMismatch) as info:
        restore_engine(other, snapshot)
    message = str(info.value)
    assert engine.registry.version in message and FeatureEngine(other).registry.version in message
    assert isinstance(info.value, ValueError)


def test_account_known_frauds_round_trip_and_are_null_for_accounts_without() -> None:
    config = FeatureSettings()
    engine = FeatureEngine(config)
    for i, account in enumerate(("A", "A", "B")):
        engine.transform_one(Transaction(transaction_id=f"t{i}", account_id=account, event_time=T0 + i * HOUR,
                                         amount=1.0))
    for i, label_time in ((1, T0 + DAY), (0, T0 + 2 * DAY)):
        engine.observe_label(Label(transaction_id=f"t{i}", account_id="A", label="fraud", label_time=label_time))
    snapshot = EngineSnapshot.from_bytes(take_snapshot(engine).to_bytes())
    rows = {row["account_id"]: row for row in snapshot.accounts.to_pylist()}
    assert (rows["A"]["fraud_times"], rows["A"]["fraud_known_at"]) == ([T0, T0 + HOUR], [T0 + 2 * DAY, T0 + DAY])
    assert rows["B"]["fraud_times"] is None and rows["B"]["fraud_known_at"] is None
    restored = restore_engine(config, snapshot)
    assert restored.accounts["A"].frauds == [(T0, T0 + 2 * DAY), (T0 + HOUR, T0 + DAY)]
    assert restored.accounts["B"].frauds is None
    tx = Transaction(transaction_id="t9", account_id="A", event_time=T0 + 3 * DAY, amount=1.0)
    assert restored.transform_one(tx) == engine.transform_one(tx)


def test_a_checkpoint_from_before_account_known_frauds_is_refused_not_misread() -> None:
    """The account rows of feature version fs1-eb477fc6 (the shipped settings before the account
    known-fraud features) have no fraud columns: the version check refuses them with its message."""
    engine = FeatureEngine(FeatureSettings())
    engine.transform_one(Transaction(transaction_id="t", account_id="A", event_time=T0, amount=1.0))
    taken = take_snapshot(engine)
    old_layout = pa.RecordBatch.from_arrays(
        [taken.accounts.column(name) for name in ACCOUNT_STATE_SCHEMA.names[:-2]],
        names=ACCOUNT_STATE_SCHEMA.names[:-2],
    )
    old = EngineSnapshot(old_layout, taken.pending, {**taken.meta, "feature_version": "fs1-eb477fc6"})
    with pytest.raises(SnapshotMismatch, match=r"snapshot has feature version fs1-eb477fc6 but the configured "
                                               r"features are fs1-\w+; restore with the settings it was taken with"):
        restore_engine(FeatureSettings(), EngineSnapshot.from_bytes(old.to_bytes()))
    assert ACCOUNT_STATE_SCHEMA.names[-2:] == ["fraud_times", "fraud_known_at"]


def test_operational_settings_may_change_across_a_restore() -> None:
    engine = FeatureEngine(FeatureSettings())
    engine.transform_one(Transaction(transaction_id="t", account_id="A", event_time=T0, amount=1.0))
    changed = FeatureSettings(allowed_lateness_s=60, entity_ttl_days=30.0, sweep_interval_s=600)
    restored = restore_engine(changed, EngineSnapshot.from_bytes(take_snapshot(engine).to_bytes()))
    assert restored.accounts["A"].window.times == [T0]
    assert restored.lateness_ms == 60_000


_terminal_update = st.tuples(
    st.sampled_from(("fraud", "transaction", "day")), st.sampled_from(("T1", "T2", "T3", "merchant\x1fT1")),
    st.integers(T0, T0 + 10 * DAY), st.integers(0, DAY),
)


@given(
    updates=st.lists(_terminal_update, max_size=50),
    queries=st.lists(st.tuples(st.sampled_from(("T1", "T2", "T3", "T4")), st.integers(T0, T0 + 12 * DAY)), max_size=10),
)
@settings(max_examples=100, deadline=None)
def test_terminal_batches_round_trip(updates, queries) -> None:
    config = FeatureSettings()
    risk = FeatureEngine.terminal_risk_for(config)
    for kind, terminal, t, delay in updates:
        if kind == "fraud":
            risk.record_fraud(terminal, t, known_at_ms=t + delay)
        elif kind == "transaction":
            risk.record_transaction(terminal, t)
        else:
            risk.record_day(terminal, t)
    batches = terminal_to_batches(risk)
    ipc = [pa.ipc.read_message(batch.serialize()) for batch in batches]  # survives serialisation
    batches = tuple(pa.ipc.read_record_batch(m, b.schema) for m, b in zip(ipc, batches, strict=True))
    back = terminal_from_batches(config, *batches)
    assert set(back.terminals) == set(risk.terminals)
    for terminal, counts in risk.terminals.items():
        assert back.terminals[terminal].buckets == counts.buckets
        assert back.terminals[terminal].days == counts.days
        assert sorted(back.terminals[terminal].frauds) == sorted(counts.frauds)
    for terminal, t in queries:
        assert back.stats(terminal, t) == risk.stats(terminal, t)
        here: list[float] = []
        there: list[float] = []
        risk.delayed_into(terminal, t + 8 * DAY, here)
        back.delayed_into(terminal, t + 8 * DAY, there)
        assert here == there
