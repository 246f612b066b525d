"""Delivery order: out-of-order and late rows, with the same world."""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from configs.settings import GeneratorSettings
from synthetic import generate


def test_out_of_order_and_late_delivery() -> None:
    settings = GeneratorSettings(
        accounts=2000, days=14, seed=4, out_of_order_rate=0.05, late_rate=0.02, max_disorder_s=60, max_late_s=6 * 3600
    )
    generated = generate(settings)
    t = generated.transactions.column("event_time").cast(pa.int64()).to_numpy()
    assert np.any(np.diff(t) < 0)
    running_max = np.maximum.accumulate(t)
    behind = np.concatenate([[0], running_max[:-1] - t[1:]])
    late = behind > settings.max_disorder_s * 1000
    assert late.mean() == pytest.approx(settings.late_rate, rel=0.1)
    assert behind.max() <= settings.max_late_s * 1000
    disordered = (behind > 0) & ~late
    assert disordered.mean() > 0.3 * settings.out_of_order_rate
    # Same world, only the order differs.
    plain = generate(msgspec.structs.replace(settings, out_of_order_rate=0.0, late_rate=0.0))
    key = "transaction_id"
    assert generated.transactions.sort_by(key).equals(plain.transactions.sort_by(key))
    assert generated.labels.equals(plain.labels)
