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
(and so on its alert). Events inside the lateness update windows as if they had
arrived in order.

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
"""

from __future__ import annotations

import math
from zlib import crc32
from dataclasses import dataclass, field

import numpy as np

from configs import FeatureSettings
from contracts import Label, Transaction
from features.geo import LocationTrail, haversine_km
from features.novelty import NoveltyFilter, RecentDistinct
from features.registry import FeatureRegistry
from features.stats import RunningStats
from features.terminal import PendingLabels, TerminalRisk
from features.windows import EventWindow

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_DISTINCT_WINDOW_MS = _DAY_MS
_NO_WATERMARK = -(2**62)
_SEED_M, _SEED_C, _SEED_D = 0x6D657263, 0x636F756E, 0x64657669


class AccountState:
    """Everything remembered about one account."""

    __slots__ = ("window", "stats", "trail", "seen", "recent", "last_seen_ms")

    def __init__(
        self,
        window: EventWindow,
        stats: RunningStats,
        trail: LocationTrail,
        seen: NoveltyFilter,
        recent: RecentDistinct,
        last_seen_ms: int,
    ) -> None:
        self.window = window
        self.stats = stats
        self.trail = trail
        self.seen = seen
        self.recent = recent
        self.last_seen_ms = last_seen_ms


@dataclass
class EngineStats:
    """Counters an operator wants to see (all monotonic)."""

    events: int = 0
    late_events: int = 0
    labels: int = 0
    labels_unmatched: int = 0
    expired_accounts: int = 0
    truncated_events: int = 0


@dataclass
class FeatureBatch:
    """Feature vectors of a micro-batch, rows in input order."""

    values: np.ndarray
    late: np.ndarray
    names: tuple[str, ...]
    version: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)


class FeatureEngine:
    """Feature state of one partition (or of a whole offline replay) and the computation."""

    def __init__(self, settings: FeatureSettings, terminal_risk: TerminalRisk | None = None) -> None:
        self.settings = settings
        self.registry = FeatureRegistry.from_settings(settings)
        self.windows_ms = tuple(s * 1000 for s in settings.windows_s)
        self.max_window_ms = self.windows_ms[-1]
        self.lateness_ms = settings.allowed_lateness_s * 1000
        self.ttl_ms = int(settings.entity_ttl_days * _DAY_MS)
        self.sweep_interval_ms = settings.sweep_interval_s * 1000
        self.terminal_risk = terminal_risk or TerminalRisk(
            window_ms=int(settings.terminal_window_days * _DAY_MS),
            bucket_ms=settings.terminal_bucket_s * 1000,
            freshness_ms=settings.terminal_freshness_s * 1000,
        )
        self.pending = PendingLabels(settings.pending_labels_max, int(settings.pending_labels_ttl_days * _DAY_MS))
        self.accounts: dict[str, AccountState] = {}
        self.max_event_time_ms = _NO_WATERMARK
        self.stats = EngineStats()
        self._last_sweep = _NO_WATERMARK
        self._neutral_prev_s = float(settings.windows_s[-1])
        self._night_start, self._night_end = settings.night_hours

    @property
    def watermark_ms(self) -> int:
        """Max event time seen minus the allowed lateness."""
        return self.max_event_time_ms - self.lateness_ms

    def _new_account(self, event_time_ms: int) -> AccountState:
        s = self.settings
        return AccountState(
            EventWindow(),
            RunningStats(s.ewma_alpha),
            LocationTrail(s.location_trail),
            NoveltyFilter(s.novelty_bits),
            RecentDistinct(),
            event_time_ms,
        )

    def transform_one(self, tx: Transaction) -> tuple[list[float], bool]:
        """Update state with one transaction and return (feature vector, late)."""
        t: int = tx.event_time  # type: ignore[assignment]  # epoch ms after decoding
        amount = tx.amount
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

        # windows (this event included unless late)
        if late:
            end = window.end_index(t)
            previous = window.times[end - 1] if end else None
        else:
            end = window.insert(t, amount)
            previous = window.previous_time(end)
        out: list[float] = [amount, math.log1p(amount)]
        window.aggregates_into(t, self.windows_ms, end, out)

        # running statistics of earlier amounts
        n = stats.n
        if n:
            mean = stats.mean
            std = stats.std()
            out += [mean, std, stats.ewma, (amount - mean) / std if std > 0.0 else 0.0,
                    amount / mean if mean > 0.0 else 1.0, float(n)]
        else:
            out += [amount, 0.0, amount, 0.0, 1.0, 0.0]

        # time since previous, distance and speed from the previous located event
        out.append((t - previous) / 1000.0 if previous is not None else self._neutral_prev_s)
        lat, lon = tx.lat, tx.lon
        if lat is not None and lon is not None:
            prior = account.trail.previous(t)
            if prior is not None:
                distance = haversine_km(prior[1], prior[2], lat, lon)
                hours = max(t - prior[0], 60_000) / _HOUR_MS
                out += [distance, distance / hours]
            else:
                out += [0.0, 0.0]
        else:
            out += [0.0, 0.0]

        # novelty (one namespace seed per kind; the merchant/country hashes double as first probes)
        merchant = tx.merchant_id
        country = tx.country
        device = tx.device_id
        merchant_bytes = merchant.encode() if merchant is not None else None
        country_bytes = country.encode() if country is not None else None
        merchant_hash = crc32(merchant_bytes) | 1 if merchant_bytes is not None else 0
        country_hash = crc32(country_bytes) | 1 if country_bytes is not None else 0
        if late:
            out += [0.0, 0.0, 0.0]
        else:
            add = account.seen.add_hashes_is_new
            out.append(1.0 if merchant_bytes is not None and add(merchant_hash, crc32(merchant_bytes, _SEED_M)) else 0.0)
            out.append(1.0 if country_bytes is not None and add(country_hash ^ _SEED_C, crc32(country_bytes, _SEED_C)) else 0.0)
            if device is not None:
                device_bytes = device.encode()
                out.append(1.0 if add(crc32(device_bytes) ^ _SEED_D, crc32(device_bytes, _SEED_D)) else 0.0)
            else:
                out.append(0.0)
        recent = account.recent
        if not late:
            recent.add(t, merchant_hash, country_hash)
        merchants_24h, countries_24h = recent.distinct(t, _DISTINCT_WINDOW_MS)
        out += [float(merchants_24h), float(countries_24h)]

        # terminal risk (global table, complete buckets, labels known by event time)
        terminal = tx.terminal_id
        if terminal is not None:
            tx_count, fraud_count = self.terminal_risk.stats(terminal, t)
            out += [float(tx_count), float(fraud_count), fraud_count / tx_count if tx_count else 0.0]
            if not late:
                self.terminal_risk.record_transaction(terminal, t)
        else:
            out += [0.0, 0.0, 0.0]

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
            watermark = self.max_event_time_ms - self.lateness_ms
            window.expire(watermark - self.max_window_ms)
            if len(window) > self.settings.max_events_per_account:
                self.stats.truncated_events += window.drop_oldest(len(window) - self.settings.max_events_per_account)
            if len(recent.times) > 4:
                recent.expire(watermark - _DISTINCT_WINDOW_MS)
        self.pending.add(tx.transaction_id, terminal, t)
        return out, late

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
        """Join a label to its scored transaction; a fraud counts at its terminal.

        Returns False when the transaction is unknown here (never scored, or
        evicted from the bounded pending buffer).
        """
        self.stats.labels += 1
        entry = self.pending.pop(label.transaction_id)
        if entry is None:
            self.stats.labels_unmatched += 1
            return False
        terminal, event_time = entry
        if label.label == "fraud" and terminal is not None:
            self.terminal_risk.record_fraud(terminal, event_time, label.label_time)  # type: ignore[arg-type]
        return True

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
        self.terminal_risk.expire(watermark - self.lateness_ms - self.sweep_interval_ms)
        return len(idle)
