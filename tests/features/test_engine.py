"""FeatureEngine: every feature against a brute-force reference (with and without labels), the
late-event policy, watermark-driven expiry, replay determinism, entity TTL, calendar features,
account known frauds and the registry."""

from __future__ import annotations

import ast
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import features
from configs import FeatureSettings
from contracts import Label, Transaction
from features.registry import ACCOUNT_FRAUDS_MAX, FeatureRegistry, window_name
from features.state import take_snapshot, terminal_to_batches

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday
SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000

#: Small windows, a small terminal table and frequent sweeps, so every code path runs in a short stream.
SMALL = FeatureSettings(
    windows_s=(5, 60, 600),
    allowed_lateness_s=30,
    ewma_alpha=0.3,
    terminal_bucket_s=60,
    terminal_window_days=0.01,  # 864 s: 14 buckets of a minute
    terminal_freshness_s=30,
    sweep_interval_s=120,
    location_trail=64,
    night_hours=(22, 6),
    account_fraud_window_days=0.005,  # 432 s: known frauds leave the window within a stream
)
#: The shipped windows (10m .. 30d) and lateness (5 min); a long trail so the reference needs no capacity model.
DEFAULTISH = FeatureSettings(location_trail=64)
#: Streams over days (gaps of hours): the delay-aware entity windows (1 and 3 days ending 6 h before the event).
DAYS = FeatureSettings(
    location_trail=64, label_delay_days=0.25, entity_windows_days=(1, 3), sweep_interval_s=6 * 3600,
    pending_labels_ttl_days=30.0,
)  # fmt: skip

ACCOUNTS = ("A1", "A2", "A3")
MERCHANTS = ("M1", "M2", "M3", "M4", None)
COUNTRIES = ("GB", "FR", "US", None)
DEVICES = ("D1", "D2", None)
PLACES = {"london": (51.5074, -0.1278), "paris": (48.8566, 2.3522), "new_york": (40.7128, -74.0060), None: (None, None)}
TERMINALS = ("T1", "T2", None)

_raw_event = st.tuples(
    st.one_of(st.integers(0, 5_000), st.integers(0, 120_000)),  # the clock advances by this (ms)
    st.sampled_from(("in_order",) * 4 + ("disorder",) * 2 + ("behind",)),
    st.integers(0, 10**7),  # how far behind the clock, for disorder / behind
    st.sampled_from(ACCOUNTS),
    st.integers(0, 500_000),  # cents
    st.sampled_from(MERCHANTS),
    st.sampled_from(COUNTRIES),
    st.sampled_from(DEVICES),
    st.sampled_from(tuple(PLACES)),
    st.sampled_from(TERMINALS),
)


@st.composite
def streams(
    draw: st.DrawFn, lateness_s: int, min_size: int = 8, max_size: int = 40, gap_scale: int = 1
) -> list[Transaction]:
    """Transactions in arrival order: mostly in order, some out of order within the
    lateness (boundary included), some further behind (late unless the stream is sparse).
    ``gap_scale`` stretches the clock's steps (hours rather than seconds: streams over days)."""
    lateness_ms = lateness_s * 1000
    clock = T0 + draw(st.integers(0, 7 * DAY))
    out = []
    for i, (gap, kind, offset, account, cents, merchant, country, device, place, terminal) in enumerate(
        draw(st.lists(_raw_event, min_size=min_size, max_size=max_size))
    ):
        clock += gap * gap_scale
        if kind == "in_order":
            back = 0
        elif kind == "disorder":
            back = offset % (lateness_ms + 1)
        else:
            back = lateness_ms + 1 + offset % (20 * MINUTE)
        lat, lon = PLACES[place]
        out.append(
            Transaction(
                transaction_id=f"t{i:04d}", account_id=account, event_time=clock - back, amount=cents / 100,
                merchant_id=merchant, country=country, device_id=device, lat=lat, lon=lon, terminal_id=terminal,
            )
        )
    return out


