"""Scoring: score sources (the River anomaly model, rules) fused into one decision per event.

Pure code: no Kafka, Ray or MLflow, no clock. A scoring partition calls
:meth:`Scorer.process` once per micro-batch of feature vectors.
"""

from models.anomaly import BatchHalfSpaceTrees
from models.rules import Rule, compile_condition, compile_rules
from models.scoring import ScoredBatch, Scorer
from models.sources import AnomalySource, RuleSource, ScoreSource, SourceScores

__all__ = [
    "AnomalySource",
    "BatchHalfSpaceTrees",
    "Rule",
    "RuleSource",
    "ScoreSource",
    "ScoredBatch",
    "Scorer",
    "SourceScores",
    "compile_condition",
    "compile_rules",
]
