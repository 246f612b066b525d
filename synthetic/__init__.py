"""A synthetic card-payment world with injected, labelled fraud.

Deterministic by seed (same settings, byte-identical tables), vectorised numpy
throughout, and pure: no Kafka, no clock, no files except in :func:`write_history`.

The world: ~30 real cities in 13 countries (most accounts live in a few home
markets), accounts with a home, devices, a wealth factor, category preferences,
an activity rate, an e-commerce habit and a set of usual merchants; merchants
in every (city, category) cell, each with 1–5 terminals. Genuine spending
follows a daily rhythm in the home time zone with a weekend uplift; a few
accounts travel (POS spending moves to another city, with a plausible flight
in between, so geographic novelty alone is not fraud).

Five fraud scenarios are injected, budgeted so the fraud share of all
transactions is close to ``settings.fraud_rate`` and split by
``settings.scenario_weights``: ``card_testing``, ``account_takeover``,
``impossible_travel``, ``compromised_terminal`` and ``bust_out``. Every
fraudulent row gets a delayed ``fraud`` label (each victim reports a day's fraud at once);
a share of genuine rows get a delayed ``genuine`` label. How late follows
``settings.label_delay``: ``mixed`` calls and chargebacks, a ``fixed`` delay per
transaction, or ``chargeback`` reports only (see :func:`synthetic.labels.label_times`); the
transactions are the same whatever the profile.

The package, by role: ``sampling`` (array types, time units, random draws),
``places`` (cities, countries, distances), ``categories`` (merchant categories
and amounts), ``clock`` (the period and the daily rhythm), ``world`` (accounts,
merchants, terminals, devices), ``rows`` (transactions under construction),
``genuine`` (genuine spending and trips), ``scenarios`` (the fraud scenarios,
one module each, and the fraud budget), ``labels`` (label times), ``delivery``
(delivery order) and ``tables`` (the Arrow tables and Parquet files).
:func:`generate` runs them in that order on one random stream.

>>> from configs.settings import GeneratorSettings
>>> from contracts.arrow import HISTORY_SCHEMA, LABEL_SCHEMA
>>> history = generate(GeneratorSettings(accounts=300, days=7, seed=1))
>>> history.transactions.schema.equals(HISTORY_SCHEMA), history.labels.schema.equals(LABEL_SCHEMA)
(True, True)
>>> history.transactions.equals(generate(GeneratorSettings(accounts=300, days=7, seed=1)).transactions)
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from configs.settings import GeneratorSettings
from synthetic.clock import Clock
from synthetic.delivery import delivery_order
from synthetic.genuine import apply_travel, genuine_rows
from synthetic.labels import label_times
from synthetic.scenarios import inject_fraud
from synthetic.tables import SyntheticHistory, labels_table, transactions_table, write_history
from synthetic.world import build_world

__all__ = ["SyntheticHistory", "generate", "write_history"]


def generate(settings: GeneratorSettings, progress: Callable[[str], None] | None = None) -> SyntheticHistory:
    """Generate the synthetic world, its transactions, injected fraud and delayed labels.

    ``progress`` (optional) receives a short phase description as work advances.
    Same settings give byte-identical tables. Transaction ids number rows in
    event-time order (``tx0000000000`` is the earliest).
    """
    report = progress or (lambda _phase: None)
    rng = np.random.default_rng(settings.seed)
    clock = Clock.of(settings)
    report(f"world of {settings.accounts:,} accounts")
    world = build_world(rng, settings.accounts)
    report("genuine spending")
    rows, traveller = apply_travel(rng, world, clock, genuine_rows(rng, world, clock, settings.days))
    report("fraud scenarios")
    rows, devices = inject_fraud(rng, world, clock, rows, traveller, settings)
    report(f"ordering {rows.size:,} transactions")
    rows = rows.take(np.argsort(rows.time_ms, kind="stable"))  # transaction index = event-time rank
    label_ms = label_times(rng, rows, settings)
    order = delivery_order(rng, rows.time_ms, settings)
    report("building tables")
    number = np.arange(rows.size, dtype=np.int64) if order is None else order
    delivered = rows if order is None else rows.take(order)
    return SyntheticHistory(
        transactions=transactions_table(world, clock, delivered, number, devices),
        labels=labels_table(world, clock, rows, label_ms),
    )