def run(engine, transactions: list[Transaction]) -> list[tuple[list[float], bool]]:
    return [engine.transform_one(tx) for tx in transactions]


@st.composite
def labelled_streams(
    draw: st.DrawFn, lateness_s: int, max_size: int = 40, gap_scale: int = 1
) -> list[Transaction | Label]:
    """A stream of :func:`streams` with labels in between: mostly frauds, for transactions already
    scored (some not yet scored, some twice, some unknown), each labelled around the clock at that
    point (a little before, so out-of-order transactions after it test ``label_time <= t``, or after)."""
    transactions = draw(streams(lateness_s, max_size=max_size, gap_scale=gap_scale))
    lateness_ms = lateness_s * 1000
    out: list[Transaction | Label] = []
    clock = transactions[0].event_time
    for i, tx in enumerate(transactions):
        out.append(tx)
        clock = max(clock, tx.event_time)  # type: ignore[type-var]
        for _ in range(draw(st.integers(0, 2))):
            target = draw(st.integers(0, len(transactions)))  # len: an id never scored
            transaction_id = transactions[target].transaction_id if target < len(transactions) else "unknown"
            account_id = transactions[target].account_id if target < len(transactions) else "A1"
            label_time = clock + draw(st.integers(-(lateness_ms + 20 * MINUTE), 10 * MINUTE))  # type: ignore[operator]
            out.append(Label(transaction_id=transaction_id, account_id=account_id, label_time=label_time,
                             label=draw(st.sampled_from(("fraud", "fraud", "fraud", "genuine")))))
        if i > 0 and draw(st.integers(0, 9)) == 0:  # a few labels of transactions scored long before
            target = draw(st.integers(0, i))
            out.append(Label(transaction_id=transactions[target].transaction_id,
                             account_id=transactions[target].account_id, label="fraud", label_time=clock))
    return out


def feed(engine, events: list[Transaction | Label]) -> list[tuple[list[float], bool]]:
    """Feed transactions and labels in order; the transactions' (vector, late)."""
    rows = []
    for event in events:
        if isinstance(event, Label):
            engine.observe_label(event)
        else:
            rows.append(engine.transform_one(event))
    return rows


# --------------------------------------------------------------------------- preconditions of the reference


@pytest.mark.parametrize("config", [SMALL, DEFAULTISH], ids=["small", "default"])
def test_property_alphabet_has_no_bloom_false_positive_and_no_hash_collision(impl, config: FeatureSettings) -> None:
    """The property tests compare novelty exactly, so no value of their alphabet may look
    'seen' because of others (checked through the engine itself)."""
    values = [("merchant_id", m) for m in MERCHANTS if m] + [("country", c) for c in COUNTRIES if c]
    values += [("device_id", d) for d in DEVICES if d]
    for attribute, value in values:
        engine = impl.engine.FeatureEngine(config)
        for other_attribute, other in values:
            if (other_attribute, other) != (attribute, value):
                engine.transform_one(Transaction(transaction_id=f"x{other}", account_id="A", event_time=T0,
                                                 amount=1.0, **{other_attribute: other}))
        vector, _ = engine.transform_one(Transaction(transaction_id="probe", account_id="A", event_time=T0,
                                                     amount=1.0, **{attribute: value}))
        name = {"merchant_id": "new_merchant", "country": "new_country", "device_id": "new_device"}[attribute]
        assert vector[engine.registry.index(name)] == 1.0, (attribute, value)
    engine = impl.engine.FeatureEngine(config)
    for i, merchant in enumerate(m for m in MERCHANTS if m):
        vector, _ = engine.transform_one(Transaction(transaction_id=f"m{i}", account_id="A", event_time=T0,
                                                     amount=1.0, merchant_id=merchant, country=COUNTRIES[i % 3]))
    assert vector[engine.registry.index("distinct_merchants_24h")] == len([m for m in MERCHANTS if m])
    assert vector[engine.registry.index("distinct_countries_24h")] == 3


# --------------------------------------------------------------------------- properties against brute force


