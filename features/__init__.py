"""Per-entity streaming features in event time: one code path online and offline.

Pure code: no Kafka, Ray or MLflow, and no clock (event time is an argument).
"""

from features._impl import COMPILED, EngineStats, FeatureBatch, FeatureEngine, PendingLabels, TerminalRisk
from features.labels import LabelQueue, interleave, release_order
from features.offline import PartitionedFeatures, build_feature_table
from features.registry import FeatureRegistry, FeatureSpec
from features.state import EngineSnapshot, restore_engine, take_snapshot

__all__ = [
    "COMPILED",
    "EngineSnapshot",
    "EngineStats",
    "FeatureBatch",
    "FeatureEngine",
    "FeatureRegistry",
    "FeatureSpec",
    "LabelQueue",
    "PartitionedFeatures",
    "PendingLabels",
    "TerminalRisk",
    "build_feature_table",
    "interleave",
    "release_order",
    "restore_engine",
    "take_snapshot",
]
