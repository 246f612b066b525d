"""The loop's offset commits, and its rewind after a step failed halfway (no broker, no Ray)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from actors.loop import OffsetCommitter
from actors.partition import Output
from actors.stats import ErrorLog
from actors.worker import ScoringWorker
from connectors.checkpoint import CheckpointStore
from contracts.records import Transaction, encode
from tests.actors.fakes import FakeConsumer, FakeProducer, FakeRecord, make_ownership, small_settings

START = 1_767_225_600_000


def _committer(tmp_path: Path) -> tuple[OffsetCommitter, FakeConsumer]:
    ownership = make_ownership(small_settings(tmp_path))
    asyncio.run(ownership.assign([0, 1], []))
    ownership.processors[0].next_offset, ownership.processors[0].next_label_offset = 10, 4
    ownership.processors[1].next_offset, ownership.processors[1].next_label_offset = 20, 6
    consumer = ownership.clients.consumer
    assert isinstance(consumer, FakeConsumer)
    return OffsetCommitter(ownership.settings, ownership.clients, ownership, ErrorLog()), consumer


def test_offsets_are_committed_at_most_every_interval_and_at_once_for_a_checkpoint(tmp_path: Path) -> None:
    commits, consumer = _committer(tmp_path)
    asyncio.run(commits.commit([0]))
    assert consumer.commits == [{TopicPartition("tx", 0): 10, TopicPartition("labels", 0): 4}]
    assert commits.last_commit_wall is not None and abs(commits.last_commit_wall - time.time()) < 60
    asyncio.run(commits.commit([1]))  # inside the interval: waits
    assert len(consumer.commits) == 1 and commits.pending == {1}
    commits.due_now()
    asyncio.run(commits.commit([]))
    assert consumer.commits[1] == {TopicPartition("tx", 1): 20, TopicPartition("labels", 1): 6}
    assert not commits.pending


def test_a_failed_commit_keeps_its_partitions_for_the_next_one_and_shows_until_one_works(tmp_path: Path) -> None:
    commits, consumer = _committer(tmp_path)
    consumer.fail_commits = True
    asyncio.run(commits.commit([0, 1]))
    assert consumer.commits == [] and commits.pending == {0, 1} and commits.last_commit_wall is None
    assert "no coordinator" in commits.errors.errors["commit"]
    consumer.fail_commits = False
    commits.due_now()
    del commits.ownership.processors[1]  # released meanwhile: its offsets are its new owner's to commit
    asyncio.run(commits.commit([]))
    assert consumer.commits == [{TopicPartition("tx", 0): 10, TopicPartition("labels", 0): 4}]
    assert "commit" not in commits.errors.errors and commits.errors.last_error is not None


def _transactions(n: int) -> list[FakeRecord]:
    records = []
    for i in range(n):
        tx = Transaction(transaction_id=f"tx-{i}", account_id=f"acct-{i % 2}", event_time=START + i * 60_000,
                         amount=10.0 + i, terminal_id="T-1", country="FR")
        records.append(FakeRecord(i, f"acct-{i % 2}".encode(), encode(tx), START))
    return records


def test_a_step_that_fails_halfway_rewinds_to_the_checkpoint_and_scores_the_batch_again(tmp_path: Path) -> None:
    settings = small_settings(tmp_path, terminal_alignment=False)
    consumer, producer = FakeConsumer(), FakeProducer()
    consumer.logs[TopicPartition("tx", 0)] = _transactions(3)
    worker = ScoringWorker(settings, None, "test")
    worker.consumer, worker.producer = consumer, producer
    worker.store = CheckpointStore(settings.stream.checkpoint_uri)

    async def run() -> tuple[bool, int]:
        await worker.assign([0], [])
        failing = worker.processors[0]
        score = failing.process_transactions

        def half_applied(records: list[Any]) -> Output:
            score(records)  # the state took the batch in, but its outputs are never sent
            raise RuntimeError("boom")

        failing.process_transactions = half_applied  # type: ignore[assignment,method-assign]
        worker.run_in_background()
        for _ in range(400):
            await asyncio.sleep(0.01)
            if worker.processors.get(0) not in (None, failing) and worker.processors[0].counters.scored == 3:
                break
        replaced, scored = worker.processors[0] is not failing, worker.processors[0].counters.scored
        await worker.stop()
        return replaced, scored

    # the partition was taken back to its (empty) start and read again: scored once, not once and a half
    assert asyncio.run(run()) == (True, 3)
    assert worker.errors.last_error is not None and "boom" in worker.errors.last_error[1]
    restored = CheckpointStore(settings.stream.checkpoint_uri).load_latest("tx-0")
    assert restored is not None and restored.meta["next_offset"] == 3 and restored.meta["counters"]["scored"] == 3
    assert not worker.running and worker.consumer is None
