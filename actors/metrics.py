"""Scoring metrics through ``ray.util.metrics`` (Prometheus on the Ray dashboard).

Created inside the actor process; outside a Ray worker (a worker run directly
in a test or a notebook) nothing is exported and :func:`ActorMetrics.create`
returns ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Batch latency buckets, milliseconds (ingest -> alert acknowledged).
LATENCY_BOUNDARIES_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0]
CHECKPOINT_BOUNDARIES_S = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30]


@dataclass
class ActorMetrics:
    """The scoring actor's metrics (tags: actor, partition)."""

    events: Any
    alerts: Any
    dead_letters: Any
    labels: Any
    offset_gaps: Any
    batch_latency_ms: Any
    lag: Any
    checkpoint_seconds: Any
    model_swaps: Any
    challenger_alerts: Any

    @classmethod
    def create(cls) -> ActorMetrics | None:
        """The metrics, registered with Ray; None when not inside a Ray worker."""
        import ray

        if not ray.is_initialized():
            return None
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = ("actor", "partition")
        return cls(
            events=Counter("fraudstream_events_total", "Transactions scored.", tag_keys=tags),
            alerts=Counter("fraudstream_alerts_total", "Alerts sent.", tag_keys=tags),
            dead_letters=Counter("fraudstream_dead_letters_total", "Records sent to the dead-letter topic.", tag_keys=tags),
            labels=Counter("fraudstream_labels_total", "Labels applied.", tag_keys=tags),
            offset_gaps=Counter(
                "fraudstream_offset_gap_records_total",
                "Records skipped because a checkpoint offset was outside the retained log.",
                tag_keys=tags,
            ),
            batch_latency_ms=Histogram(
                "fraudstream_batch_latency_ms",
                "Oldest record of a micro-batch: Kafka timestamp to alerts acknowledged (ms).",
                boundaries=LATENCY_BOUNDARIES_MS,
                tag_keys=("actor",),
            ),
            lag=Gauge("fraudstream_lag_records", "High watermark minus next offset to score.", tag_keys=tags),
            checkpoint_seconds=Histogram(
                "fraudstream_checkpoint_seconds",
                "Time to snapshot and write one partition's checkpoint.",
                boundaries=CHECKPOINT_BOUNDARIES_S,
                tag_keys=tags,
            ),
            model_swaps=Counter("fraudstream_model_swaps_total",
                                "Served classifier versions installed after an alias moved.", tag_keys=("actor",)),
            challenger_alerts=Counter("fraudstream_challenger_alerts_total",
                                      "Events the shadow challenger would have alerted on.", tag_keys=tags),
        )
