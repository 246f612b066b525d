"""The demo's scoreboard: which rows are scored (from partition positions), precision and recall per period."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from configs import GeneratorSettings
from contracts.partitioning import partition_for
from contracts.records import Alert, Reasons
from pipelines.scoreboard import GroundTruth, Scoreboard
from synthetic import generate

DAY_MS = 86_400_000


def _history() -> pa.Table:
    # six transactions of three accounts; rows 3-5 are in the live period (day 1 on)
    return pa.table({
        "transaction_id": ["t0", "t1", "t2", "t3", "t4", "t5"],
        "account_id": ["A1", "A2", "A1", "A3", "A1", "A2"],
        "event_time": pa.array([0, 1000, 2000, DAY_MS, DAY_MS + 1, DAY_MS + 2], pa.timestamp("ms", tz="UTC")),
        "is_fraud": [False, True, False, True, True, False],
        "fraud_scenario": [None, "card_testing", None, "account_takeover", "card_testing", None],
    })  # fmt: skip


def _alert(tx: str, account: str, decision: str = "review", alert_id: str | None = None) -> Alert:
    return Alert(
        alert_id=alert_id or f"a-{tx}", transaction_id=tx, account_id=account, event_time=0, score=0.999,
        decision=decision, reasons=Reasons(), model_versions={}, feature_version="fs1", ingest_time=0, alert_time=0,
    )  # fmt: skip


def test_rows_of_a_partition_are_in_send_order_with_kafkas_partitioner() -> None:
    truth = GroundTruth(_history(), partitions=3, live_from_ms=DAY_MS)
    for row, account in enumerate(_history().column("account_id").to_pylist()):
        assert truth.partition[row] == partition_for(account.encode(), 3)
    for partition, rows in truth.rows_of.items():
        assert list(rows) == sorted(rows)
        assert all(truth.partition[r] == partition for r in rows)
    assert sum(truth.rows_per_partition().values()) == 6
    assert truth.live.tolist() == [False, False, False, True, True, True]


def test_positions_mark_the_first_rows_of_each_partition_as_scored() -> None:
    truth = GroundTruth(_history(), partitions=1, live_from_ms=DAY_MS)
    assert truth.scored_mask({0: 4}).tolist() == [True, True, True, True, False, False]
    assert not truth.scored_mask({}).any()
    assert truth.scored_mask({0: 99}).all()


def test_precision_and_recall_per_period_count_each_alert_once() -> None:
    truth = GroundTruth(_history(), partitions=1, live_from_ms=DAY_MS)
    board = Scoreboard(truth)
    board.set_positions({0: 6})
    assert board.add(_alert("t1", "A2")) == 1  # fraud, warm-up
    assert board.add(_alert("t2", "A1")) == 2  # genuine, warm-up
    assert board.add(_alert("t4", "A1", "block")) == 4  # fraud, live
    assert board.add(_alert("t4", "A1", "block")) is None  # the same alert read again
    assert board.add(_alert("nope", "A9")) is None  # not in the history
    assert (board.repeats, board.unknown, board.alerts) == (1, 1, 3)
    warm, live = board.phase("warm-up"), board.phase("live")
    assert (warm.scored, warm.frauds, warm.alerts, warm.true_alerts) == (3, 1, 2, 1)
    assert (warm.precision, warm.recall) == (0.5, 1.0)
    assert (live.scored, live.frauds, live.alerts, live.true_alerts) == (3, 2, 1, 1)
    assert (live.precision, live.recall) == (1.0, 0.5)
    assert board.false_alerts() == 1 and board.false_alerts("live") == 0
    assert board.blocked.tolist() == [False, False, False, False, True, False]
    with pytest.raises(ValueError, match="phase must be one of"):
        board.phase("later")


def test_nothing_scored_yet_gives_no_precision_or_recall() -> None:
    board = Scoreboard(GroundTruth(_history(), partitions=2, live_from_ms=DAY_MS))
    metrics = board.phase("live")
    assert (metrics.scored, metrics.precision, metrics.recall) == (0, None, None)
    assert metrics.as_dict()["precision"] is None


def test_recall_only_counts_frauds_already_scored() -> None:
    truth = GroundTruth(_history(), partitions=1, live_from_ms=DAY_MS)
    board = Scoreboard(truth)
    board.set_positions({0: 4})  # t4 (a live fraud) not scored yet
    board.add(_alert("t3", "A3"))
    live = board.phase("live")
    assert (live.scored, live.frauds, live.recall) == (1, 1, 1.0)


def test_by_scenario_counts_transactions_and_accounts_caught() -> None:
    truth = GroundTruth(_history(), partitions=1, live_from_ms=DAY_MS)
    board = Scoreboard(truth)
    board.set_positions({0: 6})
    board.add(_alert("t4", "A1"))
    rows = {row["scenario"]: row for row in board.by_scenario()}
    assert rows["card_testing"] == {"scenario": "card_testing", "frauds": 2, "alerted": 1, "accounts": 2, "caught": 1}
    assert rows["account_takeover"]["caught"] == 0
    live = {row["scenario"]: row for row in board.by_scenario("live")}
    assert live["card_testing"] == {"scenario": "card_testing", "frauds": 1, "alerted": 1, "accounts": 1, "caught": 1}


def test_repeated_transaction_ids_are_refused() -> None:
    table = _history().set_column(0, "transaction_id", pa.array(["t0", "t0", "t2", "t3", "t4", "t5"]))
    with pytest.raises(ValueError, match="transaction_id"):
        GroundTruth(table, partitions=1, live_from_ms=DAY_MS)


def test_a_generated_history_splits_into_partitions_like_the_topic() -> None:
    history = generate(GeneratorSettings(accounts=200, days=3, seed=3))
    truth = GroundTruth(history.transactions, partitions=4, live_from_ms=0)
    counts = np.bincount(truth.partition, minlength=4)
    assert counts.sum() == history.transactions.num_rows and (counts > 0).all()
    assert truth.live.all()
