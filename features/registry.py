"""The feature registry: every feature's name, meaning and neutral value, in vector order.

The version is derived from the names and the parameters that change their
meaning (windows, EWMA weight, night hours, terminal window, account fraud
window and its bound), so a model trained on one feature layout, or a
checkpoint of its state, refuses to serve another.

>>> from configs import FeatureSettings
>>> registry = FeatureRegistry.from_settings(FeatureSettings())
>>> registry.names[:5]
('amount', 'log_amount', 'count_10m', 'sum_10m', 'mean_10m')
>>> registry.index("count_24h"), len(registry)
(8, 59)
>>> registry.names[36:38]
('terminal_delayed_count_1d', 'terminal_delayed_risk_1d')
>>> registry.names[-5:-3]
('account_known_frauds_30d', 'account_days_since_fraud')
>>> registry.version.startswith("fs1-")
True
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from configs import FeatureSettings

#: Bumped when the computation of an existing feature changes.
FEATURE_CODE_VERSION = 1

#: Entities with delay-aware windows, in feature-vector order (``features.entity_kinds`` picks among them).
ENTITY_KINDS = ("terminal", "merchant", "device")

#: Known frauds remembered per account (``account_known_frauds_<N>d``): beyond this many in the window, the
#: oldest by event time is forgotten, so the count is at most this. Part of the version.
ACCOUNT_FRAUDS_MAX = 32


def window_name(seconds: int) -> str:
    """A short name for a window: 600 -> '10m', 3600 -> '1h', 86400 -> '24h', 604800 -> '7d'.

    >>> [window_name(s) for s in (45, 600, 3600, 86400, 172800, 2592000)]
    ['45s', '10m', '1h', '24h', '2d', '30d']
    """
    if seconds < 60 or seconds % 60:
        return f"{seconds}s"
    if seconds < 3600 or seconds % 3600:
        return f"{seconds // 60}m"
    if seconds <= 86_400 or seconds % 86_400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86_400}d"


def account_fraud_window_ms(settings: FeatureSettings) -> int:
    """The account known-fraud window in ms (``account_fraud_window_days``, at least one second)."""
    return max(1000, int(settings.account_fraud_window_days * 86_400_000))


def account_fraud_window_name(settings: FeatureSettings) -> str:
    """``account_known_frauds_<window>``: 30 days -> 'account_known_frauds_30d'."""
    return f"account_known_frauds_{window_name(account_fraud_window_ms(settings) // 1000)}"


def entity_kinds(settings: FeatureSettings) -> tuple[str, ...]:
    """The configured entity kinds in vector order (empty without day windows).

    >>> entity_kinds(FeatureSettings(entity_kinds=("device", "terminal")))
    ('terminal', 'device')
    """
    if not settings.entity_windows_days:
        return ()
    return tuple(kind for kind in ENTITY_KINDS if kind in settings.entity_kinds)


def delayed_feature_names(kind: str, days: int) -> tuple[str, str]:
    """The (count, known-fraud ratio) feature names of one entity kind and day window."""
    return f"{kind}_delayed_count_{days}d", f"{kind}_delayed_risk_{days}d"


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: its name, what it measures, and its value when the data is absent."""

    name: str
    description: str
    neutral: float = 0.0


@dataclass(frozen=True)
class FeatureRegistry:
    """Names and order of the feature vector, with the version models and alerts record."""

    specs: tuple[FeatureSpec, ...]
    version: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    def index(self, name: str) -> int:
        """Position of a feature in the vector; KeyError names the known features."""
        for position, spec in enumerate(self.specs):
            if spec.name == name:
                return position
        raise KeyError(f"unknown feature {name!r}; known: {', '.join(self.names)}")

    def __len__(self) -> int:
        return len(self.specs)

    @classmethod
    def from_settings(cls, settings: FeatureSettings) -> FeatureRegistry:
        """The features ``settings`` define, in vector order, and their fingerprint."""
        specs = [
            *_amount_specs(settings),
            *_profile_specs(settings),
            *_terminal_specs(settings),
            *_delayed_entity_specs(settings),
            *_account_fraud_specs(settings),
            *_calendar_specs(settings),
        ]
        return cls(tuple(specs), f"fs{FEATURE_CODE_VERSION}-{zlib.crc32(_fingerprint(settings, specs).encode()):08x}")


def _amount_specs(settings: FeatureSettings) -> list[FeatureSpec]:
    """The amount, and the account's count, sum and mean over each window."""
    specs = [
        FeatureSpec("amount", "transaction amount"),
        FeatureSpec("log_amount", "log(1 + amount)"),
    ]
    for seconds in settings.windows_s:
        w = window_name(seconds)
        specs += [
            FeatureSpec(f"count_{w}", f"account transactions in the last {w} of event time, this one included"),
            FeatureSpec(f"sum_{w}", f"sum of amounts in the last {w}"),
            FeatureSpec(f"mean_{w}", f"mean amount in the last {w}"),
        ]
    return specs


