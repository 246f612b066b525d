"""What an actor owns after assign, release and rescale, and where it reads each partition (no broker, no Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import TopicPartition

from actors.ownership import Ownership
from tests.actors.fakes import FakeConsumer, make_ownership, small_settings


def _tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


def _consumer(ownership: Ownership) -> FakeConsumer:
    consumer = ownership.clients.consumer
    assert isinstance(consumer, FakeConsumer)
    return consumer


def test_fresh_partitions_are_read_from_the_start_of_their_logs(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    consumer = FakeConsumer()
    consumer.starts = {_tp("tx", 1): 5, _tp("labels", 1): 3, _tp("deltas", 1): 9, _tp("risk", 0): 2}
    ownership = make_ownership(settings, consumer=consumer)
    asyncio.run(ownership.assign([1, 0, 1], [1]))
    assert sorted(ownership.processors) == [0, 1] and sorted(ownership.stages) == [1]
    assert ownership.restored_from == {0: None, 1: None}
    assert (ownership.processors[1].next_offset, ownership.processors[1].next_label_offset) == (5, 3)
    assert ownership.stage_offsets == {1: 9} and ownership.risk_offsets == {0: 2, 1: 0}
    assert consumer.positions == {
        _tp("tx", 0): 0, _tp("labels", 0): 0, _tp("tx", 1): 5, _tp("labels", 1): 3,
        _tp("deltas", 1): 9, _tp("risk", 0): 2, _tp("risk", 1): 0,
    }
    assert {p: seq for p, (_, _, seq) in ownership.checkpoints.last_checkpoint.items()} == {0: -1, 1: -1}


def test_a_partition_moved_to_another_actor_takes_its_state_and_position_along(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    old, new = make_ownership(settings, "actor-0"), make_ownership(settings, "actor-1")
    asyncio.run(old.assign([0, 1], [0, 1]))
    moving = old.processors[1]
    moving.next_offset, moving.next_label_offset, moving.counters.scored = 42, 17, 40
    old.stage_offsets[1] = 11
    old.paused.add(1)

    asyncio.run(old.assign([0], [0]))  # the rescale's release: a final checkpoint, then dropped
    assert sorted(old.processors) == [0] and sorted(old.stages) == [0] and old.stage_offsets == {0: 0}
    assert 1 not in old.checkpoints.last_checkpoint and not old.paused
    assert _tp("tx", 1) not in _consumer(old).positions and _tp("deltas", 1) not in _consumer(old).positions

    asyncio.run(new.assign([1], [1]))  # the new owner restores it
    arrived = new.processors[1]
    assert new.restored_from[1] is not None and new.restored_from[1] >= 0
    assert (arrived.next_offset, arrived.next_label_offset, arrived.counters.scored) == (42, 17, 40)
    assert new.checkpoints.last_checkpoint[1][1:] == (40, new.restored_from[1])
    assert new.stage_offsets == {1: 11}
    positions = _consumer(new).positions
    assert (positions[_tp("tx", 1)], positions[_tp("labels", 1)], positions[_tp("deltas", 1)]) == (42, 17, 11)


def test_a_restored_offset_before_the_log_start_resumes_there_and_counts_the_gap(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    first = make_ownership(settings)
    asyncio.run(first.assign([0], []))
    first.processors[0].next_offset = 3
    asyncio.run(first.assign([], []))

    consumer = FakeConsumer()
    consumer.starts = {_tp("tx", 0): 10}  # the log was trimmed past the checkpoint's offset
    again = make_ownership(settings, consumer=consumer)
    asyncio.run(again.assign([0], []))
    assert again.processors[0].next_offset == 10 and again.processors[0].counters.offset_gaps == 7
    assert consumer.positions[_tp("tx", 0)] == 10


def test_an_offset_past_the_log_end_resumes_at_the_log_start(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    ownership = make_ownership(settings)
    asyncio.run(ownership.assign([0], []))
    processor = ownership.processors[0]
    processor.next_offset, processor.next_label_offset = 100, 4
    consumer = _consumer(ownership)
    consumer.highwaters = {_tp("tx", 0): 10, _tp("labels", 0): 4}  # the topic was recreated
    consumer.starts = {_tp("tx", 0): 2}
    beyond = ownership.beyond_end()
    assert beyond == {_tp("tx", 0): 100}
    asyncio.run(ownership.reset_out_of_range(beyond))
    assert (processor.next_offset, processor.next_label_offset, processor.counters.offset_gaps) == (2, 4, 98)
    assert consumer.positions[_tp("tx", 0)] == 2 and ownership.beyond_end() == {}


def test_a_partition_is_paused_while_a_buffer_is_at_its_bound(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    ownership = make_ownership(settings)
    asyncio.run(ownership.assign([0], []))
    processor, consumer = ownership.processors[0], _consumer(ownership)
    bounds = processor.max_held, processor.max_held_labels
    processor.max_held = 0  # held transactions at the bound
    ownership.pause_or_resume(0, processor)
    assert consumer.paused == {_tp("tx", 0)} and ownership.paused_tx == {0} and not ownership.paused
    processor.max_held, processor.max_held_labels = bounds[0], 0
    ownership.pause_or_resume(0, processor)
    assert consumer.paused == {_tp("labels", 0)} and ownership.paused == {0} and not ownership.paused_tx
    processor.max_held_labels = bounds[1]
    ownership.pause_or_resume(0, processor)
    assert not consumer.paused and not ownership.paused and not ownership.paused_tx


def test_a_rewind_drops_every_partition_and_assigning_them_again_restores_the_checkpoints(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    ownership = make_ownership(settings)
    asyncio.run(ownership.assign([0, 1], [1]))
    asyncio.run(ownership.checkpoints.save_partition(0, ownership.processors[0]))
    ownership.processors[0].next_offset = 99  # half a batch, never checkpointed
    assert ownership.drop_all() == ([0, 1], [1])
    assert not ownership.processors and not ownership.stages and not ownership.stage_offsets
    asyncio.run(ownership.assign([0, 1], [1]))
    assert ownership.processors[0].next_offset == 0 and ownership.restored_from[0] is not None
    assert ownership.restored_from[1] is None


def test_a_partition_kept_through_a_reassignment_reads_on_after_what_it_holds(tmp_path: Path) -> None:
    """A rescale's release reassigns the consumer; the partitions kept still hold what they read and did not
    apply (transactions waiting for the terminal table, labels not due): reading goes on after those, or they
    would be read, held and scored a second time."""
    settings = small_settings(tmp_path)
    ownership = make_ownership(settings)
    asyncio.run(ownership.assign([0, 1], [0, 1]))
    kept = ownership.processors[0]
    kept.next_offset, kept.next_label_offset = 10, 3  # the first transaction and label held ...
    kept._read_offset, kept._read_label_offset = 25, 8  # ... and the offsets after the last ones read
    asyncio.run(ownership.assign([0], [0]))
    positions = _consumer(ownership).positions
    assert (positions[_tp("tx", 0)], positions[_tp("labels", 0)]) == (25, 8)
    assert (kept.next_offset, kept.next_label_offset) == (10, 3)  # what a checkpoint records is unchanged
