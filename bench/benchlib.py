"""What the benchmarks share: one pinned core and the generated stream they run on."""

from __future__ import annotations

import os

import msgspec

from configs import Settings
from contracts import Transaction
from contracts.arrow import table_to_records
from features.offline import history_transactions
from synthetic import SyntheticHistory, generate


def pin_to_one_core() -> None:
    """Run this process on the first allowed CPU (figures are per core)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def generated(settings: Settings, accounts: int, days: int, seed: int) -> SyntheticHistory:
    """The configured synthetic world with these accounts, days and seed."""
    return generate(msgspec.structs.replace(settings.generator, accounts=accounts, days=days, seed=seed))


def ordered_transactions(history: SyntheticHistory) -> list[Transaction]:
    """The history's transactions as records, in event-time order."""
    return table_to_records(history_transactions(history.transactions), Transaction)
