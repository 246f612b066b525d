"""When a partition or stage partition is checkpointed, and what its writes leave behind (no broker, no Ray)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from actors.checkpointing import CHECKPOINT_SPACING_S, Checkpointer, settle
from actors.clients import Clients
from actors.partition import PartitionProcessor
from actors.stats import ErrorLog
from actors.terminal_stage import BroadcastRisk, TerminalStage
from configs import Settings
from connectors.checkpoint import CheckpointStore
from features import FeatureEngine
from tests.actors.fakes import small_settings

NOW = 1_000_000.0


class _BrokenStore:
    def save(self, key: str, blobs: Any, meta: Any) -> Any:
        raise OSError("disk full")


def _checkpointer(settings: Settings, store: Any = None) -> tuple[Checkpointer, list[int]]:
    """A checkpointer on a local store; its hook records the partitions it was called for."""
    flushed: list[int] = []

    async def before_snapshot(partition: int) -> None:
        flushed.append(partition)

    clients = Clients(store=store if store is not None else CheckpointStore(settings.stream.checkpoint_uri))
    return Checkpointer(settings, "actor-0", clients, ErrorLog(), before_snapshot), flushed


def _processors(settings: Settings, *partitions: int) -> dict[int, PartitionProcessor]:
    broadcast = BroadcastRisk(FeatureEngine.terminal_risk_for(settings.features), 2)
    return {p: PartitionProcessor(settings, p, broadcast) for p in partitions}


def test_a_partition_is_due_once_its_interval_has_passed_in_time_or_in_events(tmp_path: Path) -> None:
    settings = small_settings(tmp_path, checkpoint_interval_s=60.0, checkpoint_interval_events=100)
    checkpoints, _ = _checkpointer(settings)
    checkpoints.last_checkpoint[0] = (NOW, 1_000, 4)
    assert not checkpoints.partition_due(0, scored=1_099, now=NOW + 59.0)
    assert checkpoints.partition_due(0, scored=1_100, now=NOW + 59.0)
    assert checkpoints.partition_due(0, scored=1_000, now=NOW + 60.0)
    assert checkpoints.partition_due(7, scored=0, now=NOW)  # never checkpointed


def test_of_the_changed_due_partitions_the_one_with_the_oldest_checkpoint_goes_first(tmp_path: Path) -> None:
    settings = small_settings(tmp_path, checkpoint_interval_s=10.0)
    checkpoints, _ = _checkpointer(settings)
    processors = _processors(settings, 0, 1)
    checkpoints.last_checkpoint.update({0: (NOW - 100.0, 0, 1), 1: (NOW - 50.0, 0, 1), 5: (NOW - 900.0, 0, 1)})
    checkpoints.unsaved.update({0, 1, 5})  # 5 is no longer owned
    assert checkpoints.next_partition(processors, now=NOW, now_monotonic=100.0) == 0
    checkpoints.unsaved.discard(0)  # unchanged since its checkpoint: not due, however old
    assert checkpoints.next_partition(processors, now=NOW, now_monotonic=100.0) == 1
    checkpoints.last_checkpoint[1] = (NOW - 5.0, 0, 2)  # its interval has not passed
    assert checkpoints.next_partition(processors, now=NOW, now_monotonic=100.0) is None


def test_periodic_snapshots_are_spaced_and_wait_for_the_previous_write(tmp_path: Path) -> None:
    settings = small_settings(tmp_path, checkpoint_interval_s=10.0)
    checkpoints, _ = _checkpointer(settings)
    processors = _processors(settings, 0)
    checkpoints.last_checkpoint[0] = (NOW - 100.0, 0, 1)
    checkpoints.unsaved.add(0)
    checkpoints.last_snapshot = 100.0
    assert checkpoints.next_partition(processors, now=NOW, now_monotonic=100.0 + CHECKPOINT_SPACING_S / 2) is None
    assert checkpoints.next_partition(processors, now=NOW, now_monotonic=100.0 + CHECKPOINT_SPACING_S) == 0

    async def while_writing() -> int | None:
        checkpoints.saving[0] = asyncio.get_running_loop().create_task(asyncio.sleep(0))
        due = checkpoints.next_partition(processors, now=NOW, now_monotonic=200.0)
        await checkpoints.saving.pop(0)
        return due

    assert asyncio.run(while_writing()) is None


def test_a_changed_stage_partition_is_due_after_the_interval_if_still_owned(tmp_path: Path) -> None:
    settings = small_settings(tmp_path, checkpoint_interval_s=60.0)
    checkpoints, _ = _checkpointer(settings)
    stages = {0: TerminalStage(2), 1: TerminalStage(2)}
    checkpoints.stage_saved_at.update({0: NOW - 61.0, 1: NOW - 1.0, 3: NOW - 600.0})
    checkpoints.stage_unsaved.update({0, 1, 3})
    assert checkpoints.due_stages(stages, now=NOW) == [0]
    assert checkpoints.due_stages(stages, now=NOW + 60.0) == [0, 1]


def test_a_checkpoint_is_written_after_what_it_covers_was_sent_and_loads_back(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    checkpoints, flushed = _checkpointer(settings)
    processor = _processors(settings, 1)[1]
    processor.next_offset, processor.counters.scored = 42, 40
    checkpoints.unsaved.add(1)
    asyncio.run(checkpoints.save_partition(1, processor))
    assert flushed == [1] and 1 not in checkpoints.unsaved and not checkpoints.saving
    wall, scored, seq = checkpoints.last_checkpoint[1]
    loaded = checkpoints.load_partition(1)
    assert loaded is not None and (scored, seq) == (40, loaded.seq) and abs(wall - time.time()) < 60
    assert loaded.meta["next_offset"] == 42 and loaded.meta["actor"] == "actor-0"
    assert checkpoints.load_partition(0) is None


def test_a_failed_write_shows_as_an_error_and_leaves_the_partition_changed(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    checkpoints, _ = _checkpointer(settings, store=_BrokenStore())
    processor = _processors(settings, 0)[0]
    checkpoints.unsaved.add(0)

    async def write_in_background() -> None:
        await checkpoints.save_partition(0, processor, wait=False)
        assert 0 not in checkpoints.unsaved  # taken: the write runs while scoring goes on
        await settle(checkpoints.saving.get(0))
        await asyncio.sleep(0)  # the done callback

    asyncio.run(write_in_background())
    assert 0 in checkpoints.unsaved and 0 not in checkpoints.last_checkpoint
    assert "disk full" in checkpoints.errors.errors["checkpoint partition 0"]
    checkpoints.clients.store = CheckpointStore(settings.stream.checkpoint_uri)
    asyncio.run(checkpoints.save_partition(0, processor))
    assert "checkpoint partition 0" not in checkpoints.errors.errors
    assert checkpoints.errors.last_error is not None  # the latest error stays visible


def test_a_stage_checkpoint_keeps_its_offset_and_its_time(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    checkpoints, flushed = _checkpointer(settings)
    checkpoints.stage_unsaved.add(1)
    asyncio.run(checkpoints.save_stage(1, TerminalStage(2), next_offset=7))
    assert flushed == [] and 1 not in checkpoints.stage_unsaved
    checkpoints.stage_saved_at.clear()
    loaded = checkpoints.load_stage(1)
    assert loaded is not None and loaded.meta["next_offset"] == 7
    assert checkpoints.stage_saved_at[1] == pytest.approx(loaded.created_ms / 1000.0)
    before = time.time()
    assert checkpoints.load_stage(0) is None and checkpoints.stage_saved_at[0] >= before
