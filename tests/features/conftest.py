"""Shared builders for the features tests: transactions, and a brute-force reference of the engine.

The reference recomputes every feature of :class:`features.engine.FeatureEngine`
from its definition (module docstrings and registry descriptions) over the
whole list of events seen so far, with no incremental state, no expiry and no
prefix sums. Where the engine is allowed to have forgotten something (events
behind ``watermark - longest window``, terminal buckets behind the sweep
horizon) and only a late event can look that far back, the reference gives
bounds instead of a value.
"""

from __future__ import annotations

import datetime as dt
import importlib
import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

import features
from configs import FeatureSettings
from contracts import Label, Transaction
from features.registry import (
    ACCOUNT_FRAUDS_MAX,
    FeatureRegistry,
    account_fraud_window_ms,
    delayed_feature_names,
    entity_kinds,
    window_name,
)

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
EPS = np.finfo(np.float64).eps

_ids = itertools.count()

#: The feature kernel exists as pure Python (features/*.py, the source of truth) and, when built, as
#: mypyc-compiled copies (features/_native/) that features._impl selects; tests run against both.
_KERNEL = ("windows", "stats", "geo", "novelty", "terminal", "engine")


def _kernel(package: str) -> SimpleNamespace:
    return SimpleNamespace(name=package, **{m: importlib.import_module(f"{package}.{m}") for m in _KERNEL})


IMPLEMENTATIONS = {"pure": _kernel("features")}
if getattr(features, "COMPILED", False):
    IMPLEMENTATIONS["compiled"] = _kernel("features._native")


def make_tx(event_time_ms: int, account_id: str = "A1", amount: float = 10.0, **fields: object) -> Transaction:
    """A valid transaction with a fresh id (``transaction_id=`` overrides it)."""
    transaction_id = fields.pop("transaction_id", None) or f"tx{next(_ids):08d}"
    return Transaction(
        transaction_id=transaction_id,  # type: ignore[arg-type]
        account_id=account_id,
        event_time=event_time_ms,
        amount=amount,
        **fields,  # type: ignore[arg-type]
    )


def _haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Independent great-circle distance (mean Earth radius 6371.0088 km)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(min(1.0, h)))


