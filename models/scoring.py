"""The scorer a scoring partition calls once per micro-batch: score sources fused into one decision.

Fusion: the fused score is the maximum of the sources' scores (each in
[0, 1]); the decision is the strongest of what the sources demand (a matched
rule's action) and what the thresholds give (``block`` at or above
``block_threshold``, ``review`` at or above ``review_threshold``); rows with
no decision raise no alert. Only alerted rows get :class:`~contracts.records.Reasons`:
the names of the rules that matched them, and the ``top_features`` largest
contributions (by absolute value) of the explaining source with the highest
score on that row (today the anomaly model: see
:class:`~models.sources.AnomalySource` for what a contribution means).

>>> import numpy as np
>>> from configs import FeatureSettings, RuleSettings, ScoringSettings
>>> from features import FeatureBatch, FeatureRegistry
>>> registry = FeatureRegistry.from_settings(FeatureSettings())
>>> settings = ScoringSettings(rules=(RuleSettings(name="huge", when="amount > 5000", action="block", score=0.99),))
>>> scorer = Scorer.from_settings(settings, registry)
>>> scorer.model_versions
{'anomaly': 'river.HalfSpaceTrees:25x8w250s1:f15-e6d29926', 'rules': 'rules-457fa01e'}
>>> values = np.ones((3, len(registry))); values[2, registry.index("amount")] = 9000.0
>>> scored = scorer.process(FeatureBatch(values, np.zeros(3, bool), registry.names, registry.version))
>>> scored.score.tolist(), scored.decision
([0.0, 0.0, 0.99], [None, None, 'block'])
>>> scored.reasons[2].rules, [f.name for f in scored.reasons[2].top_features]
(['huge'], ['amount', 'count_10m', 'count_1h'])
>>> restored = Scorer.from_state(settings, registry, scorer.state_bytes())
>>> restored.state_bytes() == scorer.state_bytes()
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from configs import ScoringSettings
from contracts.records import FeatureContribution, Reasons
from features import FeatureBatch, FeatureRegistry
from models.rules import BLOCK, REVIEW
from models.sources import AnomalySource, RuleSource, ScoreSource, SourceScores
from models.state import pack, unpack

FloatArray = npt.NDArray[np.float64]

#: Bumped when the layout of :meth:`Scorer.state_bytes` changes.
STATE_FORMAT = 1
_DECISIONS: tuple[str | None, ...] = (None, "review", "block")


@dataclass(frozen=True)
class ScoredBatch:
    """Per-row results of one micro-batch, rows in input order."""

    #: Fused score in [0, 1] (float64).
    score: FloatArray
    #: None (no alert), "review" or "block".
    decision: list[str | None]
    #: Why, for rows with a decision; None elsewhere.
    reasons: list[Reasons | None]
    #: Each source's own score, by source name (for backtests and notebooks).
    sources: dict[str, FloatArray]


class Scorer:
    """Score sources fused into a score, a decision and reasons, one micro-batch at a time.

    Build it with :meth:`from_settings` (anomaly model, then rules when any are
    configured) or :meth:`from_state` (continue from a checkpoint).
    """

    def __init__(self, settings: ScoringSettings, registry: FeatureRegistry, sources: Sequence[ScoreSource]) -> None:
        self.settings = settings
        self.registry = registry
        self.sources = tuple(sources)
        self._names = registry.names
        #: Source name -> version, recorded on every alert.
        self.model_versions = {source.name: source.version for source in self.sources}

    @classmethod
    def from_settings(cls, settings: ScoringSettings, registry: FeatureRegistry) -> Scorer:
        """A fresh scorer; ConfigError (one line) for unknown features or a bad rule."""
        sources: list[ScoreSource] = [AnomalySource(settings.anomaly, registry)]
        if settings.rules:
            sources.append(RuleSource(settings.rules, registry))
        return cls(settings, registry, sources)

    def process(self, batch: FeatureBatch) -> ScoredBatch:
        """Score every row with the state at the batch start, then learn the batch."""
        if batch.version != self.registry.version:
            raise ValueError(
                f"feature batch has version {batch.version}, the scorer was built for {self.registry.version}; "
                "build the scorer from the same feature settings as the engine"
            )
        results = [source.process(batch) for source in self.sources]
        rows = len(batch.values)
        score, level = np.zeros(rows), np.zeros(rows, dtype=np.int8)
        for result in results:
            score = np.maximum(score, result.score)
            level = np.maximum(level, result.action)
        level = np.maximum(level, (score >= self.settings.review_threshold) * REVIEW)
        level = np.maximum(level, (score >= self.settings.block_threshold) * BLOCK)
        decision: list[str | None] = [_DECISIONS[i] for i in level.tolist()]
        return ScoredBatch(
            score=score,
            decision=decision,
            reasons=self._reasons(batch, results, np.flatnonzero(level)),
            sources={source.name: result.score for source, result in zip(self.sources, results, strict=True)},
        )

    def _reasons(
        self, batch: FeatureBatch, results: list[SourceScores], alerted: npt.NDArray[np.intp]
    ) -> list[Reasons | None]:
        """Reasons for the alerted rows (None elsewhere): matched rules, top features of the leading explainer."""
        reasons: list[Reasons | None] = [None] * len(batch.values)
        if not len(alerted):
            return reasons
        rules: dict[int, list[str]] = {int(row): [] for row in alerted}
        for result in results:
            for name, hits in result.matched:
                for row in np.flatnonzero(hits).tolist():
                    rules[row].append(name)
        features: dict[int, list[FeatureContribution]] = {}
        explainers = [(result.score, result.explain) for result in results if result.explain is not None]
        if explainers and self.settings.top_features:
            owner = np.argmax(np.stack([score[alerted] for score, _ in explainers]), axis=0)
            for k, (_, explain) in enumerate(explainers):
                mine = alerted[owner == k]
                if not len(mine):
                    continue
                columns, contribution = explain(mine)
                top = np.argsort(-np.abs(contribution), axis=1, kind="stable")[:, : self.settings.top_features]
                for i, row in enumerate(mine.tolist()):
                    features[row] = [
                        FeatureContribution(
                            name=self._names[columns[j]],
                            value=float(batch.values[row, columns[j]]),
                            contribution=round(float(contribution[i, j]), 4),
                        )
                        for j in top[i].tolist()
                    ]
        for row in alerted.tolist():
            reasons[row] = Reasons(rules=rules[row], top_features=features.get(row, []))
        return reasons

    # ------------------------------------------------------------------- state
    def state_bytes(self) -> bytes:
        """Everything the sources learned, with the versions it belongs to; restore with :meth:`from_state`.

        Deterministic: the same state gives the same bytes. The River model is not
        pickled: its trees are rebuilt from the parameters (in ``model_versions``)
        and the saved masses written back.
        """
        scalars: dict[str, dict[str, int | float | bool]] = {}
        arrays: dict[str, np.ndarray] = {}
        for source in self.sources:
            scalars[source.name] = {}
            for key, value in source.state().items():
                if isinstance(value, np.ndarray):
                    arrays[f"{source.name}/{key}"] = value
                else:
                    scalars[source.name][key] = value
        meta = {
            "format": STATE_FORMAT,
            "feature_version": self.registry.version,
            "features": list(self.registry.names),
            "model_versions": self.model_versions,
            "scalars": scalars,
        }
        return pack(meta, arrays)

    @classmethod
    def from_state(cls, settings: ScoringSettings, registry: FeatureRegistry, data: bytes) -> Scorer:
        """A scorer that continues exactly where the one that saved ``data`` stopped.

        ValueError when the state was saved under another format, feature layout
        or model configuration: the message says which and what to do.
        """
        meta, arrays = unpack(data)
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(
                f"scorer state has format {meta.get('format')}, this code reads format {STATE_FORMAT}; "
                "start the partition without its checkpoint"
            )
        if meta["feature_version"] != registry.version or tuple(meta["features"]) != registry.names:
            raise ValueError(
                f"scorer state was saved for features {meta['feature_version']} ({len(meta['features'])} features), "
                f"the config gives {registry.version} ({len(registry)}); start the partition without its checkpoint "
                "or restore the old feature settings"
            )
        scorer = cls.from_settings(settings, registry)
        if meta["model_versions"] != scorer.model_versions:
            raise ValueError(
                f"scorer state was saved for models {meta['model_versions']}, the config gives "
                f"{scorer.model_versions}; start the partition without its checkpoint or restore the old "
                "scoring settings"
            )
        for source in scorer.sources:
            prefix = f"{source.name}/"
            state = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            source.restore({**state, **meta["scalars"][source.name]})
        return scorer
