"""Verdicts: an analyst's fraud/genuine on an alert becomes a ``labels`` record and a line of the audit log.

The label is the existing contract (:class:`contracts.records.Label`: the
alert's transaction and account, ``label_time`` = when the verdict was
given), keyed by account so it reaches the partition that scored the
transaction and the online classifier learns it. Who gave it travels in the
record's Kafka headers (:func:`label_headers`), which the scoring job ignores:
the label schema is unchanged.

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
    time: int
    #: The verdict this one replaced (None: the alert's first).
    replaced: Verdict | None = None


def verdict_record(alert: Alert, verdict: Verdict, analyst: str, time_ms: int,
                   previous: VerdictRecord | None = None) -> VerdictRecord:  # fmt: skip
    """The audit record of ``analyst``'s verdict on ``alert`` at ``time_ms`` (replacing ``previous``)."""
    return VerdictRecord(alert_id=alert.alert_id, transaction_id=alert.transaction_id, account_id=alert.account_id,
                         verdict=verdict, analyst=analyst, time=time_ms,
                         replaced=None if previous is None else previous.verdict)  # fmt: skip


def label_for(record: VerdictRecord) -> Label:
    """The ``labels`` record of a verdict: its transaction and account, labelled at the verdict's time."""
    return Label(transaction_id=record.transaction_id, account_id=record.account_id, label=record.verdict,
                 label_time=record.time)  # fmt: skip


def label_headers(record: VerdictRecord) -> list[tuple[str, bytes]]:
    """Kafka headers naming the console, the analyst and the alert."""
    return [(SOURCE_HEADER, SOURCE), (ANALYST_HEADER, record.analyst.encode()),
            (ALERT_HEADER, record.alert_id.encode())]  # fmt: skip


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