@pytest.mark.parametrize("config", [SMALL, DEFAULTISH], ids=["small", "default"])
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_every_feature_matches_brute_force(impl, config: FeatureSettings, data, reference, check) -> None:
    transactions = data.draw(streams(config.allowed_lateness_s))
    engine = impl.engine.FeatureEngine(config)
    expected = reference(config, transactions)
    for i, (tx, (vector, late)) in enumerate(zip(transactions, run(engine, transactions), strict=True)):
        where = f"event {i} ({tx.account_id} at T0 + {tx.event_time - T0} ms)"  # type: ignore[operator]
        check(engine.registry.names, vector, late, expected[i], where=where)
    assert engine.stats.events == len(transactions)
    assert engine.stats.late_events == sum(row.late for row in expected)


@pytest.mark.parametrize("config", [SMALL, DEFAULTISH], ids=["small", "default"])
@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_every_feature_matches_brute_force_with_labels(impl, config: FeatureSettings, data, reference, check) -> None:
    """Labels joined in between: account known frauds and terminal known frauds against their definitions."""
    events = data.draw(labelled_streams(config.allowed_lateness_s))
    engine = impl.engine.FeatureEngine(config)
    expected = reference(config, events)
    transactions = [e for e in events if isinstance(e, Transaction)]
    rows = feed(engine, events)
    for i, (tx, (vector, late)) in enumerate(zip(transactions, rows, strict=True)):
        where = f"transaction {i} ({tx.account_id} at T0 + {tx.event_time - T0} ms)"  # type: ignore[operator]
        check(engine.registry.names, vector, late, expected[i], where=where)
    assert engine.stats.labels == len(events) - len(transactions)
    # state stays bounded: sorted, at most the bound, never an empty list
    for account in engine.accounts.values():
        if account.frauds is not None:
            assert account.frauds == sorted(account.frauds) and 0 < len(account.frauds) <= ACCOUNT_FRAUDS_MAX


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_delay_aware_entity_windows_match_brute_force_over_days(impl, data, reference, check) -> None:
    """Streams over days with labels: terminal, merchant and device counts and known-fraud ratios over
    the complete days ending ``label_delay_days`` before each event (and every other feature) as defined."""
    events = data.draw(labelled_streams(DAYS.allowed_lateness_s, gap_scale=240))  # steps of up to 8 h
    engine = impl.engine.FeatureEngine(DAYS)
    expected = reference(DAYS, events)
    transactions = [e for e in events if isinstance(e, Transaction)]
    for i, (tx, (vector, late)) in enumerate(zip(transactions, feed(engine, events), strict=True)):
        where = f"transaction {i} ({tx.account_id} at T0 + {tx.event_time - T0} ms)"  # type: ignore[operator]
        check(engine.registry.names, vector, late, expected[i], where=where)


