"""The scoring code replayed over a feature table in event time, no Kafka: what `backtest` and `train` score with.

Each partition of the transactions topic gets its own :class:`models.Scorer`,
built as the scoring actors build it (anomaly model, online classifier, rules)
plus, when one is given, a batch classifier (:class:`models.batch.ClassifierSource`),
and is fed that partition's rows in event-time order, ``backtest.micro_batch_records``
at a time, through :meth:`Scorer.process` as the actors call it; after each
micro-batch the labels whose ``label_time`` the partition's event-time clock
has reached go to :meth:`Scorer.observe_labels`, as the actors apply them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from configs import Settings
from connectors.history import HistoryError
from features import FeatureBatch
from models import Scorer
from models.batch import BatchModel, ClassifierSource
from models.online import EVENT_TIME, TRANSACTION_ID, LabelFeed

if TYPE_CHECKING:
    from pipelines.train import FeatureTable


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
        base = Scorer.from_settings(settings.scoring, registry)
        scorer = Scorer(settings.scoring, registry, [*base.sources, *([classifier] if classifier else [])])
        versions = scorer.model_versions
        mine = np.flatnonzero(partition == p)
        # the partition's labels join when its event-time clock reaches their label_time, as in the stream
        known = mine[labelled[mine]]
        feed = LabelFeed(ids[known].tolist(), is_fraud[known].tolist(), label_ms[known])
        clock = np.iinfo(np.int64).min
        for start in range(0, len(mine), size):
            chunk = mine[start : start + size]
            extra = {TRANSACTION_ID: ids[chunk], EVENT_TIME: features.times[chunk]}
            scored = scorer.process(FeatureBatch(values[chunk], late[chunk], names, registry.version, extra))
            clock = max(clock, int(features.times[chunk].max()))
            scorer.observe_labels(*feed.due(clock))
            score[chunk] = scored.score
            level[chunk] = [0 if d is None else (1 if d == "review" else 2) for d in scored.decision]
            for name, source_score in scored.sources.items():
                per_source.setdefault(name, np.zeros(rows))[chunk] = source_score
            done += len(chunk)
            if on_progress is not None:
                on_progress(done)
    return score, level, per_source, versions
