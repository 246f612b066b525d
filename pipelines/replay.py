"""The scoring code replayed over a feature table in event time, no Kafka: what `backtest` and `train` score with.

Each partition of the transactions topic gets its own
:class:`models.pipeline.PartitionPipeline`, the one the scoring actors run, with
the scorer they build (:func:`models.pipeline.new_scorer`: anomaly model, online
classifier, rules) plus, when one is given, a batch classifier
(:class:`models.batch.ClassifierSource`). It is fed that partition's rows of
the offline builder's table in event-time order, ``backtest.micro_batch_records``
at a time; after each micro-batch the labels whose ``label_time`` the
partition's event-time clock has reached are learned, as the actors apply them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from configs import Settings
from connectors.history import HistoryError
from features import FeatureBatch, FeatureRegistry, release_order
from models.batch import BatchModel, ClassifierSource
from models.online import EVENT_TIME, TRANSACTION_ID
from models.pipeline import PartitionPipeline, new_scorer


@dataclass
class FeatureTable:
    """The features of a history's rows in event-time order, with ids, times, labels and ground truth."""

    table: pa.Table
    registry: FeatureRegistry
    #: Event time, epoch ms.
    times: np.ndarray
    #: Eventual truth: is_fraud when the history has it, else a fraud label (at any time).
    truth: np.ndarray
    #: Where ``truth`` comes from: "is_fraud", "labels" or "" (none).
    truth_source: str

    def matrix(self, names: tuple[str, ...]) -> np.ndarray:
        return np.column_stack([self.table.column(n).to_numpy() for n in names]).astype(np.float64, copy=False)

    @property
    def scenario(self) -> np.ndarray | None:
        if "fraud_scenario" not in self.table.column_names:
            return None
        return np.array(self.table.column("fraud_scenario").to_pylist(), dtype=object)


def score_features(
    settings: Settings,
    features: FeatureTable,
    batch_model: BatchModel | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """(fused score, decision level 0/1/2, score per source, model versions) of every row, partition by partition."""
    registry = features.registry
    version = (features.table.schema.metadata or {}).get(b"feature_version", b"").decode()
    if version != registry.version:
        raise HistoryError(f"features were built as {version}, the scorer expects {registry.version}")
    names = registry.names
    values = features.matrix(names)
    late = features.table.column("late").to_numpy(zero_copy_only=False).astype(bool)
    partition = features.table.column("partition").to_numpy()
    ids = np.array(features.table.column("transaction_id").to_pylist(), dtype=object)
    label = features.table.column("label")
    labelled = label.is_valid().to_numpy(zero_copy_only=False)
    is_fraud = label.fill_null(0).to_numpy().astype(bool)
    label_ms = features.table.column("label_time").cast(pa.int64()).fill_null(0).to_numpy()
    rows = len(values)
    score, level = np.zeros(rows), np.zeros(rows, dtype=np.int8)
    per_source: dict[str, np.ndarray] = {}
    classifier = ClassifierSource(batch_model, registry, settings.scoring) if batch_model is not None else None
    size = settings.backtest.micro_batch_records
    versions: dict[str, str] = {}
    done = 0
    for p in np.unique(partition).tolist():
        # no feature engine here: the features are the offline builder's
        pipeline: PartitionPipeline[int] = PartitionPipeline(new_scorer(settings.scoring, registry, classifier))
        versions = pipeline.scorer.model_versions
        mine = np.flatnonzero(partition == p)
        # the partition's labels (their rows) join when its event-time clock reaches their label_time
        known = mine[labelled[mine]]
        known = known[release_order(label_ms[known], ids[known].tolist())]
        pipeline.labels.extend(label_ms[known].tolist(), known.tolist())
        for start in range(0, len(mine), size):
            chunk = mine[start : start + size]
            extra = {TRANSACTION_ID: ids[chunk], EVENT_TIME: features.times[chunk]}
            scored = pipeline.score(FeatureBatch(values[chunk], late[chunk], names, registry.version, extra))
            due = pipeline.due_labels()
            pipeline.learn_labels(ids[due].tolist(), is_fraud[due].tolist())
            score[chunk] = scored.score
            level[chunk] = [0 if d is None else (1 if d == "review" else 2) for d in scored.decision]
            for name, source_score in scored.sources.items():
                per_source.setdefault(name, np.zeros(rows))[chunk] = source_score
            done += len(chunk)
            if on_progress is not None:
                on_progress(done)
    return score, level, per_source, versions
