"""One partition's stream, a micro-batch at a time: features, scores, then the labels its event time made due.

The scoring actors and the backtest run this one pipeline per partition of the
``transactions`` topic. :class:`actors.partition.PartitionProcessor` wraps it
with what only a live stream has (decoding Kafka records, alerts, the
terminal stage, checkpoints); :func:`pipelines.replay.score_features` feeds
it the offline builder's feature rows instead of computing them. Either way:

1. :meth:`PartitionPipeline.features`: the partition's feature engine turns a
   micro-batch of transactions into feature vectors, with the transaction ids
   and event times the online classifier keys its held vectors by;
2. :meth:`PartitionPipeline.score`: the scorer scores the batch with its state
   at the batch start, then learns it (:meth:`models.Scorer.process`);
3. :meth:`PartitionPipeline.due_labels`: the labels queued for the partition
   whose ``label_time`` its event-time clock has reached leave the queue
   (:class:`features.labels.LabelQueue`, the rule the producer and the offline
   builder apply too), and :meth:`PartitionPipeline.join_labels` joins them to
   the feature state and teaches them to the sources that learn from labels
   (:meth:`PartitionPipeline.learn_labels` does the second part alone, when the
   features were computed elsewhere).

The scorer is assembled here too, for all of them: :func:`new_scorer` (the
anomaly model, the online classifier, the rules and the served batch
classifier) and :func:`with_classifier` (another batch classifier, what the
other sources learned kept).

>>> from configs import FeatureSettings, ScoringSettings
>>> from features import FeatureEngine
>>> settings = FeatureSettings()
>>> engine = FeatureEngine(settings, FeatureEngine.terminal_risk_for(settings))
>>> pipeline = PartitionPipeline[Label](new_scorer(ScoringSettings(), engine.registry), engine)
>>> T = 1_767_225_600_000
>>> txs = [Transaction(transaction_id=f"t{i}", account_id="a", event_time=T + i * 60_000, amount=9.0)
...        for i in range(3)]
>>> pipeline.labels.push(T + 60_000, Label(transaction_id="t0", account_id="a", label="fraud", label_time=T + 60_000))
>>> scored = pipeline.score(pipeline.features(txs[:1]))
>>> pipeline.clock_ms - T, pipeline.due_labels()  # the label is not due before the clock reaches it
(0, [])
>>> scored = pipeline.score(pipeline.features(txs[1:]))
>>> pipeline.join_labels(pipeline.due_labels())  # t0 is known to the engine; the online classifier held no vector
JoinedLabels(matched=1, unmatched=0, learned=0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from configs import ScoringSettings
from contracts import Label, Transaction
from features import FeatureBatch, FeatureEngine, FeatureRegistry, LabelQueue
from models.batch import ClassifierSource
from models.online import EVENT_TIME, TRANSACTION_ID
from models.scoring import ScoredBatch, Scorer

T = TypeVar("T")


def new_scorer(settings: ScoringSettings, registry: FeatureRegistry, classifier: ClassifierSource | None = None) -> Scorer:
    """A fresh partition scorer: the anomaly model, the online classifier when enabled, the rules when any, and
    ``classifier`` (the served batch classifier) last when given; ConfigError (one line) for a bad setting."""
    scorer = Scorer.from_settings(settings, registry)
    return scorer if classifier is None else with_classifier(scorer, classifier)


def with_classifier(scorer: Scorer, classifier: ClassifierSource | None) -> Scorer:
    """``scorer``'s sources, with what they learned, serving ``classifier`` as the batch classifier (last; none for
    None): only the stateless classifier source is replaced."""
    sources = [source for source in scorer.sources if source.name != ClassifierSource.name]
    if classifier is not None:
        sources.append(classifier)
    return Scorer(scorer.settings, scorer.registry, sources)


@dataclass(frozen=True)
class JoinedLabels:
    """What joining a run of due labels did."""

    #: Labels joined to a transaction the feature state knows, and the others (never scored here, or forgotten).
    matched: int
    unmatched: int
    #: Labels the sources that learn from labels learned (their transaction's vector was still held).
    learned: int


class PartitionPipeline(Generic[T]):
    """A partition's feature engine (when it computes the features), scorer and queue of labels not due yet.

    ``T`` is what the queue holds per label: the actors queue (offset, label record) pairs, the backtest the
    positions of labelled rows.
    """

    def __init__(self, scorer: Scorer, engine: FeatureEngine | None = None) -> None:
        #: Scores each micro-batch; replaced (a served classifier, reloaded rules) between micro-batches.
        self.scorer = scorer
        #: The partition's :class:`~features.FeatureEngine`; None when the features come from elsewhere.
        self.engine = engine
        #: Labels read but not applied yet, in the order they are to be applied (:meth:`due_labels`).
        self.labels: LabelQueue[T] = LabelQueue()

    @property
    def clock_ms(self) -> int:
        """The partition's event-time clock: the latest event time scored (the engine's, when there is one)."""
        return int(self.engine.max_event_time_ms) if self.engine is not None else self.labels.clock_ms

    def features(self, transactions: Sequence[Transaction]) -> FeatureBatch:
        """Feature vectors of a micro-batch of transactions (in order), with their ids and event times."""
        if self.engine is None:
            raise ValueError("this pipeline has no feature engine: give score() the feature batches computed elsewhere")
        batch: FeatureBatch = self.engine.transform_batch(transactions)
        # what the online classifier keys its buffered vectors by (until the labels come)
        batch.extra[TRANSACTION_ID] = np.array([tx.transaction_id for tx in transactions], dtype=object)
        batch.extra[EVENT_TIME] = np.fromiter((tx.event_time for tx in transactions), dtype=np.int64,
                                              count=len(transactions))  # fmt: skip
        return batch

    def score(self, batch: FeatureBatch) -> ScoredBatch:
        """Score a micro-batch with the scorer's state at its start, then learn it (without an engine, the
        batch's ``extra[EVENT_TIME]`` moves the partition's clock)."""
        if self.engine is None and len(batch.values) and EVENT_TIME in batch.extra:
            self.labels.tick(int(np.max(batch.extra[EVENT_TIME])))
        return self.scorer.process(batch)

    def due_labels(self, clock_ms: int | None = None) -> list[T]:
        """Take the queued labels due at the partition's clock (or at ``clock_ms``), in queue order."""
        return self.labels.release(self.clock_ms if clock_ms is None else clock_ms)

    def join_labels(self, labels: Sequence[Label]) -> JoinedLabels:
        """Join due labels (in order) to the feature state (their transaction's account and terminal), then
        teach them to the sources that learn from labels; without an engine every label is unmatched."""
        matched = 0
        if self.engine is not None:
            observe = self.engine.observe_label
            for label in labels:
                if observe(label):
                    matched += 1
        learned = self.learn_labels([label.transaction_id for label in labels],
                                    [label.label == "fraud" for label in labels])  # fmt: skip
        return JoinedLabels(matched, len(labels) - matched, learned)

    def learn_labels(self, transaction_ids: list[str], is_fraud: list[bool]) -> int:
        """Teach due labels (in order) to the sources that learn from labels; how many they learned."""
        return self.scorer.observe_labels(transaction_ids, is_fraud)

