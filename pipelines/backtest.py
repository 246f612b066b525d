"""`fraudstream backtest`: replay a Parquet history through the scoring code in event time, no Kafka.

Features come from the offline builder (the actors' feature code, one engine
per partition of the transactions topic, labels joining at their
``label_time``); the scoring is :func:`pipelines.replay.score_features`: each
partition's rows, in event-time order, ``backtest.micro_batch_records`` at a
time, through the partition pipeline the scoring actors run
(:class:`models.pipeline.PartitionPipeline`: their scorer, plus the registered
batch classifier when one is given; after each micro-batch the labels whose
``label_time`` the partition's event-time clock has reached are learned).
Rows before ``--from`` go through features and models (warming their state up)
but are not reported; rows after ``--until`` are not replayed.

Metrics (over the reported rows, against ``is_fraud`` when the history has it,
else the labels): AP and ROC AUC of the fused score and of each source,
``alert_rate`` (share of rows with a decision), precision@k and card
precision@k per day, and per fraud scenario the share of fraudulent accounts
caught (at least one of their fraudulent transactions of that scenario
alerted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from configs import Settings
from connectors.history import History, HistoryError
from models.batch import (
    BatchModel,
    average_precision,
    card_precision_at_k_per_day,
    iso_utc,
    mean_of,
    precision_at_k_per_day,
    recall_by_scenario,
    roc_auc,
)
from models.fusion import fit_stacking
from pipelines.replay import FeatureTable, score_features

SCORES_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("decision", pa.string()),
    ]
)
_DECISIONS = np.array([None, "review", "block"], dtype=object)


@dataclass
class BacktestResult:
    """Every reported row's score and decision, and the metrics."""

    scores: pa.Table
    metrics: dict[str, Any]


def backtest(
    settings: Settings,
    history: History,
    features: FeatureTable,
    batch_model: BatchModel | None = None,
    from_ms: int | None = None,
    until_ms: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Score every row of ``features``; report the rows from ``from_ms`` on."""
    score, level, per_source, versions = score_features(settings, features, batch_model, on_progress)
    reported = features.times >= from_ms if from_ms is not None else np.ones(len(score), dtype=bool)
    if not reported.any():
        raise HistoryError("--from: no transactions at or after --from; move it earlier")
    table = features.table.filter(pa.array(reported))
    decision = _DECISIONS[level[reported]]
    scores = pa.table(
        {
            "transaction_id": table.column("transaction_id"),
            "account_id": table.column("account_id"),
            "event_time": table.column("event_time"),
            "score": pa.array(score[reported]),
            "decision": pa.array(decision.tolist(), pa.string()),
        },
        schema=SCORES_SCHEMA,
    )
    metrics = _metrics(settings, features, reported, score, level, per_source)
    times = features.times[reported]
    metrics = {
        "history": history.source,
        "labels": history.labels_source or None,
        "from": iso_utc(int(times.min())),
        "until": iso_utc(int(times.max())),
        "warmup_rows": int((~reported).sum()),
        "dropped_rows": history.dropped_rows,
        "feature_version": features.registry.version,
        "model_versions": versions,
        **metrics,
    }
    if until_ms is not None:
        metrics["until_requested"] = iso_utc(until_ms)
    return BacktestResult(scores, metrics)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _cards(times: np.ndarray, accounts: np.ndarray, truth: np.ndarray, score: np.ndarray, k: int) -> float | None:
    """Card precision@k, the mean over the days."""
    return mean_of(card_precision_at_k_per_day(times, accounts, truth, score, k))


def _metrics(
    settings: Settings,
    features: FeatureTable,
    reported: np.ndarray,
    score: np.ndarray,
    level: np.ndarray,
    per_source: dict[str, np.ndarray],
) -> dict[str, Any]:
    k = settings.evaluation.top_k
    truth = features.truth[reported]
    fused = score[reported]
    alerted = level[reported] > 0
    times = features.times[reported]
    accounts = np.array(features.table.column("account_id").to_pylist(), dtype=object)[reported]
    has_truth = bool(features.truth_source)
    daily_cards = card_precision_at_k_per_day(times, accounts, truth, fused, k) if has_truth else {}
    daily_precision = precision_at_k_per_day(times, truth, fused, k) if has_truth else {}
    result: dict[str, Any] = {
        "rows": int(reported.sum()),
        "truth": features.truth_source or None,
        "frauds": int(truth.sum()) if has_truth else None,
        "top_k": k,
        "ap": _round(average_precision(truth, fused)) if has_truth else None,
        "roc_auc": _round(roc_auc(truth, fused)) if has_truth else None,
        "alert_rate": _round(float(alerted.mean())),
        "alerts": int(alerted.sum()),
        "blocks": int((level[reported] == 2).sum()),
        "alert_precision": _round(float(truth[alerted].mean())) if has_truth and alerted.any() else None,
        "fraud_recall": _round(float(alerted[truth].mean())) if has_truth and truth.any() else None,
        "precision_at_k": _round(mean_of(daily_precision)),
        "card_precision_at_k": _round(mean_of(daily_cards)),
        "card_precision_at_k_per_day": {day: round(v, 6) for day, v in daily_cards.items()},
        "sources": {
            name: {
                "ap": _round(average_precision(truth, values[reported])) if has_truth else None,
                "roc_auc": _round(roc_auc(truth, values[reported])) if has_truth else None,
                "card_precision_at_k": _round(_cards(times, accounts, truth, values[reported], k)) if has_truth else None,
            }
            for name, values in per_source.items()
        },
    }
    if has_truth and 0 < truth.sum() < len(truth):
        # what `scoring.fusion: {method: stacking, stacking: ...}` would use, fitted on this period's scores
        fitted = fit_stacking({name: values[reported] for name, values in per_source.items()}, truth)
        result["stacking_fitted"] = msgspec.to_builtins(fitted)
    scenario = features.scenario
    if scenario is not None and has_truth:
        scenario = scenario[reported]
        by_account = recall_by_scenario(accounts, scenario, truth, alerted)
        result["recall_by_scenario"] = {name: round(float(v["recall"]), 6) for name, v in by_account.items()}
        result["scenarios"] = {}
        for name, counts in by_account.items():
            rows = truth & (scenario == name)
            cards = card_precision_at_k_per_day(times, accounts, rows, fused, k)
            versus_genuine = rows | ~truth  # this scenario's frauds against every genuine row
            result["scenarios"][name] = {
                **counts,
                "recall": round(float(counts["recall"]), 6),
                "transactions": int(rows.sum()),
                "transactions_alerted": int((rows & alerted).sum()),
                "card_precision_at_k": _round(mean_of(cards)),
                "ap_by_source": {
                    source: _round(average_precision(rows[versus_genuine], values[reported][versus_genuine]))
                    for source, values in {"fused": score, **per_source}.items()
                },
            }
    return result
