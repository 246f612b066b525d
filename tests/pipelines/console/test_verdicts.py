"""Verdicts: the label record (the existing contract and schema), its headers, the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from contracts import Alert, SourcePosition, decode_label, encode
from contracts.schemas import SCHEMA_DIR
from pipelines.console.verdicts import (
    AlreadyJudged,
    AuditLog,
    StreamClock,
    VerdictError,
    check_replace,
    label_for,
    label_headers,
    parse_verdict,
    verdict_record,
)
from tests.pipelines.console.consolekit import T0, alert


def test_a_verdicts_label_is_the_existing_contract_and_validates_against_its_schema() -> None:
    record = verdict_record(alert(3, "acc-5"), "genuine", "ana", time_ms=T0 + 10)
    value = encode(label_for(record))
    assert json.loads(value) == {"transaction_id": "tx-3", "account_id": "acc-5", "label": "genuine", "label_time": T0 + 10}
    schema = json.loads((SCHEMA_DIR / "label.schema.json").read_text())
    jsonschema.validate(json.loads(value), schema)
    assert decode_label(value) == label_for(record)
    assert label_headers(record) == [("fraudstream-source", b"console"), ("fraudstream-analyst", b"ana"),
                                     ("fraudstream-alert-id", b"alert-3"),
                                     ("fraudstream-verdict-time", str(T0 + 10).encode())]  # fmt: skip


def _on(item: Alert, partition: int, event_time: int) -> Alert:
    return msgspec.structs.replace(item, event_time=event_time,
                                   source=SourcePosition(topic="transactions", partition=partition, offset=0))  # fmt: skip


def test_a_verdict_is_stamped_on_the_stream_clock_of_the_alerts_partition_never_past_the_wall_clock() -> None:
    clock = StreamClock()
    day = 86_400_000
    replayed = [_on(alert(1), 0, T0), _on(alert(2), 0, T0 + 5 * day), _on(alert(3), 1, T0 + day)]
    for item in replayed:
        clock.observe(item)
    wall = T0 + 300 * day  # a replayed history: its event time is months before the wall clock
    # the partition's latest event time seen, whichever of its alerts the verdict is on
    assert clock.label_time(replayed[0], wall) == T0 + 5 * day
    assert clock.label_time(replayed[2], wall) == T0 + day
    # a live stream: the partition's clock is about now, and so is the label
    live = _on(alert(4), 2, wall - 150)
    clock.observe(live)
    assert clock.label_time(live, wall) == wall - 150
    assert clock.label_time(live, wall - 1_000) == wall - 150  # never before the alert's own event time
    assert clock.label_time(_on(alert(5), 0, T0 + 6 * day), T0 + 5 * day + 10) == T0 + 6 * day
    clock.observe(_on(alert(6), 3, T0 + 400 * day))  # an event stamped in the future does not move a label past now
    assert clock.label_time(_on(alert(7), 3, T0), wall) == wall
    # an alert without its source position: the wall clock, as before
    assert clock.label_time(alert(8), wall) == wall
    record = verdict_record(replayed[0], "fraud", "ana", time_ms=wall, label_time=clock.label_time(replayed[0], wall))
    assert (label_for(record).label_time, record.time) == (T0 + 5 * day, wall)


@pytest.mark.parametrize("value", ["maybe", "FRAUD", "", None, 1, True])
def test_only_fraud_and_genuine_are_verdicts(value: object) -> None:
    with pytest.raises(VerdictError, match="verdict: expected fraud or genuine"):
        parse_verdict(value)
    assert parse_verdict("fraud") == "fraud" and parse_verdict("genuine") == "genuine"


def test_a_judged_alert_needs_replace_to_be_judged_again() -> None:
    first = verdict_record(alert(1), "fraud", "ana", time_ms=T0)
    check_replace(None, replace=False)
    check_replace(first, replace=True)
    with pytest.raises(AlreadyJudged, match="already judged fraud by ana; send replace: true") as caught:
        check_replace(first, replace=False)
    assert caught.value.previous == first
    assert verdict_record(alert(1), "genuine", "bo", time_ms=T0 + 1, previous=first).replaced == "fraud"


def test_the_audit_log_appends_lines_and_a_new_one_knows_each_alerts_latest_verdict(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "verdicts.jsonl"
    log = AuditLog(path)
    assert log.verdict("alert-1") is None
    first = verdict_record(alert(1), "fraud", "ana", time_ms=T0)
    second = verdict_record(alert(1), "genuine", "bo", time_ms=T0 + 5, previous=first)
    other = verdict_record(alert(2), "fraud", "ana", time_ms=T0 + 6)
    for record in (first, second, other):
        log.append(record)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["alert_id"], r["verdict"], r["analyst"], r["time"]) for r in lines] == [
        ("alert-1", "fraud", "ana", T0), ("alert-1", "genuine", "bo", T0 + 5), ("alert-2", "fraud", "ana", T0 + 6)]
    reopened = AuditLog(path)
    assert reopened.verdict("alert-1") == second and reopened.verdict("alert-2") == other and reopened.skipped == 0


def test_a_line_cut_short_is_skipped_and_the_next_record_starts_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    log = AuditLog(path)
    log.append(verdict_record(alert(1), "fraud", "ana", time_ms=T0))
    with path.open("ab") as file:
        file.write(b'{"alert_id": "alert-2", "verd')  # a crash mid-write
    reopened = AuditLog(path)
    assert reopened.skipped == 1 and reopened.verdict("alert-2") is None
    reopened.append(verdict_record(alert(3), "genuine", "ana", time_ms=T0))
    again = AuditLog(path)
    assert again.skipped == 1 and again.verdict("alert-3") is not None and again.verdict("alert-1") is not None
