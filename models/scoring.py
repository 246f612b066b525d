"""The scorer a scoring actor calls once per micro-batch: score sources fused into one decision.

Sources today: the online anomaly model (River Half-Space Trees, batched) and
the configured rules. Each gives a score in [0, 1] per row; the fused score is
their maximum. The anomaly score is calibrated as a percentile rank among the
model's recent raw scores (a ring of the last ``CALIBRATION_SIZE``), so a
``review_threshold`` of 0.995 means "the 0.5 % most unusual events". A decision
is raised when the fused score reaches ``review_threshold`` (``block_threshold``
for "block") or when a rule matches (its action). Until the model has completed
a window and seen ``WARMUP`` events, only rules decide.

Reasons: matched rule names, and the ``top_features`` features whose scaled
values lie furthest from their running mean, in standard deviations (the signed
value is the ``contribution``).

>>> from configs import ScoringSettings, RuleSettings, FeatureSettings
>>> from features import FeatureRegistry, FeatureBatch
>>> import numpy as np
>>> registry = FeatureRegistry.from_settings(FeatureSettings())
>>> settings = ScoringSettings(rules=(RuleSettings(name="huge", when="amount > 5000", action="block", score=0.99),))
>>> scorer = Scorer.from_settings(settings, registry)
>>> values = np.ones((3, len(registry))); values[2, registry.index("amount")] = 9000.0
>>> scored = scorer.process(FeatureBatch(values, np.zeros(3, bool), registry.names, registry.version))
>>> scored.decision, scored.reasons[2].rules
([None, None, 'block'], ['huge'])
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np

from configs import ConfigError, ScoringSettings
from contracts.records import FeatureContribution, Reasons
from features import FeatureBatch, FeatureRegistry
from models.anomaly import BatchHalfSpaceTrees, StreamingScaler
from models.rules import Rule

#: Recent raw anomaly scores the calibration ranks against.
CALIBRATION_SIZE = 20_000
#: Events the anomaly model must have learned before it may raise alerts on its own.
WARMUP = 2_000
STATE_FORMAT = 1


@dataclass
class ScoredBatch:
    """Per-row results of one micro-batch."""

    score: np.ndarray
    decision: list[str | None]
    reasons: list[Reasons | None]
    anomaly: np.ndarray = field(default_factory=lambda: np.empty(0))


class _Calibration:
    """Percentile rank of a raw score among the recent ones (deterministic ring buffer).

    The sorted view is refreshed once ``REFRESH`` new scores came in, not after
    every micro-batch: small batches (low traffic, low latency) stay cheap.
    """

    REFRESH = 1_000

    def __init__(self, size: int) -> None:
        self.ring = np.zeros(size)
        self.filled = 0
        self.position = 0
        self.sorted = np.empty(0)
        self.since_sort = 0

    def rank(self, raw: np.ndarray) -> np.ndarray:
        if self.filled == 0:
            return np.zeros(len(raw))
        if self.since_sort >= self.REFRESH or len(self.sorted) == 0:
            self.sorted = np.sort(self.ring[: self.filled])
            self.since_sort = 0
        return np.searchsorted(self.sorted, raw, side="right") / len(self.sorted)

    def learn(self, raw: np.ndarray) -> None:
        size = len(self.ring)
        recent = raw[-size:]
        self.ring[(self.position + np.arange(len(recent))) % size] = recent
        self.position = (self.position + len(recent)) % size
        self.filled = min(size, self.filled + len(recent))
        self.since_sort += len(recent)


class _RunningMoments:
    """Vectorised running mean and variance of the scaled features (for explanations)."""

    def __init__(self, width: int) -> None:
        self.n = 0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    def learn(self, x: np.ndarray) -> None:
        if not len(x):
            return
        n_b = len(x)
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        total = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / total
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / total
        self.n = total

    def z(self, x: np.ndarray) -> np.ndarray:
        std = np.sqrt(self.m2 / max(self.n - 1, 1))
        return (x - self.mean) / np.where(std > 1e-9, std, 1.0)


class Scorer:
    """Anomaly model + rules -> fused score, decision and reasons, a micro-batch at a time."""

    def __init__(self, settings: ScoringSettings, registry: FeatureRegistry) -> None:
        self.settings = settings
        self.registry = registry
        anomaly = settings.anomaly
        names = anomaly.features or registry.names
        unknown = [n for n in names if n not in registry.names]
        if unknown:
            raise ConfigError(
                f"config error: scoring.anomaly.features: unknown {unknown} (allowed: {', '.join(registry.names)})"
            )
        self.columns = np.array([registry.index(n) for n in names], dtype=np.int64)
        self.model = BatchHalfSpaceTrees(anomaly.n_trees, anomaly.height, anomaly.window_size, anomaly.seed,
                                         len(self.columns))
        self.scaler = StreamingScaler(len(self.columns))
        self.calibration = _Calibration(CALIBRATION_SIZE)
        self.moments = _RunningMoments(len(self.columns))
        self.rules = [Rule.from_settings(rule, registry.names) for rule in settings.rules]
        self.model_versions = {
            "anomaly": f"river.HalfSpaceTrees:{anomaly.n_trees}x{anomaly.height}w{anomaly.window_size}s{anomaly.seed}",
        }
        if self.rules:
            self.model_versions["rules"] = _rules_version(settings)

    @classmethod
    def from_settings(cls, settings: ScoringSettings, registry: FeatureRegistry) -> Scorer:
        return cls(settings, registry)

    def process(self, batch: FeatureBatch) -> ScoredBatch:
        """Score every row with the state at the batch start, then learn the batch."""
        if batch.version != self.registry.version:
            raise ValueError(f"feature version {batch.version} is not the scorer's {self.registry.version}")
        x = self.scaler.transform(batch.values[:, self.columns])
        raw = self.model.score(x)
        warm = not self.model.first_window and self.model.learned >= WARMUP
        anomaly = self.calibration.rank(raw) if warm else np.zeros(len(raw))
        score = anomaly.copy()
        rank = np.zeros(len(raw), dtype=np.int8)  # 0 none, 1 review, 2 block
        matched: list[list[str]] = [[] for _ in range(len(raw))]
        for rule in self.rules:
            hits = rule.predicate(batch.values)
            if hits.any():
                score = np.where(hits, np.maximum(score, rule.score), score)
                rank = np.where(hits, np.maximum(rank, 2 if rule.action == "block" else 1), rank)
                for row in np.flatnonzero(hits):
                    matched[row].append(rule.name)
        s = self.settings
        rank = np.maximum(rank, np.where(score >= s.block_threshold, 2, np.where(score >= s.review_threshold, 1, 0)))
        decision: list[str | None] = [None] * len(raw)
        reasons: list[Reasons | None] = [None] * len(raw)
        alerted = np.flatnonzero(rank)
        if len(alerted):
            z = self.moments.z(x[alerted])
            top = np.argsort(-np.abs(z), axis=1)[:, : s.top_features]
            names = self.registry.names
            for k, row in enumerate(alerted):
                decision[row] = "block" if rank[row] == 2 else "review"
                reasons[row] = Reasons(
                    rules=matched[row],
                    top_features=[
                        FeatureContribution(
                            name=names[self.columns[j]],
                            value=float(batch.values[row, self.columns[j]]),
                            contribution=round(float(z[k, j]), 4),
                        )
                        for j in top[k]
                    ],
                )
        # learn after scoring
        self.model.learn(x)
        if not self.model.first_window:
            self.calibration.learn(raw)
        self.scaler.learn(batch.values[:, self.columns])
        self.moments.learn(x)
        return ScoredBatch(score=score, decision=decision, reasons=reasons, anomaly=anomaly)

    # ------------------------------------------------------------------- state
    def state_bytes(self) -> bytes:
        """Everything the scorer learned (for checkpoints); restore with :meth:`from_state`."""
        state = {
            "format": STATE_FORMAT,
            "feature_version": self.registry.version,
            "model_versions": self.model_versions,
            "model": self.model,
            "scaler": self.scaler,
            "calibration": self.calibration,
            "moments": self.moments,
        }
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_state(cls, settings: ScoringSettings, registry: FeatureRegistry, data: bytes) -> Scorer:
        """A scorer that continues exactly where the saved one stopped."""
        state = pickle.loads(data)  # noqa: S301 - our own checkpoint
        scorer = cls(settings, registry)
        if state.get("format") != STATE_FORMAT or state["feature_version"] != registry.version:
            raise ValueError(
                f"scorer state (format {state.get('format')}, features {state.get('feature_version')}) does not "
                f"match format {STATE_FORMAT} / features {registry.version}; start the partition without it"
            )
        if state["model_versions"] != scorer.model_versions:
            raise ValueError(
                f"scorer state was saved for {state['model_versions']}, the config gives {scorer.model_versions}; "
                "start the partition without the checkpoint or restore the old scoring settings"
            )
        scorer.model, scorer.scaler = state["model"], state["scaler"]
        scorer.calibration, scorer.moments = state["calibration"], state["moments"]
        return scorer


def _rules_version(settings: ScoringSettings) -> str:
    import zlib

    text = "|".join(f"{r.name}:{r.when}:{r.action}:{r.score}" for r in settings.rules)
    return f"rules-{zlib.crc32(text.encode()):08x}"
