"""What the console does, apart from HTTP: take in alerts, answer queries, record verdicts.

:class:`ConsoleService` holds the queue, the audit log, the event hub and the
explainer, and writes labels through a :class:`LabelSink` (Kafka in the
console, a list in tests). Refusals are :class:`Refusal` errors carrying the
HTTP status the web layer answers with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from configs import ConfigError, Settings
from contracts.records import Alert, encode
from pipelines.alerts import AlertFilter
from pipelines.console.auth import Principal
from pipelines.console.events import EventHub
from pipelines.console.explain import Explainer
from pipelines.console.queue import AlertQueue
from pipelines.console.verdicts import (
    AlreadyJudged,
    AuditLog,
    StreamClock,
    VerdictRecord,
    check_replace,
    label_for,
    label_headers,
    parse_verdict,
    verdict_record,
)
from pipelines.console.views import AlertDetail, AlertRow, alert_detail, alert_row


class LabelSink(Protocol):
    """Where verdict labels go: ``send`` returns once the record is stored (Kafka: acknowledged)."""

    async def send(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None: ...


@dataclass
class Refusal(Exception):
    """A request the console refuses: the HTTP status and a message saying why and what to do."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


class ConsoleService:
    """The queue, the verdicts and the events of one console."""

    def __init__(self, settings: Settings, labels: LabelSink, clock: Callable[[], float] = time.time) -> None:
        console = settings.console
        self.labels, self.clock = labels, clock
        self.queue = AlertQueue(console.max_alerts, console.recent_per_account)
        self.audit = AuditLog(console.audit_path)
        self.hub = EventHub()
        self.explainer = Explainer(settings)
        self.stream_clock = StreamClock()
        self._verdicts = asyncio.Lock()

    # ------------------------------------------------------------------------------- alerts
    def ingest(self, alert: Alert) -> None:
        """Keep a new alert and tell the open pages (an alert seen again only replaces the one kept)."""
        self.stream_clock.observe(alert)
        if self.queue.add(alert):
            self.hub.publish("alert", self.row(alert), alert)

    def row(self, alert: Alert) -> AlertRow:
        return alert_row(alert, self.explainer, self.audit.verdict(alert.alert_id))

    def alerts(self, alert_filter: AlertFilter, limit: int) -> list[AlertRow]:
        return [self.row(alert) for alert in self.queue.newest(alert_filter, limit)]

    def alert(self, alert_id: str) -> Alert:
        found = self.queue.get(alert_id)
        if found is None:
            raise Refusal(404, f"alert {alert_id!r} is not in the console's queue (it keeps the latest "
                               f"{self.queue.max_alerts:,} alerts: console.max_alerts)")  # fmt: skip
        return found

    def detail(self, alert_id: str) -> AlertDetail:
        alert = self.alert(alert_id)
        recent = [(other, self.audit.verdict(other.alert_id))
                  for other in self.queue.recent_for(alert.account_id, exclude=alert_id)]  # fmt: skip
        return alert_detail(alert, self.explainer, self.audit.verdict(alert_id), recent)

    # ------------------------------------------------------------------------------- verdicts
    async def give_verdict(self, alert_id: str, verdict: object, replace: bool, who: Principal) -> VerdictRecord:
        """Write the verdict's label (keyed by account) and its audit line; Refusal when it may not be given."""
        if not who.may_give_verdicts:
            raise Refusal(403, f"user {who.name!r} is a {who.role}: only an analyst gives verdicts")
        try:
            chosen = parse_verdict(verdict)
        except ValueError as exc:
            raise Refusal(400, str(exc)) from None
        alert = self.alert(alert_id)
        async with self._verdicts:  # one verdict at a time: "already judged" holds until the line is written
            previous = self.audit.verdict(alert_id)
            try:
                check_replace(previous, replace)
            except AlreadyJudged as exc:
                raise Refusal(409, str(exc)) from None
            now_ms = int(self.clock() * 1000)
            record = verdict_record(alert, chosen, who.name, now_ms, previous,
                                    label_time=self.stream_clock.label_time(alert, now_ms))  # fmt: skip
            try:
                await self.labels.send(alert.account_id.encode(), encode(label_for(record)), label_headers(record))
            except Exception as exc:  # the broker refused or is away: nothing was recorded, the analyst retries
                raise Refusal(503, f"the label could not be written to Kafka ({type(exc).__name__}: {exc}); "
                                   "the verdict was not recorded, try again") from None  # fmt: skip
            try:
                self.audit.append(record)
            except OSError as exc:  # the label is out: the alert counts as judged, the log must be mended
                self.audit.latest[record.alert_id] = record
                raise Refusal(500, f"the label was written but the audit log {self.audit.path} could not be "
                                   f"({exc.strerror}); the verdict stands, fix console.audit_path") from None  # fmt: skip
        self.hub.publish("verdict", self.row(alert), alert)
        return record


def query_error(exc: ConfigError) -> Refusal:
    """A filter's ConfigError as a 400 naming the query parameter (``--min-score`` -> ``min_score``)."""
    message = str(exc)
    option, _, rest = message.partition(":")
    if option.startswith("--"):
        message = option[2:].replace("-", "_") + ":" + rest
    return Refusal(400, message)
