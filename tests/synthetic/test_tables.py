"""The tables and files of a SyntheticHistory: contract schemas and records, valid column values, Parquet round trip."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from configs.settings import GeneratorSettings
from contracts.arrow import HISTORY_SCHEMA, LABEL_SCHEMA, table_to_records
from contracts.records import Label, Transaction
from synthetic import SyntheticHistory, generate, write_history


def test_schemas_are_the_contract_schemas(history: SyntheticHistory) -> None:
    assert history.transactions.schema.equals(HISTORY_SCHEMA, check_metadata=True)
    assert history.labels.schema.equals(LABEL_SCHEMA, check_metadata=True)
    assert history.transactions.num_rows > 50_000


def test_every_row_passes_the_transaction_contract(history: SyntheticHistory) -> None:
    table = history.transactions
    fraud = table.filter(table.column("is_fraud"))
    sample = pa.concat_tables([table.slice(0, 3000), table.slice(table.num_rows // 2, 3000), fraud])
    records = table_to_records(sample, Transaction)
    assert len(records) == sample.num_rows
    assert all(r.lat is not None and r.lon is not None for r in records)
    # POS rows carry a terminal, online rows a device, never both.
    assert all((r.terminal_id is None) != (r.device_id is None) for r in records)
    assert {r.channel for r in records} == {"pos", "ecom"}
    assert all((r.channel == "pos") == (r.terminal_id is not None) for r in records)
    # And the JSON wire format decodes back to the same record.
    assert msgspec.json.decode(msgspec.json.encode(records[:100]), type=list[Transaction]) == records[:100]


def test_every_label_passes_the_label_contract(history: SyntheticHistory) -> None:
    labels = table_to_records(history.labels, Label)
    assert len(labels) == history.labels.num_rows
    assert {label.label for label in labels} == {"fraud", "genuine"}


def test_column_values_are_valid(history: SyntheticHistory) -> None:
    table = history.transactions
    amount = table.column("amount").to_numpy()
    assert amount.min() >= 0.01 and amount.max() <= 1e9
    assert np.array_equal(np.round(amount, 2), amount)  # cents
    for name, pattern in (
        ("transaction_id", r"^tx\d{10}$"),
        ("account_id", r"^A\d{7}$"),
        ("merchant_id", r"^M\d{6}$"),
        ("terminal_id", r"^T\d{7}$"),
        ("device_id", r"^D\d{7}$"),
        ("currency", r"^[A-Z]{3}$"),
        ("country", r"^[A-Z]{2}$"),
    ):
        column = table.column(name).drop_null()
        assert pc.all(pc.match_substring_regex(column, pattern)).as_py(), name
    assert table.column("transaction_id").null_count == 0 and table.column("merchant_id").null_count == 0
    assert pc.count_distinct(table.column("transaction_id")).as_py() == table.num_rows
    assert pc.count_distinct(table.column("country")).as_py() >= 8
    # One card currency per account.
    pairs = table.group_by("account_id").aggregate([("currency", "count_distinct")])
    assert pc.max(pairs.column("currency_count_distinct")).as_py() == 1
    # Genuine rows have no scenario, fraud rows always have one.
    is_fraud = table.column("is_fraud")
    scenario_set = pc.is_valid(table.column("fraud_scenario"))
    assert pc.all(pc.equal(is_fraud, scenario_set)).as_py()


def test_write_history_round_trips(tmp_path: Path) -> None:
    generated = generate(GeneratorSettings(accounts=500, days=7, seed=2))
    tx_path, label_path = write_history(generated, tmp_path / "out" / "history")
    assert tx_path == tmp_path / "out" / "history" / "transactions.parquet"
    assert label_path.name == "labels.parquet"
    assert pq.read_table(tx_path).equals(generated.transactions, check_metadata=True)
    assert pq.read_table(label_path).equals(generated.labels, check_metadata=True)
    assert pq.ParquetFile(tx_path).metadata.row_group(0).column(0).compression == "ZSTD"
