"""Verdicts: an analyst's fraud/genuine on an alert becomes a ``labels`` record and a line of the audit log.

The label is the existing contract (:class:`contracts.records.Label`: the
alert's transaction and account, ``label_time`` = when the verdict was given,
on the stream's clock), keyed by account so it reaches the partition that
scored the transaction and the online classifier learns it. Who gave it and
the wall time travel in the record's Kafka headers (:func:`label_headers`),
which the scoring job ignores: the label schema is unchanged.

``label_time`` is event time, as every label's is: a partition applies a label
once its clock (the latest event time it scored) reaches the label's time. A
verdict given now is known now, so :class:`StreamClock` puts it at the latest
event time the console saw on the alert's partition, never later than the wall
clock: on a live stream that is about now, on a replayed history (the demo) it
is where the replay stands. Stamped with the wall clock, a verdict on a replay
would wait for the replay to reach today, and never be learned.

>>> from contracts import Alert, Reasons
>>> alert = Alert(alert_id="a1", transaction_id="t1", account_id="acc-7", event_time=1767225600000, score=0.99,
...               decision="review", reasons=Reasons(), model_versions={}, feature_version="fs1",
...               ingest_time=1767225600000, alert_time=1767225600000)
>>> record = verdict_record(alert, parse_verdict("fraud"), "ana", time_ms=1767229200000)
>>> label_for(record)
Label(transaction_id='t1', account_id='acc-7', label='fraud', label_time=1767229200000)
>>> parse_verdict("maybe")
Traceback (most recent call last):
...
pipelines.console.verdicts.VerdictError: verdict: expected fraud or genuine, got 'maybe'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

import msgspec

from contracts.records import Alert, Label

Verdict = Literal["fraud", "genuine"]
VERDICTS: tuple[str, ...] = get_args(Verdict)
#: Kafka headers of a label the console wrote (the label's value is the plain contract).
SOURCE_HEADER, ANALYST_HEADER, ALERT_HEADER = "fraudstream-source", "fraudstream-analyst", "fraudstream-alert-id"
#: The wall time the verdict was given (epoch ms, decimal), beside the label's stream-clock ``label_time``.
GIVEN_HEADER = "fraudstream-verdict-time"
SOURCE = b"console"


class VerdictError(ValueError):
    """A verdict that cannot be given (the message says why and what is allowed)."""


class AlreadyJudged(VerdictError):
    """The alert has a verdict and the request did not ask to replace it."""

    def __init__(self, previous: VerdictRecord) -> None:
        super().__init__(
            f"alert {previous.alert_id} was already judged {previous.verdict} by {previous.analyst}; "
            "send replace: true to replace that verdict"
        )
        self.previous = previous


def parse_verdict(value: object) -> Verdict:
    """``fraud`` or ``genuine``; VerdictError otherwise."""
    if value == "fraud" or value == "genuine":
        return value
    raise VerdictError(f"verdict: expected {' or '.join(VERDICTS)}, got {value!r}")


class VerdictRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the audit log: which alert, the verdict, who gave it and when (epoch ms)."""

    alert_id: str
    transaction_id: str
    account_id: str
    verdict: Verdict
    analyst: str
    #: Wall time the verdict was given.
    time: int
    #: The verdict this one replaced (None: the alert's first).
    replaced: Verdict | None = None
    #: The label's time on the stream's clock (:class:`StreamClock`); None: ``time`` (older lines).
    label_time: int | None = None


def verdict_record(alert: Alert, verdict: Verdict, analyst: str, time_ms: int,
                   previous: VerdictRecord | None = None, label_time: int | None = None) -> VerdictRecord:  # fmt: skip
    """The audit record of ``analyst``'s verdict on ``alert`` at ``time_ms`` (replacing ``previous``)."""
    return VerdictRecord(alert_id=alert.alert_id, transaction_id=alert.transaction_id, account_id=alert.account_id,
                         verdict=verdict, analyst=analyst, time=time_ms,
                         replaced=None if previous is None else previous.verdict, label_time=label_time)  # fmt: skip


def label_for(record: VerdictRecord) -> Label:
    """The ``labels`` record of a verdict: its transaction and account, labelled at the verdict's stream time."""
    return Label(transaction_id=record.transaction_id, account_id=record.account_id, label=record.verdict,
                 label_time=record.time if record.label_time is None else record.label_time)  # fmt: skip


def label_headers(record: VerdictRecord) -> list[tuple[str, bytes]]:
    """Kafka headers naming the console, the analyst, the alert and the wall time of the verdict."""
    return [(SOURCE_HEADER, SOURCE), (ANALYST_HEADER, record.analyst.encode()),
            (ALERT_HEADER, record.alert_id.encode()), (GIVEN_HEADER, str(record.time).encode())]  # fmt: skip


class StreamClock:
    """The scoring job's event-time clock per ``transactions`` partition, as far as the alerts show it.

    A partition's clock is the latest event time it scored; every alert it
    sent is at most that, so the latest alert event time seen per partition
    (the alert's ``source``) is a clock the partition has reached: a label
    stamped no later than it is applied as soon as it is read.
    """

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}

    def observe(self, alert: Alert) -> None:
        if alert.source is not None:
            partition = alert.source.partition
            self._seen[partition] = max(self._seen.get(partition, alert.event_time), alert.event_time)

    def label_time(self, alert: Alert, now_ms: int) -> int:
        """When a verdict given at wall time ``now_ms`` on ``alert`` is known, on its partition's clock: the
        latest event time seen there, at most ``now_ms``, at least the alert's own event time."""
        seen = self._seen.get(alert.source.partition, alert.event_time) if alert.source is not None else now_ms
        return max(alert.event_time, min(now_ms, seen))


def check_replace(previous: VerdictRecord | None, replace: bool) -> None:
    """AlreadyJudged when the alert has a verdict and ``replace`` is false."""
    if previous is not None and not replace:
        raise AlreadyJudged(previous)


_decoder = msgspec.json.Decoder(VerdictRecord)
_encoder = msgspec.json.Encoder()


class AuditLog:
    """The append-only JSON-lines log of verdicts, and the latest verdict of every alert in it.

    Lines that do not decode (a line cut short by a crash) are skipped and counted in ``skipped``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.latest: dict[str, VerdictRecord] = {}
        self.skipped = 0
        #: The file ends in a line cut short: the next record starts on a line of its own.
        self._torn = False
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        self._torn = bool(data) and not data.endswith(b"\n")
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                record = _decoder.decode(line)
            except msgspec.MsgspecError:
                self.skipped += 1
                continue
            self.latest[record.alert_id] = record

    def verdict(self, alert_id: str) -> VerdictRecord | None:
        """The alert's latest verdict, None when it has none."""
        return self.latest.get(alert_id)

    def append(self, record: VerdictRecord) -> None:
        """Write the record as one line and make it the alert's latest verdict (flushed to disk first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as file:
            file.write((b"\n" if self._torn else b"") + _encoder.encode(record) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        self._torn = False
        self.latest[record.alert_id] = record
