"""Transactions under construction: :class:`Rows`, one index-aligned numpy array per column.

Genuine spending, the fraud scenarios, labelling and delivery all pass rows in
this form; the Arrow tables are built from it only at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final

import numpy as np

from configs.settings import SCENARIOS
from synthetic.sampling import BoolArray, FloatArray, IntArray

#: Code of each scenario in ``Rows.scenario`` (-1 for genuine rows).
SCENARIO_INDEX: Final = {name: i for i, name in enumerate(SCENARIOS)}


@dataclass(frozen=True)
class Rows:
    """Transactions under construction: one index-aligned array per column."""

    account: IntArray
    time_ms: IntArray  # relative to the start of the period
    amount: FloatArray
    merchant: IntArray
    terminal: IntArray  # -1 when none (ecom)
    device: IntArray  # -1 when none (pos)
    ecom: BoolArray
    lat: FloatArray
    lon: FloatArray
    country: IntArray
    scenario: IntArray  # -1 for genuine rows
    episode: IntArray  # -1 for genuine rows

    @property
    def size(self) -> int:
        return int(self.account.size)

    def take(self, index: IntArray | BoolArray) -> Rows:
        return Rows(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        return Rows(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Rows)})


def fraud_rows(
    *,
    scenario: str,
    episode: IntArray,
    account: IntArray,
    time_ms: IntArray,
    amount: FloatArray,
    merchant: IntArray,
    terminal: IntArray,
    device: IntArray,
    lat: FloatArray,
    lon: FloatArray,
    country: IntArray,
) -> Rows:
    """Fraud rows; ``ecom`` follows from the terminal being absent."""
    return Rows(
        account=account,
        time_ms=time_ms,
        amount=amount,
        merchant=merchant,
        terminal=terminal,
        device=device,
        ecom=terminal < 0,
        lat=lat,
        lon=lon,
        country=country,
        scenario=np.full(account.size, SCENARIO_INDEX[scenario], dtype=np.int64),
        episode=episode,
    )
