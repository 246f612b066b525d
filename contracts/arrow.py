"""Arrow schemas matching the records, for Parquet histories, checkpoints and reports.

Times are ``timestamp[ms, UTC]`` columns; records hold them as epoch ms.

>>> from contracts.records import Transaction
>>> txs = [Transaction(transaction_id="t1", account_id="a1", event_time=1767225600000, amount=3.0)]
>>> table = records_to_table(txs, TRANSACTION_SCHEMA)
>>> table.schema.field("event_time").type
TimestampType(timestamp[ms, tz=UTC])
>>> table_to_records(table, Transaction) == txs
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec
import pyarrow as pa

TIME = pa.timestamp("ms", tz="UTC")

TRANSACTION_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("event_time", TIME, nullable=False),
        pa.field("amount", pa.float64(), nullable=False),
        pa.field("currency", pa.string()),
        pa.field("merchant_id", pa.string()),
        pa.field("merchant_category", pa.string()),
        pa.field("terminal_id", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("country", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("channel", pa.string()),
    ],
    metadata={"record": "transaction"},
)

#: Ground-truth columns a history carries beside the transaction; they never
#: travel on the ``transactions`` topic.
GROUND_TRUTH_FIELDS = (
    pa.field("is_fraud", pa.bool_(), nullable=False),
    pa.field("fraud_scenario", pa.string()),
)

HISTORY_SCHEMA = pa.schema(list(TRANSACTION_SCHEMA) + list(GROUND_TRUTH_FIELDS), metadata={"record": "history"})

LABEL_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("label_time", TIME, nullable=False),
    ],
    metadata={"record": "label"},
)

_CONTRIBUTION = pa.struct(
    [pa.field("name", pa.string()), pa.field("value", pa.float64()), pa.field("contribution", pa.float64())]
)

ALERT_SCHEMA = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("event_time", TIME, nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),
        pa.field(
            "reasons",
            pa.struct([pa.field("rules", pa.list_(pa.string())), pa.field("top_features", pa.list_(_CONTRIBUTION))]),
            nullable=False,
        ),
        pa.field("model_versions", pa.map_(pa.string(), pa.string()), nullable=False),
        pa.field("feature_version", pa.string(), nullable=False),
        pa.field("ingest_time", TIME, nullable=False),
        pa.field("alert_time", TIME, nullable=False),
        pa.field("late", pa.bool_(), nullable=False),
        pa.field("challenger_score", pa.float64()),
        pa.field(
            "source",
            pa.struct([pa.field("topic", pa.string()), pa.field("partition", pa.int32()), pa.field("offset", pa.int64())]),
        ),
        pa.field("schema_version", pa.int32(), nullable=False),
    ],
    metadata={"record": "alert"},
)

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("failed_at", TIME, nullable=False),
        pa.field("value_size", pa.int64()),
        pa.field("value_sha256", pa.string()),
        pa.field("bytes_omitted", pa.bool_(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
    ],
    metadata={"record": "dead_letter"},
)

R = TypeVar("R", bound=msgspec.Struct)


def records_to_table(records: Sequence[msgspec.Struct], schema: pa.Schema) -> pa.Table:
    """Records to an Arrow table with ``schema`` (fields the schema lacks are dropped)."""
    rows = msgspec.to_builtins(list(records), builtin_types=(bytes,))
    map_fields = [f.name for f in schema if pa.types.is_map(f.type)]
    for row in rows if map_fields else ():
        for name in map_fields:
            if isinstance(row.get(name), dict):
                row[name] = list(row[name].items())
    return pa.Table.from_pylist(rows, schema=schema)


def table_to_records(table: pa.Table, record_type: type[R]) -> list[R]:
    """An Arrow table (or Parquet read) back to validated records.

    Timestamp columns become epoch ms; columns the record does not know are ignored.
    """
    known = set(record_type.__struct_fields__)
    columns = {}
    for name in table.column_names:
        if name not in known:
            continue
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        columns[name] = column
    rows = pa.table(columns).to_pylist()
    for row in rows:
        for key in [k for k, v in row.items() if v is None]:
            del row[key]
        for key, value in row.items():
            if isinstance(value, list) and value and isinstance(value[0], tuple):
                row[key] = dict(value)
    return [msgspec.convert(row, record_type, strict=False) for row in rows]
