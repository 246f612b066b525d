"""Scoring: score sources (the River anomaly model, rules) fused into one decision per event.

Pure code: no Kafka, Ray or MLflow, no clock. A scoring partition calls
:meth:`Scorer.process` once per micro-batch of feature vectors.

The names below are imported on first use, so that ``models.rules`` and
``models.checked_settings`` (the settings loader every entry point calls, which
compiles a rules file) do not import River.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.anomaly import BatchHalfSpaceTrees
    from models.rules import Rule, compile_condition, compile_rules
    from models.scoring import ScoredBatch, Scorer
    from models.sources import AnomalySource, RuleSource, ScoreSource, SourceScores

#: Exported name -> the module defining it.
_EXPORTS = {
    "AnomalySource": "models.sources",
    "BatchHalfSpaceTrees": "models.anomaly",
    "Rule": "models.rules",
    "RuleSource": "models.sources",
    "ScoreSource": "models.sources",
    "ScoredBatch": "models.scoring",
    "Scorer": "models.scoring",
    "SourceScores": "models.sources",
    "compile_condition": "models.rules",
    "compile_rules": "models.rules",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
