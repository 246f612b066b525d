"""What one actor reads of the terminal stage's topics, and when it sends its updates (no broker, no Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import TopicPartition

import actors.terminal_io as terminal_io_module
from actors.delivery import Outgoing
from actors.terminal_io import TerminalIO
from actors.terminal_stage import (
    IDLE,
    DeltaBatch,
    RiskUpdate,
    TerminalDelta,
    TerminalState,
    decode_delta_batch,
    decode_risk_update,
    encode,
)
from tests.actors.fakes import FakeConsumer, FakeRecord, make_ownership, small_settings

BUCKET = 3_600_000


def _terminal_io(tmp_path: Path, partitions: list[int], stages: list[int], **stream: object) -> TerminalIO:
    ownership = make_ownership(small_settings(tmp_path, **stream))
    asyncio.run(ownership.assign(partitions, stages))
    return TerminalIO(ownership.settings, ownership.clients, ownership, ownership.checkpoints, ownership.broadcast)


def _record(offset: int, message: DeltaBatch | RiskUpdate) -> FakeRecord:
    return FakeRecord(offset, None, encode(message), 0)


def _catch_up(terminal: TerminalIO, *partitions: int) -> None:
    """These partitions have read everything there is: their progress is IDLE."""
    consumer = terminal.clients.consumer
    assert isinstance(consumer, FakeConsumer)
    for partition in partitions:
        consumer.highwaters[TopicPartition("tx", partition)] = 0
        consumer.highwaters[TopicPartition("labels", partition)] = 0


def _kinds(sends: list[Outgoing]) -> list[tuple[str, int | None, int | None]]:
    return sorted((o.topic, o.partition, o.owner) for o in sends)


@pytest.fixture
def quiet_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """No flush or re-send comes due by itself while a test runs."""
    monkeypatch.setattr(terminal_io_module, "STAGE_FLUSH_S", 3600.0)
    monkeypatch.setattr(terminal_io_module, "RESEND_S", 3600.0)


def test_polled_stage_traffic_goes_into_the_table_and_the_owned_stages_only(tmp_path: Path) -> None:
    terminal = _terminal_io(tmp_path, [0], [1])
    ownership = terminal.ownership
    risk = RiskUpdate(partition=0, complete_through_ms=5 * BUCKET, states=[TerminalState("T1", [(BUCKET, 3)], None)])
    delta = DeltaBatch(source=1, through_ms=2 * BUCKET, deltas=[TerminalDelta("T2", [(BUCKET, 4)], None)])
    terminal.apply({
        TopicPartition("risk", 0): [_record(6, risk)],
        TopicPartition("deltas", 1): [_record(8, delta), _record(9, delta)],
        TopicPartition("deltas", 0): [_record(3, delta)],  # another actor's stage partition
    })
    assert terminal.broadcast.progress == {0: 5 * BUCKET}
    assert ownership.risk_offsets == {0: 7, 1: 0}
    assert ownership.stage_offsets == {1: 10} and ownership.stages[1].progress == {1: 2 * BUCKET}
    assert "T2" in ownership.stages[1].terminals and ownership.stages[1].dirty
    assert terminal.checkpoints.stage_unsaved == {1}


def test_updates_wait_for_the_timer_but_not_for_a_partition_that_caught_up_nor_a_checkpoint(
        tmp_path: Path, quiet_timers: None) -> None:
    terminal = _terminal_io(tmp_path, [0, 1], [0, 1], terminal_alignment=False)
    first = terminal.publish(force=True)  # every partition's progress to every stage partition, every stage's state
    assert _kinds(first) == [("deltas", 0, 0), ("deltas", 0, 1), ("deltas", 1, 0), ("deltas", 1, 1),
                             ("risk", 0, None), ("risk", 1, None)]
    assert terminal.publish() == []  # nothing new, the timer is not due

    _catch_up(terminal, 0)
    caught_up = terminal.publish()
    assert _kinds(caught_up) == [("deltas", 0, 0), ("deltas", 1, 0)]
    assert {decode_delta_batch(o.value).through_ms for o in caught_up} == {IDLE}

    delta = DeltaBatch(source=1, through_ms=2 * BUCKET, deltas=[TerminalDelta("T2", [(BUCKET, 4)], None)])
    terminal.apply({TopicPartition("deltas", 0): [_record(0, delta)]})
    assert terminal.publish() == []  # a stage's changes wait for the timer
    forced = terminal.publish(force=True)  # before a checkpoint: what it covers is sent
    assert _kinds(forced) == [("risk", 0, None)]
    update = decode_risk_update(forced[0].value)
    assert [state.terminal for state in update.states] == ["T2"]


def test_the_flush_timer_sends_what_accumulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _terminal_io(tmp_path, [0], [0], terminal_alignment=False)
    monkeypatch.setattr(terminal_io_module, "STAGE_FLUSH_S", 3600.0)
    terminal.publish(force=True)
    delta = DeltaBatch(source=1, through_ms=BUCKET, deltas=[TerminalDelta("T2", [(BUCKET, 4)], None)])
    terminal.apply({TopicPartition("deltas", 0): [_record(0, delta)]})
    assert terminal.publish() == []
    monkeypatch.setattr(terminal_io_module, "STAGE_FLUSH_S", 0.0)
    assert _kinds(terminal.publish()) == [("risk", 0, None)]


def test_with_alignment_progress_is_sent_again_while_the_table_is_behind_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_timers: None) -> None:
    terminal = _terminal_io(tmp_path, [0, 1], [0, 1], terminal_alignment=True)
    _catch_up(terminal, 0, 1)
    for stage in (0, 1):  # every source is idle at both stage partitions, and the table says so
        terminal.apply({TopicPartition("deltas", stage): [_record(s, DeltaBatch(s, IDLE, [])) for s in (0, 1)]})
        terminal.apply({TopicPartition("risk", stage): [_record(0, RiskUpdate(stage, IDLE, []))]})
    assert terminal.publish() != []  # caught up: sent at once
    monkeypatch.setattr(terminal_io_module, "RESEND_S", 0.0)
    assert terminal.publish() == []  # the table has everything that was sent: nothing to send again

    terminal.broadcast.progress[1] = 5 * BUCKET  # the table is behind what was sent (a record that never arrived)
    again = terminal.publish()
    assert _kinds(again) == [("deltas", 0, 0), ("deltas", 0, 1), ("deltas", 1, 0), ("deltas", 1, 1),
                             ("risk", 0, None), ("risk", 1, None)]
    assert {decode_delta_batch(o.value).through_ms for o in again if o.topic == "deltas"} == {IDLE}


def test_after_a_rewind_nothing_counts_as_sent(tmp_path: Path, quiet_timers: None) -> None:
    terminal = _terminal_io(tmp_path, [0], [0], terminal_alignment=False)
    _catch_up(terminal, 0)
    assert terminal.publish() != []
    assert terminal.publish() == []
    terminal.forget()  # the partition's progress and the stage's completeness go out again at once
    assert _kinds(terminal.publish()) == [("deltas", 0, 0), ("deltas", 1, 0), ("risk", 0, None)]
