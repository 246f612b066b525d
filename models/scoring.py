"""The scorer a scoring partition calls once per micro-batch: score sources fused into one decision.

Fusion (:mod:`models.fusion`, ``scoring.fusion``): by default the fused score
is the maximum of the sources' scores (each in [0, 1]); ``weighted`` and
``stacking`` combine the model sources' scores instead, and a matched rule then
lifts the result to at least its score; ``learned`` (the default once a
classifier carrying one is served) weighs the rules' score like any source's. The decision is the strongest of what
the sources demand (a matched rule's action, a classifier's probability above
its review or block level) and what the thresholds give (``block`` at or above
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
>>> scorer.model_versions  # doctest: +NORMALIZE_WHITESPACE
{'anomaly': 'river.HalfSpaceTrees:25x8w250s1:f15-e6d29926',
 'online': 'river.LogisticRegression:sgd0.01fw1m50b200000t45:f15-e6d29926', 'rules': 'rules-457fa01e'}
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
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from configs import RuleSettings, ScoringSettings
from contracts.records import FeatureContribution, Reasons
from features import FeatureBatch, FeatureRegistry
from models.fusion import Fusion
from models.online import OnlineClassifierSource
from models.rules import BLOCK, REVIEW
from models.sources import AnomalySource, LabelLearner, RuleSource, ScoreSource, SourceScores
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

    Build it with :meth:`from_settings` (anomaly model, the online classifier when
    enabled, then rules when any are configured) or :meth:`from_state` (continue
    from a checkpoint). Delayed labels reach the sources that learn from them
    through :meth:`observe_labels`.
    """

    def __init__(self, settings: ScoringSettings, registry: FeatureRegistry, sources: Sequence[ScoreSource]) -> None:
        self.settings = settings
        self.registry = registry
        self.sources = tuple(sources)
        self._names = registry.names
        #: How the sources' scores are fused (``settings.fusion``); ConfigError for weights that leave nothing.
        self.fusion = self._fusion(settings, self.sources)
        #: Source name -> version, recorded on every alert (and ``fusion`` when the method is not ``max``).
        self.model_versions = self._versions(self.sources, self.fusion)

    @staticmethod
    def _fusion(settings: ScoringSettings, sources: Sequence[ScoreSource]) -> Fusion:
        """``settings.fusion``; under ``learned``, with the fusion the classifier source's version carries."""
        carrier = next((s for s in sources if getattr(s, "fusion", None) is not None), None)
        learned = getattr(carrier, "fusion", None)
        return Fusion(settings.fusion, [source.name for source in sources], learned, getattr(carrier, "version", ""))

    @staticmethod
    def _versions(sources: Sequence[ScoreSource], fusion: Fusion) -> dict[str, str]:
        versions = {source.name: source.version for source in sources}
        if fusion.version is not None:
            versions["fusion"] = fusion.version
        return versions

    @staticmethod
    def _rule_source(
        settings: ScoringSettings, rules: tuple[RuleSettings, ...], registry: FeatureRegistry
    ) -> RuleSource:
        where = f"{settings.rules_file}: rules" if settings.rules_file else "scoring.rules"
        return RuleSource(rules, registry, where, settings.block_threshold)

    @classmethod
    def from_settings(cls, settings: ScoringSettings, registry: FeatureRegistry) -> Scorer:
        """A fresh scorer; ConfigError (one line) for unknown features or a bad rule."""
        sources: list[ScoreSource] = [AnomalySource(settings.anomaly, registry)]
        if settings.online.enabled:
            sources.append(
                OnlineClassifierSource(settings.online, registry, settings.review_threshold, settings.block_threshold)
            )
        if settings.rules:
            sources.append(cls._rule_source(settings, settings.rules, registry))
        return cls(settings, registry, sources)

    def replace_rules(self, rules: tuple[RuleSettings, ...]) -> None:
        """Decide with ``rules`` from the next :meth:`process` on (a reload of ``scoring.rules_file``).

        The rule source is replaced in place (added when there was none, removed
        for no rules); every other source, and what it learned, stays, and
        ``model_versions["rules"]`` follows. Everything is checked before
        anything changes: a bad rule set raises ConfigError (one line) and the
        old rules stay.
        """
        new = self._rule_source(self.settings, rules, self.registry) if rules else None
        settings = msgspec.structs.replace(self.settings, rules=rules)
        sources = [source for source in self.sources if source.name != RuleSource.name]
        if new is not None:
            at = next((i for i, s in enumerate(self.sources) if s.name == RuleSource.name), len(sources))
            sources.insert(at, new)
        fusion = self._fusion(settings, sources)
        self.settings, self.sources, self.fusion = settings, tuple(sources), fusion
        self.model_versions = self._versions(self.sources, fusion)

    def observe_labels(self, transaction_ids: list[str], is_fraud: list[bool]) -> int:
        """Give delayed labels (in the order they were applied) to every source that learns from them.

        Returns how many labels the sources learned (a label whose transaction a
        source no longer holds is counted by that source, not learned).
        """
        if not transaction_ids:
            return 0
        learners = [source for source in self.sources if isinstance(source, LabelLearner)]
        return sum(source.observe_labels(transaction_ids, is_fraud) for source in learners)

    def process(self, batch: FeatureBatch) -> ScoredBatch:
        """Score every row with the state at the batch start, then learn the batch."""
        if batch.version != self.registry.version:
            raise ValueError(
                f"feature batch has version {batch.version}, the scorer was built for {self.registry.version}; "
                "build the scorer from the same feature settings as the engine"
            )
        results = [source.process(batch) for source in self.sources]
        rows = len(batch.values)
        score, level = self.fusion.fuse([result.score for result in results]), np.zeros(rows, dtype=np.int8)
        for result in results:
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
        or configuration of a source that keeps state (``state()`` not empty: the
        anomaly model, the online classifier): the message says which and what to
        do. Stateless sources (rules, the batch classifier) and the fusion are
        rebuilt from ``settings``: their versions may differ from the saved ones.
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

        def saved_state(name: str) -> dict[str, Any]:
            prefix = f"{name}/"
            state = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            return {**state, **meta["scalars"].get(name, {})}

        # only sources that keep state pin their version: a stateless one (rules, the batch classifier) is
        # rebuilt from the config, so its text or version may change while the job is down
        saved = {name: version for name, version in meta["model_versions"].items() if saved_state(name)}
        wanted = {source.name: source.version for source in scorer.sources if source.state()}
        if saved != wanted:
            raise ValueError(
                f"scorer state was saved for models {saved}, the config gives {wanted} (sources that keep "
                "state); start the partition without its checkpoint or restore the old scoring settings"
            )
        for source in scorer.sources:
            source.restore(saved_state(source.name))
        return scorer
