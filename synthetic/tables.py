"""The generator's output: :class:`SyntheticHistory`, its Arrow tables and their Parquet files.

Builds the ``HISTORY_SCHEMA`` transactions and ``LABEL_SCHEMA`` labels from
:class:`~synthetic.rows.Rows` (ids and codes as Arrow string arrays, built
without Python loops), and writes them with :func:`write_history`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from configs.settings import SCENARIOS
from contracts.arrow import HISTORY_SCHEMA, LABEL_SCHEMA, TIME
from synthetic.categories import CATEGORIES
from synthetic.clock import Clock
from synthetic.places import CITY_COUNTRY, COUNTRIES, CURRENCY_OF_COUNTRY
from synthetic.rows import Rows
from synthetic.sampling import IntArray
from synthetic.world import World

#: Channel of a row, by ``Rows.ecom``.
_CHANNELS: Final = ("pos", "ecom")


@dataclass(frozen=True)
class SyntheticHistory:
    """A generated history: transactions with ground truth, and their delayed labels.

    ``transactions`` has schema ``contracts.arrow.HISTORY_SCHEMA`` in delivery
    order; ``labels`` has ``LABEL_SCHEMA``, sorted by ``label_time``.

    >>> from configs.settings import GeneratorSettings
    >>> from synthetic import generate
    >>> history = generate(GeneratorSettings(accounts=200, days=5, seed=3))
    >>> 0.0 < history.fraud_rate < 0.05, history.labels.num_rows > 0
    (True, True)
    """

    transactions: pa.Table
    labels: pa.Table

    @property
    def fraud_rate(self) -> float:
        """Share of transactions that are fraudulent."""
        n: int = self.transactions.num_rows
        return float(pc.sum(self.transactions.column("is_fraud")).as_py() or 0) / max(n, 1)


def _id_strings(prefix: str, numbers: IntArray, width: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` as a string array, built from buffers (no Python loop)."""
    n = numbers.size
    width = max(width, len(str(int(numbers.max()))) if n else width)
    row = len(prefix) + width
    chars = np.empty((n, row), dtype=np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    rest = numbers.astype(np.int64)
    for j in range(row - 1, len(prefix) - 1, -1):
        chars[:, j] = 48 + rest % 10
        rest = rest // 10
    if n * row >= 2**31:
        raise ValueError(f"too many ids ({n:,}) for one string array: generate fewer accounts or days")
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(row)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def _lookup(values: Sequence[str] | pa.Array, index: IntArray) -> pa.Array:
    """``values[index]`` as a string array; negative indices become nulls."""
    table = values if isinstance(values, pa.Array) else pa.array(list(values), type=pa.string())
    missing = index < 0
    indices = pa.array(np.where(missing, 0, index), mask=missing if missing.any() else None, type=pa.int64())
    return pc.take(table, indices)


def _times(ms: IntArray) -> pa.Array:
    return pa.array(ms.astype(np.int64), type=pa.int64()).cast(TIME)


def transactions_table(world: World, clock: Clock, rows: Rows, number: IntArray, devices: int) -> pa.Table:
    """Rows (already in delivery order) as a HISTORY_SCHEMA table; ``number`` is each row's transaction index."""
    return pa.Table.from_arrays(
        [
            _id_strings("tx", number, 10),
            _lookup(_id_strings("A", np.arange(world.accounts), 7), rows.account),
            _times(clock.start_ms + rows.time_ms),
            pa.array(rows.amount, type=pa.float64()),
            _lookup(CURRENCY_OF_COUNTRY, CITY_COUNTRY[world.home_city][rows.account]),
            _lookup(_id_strings("M", np.arange(world.merchant_city.size), 6), rows.merchant),
            _lookup([c.name for c in CATEGORIES], world.merchant_cat[rows.merchant]),
            _lookup(_id_strings("T", np.arange(world.terminals), 7), rows.terminal),
            _lookup(_id_strings("D", np.arange(max(devices, 1)), 7), rows.device),
            _lookup(COUNTRIES, rows.country),
            pa.array(np.round(rows.lat, 5), type=pa.float64()),
            pa.array(np.round(rows.lon, 5), type=pa.float64()),
            _lookup(_CHANNELS, rows.ecom.astype(np.int64)),
            pa.array(rows.scenario >= 0, type=pa.bool_()),
            _lookup(SCENARIOS, rows.scenario),
        ],
        schema=HISTORY_SCHEMA,
    )


def labels_table(world: World, clock: Clock, rows: Rows, label_ms: IntArray) -> pa.Table:
    """Labelled rows (``rows`` in transaction-index order) as a LABEL_SCHEMA table sorted by label time."""
    labelled = np.flatnonzero(label_ms >= 0)
    labelled = labelled[np.argsort(label_ms[labelled], kind="stable")]
    return pa.Table.from_arrays(
        [
            _id_strings("tx", labelled, 10),
            _lookup(_id_strings("A", np.arange(world.accounts), 7), rows.account[labelled]),
            _lookup(("genuine", "fraud"), (rows.scenario[labelled] >= 0).astype(np.int64)),
            _times(clock.start_ms + label_ms[labelled]),
        ],
        schema=LABEL_SCHEMA,
    )


def write_history(history: SyntheticHistory, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``transactions.parquet`` and ``labels.parquet`` (zstd) into ``out_dir`` (created if needed).

    Returns the two paths.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tx_path, label_path = directory / "transactions.parquet", directory / "labels.parquet"
    pq.write_table(history.transactions, tx_path, compression="zstd")
    pq.write_table(history.labels, label_path, compression="zstd")
    return tx_path, label_path