def test_delay_aware_windows_see_only_days_whose_labels_are_in(impl) -> None:
    """A fraud at a merchant counts in its delayed windows once its day is ``label_delay_days`` old and
    its label has arrived; the merchant's other payments give the ratio's denominator."""
    config = FeatureSettings(label_delay_days=7.0, entity_windows_days=(1, 7, 30))
    engine = impl.engine.FeatureEngine(config)
    index = engine.registry.index
    for i in range(4):  # day 0: four payments at M1, one of them fraud (reported on day 2)
        engine.transform_one(Transaction(transaction_id=f"p{i}", account_id=f"A{i}", event_time=T0 + i * HOUR,
                                         amount=5.0, merchant_id="M1"))
    engine.observe_label(Label(transaction_id="p1", account_id="A1", label="fraud", label_time=T0 + 2 * DAY))

    def probe(day: float, name: str) -> float:
        """A payment at M1 on that day (it counts there too) and one of its features."""
        vector, _ = engine.transform_one(Transaction(transaction_id=f"q{day}", account_id="B",
                                                     event_time=T0 + int(day * DAY), amount=1.0, merchant_id="M1"))
        return vector[index(name)]

    assert probe(7.5, "merchant_delayed_count_1d") == 0.0    # day 0 is 7 days old only from day 8 on
    assert probe(8.5, "merchant_delayed_count_1d") == 4.0
    assert probe(8.6, "merchant_delayed_risk_7d") == 0.25
    assert probe(20.0, "merchant_delayed_risk_30d") == 1 / 7  # days 0-12: the four, and the probes of days 7 and 8
    assert probe(20.1, "merchant_delayed_count_1d") == 0.0
    assert probe(20.2, "device_delayed_count_30d") == 0.0     # no device on these payments: neutral


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_window_aggregates_of_in_lateness_disorder_equal_in_order_arrival(impl, data: st.DataObject) -> None:
    """Events inside the lateness update windows as if they had arrived in order: the
    last event's window features are the same whatever the arrival order of the others."""
    config = SMALL
    count = data.draw(st.integers(2, 25))
    times = sorted(data.draw(st.lists(st.integers(0, 25_000), min_size=count, max_size=count)))
    amounts = data.draw(st.lists(st.integers(0, 100_000), min_size=count, max_size=count))
    events = [Transaction(transaction_id=f"t{i}", account_id="A", event_time=T0 + t, amount=a / 100)
              for i, (t, a) in enumerate(zip(times, amounts, strict=True))]
    last = Transaction(transaction_id="last", account_id="A", event_time=T0 + 30_000, amount=1.0)
    shuffled = data.draw(st.permutations(events))  # every event is within 30 s of the others: never late
    in_order, _ = run(impl.engine.FeatureEngine(config), [*events, last])[-1]
    disordered, late = run(impl.engine.FeatureEngine(config), [*shuffled, last])[-1]
    assert not late
    names = impl.engine.FeatureEngine(config).registry.names
    for name in names:
        if name.startswith(("count_", "sum_", "mean_")):
            a, b = in_order[names.index(name)], disordered[names.index(name)]
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9), name


# --------------------------------------------------------------------------- late-event policy


def _snapshot_parts(engine):
    snapshot = take_snapshot(engine)
    return snapshot, terminal_to_batches(engine.terminal_risk)


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_late_event_is_flagged_counted_and_changes_no_state(impl, data: st.DataObject, reference, check) -> None:
    config = SMALL
    prefix = data.draw(streams(config.allowed_lateness_s, min_size=1, max_size=25))
    engine = impl.engine.FeatureEngine(config)
    run(engine, prefix)
    behind = data.draw(st.integers(1, 20 * MINUTE))
    late_tx = Transaction(
        transaction_id="late", account_id=data.draw(st.sampled_from((*ACCOUNTS, "A-new"))),
        event_time=engine.watermark_ms - behind, amount=data.draw(st.integers(0, 100_000)) / 100,
        merchant_id=data.draw(st.sampled_from(MERCHANTS)), country=data.draw(st.sampled_from(COUNTRIES)),
        terminal_id=data.draw(st.sampled_from(TERMINALS)), lat=51.5, lon=-0.12,
    )
    before, tables_before = _snapshot_parts(engine)
    stats_before = dict(before.meta["stats"])
    vector, late = engine.transform_one(late_tx)
    after, tables_after = _snapshot_parts(engine)

    assert late
    assert engine.stats.late_events == stats_before["late_events"] + 1
    assert engine.stats.events == stats_before["events"] + 1
    assert after.accounts.equals(before.accounts)
    assert "A-new" not in engine.accounts
    assert all(a.equals(b) for a, b in zip(tables_after, tables_before, strict=True))  # buckets, frauds, days
    assert after.meta["max_event_time_ms"] == before.meta["max_event_time_ms"]
    assert after.meta["last_sweep_ms"] == before.meta["last_sweep_ms"]
    # pending labels gain the transaction (its label may still come), nothing else changes
    assert after.pending.num_rows == before.pending.num_rows + 1
    assert after.pending.slice(0, before.pending.num_rows).equals(before.pending)
    assert after.pending.slice(before.pending.num_rows).to_pylist() == [
        # no entity keys: the late transaction was not counted at them, so its fraud label must not be
        {"transaction_id": "late", "entity_keys": None, "event_time_ms": late_tx.event_time}
    ]
    # and its features are those of the current state, itself excluded
    expected = reference(config, [*prefix, late_tx])[-1]
    check(engine.registry.names, vector, late, expected, where="late event")


