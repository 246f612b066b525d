"""models/pipeline.py: the partition pipeline the actors and the backtest share, and the scorer they assemble."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from configs import ScoringSettings, load_settings
from contracts import Label, Transaction
from contracts.arrow import table_to_records
from features import FeatureBatch, FeatureEngine, FeatureRegistry, release_order
from features.offline import build_feature_table, history_transactions
from models import Scorer
from models.batch import BatchModel, ClassifierSource
from models.online import EVENT_TIME, TRANSACTION_ID, OnlineClassifierSource
from models.pipeline import PartitionPipeline, new_scorer, with_classifier
from synthetic import generate

MICRO_BATCH = 400


@dataclass(frozen=True)
class _History:
    transactions: list[Transaction]
    labels: list[Label]
    values: np.ndarray
    ids: np.ndarray
    times: np.ndarray
    labelled: np.ndarray
    is_fraud: np.ndarray
    label_ms: np.ndarray


def _scoring() -> ScoringSettings:
    scoring = load_settings().scoring
    return msgspec.structs.replace(scoring, online=msgspec.structs.replace(scoring.online, min_fraud_labels=3))


@pytest.fixture(scope="module")
def history(registry: FeatureRegistry) -> _History:
    """300 accounts x 8 days, features from the offline builder (one partition), in event-time order."""
    settings = load_settings()
    generated = generate(msgspec.structs.replace(settings.generator, accounts=300, days=8, seed=4))
    table = build_feature_table(generated.transactions, generated.labels, settings.features, partitions=1)
    label = table.column("label")
    return _History(
        transactions=table_to_records(history_transactions(generated.transactions), Transaction),  # type: ignore[arg-type]
        labels=table_to_records(generated.labels, Label),  # type: ignore[arg-type]
        values=np.column_stack([table.column(name).to_numpy() for name in registry.names]).astype(np.float64),
        ids=np.array(table.column("transaction_id").to_pylist(), dtype=object),
        times=table.column("event_time").cast(pa.int64()).to_numpy(),
        labelled=label.is_valid().to_numpy(zero_copy_only=False),
        is_fraud=label.fill_null(0).to_numpy().astype(bool),
        label_ms=table.column("label_time").cast(pa.int64()).fill_null(0).to_numpy(),
    )


def _batch(history: _History, rows: slice, registry: FeatureRegistry) -> FeatureBatch:
    extra = {TRANSACTION_ID: history.ids[rows], EVENT_TIME: history.times[rows]}
    late = np.zeros(len(history.ids[rows]), dtype=bool)
    return FeatureBatch(history.values[rows], late, registry.names, registry.version, extra)


def test_replayed_features_learn_each_label_after_the_micro_batch_whose_clock_reaches_it(history, registry) -> None:  # type: ignore[no-untyped-def]
    """The pipeline without an engine equals the loop written out: score a micro-batch, then learn the labels
    (by label time, ties by id) whose label time the latest event time scored has reached."""
    known = np.flatnonzero(history.labelled)
    by_time = sorted(known.tolist(), key=lambda i: (int(history.label_ms[i]), history.ids[i]))
    reference = Scorer.from_settings(_scoring(), registry)
    pipeline: PartitionPipeline[int] = PartitionPipeline(new_scorer(_scoring(), registry))
    rows = known[release_order(history.label_ms[known], history.ids[known].tolist())]
    pipeline.labels.extend(history.label_ms[rows].tolist(), rows.tolist())
    given, learned = 0, 0
    for start in range(0, len(history.ids), MICRO_BATCH):
        chunk = slice(start, start + MICRO_BATCH)
        expected = reference.process(_batch(history, chunk, registry))
        clock = int(history.times[: start + MICRO_BATCH].max())
        due = []
        while given < len(by_time) and history.label_ms[by_time[given]] <= clock:
            due.append(by_time[given])
            given += 1
        reference.observe_labels(history.ids[due].tolist(), history.is_fraud[due].tolist())

        scored = pipeline.score(_batch(history, chunk, registry))
        assert pipeline.clock_ms == clock
        released = pipeline.due_labels()
        assert released == due
        learned += pipeline.learn_labels(history.ids[released].tolist(), history.is_fraud[released].tolist())
        assert np.array_equal(scored.score, expected.score) and scored.decision == expected.decision
    assert pipeline.scorer.state_bytes() == reference.state_bytes()
    online = next(s for s in pipeline.scorer.sources if isinstance(s, OnlineClassifierSource))
    assert learned == online.frauds_learned + online.genuine_learned > 0 and online.warm
    assert len(pipeline.labels) == len(known) - given  # labels due after the last transaction stay queued


def test_with_an_engine_the_labels_join_the_feature_state_then_the_scorer(history, registry) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings()
    engine = FeatureEngine(settings.features, FeatureEngine.terminal_risk_for(settings.features))
    pipeline: PartitionPipeline[Label] = PartitionPipeline(new_scorer(_scoring(), engine.registry), engine)
    order = release_order([lab.label_time for lab in history.labels], [lab.transaction_id for lab in history.labels])
    pipeline.labels.extend([history.labels[i].label_time for i in order], [history.labels[i] for i in order])  # type: ignore[misc]
    matched = unmatched = learned = 0
    for start in range(0, len(history.transactions), MICRO_BATCH):
        chunk = history.transactions[start : start + MICRO_BATCH]
        batch = pipeline.features(chunk)
        assert batch.extra[TRANSACTION_ID].tolist() == [tx.transaction_id for tx in chunk]
        assert batch.extra[EVENT_TIME].tolist() == [tx.event_time for tx in chunk]
        pipeline.score(batch)
        assert pipeline.clock_ms == engine.max_event_time_ms
        due = pipeline.due_labels()
        assert all(lab.label_time <= engine.max_event_time_ms for lab in due)  # type: ignore[operator]
        joined = pipeline.join_labels(due)
        matched, unmatched, learned = matched + joined.matched, unmatched + joined.unmatched, learned + joined.learned
    online = next(s for s in pipeline.scorer.sources if isinstance(s, OnlineClassifierSource))
    assert matched + unmatched == len(history.labels) - len(pipeline.labels) and matched > 0
    assert learned == online.frauds_learned + online.genuine_learned > 0
    assert all(lab.label_time > engine.max_event_time_ms for lab in pipeline.labels)  # type: ignore[operator]


def test_an_explicit_clock_overrides_the_partition_clock(registry) -> None:  # type: ignore[no-untyped-def]
    pipeline: PartitionPipeline[str] = PartitionPipeline(new_scorer(ScoringSettings(), registry))
    pipeline.labels.extend([10, 20, 30], ["a", "b", "c"])
    assert pipeline.clock_ms < 0 and pipeline.due_labels() == []
    assert pipeline.due_labels(20) == ["a", "b"] and pipeline.clock_ms < 0  # the clock did not move
    values = np.zeros((2, len(registry)))
    pipeline.score(FeatureBatch(values, np.zeros(2, bool), registry.names, registry.version, {EVENT_TIME: np.array([31, 5])}))
    assert pipeline.clock_ms == 31 and pipeline.due_labels() == ["c"]


def test_features_need_an_engine(registry) -> None:  # type: ignore[no-untyped-def]
    pipeline: PartitionPipeline[int] = PartitionPipeline(new_scorer(ScoringSettings(), registry))
    with pytest.raises(ValueError, match="no feature engine"):
        pipeline.features([])


class _Fixed:
    def predict_proba(self, X):  # type: ignore[no-untyped-def]
        p = np.clip(X["amount"].to_numpy() / 1000, 0, 1)
        return np.column_stack([1 - p, p])


def test_a_served_classifier_replaces_only_the_classifier_and_keeps_what_the_others_learned(history, registry) -> None:  # type: ignore[no-untyped-def]
    scoring = _scoring()
    plain = new_scorer(scoring, registry)
    assert plain.model_versions.keys() == Scorer.from_settings(scoring, registry).model_versions.keys()
    plain.process(_batch(history, slice(0, 2_000), registry))  # the anomaly model and the scaler learn
    first = ClassifierSource(BatchModel(_Fixed(), ("amount",), registry.version, "fraud-classifier/1"), registry, scoring)
    second = ClassifierSource(BatchModel(_Fixed(), ("amount",), registry.version, "fraud-classifier/2"), registry, scoring)
    served = with_classifier(plain, first)
    assert served.sources[:-1] == plain.sources and served.sources[-1] is first  # the same objects: what they learned
    assert served.model_versions["classifier"] == "fraud-classifier/1"
    swapped = with_classifier(served, second)
    assert [s.name for s in swapped.sources] == [s.name for s in served.sources]
    assert swapped.model_versions["classifier"] == "fraud-classifier/2" and swapped.sources[:-1] == plain.sources
    withdrawn = with_classifier(swapped, None)
    assert withdrawn.sources == plain.sources and "classifier" not in withdrawn.model_versions
    assert withdrawn.state_bytes() == plain.state_bytes()
    fresh = new_scorer(scoring, registry, first)
    assert fresh.model_versions == {**Scorer.from_settings(scoring, registry).model_versions, "classifier": first.version}
