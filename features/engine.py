"""Per-partition feature state and the one feature computation.

:class:`FeatureEngine` owns one Kafka partition's entity state (accounts), its
watermark and its pending labels; the terminal risk table may be shared between
engines (it is global by construction, see :mod:`features.terminal`). The
scoring actors call it event by event or per micro-batch; the offline builder
calls the very same methods in event-time order.

Late-event policy: an event whose time is behind the partition's watermark
(max event time seen - allowed lateness) is scored against the current state,
changes no state at all (windows, statistics, novelty, locations, terminal
counts), is counted in ``stats.late_events`` and flagged ``late`` on its row
(and so on its alert). What it sees is limited to the retention horizon
(watermark - longest window; 24 h for the distinct counts), so the answer
never depends on when expiry ran. Events inside the lateness update windows as if they had
arrived in order.

Account known frauds: a fraud label joined to its scored transaction (through
the pending-label buffer, :meth:`FeatureEngine.observe_label`) is also
remembered by the label's account (its ``account_id``, the key that brought it
to this partition) as the (event time, label time) of the fraudulent
transaction, sorted by event time, at most ``registry.ACCOUNT_FRAUDS_MAX`` (32;
beyond it the oldest by event time is forgotten) and only while the entry can
still be seen (event time after watermark - ``account_fraud_window_days``). ``account_known_frauds_<N>d``
counts those paid in (t - N days, t] whose label time is <= t;
``account_days_since_fraud`` is the age in days of the latest of them, N when
there is none. Like windows, a query never looks at or behind the retention
horizon (watermark - N days), so results do not depend on when entries were
dropped. Not counted: a label whose transaction is no longer pending (evicted
or expired from the buffer, or never scored here), a label after the first one
of a transaction, and a fraud of an account that has no state when its label
comes (never seen in time, or expired by the TTL). A late transaction's fraud
counts for its account (it is the account's fraud), though not at its terminal.
An account with no known fraud keeps ``None`` and pays one check per event.

>>> from configs import FeatureSettings
>>> from contracts import Transaction
>>> engine = FeatureEngine(FeatureSettings(allowed_lateness_s=60))
>>> H = 3_600_000
>>> def tx(i, hour, amount):
...     return Transaction(transaction_id=f"t{i}", account_id="A1", event_time=1_767_225_600_000 + hour * H,
...                        amount=amount, merchant_id=f"M{i % 2}", country="FR", lat=48.85, lon=2.35)
>>> rows = [engine.transform_one(tx(i, h, a)) for i, (h, a) in enumerate([(0, 10.0), (1, 30.0), (2, 50.0)])]
>>> values, late = rows[-1]
>>> index = engine.registry.index
>>> values[index("count_24h")], values[index("sum_24h")], values[index("new_merchant")], late
(3.0, 90.0, 0.0, False)
>>> engine.transform_one(tx(9, 0, 5.0))[1]      # two hours behind, lateness is one minute
True
>>> engine.stats.late_events, len(engine.accounts["A1"].window)
(1, 3)
>>> from contracts import Label
>>> engine.observe_label(Label(transaction_id="t1", account_id="A1", label="fraud",
...                            label_time=1_767_225_600_000 + 5 * H))     # the payment at hour 1 was a fraud
True
>>> values, _ = engine.transform_one(tx(3, 26, 20.0))
>>> values[index("account_known_frauds_30d")], values[index("account_days_since_fraud")]   # 25 h later
(1.0, 1.0416666666666667)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from configs import FeatureSettings
from contracts import Label, Transaction
from features.batch import EngineStats, FeatureBatch
from features.ckernel import CEventWindow, CRecentDistinct
from features.geo import LocationTrail, haversine_km
from features.novelty import NoveltyFilter, RecentDistinct, key_hashes
from features.registry import ACCOUNT_FRAUDS_MAX, FeatureRegistry, account_fraud_window_ms, entity_kinds
from features.stats import RunningStats
from features.terminal import PendingLabels, TerminalRisk, entity_key
from features.windows import EventWindow

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_DISTINCT_WINDOW_MS = _DAY_MS
_NO_WATERMARK = -(2**62)
_SEED_M, _SEED_C, _SEED_D = 0x6D657263, 0x636F756E, 0x64657669


def _novel(seen: NoveltyFilter, h1: int, h2: int, late: bool) -> float:
    """1.0 when the key hashed to (h1, h2) is new to the account; a late event only checks."""
    if late:
        return 0.0 if seen.contains_hashes(h1, h2) else 1.0
    return 1.0 if seen.add_hashes_is_new(h1, h2) else 0.0


class AccountState:
    """Everything remembered about one account."""

    __slots__ = ("frauds", "last_seen_ms", "recent", "seen", "stats", "trail", "window")

    def __init__(
        self,
        window: Any,
        stats: RunningStats,
        trail: LocationTrail,
        seen: NoveltyFilter,
        recent: Any,
        last_seen_ms: int,
        frauds: list[tuple[int, int]] | None = None,
    ) -> None:
        #: An EventWindow: the C twin when built (features/ckernel.py), else windows.py's.
        self.window: Any = window
        self.stats = stats
        self.trail = trail
        self.seen = seen
        #: A RecentDistinct: the C twin when built (features/ckernel.py), else novelty.py's.
        self.recent: Any = recent
        self.last_seen_ms = last_seen_ms
        #: Known frauds (event time, label time), sorted; None when there is none (never an empty list).
        self.frauds: list[tuple[int, int]] | None = frauds


class FeatureEngine:
    """Feature state of one partition (or of a whole offline replay) and the computation."""

    def __init__(
        self, settings: FeatureSettings, terminal_risk: TerminalRisk | None = None, c_twins: bool = True
    ) -> None:
        self.settings = settings
        #: The containers of new accounts: the C twins when built and ``c_twins``, else this
        #: kernel's own classes (same results either way; see features/ckernel.py).
        use_c = c_twins and CEventWindow is not None and CRecentDistinct is not None
        self.window_class: Any = CEventWindow if use_c else EventWindow
        self.recent_class: Any = CRecentDistinct if use_c else RecentDistinct
        self.registry = FeatureRegistry.from_settings(settings)
        self.windows_ms: tuple[int, ...] = tuple(int(s) * 1000 for s in settings.windows_s)
        self.max_window_ms: int = self.windows_ms[-1]
        self.lateness_ms: int = int(settings.allowed_lateness_s) * 1000
        self.ttl_ms: int = int(settings.entity_ttl_days * _DAY_MS)
        self.sweep_interval_ms: int = int(settings.sweep_interval_s) * 1000
        self.max_events_per_account: int = int(settings.max_events_per_account)
        #: A shared table is expired by its owner (the slowest partition decides).
        self._owns_terminal_risk: bool = terminal_risk is None
        #: Terminal buckets are kept this long behind the watermark for late events.
        self.terminal_retention_ms: int = max(self.lateness_ms, _DAY_MS)
        self.terminal_risk = terminal_risk or FeatureEngine.terminal_risk_for(settings)
        self.pending = PendingLabels(settings.pending_labels_max, int(settings.pending_labels_ttl_days * _DAY_MS))
        self.accounts: dict[str, AccountState] = {}
        self.max_event_time_ms: int = _NO_WATERMARK
        self.stats = EngineStats()
        self._last_sweep: int = _NO_WATERMARK
        self._neutral_prev_s: float = float(settings.windows_s[-1])
        self._neutral_fraud_age_h: float = settings.terminal_window_days * 24.0
        self.account_fraud_window_ms: int = int(account_fraud_window_ms(settings))
        self.account_frauds_max: int = int(ACCOUNT_FRAUDS_MAX)
        self._neutral_fraud_age_d: float = self.account_fraud_window_ms / _DAY_MS
        self._night_start: int = int(settings.night_hours[0])
        self._night_end: int = int(settings.night_hours[1])
        kinds = entity_kinds(settings)
        self._days_terminal: bool = "terminal" in kinds
        self._days_merchant: bool = "merchant" in kinds
        self._days_device: bool = "device" in kinds
        #: The delay-aware features of an entity the transaction does not carry.
        self._delayed_neutral: list[float] = [0.0] * (2 * len(settings.entity_windows_days))

    @staticmethod
    def terminal_risk_for(settings: FeatureSettings) -> TerminalRisk:
        """An empty terminal risk table with the configured window, buckets and freshness."""
        return TerminalRisk(
            window_ms=int(settings.terminal_window_days * _DAY_MS),
            bucket_ms=settings.terminal_bucket_s * 1000,
            freshness_ms=settings.terminal_freshness_s * 1000,
            recent_ms=settings.terminal_recent_s * 1000,
            day_windows=tuple(settings.entity_windows_days) if entity_kinds(settings) else (),
            delay_ms=int(settings.label_delay_days * _DAY_MS),
        )

    @property
    def watermark_ms(self) -> int:
        """Max event time seen minus the allowed lateness."""
        return self.max_event_time_ms - self.lateness_ms

    def _new_account(self, event_time_ms: int) -> AccountState:
        s = self.settings
        return AccountState(
            self.window_class(),
            RunningStats(s.ewma_alpha),
            LocationTrail(s.location_trail),
            NoveltyFilter(s.novelty_bits),
            self.recent_class(),
            event_time_ms,
        )

    def transform_one(self, tx: Transaction) -> tuple[list[float], bool]:
        """Update state with one transaction and return (feature vector, late).

        Long on purpose: this is the per-event kernel mypyc compiles, and in one function its locals (the
        event time, the account's state, the output list) stay unboxed C variables; split per feature group,
        every group would pay a call and box them again, on every event.
        """
        t: int = tx.event_time
        amount: float = tx.amount
        self.stats.events += 1
        late = t < self.max_event_time_ms - self.lateness_ms
        if late:
            self.stats.late_events += 1
        elif t > self.max_event_time_ms:
            self.max_event_time_ms = t
            if t - self.lateness_ms - self._last_sweep >= self.sweep_interval_ms:
                self.sweep()

        account = self.accounts.get(tx.account_id)
        if account is None:
            account = self._new_account(t)
            if not late:
                self.accounts[tx.account_id] = account
        window = account.window
        stats = account.stats

        # windows (this event included unless late); nothing at or behind the retention
        # horizon counts, so results never depend on when expiry ran
        watermark = self.max_event_time_ms - self.lateness_ms
        horizon = watermark - self.max_window_ms
        end: int
        previous: int | None
        if late:
            end = window.end_index(t)
            previous = window.previous_time(end + 1)  # the last event at or before t
        else:
            end = window.insert(t, amount)
            previous = window.previous_time(end)
        if previous is not None and previous <= horizon:
            previous = None
        out: list[float] = [amount, math.log1p(amount)]
        window.aggregates_into(t, self.windows_ms, end, out, horizon)

        # running statistics of earlier amounts
        n = stats.n
        if n:
            mean = stats.mean
            std = stats.std()
            out.append(mean)
            out.append(std)
            out.append(stats.ewma)
            out.append((amount - mean) / std if std > 0.0 else 0.0)
            out.append(amount / mean if mean > 0.0 else 1.0)
            out.append(float(n))
        else:
            out.append(amount)
            out.append(0.0)
            out.append(amount)
            out.append(0.0)
            out.append(1.0)
            out.append(0.0)

        # time since previous, distance and speed from the previous located event
        out.append((t - previous) / 1000.0 if previous is not None else self._neutral_prev_s)
        lat: float | None = tx.lat
        lon: float | None = tx.lon
        if lat is not None and lon is not None:
            prior = account.trail.previous(t)
            if prior is not None:
                distance = haversine_km(prior[1], prior[2], lat, lon)
                hours = max(t - prior[0], 60_000) / _HOUR_MS
                out.append(distance)
                out.append(distance / hours)
            else:
                out.append(0.0)
                out.append(0.0)
        else:
            out.append(0.0)
            out.append(0.0)

        # novelty (one namespace seed per kind); a late event is checked, not added
        seen = account.seen
        merchant_hash = 0
        country_hash = 0
        value = tx.merchant_id
        if value is not None:
            h1, h2 = key_hashes(value.encode(), _SEED_M)
            merchant_hash = h1 | 1
            out.append(_novel(seen, h1, h2, late))
        else:
            out.append(0.0)
        value = tx.country
        if value is not None:
            h1, h2 = key_hashes(value.encode(), _SEED_C)
            country_hash = h1 | 1
            out.append(_novel(seen, h1, h2, late))
        else:
            out.append(0.0)
        value = tx.device_id
        if value is not None:
            h1, h2 = key_hashes(value.encode(), _SEED_D)
            out.append(_novel(seen, h1, h2, late))
        else:
            out.append(0.0)
        recent = account.recent
        if not late:
            recent.add(t, merchant_hash, country_hash, self.max_events_per_account)
        merchants_24h, countries_24h = recent.distinct(t, _DISTINCT_WINDOW_MS, watermark - _DISTINCT_WINDOW_MS)
        out.append(float(merchants_24h))
        out.append(float(countries_24h))

        # terminal risk (global table, complete buckets, labels known by event time)
        terminal = tx.terminal_id
        if terminal is not None:
            risk = self.terminal_risk
            tx_count, fraud_count = risk.stats(terminal, t)
            out.append(float(tx_count))
            out.append(float(fraud_count))
            out.append(fraud_count / tx_count if tx_count else 0.0)
            if fraud_count:
                recent_frauds, since_ms = risk.recent_frauds(terminal, t)
                out.append(float(recent_frauds))
                out.append(since_ms / _HOUR_MS if since_ms is not None else self._neutral_fraud_age_h)
            else:
                out.append(0.0)
                out.append(self._neutral_fraud_age_h)
            if not late:
                risk.record_transaction(terminal, t)
        else:
            out.append(0.0)
            out.append(0.0)
            out.append(0.0)
            out.append(0.0)
            out.append(self._neutral_fraud_age_h)

        # delay-aware entity windows (days ending label_delay_days ago); the keys a fraud label will count at
        keys: tuple[str, ...] | None = None
        if terminal is not None:
            keys = (terminal,)
        if self._days_terminal:
            self._delayed(terminal, t, late, out)
        if self._days_merchant:
            merchant_key = entity_key("merchant", tx.merchant_id) if tx.merchant_id is not None else None
            self._delayed(merchant_key, t, late, out)
            if merchant_key is not None:
                keys = (merchant_key,) if keys is None else (*keys, merchant_key)
        if self._days_device:
            device_key = entity_key("device", tx.device_id) if tx.device_id is not None else None
            self._delayed(device_key, t, late, out)
            if device_key is not None:
                keys = (device_key,) if keys is None else (*keys, device_key)

        # account known frauds (labels arrived by t; nothing at or behind watermark - window)
        frauds = account.frauds
        if frauds is None:
            out.append(0.0)
            out.append(self._neutral_fraud_age_d)
        else:
            low = t - self.account_fraud_window_ms
            floor = watermark - self.account_fraud_window_ms
            if floor > low:
                low = floor
            known = 0
            latest = low
            for fraud_time, known_at in frauds:
                if low < fraud_time <= t and known_at <= t:
                    known += 1
                    latest = fraud_time
            out.append(float(known))
            out.append((t - latest) / _DAY_MS if known else self._neutral_fraud_age_d)

        # calendar (UTC)
        hour = (t // _HOUR_MS) % 24
        out.append(float(hour))
        out.append(1.0 if (t // _DAY_MS + 3) % 7 >= 5 else 0.0)  # 1970-01-01 was a Thursday
        start, stop = self._night_start, self._night_end
        out.append(1.0 if (start <= hour < stop if start <= stop else hour >= start or hour < stop) else 0.0)

        # state upkeep after scoring
        if not late:
            stats.update(amount)
            if lat is not None and lon is not None:
                account.trail.add(t, lat, lon)
            if t > account.last_seen_ms:
                account.last_seen_ms = t
            window.expire(horizon)
            if len(window) > self.max_events_per_account:
                self.stats.truncated_events += window.drop_oldest(len(window) - self.max_events_per_account)
            recent.trim(watermark - _DISTINCT_WINDOW_MS)
            if frauds is not None and frauds[0][0] <= watermark - self.account_fraud_window_ms:
                account.frauds = self._unexpired(frauds, watermark)
        # a late transaction was not counted at its terminal (or entities), so its fraud must not be either
        self.pending.add(tx.transaction_id, None if late else keys, t)
        return out, late

    def _delayed(self, key: str | None, t: int, late: bool, out: list[float]) -> None:
        """One entity's delay-aware window features; its transaction counted on its day unless late."""
        if key is None:
            out.extend(self._delayed_neutral)
            return
        self.terminal_risk.delayed_into(key, t, out, not late)

    def transform_batch(self, transactions: list[Transaction]) -> FeatureBatch:
        """Feature vectors for a micro-batch, in order (same computation as transform_one)."""
        rows = []
        late = []
        transform = self.transform_one
        for tx in transactions:
            values, is_late = transform(tx)
            rows.append(values)
            late.append(is_late)
        width = len(self.registry)
        matrix = np.array(rows, dtype=np.float64) if rows else np.empty((0, width))
        return FeatureBatch(matrix, np.array(late, dtype=bool), self.registry.names, self.registry.version)

    def observe_label(self, label: Label) -> bool:
        """Join a label to its scored transaction; a fraud counts at its terminal (entities) and for its account.

        Returns False when the transaction is unknown here (never scored, its
        label joined already, or evicted or expired from the bounded pending
        buffer): such a label is counted nowhere.
        """
        self.stats.labels += 1
        entry = self.pending.pop(label.transaction_id)
        if entry is None:
            self.stats.labels_unmatched += 1
            return False
        keys, event_time = entry
        if label.label == "fraud":
            label_time: int = label.label_time
            if keys is not None:
                for key in keys:
                    self.terminal_risk.record_fraud(key, event_time, label_time)
            account = self.accounts.get(label.account_id)
            if account is not None:
                self._record_account_fraud(account, event_time, label_time)
        return True

    def _unexpired(self, frauds: list[tuple[int, int]], watermark: int) -> list[tuple[int, int]] | None:
        """The entries no query can skip yet (event time after watermark - window); None when none is left."""
        floor = watermark - self.account_fraud_window_ms
        keep = 0
        while keep < len(frauds) and frauds[keep][0] <= floor:
            keep += 1
        return frauds[keep:] if keep < len(frauds) else None

    def _record_account_fraud(self, account: AccountState, event_time: int, label_time: int) -> None:
        """Remember a known fraud of the account, in event-time order, within the window and the bound."""
        floor = self.max_event_time_ms - self.lateness_ms - self.account_fraud_window_ms
        if event_time <= floor:
            return  # no query from now on looks that far back
        entry = (event_time, label_time)
        frauds = account.frauds
        if frauds is None:
            account.frauds = [entry]
            return
        position = len(frauds)
        while position > 0 and frauds[position - 1] > entry:
            position -= 1
        frauds.insert(position, entry)
        drop = 0
        while frauds[drop][0] <= floor:  # stops at the new entry at the latest
            drop += 1
        if len(frauds) - drop > self.account_frauds_max:
            drop = len(frauds) - self.account_frauds_max  # the oldest by event time go first
        if drop:
            del frauds[:drop]

    def sweep(self) -> int:
        """Drop accounts idle longer than the TTL (event time) and stale pending labels."""
        watermark = self.watermark_ms
        self._last_sweep = watermark - watermark % self.sweep_interval_ms
        cutoff = watermark - self.ttl_ms
        idle = [account_id for account_id, state in self.accounts.items() if state.last_seen_ms < cutoff]
        for account_id in idle:
            del self.accounts[account_id]
        self.stats.expired_accounts += len(idle)
        self.pending.expire(watermark)
        if self._owns_terminal_risk:
            self.terminal_risk.expire(watermark - self.terminal_retention_ms)
        return len(idle)
