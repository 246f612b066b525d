"""The JSON the console's API answers with: an alert as a queue row, an alert's detail, the session.

>>> from configs import Settings
>>> from contracts import Alert, Reasons
>>> alert = Alert(alert_id="a1", transaction_id="t1", account_id="acc-7", event_time=1767225600000, score=0.99,
...               decision="review", reasons=Reasons(rules=["bust_out"]), model_versions={"anomaly": "hst"},
...               feature_version="fs1", ingest_time=1767225600000, alert_time=1767225600042)
>>> row = alert_row(alert, Explainer(Settings()), verdict=None)
>>> row.latency_ms, row.why, row.verdict
(42, 'rule bust_out', None)
>>> from contracts import SourcePosition
>>> read = SourcePosition(topic="transactions", partition=0, offset=7, timestamp=1767225599900)
>>> alert_row(msgspec.structs.replace(alert, source=read), Explainer(Settings()), verdict=None).latency_ms
142
"""

from __future__ import annotations

import msgspec

from contracts.records import Alert, FeatureContribution
from pipelines.console.explain import Explainer
from pipelines.console.verdicts import VerdictRecord


class VerdictView(msgspec.Struct, frozen=True, kw_only=True):
    verdict: str
    analyst: str
    time: int
    replaced: str | None = None


class AlertRow(msgspec.Struct, frozen=True, kw_only=True):
    """An alert in the queue: score, decision, reasons, model versions and latency (:func:`latency_ms`)."""

    alert_id: str
    transaction_id: str
    account_id: str
    event_time: int
    alert_time: int
    score: float
    decision: str
    rules: list[str]
    top_features: list[str]
    #: A short why (rules, then the top two features).
    why: str
    model_versions: dict[str, str]
    latency_ms: int
    challenger_score: float | None = None
    #: The latest verdict given (None: not judged yet).
    verdict: VerdictView | None = None


class AlertDetail(msgspec.Struct, frozen=True, kw_only=True):
    """An alert's detail: the row, its reasons in words, its features, and the account's other recent alerts."""

    alert: AlertRow
    reasons_in_words: list[str]
    features: list[FeatureContribution]
    feature_version: str
    late: bool
    source: dict[str, object] | None = None
    account_recent: list[AlertRow]


class SessionView(msgspec.Struct, frozen=True, kw_only=True):
    """Who is signed in, what they may do, and the CSRF token every write must send (``X-CSRF-Token``)."""

    user: str
    role: str
    may_give_verdicts: bool
    csrf: str
    expires_at: float
    #: True when the console runs without users (loopback only): no sign-in.
    open: bool


def verdict_view(record: VerdictRecord | None) -> VerdictView | None:
    if record is None:
        return None
    return VerdictView(verdict=record.verdict, analyst=record.analyst, time=record.time, replaced=record.replaced)


def latency_ms(alert: Alert) -> int:
    """From the transaction entering Kafka (its record's timestamp) to the alert, as the job's own latency
    measures it: the wait in the topic counts. Without that timestamp (older alerts), from ingest to alert."""
    source = alert.source
    start = source.timestamp if source is not None and source.timestamp is not None else alert.ingest_time
    return alert.alert_time - start


def alert_row(alert: Alert, explainer: Explainer, verdict: VerdictRecord | None) -> AlertRow:
    return AlertRow(
        alert_id=alert.alert_id, transaction_id=alert.transaction_id, account_id=alert.account_id,
        event_time=alert.event_time, alert_time=alert.alert_time, score=alert.score, decision=alert.decision,
        rules=list(alert.reasons.rules), top_features=[f.name for f in alert.reasons.top_features],
        why=explainer.summary(alert), model_versions=dict(alert.model_versions),
        latency_ms=latency_ms(alert), challenger_score=alert.challenger_score,
        verdict=verdict_view(verdict),
    )  # fmt: skip


def alert_detail(alert: Alert, explainer: Explainer, verdict: VerdictRecord | None,
                 account_recent: list[tuple[Alert, VerdictRecord | None]]) -> AlertDetail:  # fmt: skip
    return AlertDetail(
        alert=alert_row(alert, explainer, verdict),
        reasons_in_words=explainer.rules(alert) + explainer.features(alert),
        features=list(alert.reasons.top_features),
        feature_version=alert.feature_version,
        late=alert.late,
        source=None if alert.source is None else msgspec.structs.asdict(alert.source),
        account_recent=[alert_row(other, explainer, judged) for other, judged in account_recent],
    )