def _profile_specs(settings: FeatureSettings) -> list[FeatureSpec]:
    """The account's spending profile, timing, geo-velocity and novelty."""
    return [
        FeatureSpec("amount_mean", "mean of the account's earlier amounts (this amount when none)"),
        FeatureSpec("amount_std", "standard deviation of the account's earlier amounts"),
        FeatureSpec("amount_ewma", f"exponentially weighted mean of earlier amounts (alpha {settings.ewma_alpha})"),
        FeatureSpec("amount_z", "(amount - amount_mean) / amount_std; 0 when std is 0"),
        FeatureSpec("amount_ratio", "amount / amount_mean; 1 when no history", neutral=1.0),
        FeatureSpec("history_count", "account transactions seen before this one"),
        FeatureSpec(
            "seconds_since_prev",
            "seconds since the account's previous transaction in event time",
            neutral=float(settings.windows_s[-1]),
        ),
        FeatureSpec("distance_km", "great-circle distance from the previous located transaction"),
        FeatureSpec("speed_kmh", "distance_km over the time between them (at least one minute)"),
        FeatureSpec("new_merchant", "1 when the account has not used this merchant before"),
        FeatureSpec("new_country", "1 when the account has not transacted in this country before"),
        FeatureSpec("new_device", "1 when the account has not used this device before"),
        FeatureSpec("distinct_merchants_24h", "distinct merchants of the account in the last 24h"),
        FeatureSpec("distinct_countries_24h", "distinct countries of the account in the last 24h"),
    ]


def _terminal_specs(settings: FeatureSettings) -> list[FeatureSpec]:
    """The terminal's transactions and known frauds over its window of complete buckets."""
    return [
        FeatureSpec(
            "terminal_tx_count",
            f"transactions at this terminal over {settings.terminal_window_days:g} days (complete buckets)",
        ),
        FeatureSpec("terminal_fraud_count", "of those, frauds whose label had arrived by event time"),
        FeatureSpec("terminal_fraud_rate", "terminal_fraud_count / terminal_tx_count"),
        FeatureSpec(
            "terminal_recent_frauds",
            f"of those, frauds paid in the last {window_name(settings.terminal_recent_s)} (complete buckets)",
        ),
        FeatureSpec(
            "terminal_hours_since_fraud",
            "hours since the bucket of the terminal's latest known fraud closed (the window when none)",
            neutral=settings.terminal_window_days * 24.0,
        ),
    ]


def _delayed_entity_specs(settings: FeatureSettings) -> list[FeatureSpec]:
    """Per entity kind and window: transactions and known-fraud share, over days a label delay back."""
    delay = f"{settings.label_delay_days:g}"
    specs: list[FeatureSpec] = []
    for kind in entity_kinds(settings):
        for days in settings.entity_windows_days:
            count, risk = delayed_feature_names(kind, days)
            specs += [
                FeatureSpec(
                    count,
                    f"transactions at this {kind} over the {days} complete days ending {delay} days "
                    "(features.label_delay_days) before the event",
                ),
                FeatureSpec(risk, "of those, the share whose fraud label had arrived by the event time"),
            ]
    return specs


def _account_fraud_specs(settings: FeatureSettings) -> list[FeatureSpec]:
    """The account's own known frauds."""
    window_days = account_fraud_window_ms(settings) / 86_400_000
    return [
        FeatureSpec(
            account_fraud_window_name(settings),
            "this account's transactions paid in the last "
            f"{window_name(account_fraud_window_ms(settings) // 1000)} (event time, up to this one) that are "
            f"frauds whose label had arrived by its event time (at most {ACCOUNT_FRAUDS_MAX})",
        ),
        FeatureSpec(
            "account_days_since_fraud",
            f"days since the latest of those known frauds was paid (the window, {window_days:g}, when none)",
            neutral=window_days,
        ),
    ]


def _calendar_specs(settings: FeatureSettings) -> list[FeatureSpec]:
    """Hour, weekend and night of the event time."""
    return [
        FeatureSpec("hour_of_day", "hour of the event time (UTC)"),
        FeatureSpec("is_weekend", "1 on Saturday and Sunday (UTC)"),
        FeatureSpec("is_night", f"1 between {settings.night_hours[0]}:00 and {settings.night_hours[1]}:00 UTC"),
    ]


def _fingerprint(settings: FeatureSettings, specs: list[FeatureSpec]) -> str:
    """Everything that changes a feature's value: a model trained under another fingerprint is refused."""
    return "|".join(
        [
            str(FEATURE_CODE_VERSION),
            ",".join(spec.name for spec in specs),
            repr(settings.ewma_alpha),
            repr(settings.night_hours),
            repr(settings.terminal_window_days),
            str(settings.terminal_bucket_s),
            str(settings.terminal_freshness_s),
            str(settings.terminal_recent_s),
            repr(settings.label_delay_days),
            str(account_fraud_window_ms(settings)),
            str(ACCOUNT_FRAUDS_MAX),
            str(settings.novelty_bits),
            str(settings.location_trail),
            str(settings.max_events_per_account),
        ]
    )