def test_late_event_hand_built(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(allowed_lateness_s=60))
    engine.transform_one(tx(T0, amount=10.0))
    engine.transform_one(tx(T0 + 2 * MINUTE, amount=30.0))
    assert engine.watermark_ms == T0 + MINUTE
    _, late = engine.transform_one(tx(T0 + MINUTE, amount=5.0))  # exactly at the watermark: in time
    assert not late
    vector, late = engine.transform_one(tx(T0 + MINUTE - 1, amount=100.0))  # one ms behind: late
    assert late
    assert engine.stats.late_events == 1
    assert feature(engine, vector, "count_10m") == 1.0  # T0 only: not itself, nor the later ones
    assert feature(engine, vector, "sum_10m") == 10.0
    assert feature(engine, vector, "amount_mean") == 15.0  # 10, 30 and 5 arrived before it
    assert feature(engine, vector, "history_count") == 3.0
    assert feature(engine, vector, "seconds_since_prev") == pytest.approx(59.999)
    assert engine.accounts["A1"].window.times == [T0, T0 + MINUTE, T0 + 2 * MINUTE]


def test_late_event_window_does_not_depend_on_expiry_chunking(impl, tx, feature) -> None:
    config = FeatureSettings(windows_s=(10,), allowed_lateness_s=0)
    counts = []
    for old_events in (7, 8):
        engine = impl.engine.FeatureEngine(config)
        for i in range(old_events):
            engine.transform_one(tx(T0 + i * SECOND))
        engine.transform_one(tx(T0 + 100 * SECOND))
        vector, late = engine.transform_one(tx(T0 + 5 * SECOND))  # late; its window (-5 s, 5 s] holds 6 events
        assert late
        counts.append(feature(engine, vector, "count_10s"))
    # Events at or behind the retention horizon (watermark 100 s - longest window 10 s) never count,
    # whether or not chunked expiry has dropped them yet: the answer cannot depend on expiry timing.
    assert counts == [0.0, 0.0]


# --------------------------------------------------------------------------- replay, expiry, bounded state


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_replay_gives_identical_vectors_one_by_one_or_in_batches(impl, data: st.DataObject) -> None:
    config = data.draw(st.sampled_from((SMALL, DEFAULTISH)))
    transactions = data.draw(streams(config.allowed_lateness_s))
    first = run(impl.engine.FeatureEngine(config), transactions)
    second = run(impl.engine.FeatureEngine(config), transactions)
    assert first == second  # exact, late flags included
    engine = impl.engine.FeatureEngine(config)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(transactions)), max_size=5)))
    batches = [transactions[a:b] for a, b in zip([0, *cuts], [*cuts, len(transactions)], strict=True)]
    rows, flags = [], []
    for batch in batches:
        result = engine.transform_batch(batch)
        assert result.values.shape == (len(batch), len(engine.registry))
        assert result.names == engine.registry.names and result.version == engine.registry.version
        rows += result.values.tolist()
        flags += result.late.tolist()
    assert rows == [vector for vector, _ in first]
    assert flags == [late for _, late in first]


