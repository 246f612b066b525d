"""Scoring: the online anomaly model, rules and score fusion (pure code: no Kafka, Ray or MLflow)."""

from models.anomaly import BatchHalfSpaceTrees, StreamingScaler
from models.rules import Rule, compile_rule
from models.scoring import ScoredBatch, Scorer

__all__ = ["BatchHalfSpaceTrees", "Rule", "ScoredBatch", "Scorer", "StreamingScaler", "compile_rule"]