@dataclass
class Expected:
    """What the reference says about one feature vector."""

    late: bool
    watermark_ms: int
    #: name -> (value, relative tolerance, absolute tolerance); tolerance 0 means exact.
    values: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    #: name -> (low, high) inclusive, where the engine may have forgotten old state.
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: name -> allowed values, where a forgotten predecessor gives the neutral value.
    choices: dict[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass
class _Accepted:
    arrival: int
    tx: Transaction


@dataclass
class _Fraud:
    """A fraud label that joined its scored transaction (the first label of a pending transaction)."""

    #: The label's account when it had state then (a transaction of it in time before the label), else None.
    account: str | None
    #: The transaction's terminal, None when it had none or was late (never counted at its terminal).
    terminal: str | None
    event_time: int
    label_time: int
    #: The scored transaction, None when it was late (counted at none of its entities).
    scored: Transaction | None = None


def reference_rows(settings: FeatureSettings, events: Sequence[Transaction | Label]) -> list[Expected]:
    """Brute-force expectations, one per transaction, for ``events`` (transactions and labels, in arrival
    order) fed in this order to one fresh engine (``transform_one`` / ``observe_label``).

    A label joins when its transaction was scored before it and no label took it yet (the streams
    here are too short for the pending buffer to evict or expire anything, or for an account to
    expire: checked). Novelty of late events is left out here; test_novelty.py checks it against the
    current state.
    """
    transactions = [e for e in events if isinstance(e, Transaction)]
    if transactions:
        times = [e.event_time for e in transactions]
        span = max(times) - min(times)  # type: ignore[type-var, operator]
        assert span < settings.pending_labels_ttl_days * DAY and span < settings.entity_ttl_days * DAY
        assert len(transactions) <= settings.pending_labels_max
    lateness = settings.allowed_lateness_s * 1000
    windows = [s * 1000 for s in settings.windows_s]
    longest = windows[-1]
    bucket = settings.terminal_bucket_s * 1000
    freshness = settings.terminal_freshness_s * 1000
    window_buckets = max(1, int(settings.terminal_window_days * DAY) // bucket)
    sweep = settings.sweep_interval_s * 1000
    recent_buckets = min(window_buckets, max(1, settings.terminal_recent_s * 1000 // bucket))
    names = FeatureRegistry.from_settings(settings).names
    neutral_prev = float(settings.windows_s[-1])
    neutral_hours = settings.terminal_window_days * 24.0
    account_window = account_fraud_window_ms(settings)
    account_name = f"account_known_frauds_{window_name(account_window // 1000)}"
    assert account_name in names
    neutral_days = account_window / DAY

    accepted: list[_Accepted] = []
    #: transaction id -> (transaction, late) of scored transactions still waiting for their label
    pending: dict[str, tuple[Transaction, bool]] = {}
    frauds: list[_Fraud] = []
    max_time: int | None = None
    rows: list[Expected] = []
    for arrival, event in enumerate(events):
        if isinstance(event, Label):
            entry = pending.pop(event.transaction_id, None)
            if entry is not None and event.label == "fraud":
                scored, was_late = entry
                has_state = any(e.tx.account_id == event.account_id for e in accepted)
                frauds.append(_Fraud(event.account_id if has_state else None, None if was_late else scored.terminal_id,
                                     scored.event_time, event.label_time,  # type: ignore[arg-type]
                                     None if was_late else scored))
            continue
        tx = event
        t: int = tx.event_time  # type: ignore[assignment]
        late = max_time is not None and t < max_time - lateness
        if not late:
            max_time = t if max_time is None else max(max_time, t)
        assert max_time is not None
        watermark = max_time - lateness
        horizon = watermark - longest  # events after this are certainly still remembered
        earlier = [e for e in accepted if e.tx.account_id == tx.account_id]
        pool = earlier if late else [*earlier, _Accepted(arrival, tx)]
        row = Expected(late=late, watermark_ms=watermark)
        put = row.values

        put["amount"] = (tx.amount, 0.0, 0.0)
        put["log_amount"] = (math.log1p(tx.amount), 0.0, 0.0)

        # windows
        scale = sum(e.tx.amount for e in pool) + tx.amount
        tolerance = 4 * (len(pool) + 1) * EPS * scale + 1e-300
        for seconds, window in zip(settings.windows_s, windows, strict=True):
            name = _window_name(names, seconds)
            inside = [e.tx.amount for e in pool if t - window < e.tx.event_time <= t]  # type: ignore[operator]
            if t - window >= horizon:
                count, total = len(inside), math.fsum(inside)
                put[f"count_{name}"] = (float(count), 0.0, 0.0)
                put[f"sum_{name}"] = (total, 1e-9, tolerance)
                put[f"mean_{name}"] = (total / count if count else 0.0, 1e-9, tolerance)
            else:  # only a late event looks behind the horizon
                assert late
                low = max(t - window, horizon)
                kept = [e.tx.amount for e in pool if low < e.tx.event_time <= t]  # type: ignore[operator]
                row.bounds[f"count_{name}"] = (len(kept), len(inside))
                row.bounds[f"sum_{name}"] = (math.fsum(kept) - tolerance, math.fsum(inside) + tolerance)
                row.bounds[f"mean_{name}"] = (
                    min(inside) * (1 - 1e-9) if kept else 0.0,
                    max(inside) * (1 + 1e-9) if inside else 0.0,
                )

        # running statistics of the account's earlier (arrived before, not late) amounts
        amounts = np.array([e.tx.amount for e in earlier], dtype=np.float64)
        if amounts.size:
            mean = float(np.mean(amounts))
            std = float(np.std(amounts, ddof=1)) if amounts.size > 1 else 0.0
            ewma = float(amounts[0])
            for x in amounts[1:]:
                ewma = ewma + settings.ewma_alpha * (float(x) - ewma)
            spread = float(np.max(amounts)) + tx.amount + 1.0
            put["amount_mean"] = (mean, 1e-9, 1e-12 * spread)
            put["amount_std"] = (std, 1e-9, 1e-12 * spread)
            put["amount_ewma"] = (ewma, 1e-9, 1e-12 * spread)
            exact_std = statistics.stdev(amounts.tolist()) if amounts.size > 1 else 0.0  # 0 for equal amounts
            z = (tx.amount - statistics.mean(amounts.tolist())) / exact_std if exact_std > 0 else 0.0
            put["amount_z"] = (z, 1e-7, 1e-9 * spread / exact_std if exact_std > 0 else 0.0)
            put["amount_ratio"] = (tx.amount / mean if mean > 0 else 1.0, 1e-9, 1e-12)
            put["history_count"] = (float(amounts.size), 0.0, 0.0)
        else:
            for name, value in (("amount_mean", tx.amount), ("amount_std", 0.0), ("amount_ewma", tx.amount),
                                ("amount_z", 0.0), ("amount_ratio", 1.0), ("history_count", 0.0)):
                put[name] = (value, 0.0, 0.0)

        # seconds since the latest earlier event at or before t
        before = [e.tx.event_time for e in earlier if e.tx.event_time <= t]  # type: ignore[operator]
        if before:
            previous: int = max(before)  # type: ignore[type-var, assignment]
            gap = (t - previous) / 1000.0
            if previous > horizon:
                put["seconds_since_prev"] = (gap, 0.0, 0.0)
            else:
                row.choices["seconds_since_prev"] = (gap, neutral_prev)
        else:
            put["seconds_since_prev"] = (neutral_prev, 0.0, 0.0)

        # distance and speed from the latest located earlier event at or before t
        located = [e for e in earlier if e.tx.lat is not None and e.tx.event_time <= t]  # type: ignore[operator]
        if tx.lat is not None and located:
            prior = max(located, key=lambda e: (e.tx.event_time, e.arrival))
            distance = _haversine_km((prior.tx.lat, prior.tx.lon), (tx.lat, tx.lon))  # type: ignore[arg-type]
            hours = max(t - prior.tx.event_time, MINUTE) / HOUR  # type: ignore[operator]
            put["distance_km"] = (distance, 1e-9, 1e-9)
            put["speed_kmh"] = (distance / hours, 1e-9, 1e-9)
        else:
            put["distance_km"] = (0.0, 0.0, 0.0)
            put["speed_kmh"] = (0.0, 0.0, 0.0)

        # novelty against every earlier value of the account
        if not late:
            novelty = (("new_merchant", "merchant_id"), ("new_country", "country"), ("new_device", "device_id"))
            for name, attribute in novelty:
                value = getattr(tx, attribute)
                seen = {getattr(e.tx, attribute) for e in earlier}
                put[name] = (1.0 if value is not None and value not in seen else 0.0, 0.0, 0.0)

        # distinct merchants / countries in (t - 24h, t]
        for name, attribute in (("distinct_merchants_24h", "merchant_id"), ("distinct_countries_24h", "country")):
            def distinct(low: int, attribute: str = attribute, pool: list[_Accepted] = pool, t: int = t) -> float:
                inside = [e.tx for e in pool if low < e.tx.event_time <= t]  # type: ignore[operator]
                values = {getattr(event, attribute) for event in inside}
                return float(len(values - {None}))
            if not late:  # its window lies after watermark - 24h, all of it remembered
                put[name] = (distinct(t - DAY), 0.0, 0.0)
            else:
                row.bounds[name] = (distinct(max(t - DAY, watermark - DAY)), distinct(t - DAY))

        # terminal: the last `window_buckets` complete buckets closed at least `freshness` before t
        # (close time in (t - freshness - window, t - freshness]); frauds of transactions counted there
        # whose label arrived by t - freshness
        if tx.terminal_id is not None:
            edge = t - freshness

            def closes(event_time: int) -> int:
                return (event_time // bucket + 1) * bucket

            def visible(event_time: int, edge: int = edge) -> bool:
                return edge - window_buckets * bucket < closes(event_time) <= edge

            same_terminal = [e.tx.event_time for e in accepted if e.tx.terminal_id == tx.terminal_id]
            count = sum(1 for event_time in same_terminal if visible(event_time))  # type: ignore[arg-type]
            known = [closes(f.event_time) for f in frauds
                     if f.terminal == tx.terminal_id and visible(f.event_time) and f.label_time <= edge]
            recent = sum(1 for c in known if c > edge - recent_buckets * bucket)
            hours = (t - max(known)) / HOUR if known else neutral_hours
            if t >= watermark - lateness - sweep:
                put["terminal_tx_count"] = (float(count), 0.0, 0.0)
                put["terminal_fraud_count"] = (float(len(known)), 0.0, 0.0)
                put["terminal_fraud_rate"] = (len(known) / count if count else 0.0, 0.0, 0.0)
                put["terminal_recent_frauds"] = (float(recent), 0.0, 0.0)
                put["terminal_hours_since_fraud"] = (hours, 0.0, 0.0)
            else:  # behind the horizon of the terminal table's sweeps
                assert late
                row.bounds["terminal_tx_count"] = (0.0, float(count))
                row.bounds["terminal_fraud_count"] = (0.0, float(len(known)))
                row.bounds["terminal_fraud_rate"] = (0.0, math.inf)
                row.bounds["terminal_recent_frauds"] = (0.0, float(recent))
                row.bounds["terminal_hours_since_fraud"] = (hours, neutral_hours)
        else:
            for name in ("terminal_tx_count", "terminal_fraud_count", "terminal_fraud_rate", "terminal_recent_frauds"):
                put[name] = (0.0, 0.0, 0.0)
            put["terminal_hours_since_fraud"] = (neutral_hours, 0.0, 0.0)

        # delay-aware entity windows: the w complete days up to the last day closed by t - delay - freshness;
        # frauds of transactions counted there (not late) whose label arrived by t - freshness
        head = (t - int(settings.label_delay_days * DAY) - freshness) // DAY - 1
        for kind in entity_kinds(settings):
            attribute = f"{kind}_id"
            value = getattr(tx, attribute)
            for days in settings.entity_windows_days:
                count_name, risk_name = delayed_feature_names(kind, days)
                if value is None:
                    put[count_name] = put[risk_name] = (0.0, 0.0, 0.0)
                    continue
                first_day = head - days
                n = sum(1 for e in accepted if getattr(e.tx, attribute) == value
                        and first_day < e.tx.event_time // DAY <= head)  # type: ignore[operator]
                k = sum(1 for f in frauds if f.scored is not None and getattr(f.scored, attribute) == value
                        and first_day < f.event_time // DAY <= head and f.label_time <= t - freshness)
                if t >= watermark - lateness - sweep:
                    put[count_name] = (float(n), 0.0, 0.0)
                    put[risk_name] = (k / n if n else 0.0, 0.0, 0.0)
                else:  # behind the horizon of the table's sweeps
                    assert late
                    row.bounds[count_name] = (0.0, float(n))
                    row.bounds[risk_name] = (0.0, math.inf)

        # account known frauds: this account's joined frauds paid in (t - window, t] (and after the
        # retention horizon watermark - window), label arrived by t
        mine = [f for f in frauds if f.account == tx.account_id]
        low = max(t - account_window, watermark - account_window)
        seen = [f.event_time for f in mine if low < f.event_time <= t and f.label_time <= t]
        days = (t - max(seen)) / DAY if seen else neutral_days
        if len(mine) <= ACCOUNT_FRAUDS_MAX:
            put[account_name] = (float(len(seen)), 0.0, 0.0)
            put["account_days_since_fraud"] = (days, 0.0, 0.0)
        else:  # the oldest (by event time) beyond the bound may have been forgotten
            forgotten = len(mine) - ACCOUNT_FRAUDS_MAX
            row.bounds[account_name] = (max(0, len(seen) - forgotten), min(len(seen), ACCOUNT_FRAUDS_MAX))
            row.bounds["account_days_since_fraud"] = (days, neutral_days)

        # calendar (UTC)
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=t)
        start, stop = settings.night_hours
        night = set(range(start, stop)) if start <= stop else set(range(start, 24)) | set(range(stop))
        put["hour_of_day"] = (float(moment.hour), 0.0, 0.0)
        put["is_weekend"] = (1.0 if moment.weekday() >= 5 else 0.0, 0.0, 0.0)
        put["is_night"] = (1.0 if moment.hour in night else 0.0, 0.0, 0.0)

        rows.append(row)
        pending[tx.transaction_id] = (tx, late)
        if not late:
            accepted.append(_Accepted(arrival, tx))
    return rows


def _window_name(names: Sequence[str], seconds: int) -> str:
    name = window_name(seconds)
    assert f"count_{name}" in names
    return name


def check_row(names: Sequence[str], vector: Sequence[float], late: bool, expected: Expected, where: str = "") -> None:
    """Assert one engine output against the reference, naming the feature that differs."""
    assert late == expected.late, f"{where}: late flag"
    assert len(vector) == len(names)
    by_name = dict(zip(names, vector, strict=True))
    for name, (value, rel, abs_) in expected.values.items():
        if rel == 0.0 and abs_ == 0.0:
            assert by_name[name] == value, f"{where}: {name} = {by_name[name]!r}, expected {value!r}"
        else:
            assert by_name[name] == pytest.approx(value, rel=rel, abs=abs_), f"{where}: {name}"
    for name, (low, high) in expected.bounds.items():
        assert low <= by_name[name] <= high, f"{where}: {name} = {by_name[name]} not in [{low}, {high}]"
    for name, allowed in expected.choices.items():
        assert by_name[name] in allowed, f"{where}: {name} = {by_name[name]} not in {allowed}"
    checked = set(expected.values) | set(expected.bounds) | set(expected.choices)
    unchecked = set(names) - checked - {"new_merchant", "new_country", "new_device"}
    assert not unchecked, f"reference misses {sorted(unchecked)}"


@pytest.fixture(scope="session")
def tx() -> Callable[..., Transaction]:
    """``tx(event_time_ms, account_id="A1", amount=10.0, **fields)`` builds a transaction."""
    return make_tx


@pytest.fixture(scope="session")
def reference() -> Callable[..., list[Expected]]:
    return reference_rows


@pytest.fixture(scope="session")
def check() -> Callable[..., None]:
    return check_row


@pytest.fixture(scope="session")
def feature() -> Callable[[object, list[float], str], float]:
    """``feature(engine, vector, name)``: one named value of a vector."""

    def get(engine: object, vector: list[float], name: str) -> float:
        return vector[engine.registry.index(name)]  # type: ignore[attr-defined]

    return get


@pytest.fixture(scope="session", params=sorted(IMPLEMENTATIONS))
def impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    """One implementation of the kernel: ``impl.engine.FeatureEngine``, ``impl.windows.EventWindow``, ..."""
    return IMPLEMENTATIONS[request.param]


@pytest.fixture(scope="session")
def implementations() -> dict[str, SimpleNamespace]:
    return IMPLEMENTATIONS