@pytest.mark.skipif(not getattr(features, "COMPILED", False), reason="the compiled kernel is not built, or is stale")
@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_compiled_and_pure_kernels_compute_identical_vectors(implementations, data: st.DataObject) -> None:
    config = data.draw(st.sampled_from((SMALL, DEFAULTISH)))
    transactions = data.draw(streams(config.allowed_lateness_s))
    pure = implementations["pure"].engine.FeatureEngine(config)
    compiled = implementations["compiled"].engine.FeatureEngine(config)
    assert run(compiled, transactions) == run(pure, transactions)
    assert take_snapshot(compiled).accounts.equals(take_snapshot(pure).accounts)


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_windows_keep_every_event_the_watermark_has_not_passed_by_the_longest_window(impl, data: st.DataObject) -> None:
    config = SMALL
    transactions = data.draw(streams(config.allowed_lateness_s))
    longest = config.windows_s[-1] * 1000
    engine = impl.engine.FeatureEngine(config)
    accepted: dict[str, list[int]] = {}
    for tx in transactions:
        _, late = engine.transform_one(tx)
        if not late:
            accepted.setdefault(tx.account_id, []).append(tx.event_time)  # type: ignore[arg-type]
        horizon = engine.watermark_ms - longest
        for account_id, times in accepted.items():
            window_times = engine.accounts[account_id].window.times
            assert window_times == sorted(window_times)
            assert sorted(t for t in times if t > horizon) == [t for t in window_times if t > horizon]
            assert set(window_times) <= set(times)  # what is left was accepted; dropped ones are behind the horizon


@pytest.mark.parametrize(
    ("lateness_s", "kept"),
    [(0, [9 * SECOND, 68_500]), (30, [i * SECOND for i in range(10)] + [68_500])],
    ids=["watermark=max", "watermark=max-30s"],
)
def test_expiry_follows_the_watermark_not_the_latest_event(impl, tx, lateness_s: int, kept: list[int]) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(windows_s=(5, 60), allowed_lateness_s=lateness_s))
    for i in range(10):
        engine.transform_one(tx(T0 + i * SECOND))
    engine.transform_one(tx(T0 + 68_500))  # watermark - 60 s = 8.5 s (lateness 0) or -21.5 s (lateness 30 s)
    assert [t - T0 for t in engine.accounts["A1"].window.times] == kept


def test_events_per_account_are_bounded_and_truncation_counted(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(max_events_per_account=5))
    for i in range(12):
        vector, _ = engine.transform_one(tx(T0 + i * SECOND, amount=1.0))
        assert len(engine.accounts["A1"].window) <= 5
    assert engine.stats.truncated_events == 7
    assert feature(engine, vector, "count_10m") <= 6  # the bound plus the event itself
    assert feature(engine, vector, "history_count") == 11  # running statistics are not windowed


