"""A partition hands the labels it applies to the scorer: the online classifier learns them, in offset order."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np

from actors.partition import PartitionProcessor
from actors.terminal_stage import BroadcastRisk
from configs import load_settings
from contracts import Transaction
from contracts.arrow import table_to_records
from contracts.records import Label, encode
from features import FeatureEngine
from features.offline import history_transactions
from models.online import OnlineClassifierSource
from synthetic import generate


@dataclass(frozen=True)
class _Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def _run(labels_one_by_one: bool) -> PartitionProcessor:
    settings = load_settings()
    online = msgspec.structs.replace(settings.scoring.online, min_fraud_labels=5)
    settings = msgspec.structs.replace(settings, scoring=msgspec.structs.replace(settings.scoring, online=online))
    history = generate(msgspec.structs.replace(settings.generator, accounts=400, days=10, seed=3))
    transactions = table_to_records(history_transactions(history.transactions), Transaction)
    labels: list[Label] = table_to_records(history.labels, Label)  # type: ignore[arg-type]
    labels.sort(key=lambda lab: lab.label_time)  # type: ignore[arg-type, return-value]
    table = FeatureEngine.terminal_risk_for(settings.features)
    table.publish_updates()
    processor = PartitionProcessor(settings, 0, BroadcastRisk(table, settings.kafka.topics.terminal_deltas.partitions))
    sent = 0
    for start in range(0, len(transactions), 500):
        chunk = transactions[start : start + 500]
        records = [_Record(start + i, tx.account_id.encode(), encode(tx), 0) for i, tx in enumerate(chunk)]
        processor.process_transactions(records, now_ms=0)  # type: ignore[arg-type]
        # labels arrive up to a day ahead of the stream's event time; the partition holds them until due
        horizon = chunk[-1].event_time + 86_400_000
        due = [lab for lab in labels[sent:] if lab.label_time <= horizon]  # type: ignore[operator]
        records = [_Record(sent + i, lab.account_id.encode(), encode(lab), 0) for i, lab in enumerate(due)]
        for group in ([[r] for r in records] if labels_one_by_one else [records]):
            processor.process_labels(group)  # type: ignore[arg-type]
        sent += len(due)
    return processor


def test_applied_labels_reach_the_online_classifier_and_delivery_does_not_change_what_it_learns() -> None:
    processor = _run(labels_one_by_one=False)
    online = next(s for s in processor.scorer.sources if isinstance(s, OnlineClassifierSource))
    counters = processor.counters
    assert counters.labels_learned == online.frauds_learned + online.genuine_learned > 100
    assert online.frauds_learned >= 5 and online.warm and np.abs(online.weights_).any()
    # every applied label was looked up once: learned, or counted (scored during the scaler's warm-up, or unknown)
    buffer = online.buffer
    assert buffer.taken + buffer.unknown + buffer.expired == counters.labels_applied + counters.labels_unmatched
    assert buffer.taken == counters.labels_learned and buffer.unknown > 0
    # labels applied in event time: the same labels delivered one record at a time teach exactly the same model
    other = _run(labels_one_by_one=True)
    assert other.scorer.state_bytes() == processor.scorer.state_bytes()
    assert other.counters == processor.counters
