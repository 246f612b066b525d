"""Live alerts against the synthetic ground truth (what `fraudstream demo` shows as it streams).

No Kafka, Ray or MLflow here: the demo feeds in the alerts it reads from the
``alerts`` topic and the per-partition positions the scoring actors report.

Which transactions are scored follows from the positions alone. The demo
streams a history into empty topics, keyed by account and in row order, so a
transaction's offset is its rank among the rows of its partition (Kafka's
default partitioner, :func:`contracts.partitioning.partition_for`), and a
partition whose next offset is ``n`` has scored exactly its first ``n`` rows.

    truth = GroundTruth(transactions, partitions=4, live_from_ms=...)
    board = Scoreboard(truth)
    board.add(alert)                   # every alert read from the topic, any order, repeats ignored
    board.set_positions({0: 1200, ...})
    board.phase("live")                # scored, frauds, alerts, precision, recall of the live period
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from contracts.partitioning import partition_for
from contracts.records import Alert

#: The periods of a demo: rows before ``live_from_ms`` (the model was trained on them) and from it on.
PHASES = ("warm-up", "live")


@dataclass(frozen=True)
class PhaseMetrics:
    """Alerts against the truth over the scored rows of one period."""

    scored: int
    frauds: int
    alerts: int
    true_alerts: int

    @property
    def precision(self) -> float | None:
        """Share of alerts on fraudulent transactions (None before the first alert)."""
        return self.true_alerts / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        """Share of the scored fraudulent transactions that were alerted (None before the first fraud)."""
        return self.true_alerts / self.frauds if self.frauds else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "frauds": self.frauds,
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "precision": None if self.precision is None else round(self.precision, 4),
            "recall": None if self.recall is None else round(self.recall, 4),
        }


class GroundTruth:
    """Per transaction of a history: is it fraud, its scenario, its partition, its offset there, its period."""

    def __init__(self, transactions: pa.Table, partitions: int, live_from_ms: int) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        ids = transactions.column("transaction_id").to_pylist()
        self.index: dict[str, int] = {tx: i for i, tx in enumerate(ids)}
        if len(self.index) != len(ids):
            raise ValueError("transaction_id: the history repeats ids; every transaction needs its own")
        self.fraud = transactions.column("is_fraud").to_numpy(zero_copy_only=False).astype(bool)
        self.scenario = np.array(transactions.column("fraud_scenario").to_pylist(), dtype=object)
        accounts = transactions.column("account_id").combine_chunks().dictionary_encode()
        self.account = accounts.indices.to_numpy(zero_copy_only=False)
        self.account_ids = np.array(accounts.dictionary.to_pylist(), dtype=object)
        # the partition of each account (murmur2 once per account, not per row)
        per_account = np.array([partition_for(a.encode(), partitions) for a in self.account_ids], dtype=np.int32)
        self.partition = per_account[self.account]
        times = transactions.column("event_time").cast(pa.int64()).to_numpy()
        self.live = times >= live_from_ms
        self.event_time_ms = times
        #: Row numbers of each partition in send order: the row at position n has offset n.
        self.rows_of = {p: np.flatnonzero(self.partition == p) for p in range(partitions)}

    def __len__(self) -> int:
        return len(self.fraud)

    def phase_mask(self, phase: str) -> np.ndarray:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        mask: np.ndarray = self.live if phase == "live" else ~self.live
        return mask

    def scored_mask(self, positions: Mapping[int, int]) -> np.ndarray:
        """Rows scored when each partition's next offset is ``positions[p]`` (missing partitions: none)."""
        mask = np.zeros(len(self), dtype=bool)
        for partition, rows in self.rows_of.items():
            mask[rows[: max(0, int(positions.get(partition, 0)))]] = True
        return mask

    def rows_per_partition(self) -> dict[int, int]:
        return {p: len(rows) for p, rows in self.rows_of.items()}


class Scoreboard:
    """Alerts read so far, matched to the ground truth; metrics per period and per fraud scenario."""

    def __init__(self, truth: GroundTruth) -> None:
        self.truth = truth
        self.alerted = np.zeros(len(truth), dtype=bool)
        self.blocked = np.zeros(len(truth), dtype=bool)
        self.scored = np.zeros(len(truth), dtype=bool)
        self._seen: set[str] = set()
        #: Alerts whose transaction is not in the history (another producer wrote to the topic).
        self.unknown = 0
        #: Alerts read again (same alert_id): replays, counted once.
        self.repeats = 0
        #: Every alert recorded, with its row, in the order read.
        self.records: list[tuple[Alert, int]] = []

    def latest(self, n: int = 8) -> list[tuple[Alert, int]]:
        return self.records[-n:]

    def add(self, alert: Alert) -> int | None:
        """Record one alert; returns its row, None when it is a repeat or not in the history."""
        if alert.alert_id in self._seen:
            self.repeats += 1
            return None
        self._seen.add(alert.alert_id)
        row = self.truth.index.get(alert.transaction_id)
        if row is None:
            self.unknown += 1
            return None
        self.alerted[row] = True
        self.blocked[row] |= alert.decision == "block"
        self.records.append((alert, row))
        return row

    def set_positions(self, positions: Mapping[int, int]) -> None:
        self.scored = self.truth.scored_mask(positions)

    @property
    def alerts(self) -> int:
        return int(self.alerted.sum())

    def phase(self, phase: str) -> PhaseMetrics:
        mask = self.truth.phase_mask(phase)
        # an alert can be read before the status that counts its transaction as scored
        scored = mask & (self.scored | self.alerted)
        alerted = mask & self.alerted
        fraud = self.truth.fraud
        return PhaseMetrics(
            scored=int(scored.sum()),
            frauds=int((scored & fraud).sum()),
            alerts=int(alerted.sum()),
            true_alerts=int((alerted & fraud).sum()),
        )

    def by_scenario(self, phase: str | None = None) -> list[dict[str, Any]]:
        """Per fraud scenario over the scored rows: fraudulent transactions and accounts, and how many were alerted."""
        mask = (self.scored | self.alerted) & self.truth.fraud
        if phase is not None:
            mask &= self.truth.phase_mask(phase)
        rows = []
        for scenario in sorted({s for s in self.truth.scenario[mask] if s is not None}):
            mine = mask & (self.truth.scenario == scenario)
            accounts = np.unique(self.truth.account[mine])
            caught = np.unique(self.truth.account[mine & self.alerted])
            rows.append({
                "scenario": str(scenario),
                "frauds": int(mine.sum()),
                "alerted": int((mine & self.alerted).sum()),
                "accounts": len(accounts),
                "caught": len(caught),
            })  # fmt: skip
        return rows

    def false_alerts(self, phase: str | None = None) -> int:
        mask = self.alerted & ~self.truth.fraud
        if phase is not None:
            mask &= self.truth.phase_mask(phase)
        return int(mask.sum())
