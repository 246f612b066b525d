"""synthetic.generate: event times in the period and in event-time order by default, determinism by seed, progress."""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa

from configs.settings import GeneratorSettings
from synthetic import SyntheticHistory, generate
from tests.synthetic.small import SMALL


def test_event_times_lie_in_the_period_and_default_order_is_event_time(history: SyntheticHistory) -> None:
    t = history.transactions.column("event_time").cast(pa.int64()).to_numpy()
    start_ms = int(SMALL.start.timestamp() * 1000)
    assert t.min() >= start_ms and t.max() < start_ms + SMALL.days * 86_400_000
    assert np.all(np.diff(t) >= 0)
    # Transaction ids follow event time, so equal times keep a stable order.
    ids = history.transactions.column("transaction_id").to_pylist()
    assert ids == sorted(ids)


def test_same_seed_same_tables_and_other_seed_other_tables(history: SyntheticHistory) -> None:
    again = generate(SMALL)
    assert again.transactions.equals(history.transactions, check_metadata=True)
    assert again.labels.equals(history.labels, check_metadata=True)
    other = generate(msgspec.structs.replace(SMALL, seed=12))
    assert not other.transactions.equals(history.transactions)
    assert not other.labels.equals(history.labels)


def test_progress_reports_phases() -> None:
    phases: list[str] = []
    generate(GeneratorSettings(accounts=200, days=3, seed=1), progress=phases.append)
    assert len(phases) >= 4 and any("fraud" in p for p in phases)
