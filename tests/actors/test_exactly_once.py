"""Exactly-once output without a broker: the replay marks of a partition, the batch transaction, and a worker
whose transaction fails halfway (stand-in clients: a transactional producer whose commits alone are visible)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from actors.clients import Clients
from actors.delivery import Delivery, Outgoing, Undelivered
from actors.partition import PartitionProcessor, ReplayMarks
from actors.terminal_stage import BroadcastRisk
from actors.transactions import TransactionFailed, Transactions
from actors.worker import ScoringWorker
from configs import RuleSettings, Settings
from connectors.checkpoint import CheckpointStore
from contracts.records import Transaction, decode_alert, decode_dead_letter, encode
from features import FeatureEngine
from tests.actors.fakes import (
    FakeConsumer,
    FakeGroup,
    FakeProducer,
    FakeRecord,
    FakeTransactionalProducer,
    small_settings,
)

START = 1_767_225_600_000
EVERY_TRANSACTION = (RuleSettings(name="every", when="amount > 0", action="review"),)


def _record(offset: int, bad: bool = False) -> FakeRecord:
    tx = Transaction(transaction_id=f"tx-{offset}", account_id=f"acct-{offset % 3}", event_time=START + offset * 60_000,
                     amount=10.0 + offset, terminal_id="T-1", country="FR")
    return FakeRecord(offset, f"acct-{offset % 3}".encode(), b"\xff" if bad else encode(tx), START)


def _processor(settings: Settings) -> PartitionProcessor:
    table = FeatureEngine.terminal_risk_for(settings.features)
    table.publish_updates()
    processor = PartitionProcessor(settings, 0, BroadcastRisk(table, 2))
    processor.use_rules(EVERY_TRANSACTION)
    return processor


def _eos_settings(tmp_path: Path) -> Settings:
    settings = small_settings(tmp_path, terminal_alignment=False)
    scoring = msgspec.structs.replace(settings.scoring, rules=EVERY_TRANSACTION)
    return msgspec.structs.replace(settings, kafka=msgspec.structs.replace(settings.kafka, embedded=False, exactly_once=True),
                                   scoring=scoring)


def test_a_partition_replays_up_to_the_committed_marks_without_output_and_ends_in_the_same_state(tmp_path: Path) -> None:
    settings = small_settings(tmp_path, terminal_alignment=False)
    records = [_record(i, bad=i in (4, 6)) for i in range(8)]
    plain, replaying = _processor(settings), _processor(settings)
    replaying.replay = ReplayMarks(next_offset=3, read_offset=5, next_label_offset=0, read_label_offset=0)
    everything, replayed = plain.process_transactions(records), replaying.process_transactions(records)

    assert [decode_alert(v).source.offset for _, v in everything.alerts] == [0, 1, 2, 3, 5, 7]  # type: ignore[union-attr]
    # alerts of transactions before next_offset and dead letters of records before read_offset were committed
    assert [decode_alert(v).source.offset for _, v in replayed.alerts] == [3, 5, 7]  # type: ignore[union-attr]
    assert [decode_dead_letter(v).offset for v in replayed.dead_letters] == [6]
    # the state and the counters are the uninterrupted run's: nothing was skipped but the sends
    assert replaying.counters == plain.counters and replaying.counters.alerts == 6
    assert replaying.entity_state_digest() == plain.entity_state_digest()


def test_the_committed_positions_never_go_behind_the_last_committed_transaction(tmp_path: Path) -> None:
    processor = _processor(small_settings(tmp_path, terminal_alignment=False))
    processor.replay = ReplayMarks(next_offset=5, read_offset=6, next_label_offset=2, read_label_offset=9)
    processor.process_transactions([_record(0), _record(1)])
    assert processor.committed_positions() == ReplayMarks(5, 6, 2, 9)  # replaying: the marks stand
    processor.process_transactions([_record(i) for i in range(2, 8)])
    assert processor.committed_positions() == ReplayMarks(8, 8, 2, 9)


def test_replay_marks_come_from_the_committed_offsets_and_their_metadata() -> None:
    assert ReplayMarks.of(None, None) is None
    marks = ReplayMarks.of(OffsetAndMetadata(10, "14"), OffsetAndMetadata(3, ""))
    assert marks == ReplayMarks(next_offset=10, read_offset=14, next_label_offset=3, read_label_offset=3)
    assert ReplayMarks.of(None, OffsetAndMetadata(3, "7")) == ReplayMarks(0, 0, 3, 7)


def _transactions(tmp_path: Path) -> tuple[Transactions, FakeTransactionalProducer, dict[int, PartitionProcessor]]:
    settings = small_settings(tmp_path, terminal_alignment=False)
    committed: list[Any] = []
    producer = FakeTransactionalProducer(FakeGroup(), committed)
    clients = Clients(producer=producer)

    async def replacement() -> FakeTransactionalProducer:
        return FakeTransactionalProducer(producer.group, committed)

    clients.producer_factory = replacement
    processor = _processor(settings)
    processor.process_transactions([_record(0), _record(1)])
    return Transactions(settings, clients, Delivery("dlq", 10, 100)), producer, {0: processor}


def test_a_batch_and_its_offsets_commit_together_and_an_unmoved_partition_commits_nothing(tmp_path: Path) -> None:
    transactions, producer, processors = _transactions(tmp_path)
    asyncio.run(transactions.commit([Outgoing("alerts", b"a1", b"k")], processors))
    assert producer.committed == [("alerts", None, b"k", b"a1")]
    assert producer.group.offsets == {TopicPartition("tx", 0): OffsetAndMetadata(2, "2"),
                                      TopicPartition("labels", 0): OffsetAndMetadata(0, "0")}
    asyncio.run(transactions.commit([], processors))  # nothing to send, nothing moved: no transaction
    assert transactions.commits == 1


@pytest.mark.parametrize("stopping", [False, True])
def test_a_failed_send_aborts_the_transaction_and_replaces_the_producer(tmp_path: Path, stopping: bool) -> None:
    transactions, producer, processors = _transactions(tmp_path)
    producer.fail_next = True
    stop = asyncio.Event()
    if stopping:
        stop.set()
    with pytest.raises(Undelivered if stopping else TransactionFailed, match="broker went away"):
        asyncio.run(transactions.commit([Outgoing("alerts", b"a1", b"k")], processors, stop))
    assert producer.aborts == 1 and producer.committed == [] and producer.group.offsets == {}
    assert transactions.clients.producer is None and transactions.aborts == 1
    asyncio.run(transactions.commit([Outgoing("alerts", b"a1", b"k")], processors))  # a new producer
    assert transactions.clients.producer is not producer and producer.committed == [("alerts", None, b"k", b"a1")]


def test_a_worker_whose_transaction_fails_replays_from_its_checkpoint_and_commits_each_alert_once(tmp_path: Path) -> None:
    settings = _eos_settings(tmp_path)
    group, committed = FakeGroup(), []
    consumer = FakeConsumer()
    consumer._coordinator = group  # type: ignore[attr-defined]
    producers: list[FakeTransactionalProducer] = []

    async def new_producer() -> FakeTransactionalProducer:
        producers.append(FakeTransactionalProducer(group, committed))
        return producers[-1]

    log = consumer.logs[TopicPartition("tx", 0)] = [_record(i) for i in range(4)]
    worker = ScoringWorker(settings, None, "test")
    worker.consumer, worker.store = consumer, CheckpointStore(settings.stream.checkpoint_uri)
    worker.clients.producer_factory = new_producer
    worker.clients.stage_producer = stage = FakeProducer()

    async def run() -> None:
        await worker.clients.ensure_producer()
        await worker.assign([0], [])
        await worker.step()  # offsets 0-3 scored and committed in one transaction (no checkpoint yet)
        log.extend(_record(i) for i in range(4, 8))
        producers[-1].fail_next = True  # the next batch's transaction aborts: back to the (empty) start
        worker.run_in_background()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if 0 in worker.processors and worker.processors[0].next_offset == 8 and len(producers) == 2:
                break
        await worker.stop()

    asyncio.run(run())
    alerts = [decode_alert(value) for topic, _, _, value in committed if topic == "alerts"]
    # the replay of 0-3 made no alert again; 4-7 were scored once more after the abort, and committed once
    assert sorted(a.source.offset for a in alerts) == list(range(8))  # type: ignore[union-attr]
    assert len({a.alert_id for a in alerts}) == 8
    assert group.offsets[TopicPartition("tx", 0)].offset == 8
    # the terminal stage's records went beside the transactions, with the plain producer
    assert stage.sent and {topic for topic, *_ in stage.sent} <= {"deltas", "risk"}
    assert not [topic for topic, *_ in committed if topic in ("deltas", "risk")]
    restored = CheckpointStore(settings.stream.checkpoint_uri).load_latest("tx-0")
    assert restored is not None and restored.meta["counters"]["alerts"] == 8


def test_a_transaction_holds_the_batches_of_its_interval_and_a_checkpoint_commits_it_at_once(tmp_path: Path) -> None:
    transactions, producer, processors = _transactions(tmp_path)
    transactions.interval_s = 3600.0  # never due by time here
    transactions._last_commit = time.monotonic()
    assert asyncio.run(transactions.commit([Outgoing("alerts", b"a1", b"k")], processors)) is False
    assert asyncio.run(transactions.commit([Outgoing("alerts", b"a2", b"k")], processors)) is False
    assert transactions.open and producer.committed == [] and producer.group.offsets == {}
    assert asyncio.run(transactions.commit([], processors, force=True)) is True  # before a checkpoint
    assert [value for _, _, _, value in producer.committed] == [b"a1", b"a2"] and transactions.commits == 1
    assert producer.group.offsets[TopicPartition("tx", 0)] == OffsetAndMetadata(2, "2")
    asyncio.run(transactions.commit([Outgoing("alerts", b"a3", b"k")], processors))
    asyncio.run(transactions.abort())  # a rewind: the open transaction's batches are scored again
    assert not transactions.open and producer.aborts == 1 and transactions.clients.producer is None
    assert [value for _, _, _, value in producer.committed] == [b"a1", b"a2"]