def test_features_never_read_the_clock() -> None:
    """Expiry and every feature follow event time: no module of features/ reads the wall clock."""
    forbidden_modules = {"time", "datetime"}
    forbidden_calls = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}
    for path in Path(features.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {alias.name.split(".")[0] for alias in node.names} & forbidden_modules, path.name
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in forbidden_modules, path.name
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in forbidden_calls, f"{path.name}:{node.lineno} calls .{node.func.attr}()"


# --------------------------------------------------------------------------- entity TTL


def test_idle_account_expires_at_the_next_sweep_and_comes_back_new(impl, tx, feature) -> None:
    config = FeatureSettings(entity_ttl_days=1.0, sweep_interval_s=3600, allowed_lateness_s=0)
    engine = impl.engine.FeatureEngine(config)
    engine.transform_one(tx(T0 + 30 * MINUTE, "A", merchant_id="M1", country="FR"))
    engine.transform_one(tx(T0 + 12 * HOUR, "B"))
    engine.transform_one(tx(T0 + DAY + 10 * MINUTE, "B"))  # sweep at 24h: A idle 23h40m, kept
    assert "A" in engine.accounts and engine.stats.expired_accounts == 0
    engine.transform_one(tx(T0 + DAY + 50 * MINUTE, "B"))  # A idle 24h20m, but no multiple of 1h crossed
    assert "A" in engine.accounts
    engine.transform_one(tx(T0 + DAY + HOUR + MINUTE, "B"))  # sweep at 25h: A removed, B kept
    assert "A" not in engine.accounts and "B" in engine.accounts
    assert engine.stats.expired_accounts == 1
    vector, _ = engine.transform_one(tx(T0 + DAY + HOUR + 2 * MINUTE, "A", merchant_id="M1", country="FR"))
    assert feature(engine, vector, "history_count") == 0.0
    assert feature(engine, vector, "new_merchant") == 1.0
    assert feature(engine, vector, "new_country") == 1.0
    assert feature(engine, vector, "count_30d") == 1.0
    assert feature(engine, vector, "seconds_since_prev") == 30 * 86_400.0  # neutral: the longest window


def test_ttl_is_measured_from_the_latest_event_time_behind_the_watermark(impl, tx) -> None:
    """An out-of-order event does not move last_seen backwards; lateness delays expiry."""
    config = FeatureSettings(entity_ttl_days=1.0, sweep_interval_s=3600, allowed_lateness_s=300)
    engine = impl.engine.FeatureEngine(config)
    engine.transform_one(tx(T0 + 10 * HOUR, "A"))
    engine.transform_one(tx(T0 + 10 * HOUR - MINUTE, "A"))  # out of order, in time
    assert engine.accounts["A"].last_seen_ms == T0 + 10 * HOUR
    engine.transform_one(tx(T0 + 34 * HOUR + 4 * MINUTE, "B"))  # watermark 33h59m: idle 23h59m behind it
    assert "A" in engine.accounts
    engine.transform_one(tx(T0 + 35 * HOUR + 6 * MINUTE, "B"))  # watermark 35h01m: idle > 1 day
    assert "A" not in engine.accounts and engine.stats.expired_accounts == 1


# --------------------------------------------------------------------------- calendar


@pytest.mark.parametrize(
    ("iso", "hour", "weekend"),
    [
        ("2026-01-02T23:59:59Z", 23, 0.0),  # Friday
        ("2026-01-03T00:00:00Z", 0, 1.0),  # Saturday
        ("2026-01-03T13:30:00Z", 13, 1.0),
        ("2026-01-04T23:00:00Z", 23, 1.0),  # Sunday
        ("2026-01-05T00:00:00Z", 0, 0.0),  # Monday
        ("2026-01-01T06:00:00Z", 6, 0.0),  # Thursday
    ],
)
def test_hour_of_day_and_weekend(impl, iso: str, hour: int, weekend: float, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())
    moment = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    vector, _ = engine.transform_one(Transaction(transaction_id="t", account_id="A", event_time=moment, amount=1.0))
    assert feature(engine, vector, "hour_of_day") == hour
    assert feature(engine, vector, "is_weekend") == weekend


@pytest.mark.parametrize(
    ("night_hours", "night"),
    [
        ((0, 6), {0, 1, 2, 3, 4, 5}),
        ((22, 6), {22, 23, 0, 1, 2, 3, 4, 5}),
        ((23, 1), {23, 0}),
        ((0, 24), set(range(24))),
        ((6, 6), set()),
    ],
)
def test_is_night_with_plain_and_wrapping_ranges(impl, night_hours: tuple[int, int], night: set[int], feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(night_hours=night_hours, allowed_lateness_s=0))
    for hour in range(24):
        event_time = T0 + 2 * DAY + hour * HOUR + 59 * MINUTE
        vector, _ = engine.transform_one(
            Transaction(transaction_id=f"h{hour}", account_id="A", event_time=event_time, amount=1.0)
        )
        assert feature(engine, vector, "is_night") == (1.0 if hour in night else 0.0), hour


# --------------------------------------------------------------------------- registry


@given(st.lists(st.integers(1, 90 * 86_400), min_size=1, max_size=6, unique=True))
@settings(max_examples=80, deadline=None)
def test_registry_names_unique_and_vector_length_matches(impl, windows: list[int]) -> None:
    config = FeatureSettings(windows_s=tuple(sorted(windows)))
    registry = FeatureRegistry.from_settings(config)
    delayed = 2 * 3 * 3  # (count, ratio) x 3 entity kinds x 3 day windows
    assert len(set(registry.names)) == len(registry.names) == len(registry) == 24 + 2 + 3 * len(windows) + delayed
    assert [registry.index(name) for name in registry.names] == list(range(len(registry)))
    vector, _ = impl.engine.FeatureEngine(config).transform_one(
        Transaction(transaction_id="t", account_id="A", event_time=T0, amount=2.0)
    )
    assert len(vector) == len(registry)
    assert all(isinstance(value, float) for value in vector)


def test_default_registry_layout() -> None:
    registry = FeatureRegistry.from_settings(FeatureSettings())
    assert [window_name(s) for s in FeatureSettings().windows_s] == ["10m", "1h", "24h", "7d", "30d"]
    assert registry.names[:5] == ("amount", "log_amount", "count_10m", "sum_10m", "mean_10m")
    assert registry.names[-3:] == ("hour_of_day", "is_weekend", "is_night")
    assert registry.specs[registry.index("amount_ratio")].neutral == 1.0
    assert registry.specs[registry.index("seconds_since_prev")].neutral == 30 * 86_400
    assert registry.names[-5:-3] == ("account_known_frauds_30d", "account_days_since_fraud")
    assert registry.specs[registry.index("account_days_since_fraud")].neutral == 30.0
    delayed = [name for name in registry.names if "_delayed_" in name]
    assert delayed[:6] == ["terminal_delayed_count_1d", "terminal_delayed_risk_1d", "terminal_delayed_count_7d",
                           "terminal_delayed_risk_7d", "terminal_delayed_count_30d", "terminal_delayed_risk_30d"]
    assert {name.split("_")[0] for name in delayed} == {"terminal", "merchant", "device"} and len(delayed) == 18
    assert len(registry) == 59


@pytest.mark.parametrize(
    ("change", "changes_version"),
    [
        ({"windows_s": (600, 3600)}, True),
        ({"windows_s": (600, 3600, 86_400, 7 * 86_400, 31 * 86_400)}, True),
        ({"ewma_alpha": 0.2}, True),
        ({"night_hours": (22, 6)}, True),
        ({"terminal_window_days": 14.0}, True),
        ({"terminal_bucket_s": 1800}, True),
        ({"terminal_freshness_s": 120}, True),
        ({"account_fraud_window_days": 14.0}, True),
        ({"account_fraud_window_days": 30.00001}, True),  # the same name (30d), another window
        ({"label_delay_days": 14.0}, True),  # the same names, windows ending elsewhere
        ({"entity_windows_days": (1, 7)}, True),
        ({"entity_kinds": ("terminal",)}, True),
        ({"allowed_lateness_s": 0}, False),
        ({"entity_ttl_days": 30.0}, False),
        ({"sweep_interval_s": 60}, False),
        ({"pending_labels_max": 10}, False),
    ],
)
def test_version_changes_with_meaning_and_is_stable_otherwise(change: dict, changes_version: bool) -> None:
    base = FeatureRegistry.from_settings(FeatureSettings()).version
    assert FeatureRegistry.from_settings(FeatureSettings()).version == base
    changed = FeatureRegistry.from_settings(msgspec.structs.replace(FeatureSettings(), **change)).version
    assert (changed != base) is changes_version
    assert changed.startswith("fs1-")


def test_version_is_the_same_in_another_process() -> None:
    code = "from configs import FeatureSettings; from features import FeatureRegistry; " \
           "print(FeatureRegistry.from_settings(FeatureSettings()).version)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=Path(features.__file__).parent.parent)
    assert out.stdout.strip() == FeatureRegistry.from_settings(FeatureSettings()).version


def test_index_of_unknown_feature_names_the_known_ones() -> None:
    registry = FeatureRegistry.from_settings(FeatureSettings(windows_s=(5, 60)))
    with pytest.raises(KeyError) as info:
        registry.index("count_7d")
    message = str(info.value)
    assert "count_7d" in message and "count_5s" in message and "count_1m" in message and "is_night" in message
