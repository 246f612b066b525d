"""Fixtures of the synthetic tests: the SMALL history, once per session, and its rows as dicts, once per module."""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import pytest

from synthetic import SyntheticHistory, generate
from tests.synthetic.small import SMALL


@pytest.fixture(scope="session")
def history() -> SyntheticHistory:
    return generate(SMALL)


@pytest.fixture(scope="module")
def rows(history: SyntheticHistory) -> list[dict]:
    """Transactions as Python rows, in event-time order (ms times)."""
    table = history.transactions
    table = table.set_column(2, "event_time", table.column("event_time").cast(pa.int64()))
    out = table.to_pylist()
    out.sort(key=lambda r: (r["event_time"], r["transaction_id"]))
    return out


@pytest.fixture(scope="module")
def by_account(rows: list[dict]) -> dict[str, list[dict]]:
    accounts: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        accounts[row["account_id"]].append(row)
    return accounts
