"""When labels arrive: fraud reports and genuine confirmations, by ``settings.label_delay``.

Owns the report grouping (a victim reports a day's fraud at once) and the delay
profiles: ``mixed`` calls and chargebacks, ``fixed``, and ``chargeback``.
"""

from __future__ import annotations

import math

import numpy as np

from configs.settings import GeneratorSettings
from synthetic.rows import Rows
from synthetic.sampling import DAY_MS, HOUR_MS, IntArray


def _label_delays(rng: np.random.Generator, n: int) -> IntArray:
    """Fraud report delays: ~30 % customer calls within 1–12 h, the rest chargebacks in 2–45 days."""
    call = rng.random(n) < 0.3
    hours = 1.0 + 11.0 * rng.random(n)
    days = np.exp(math.log(2.0) + rng.random(n) * (math.log(45.0) - math.log(2.0)))
    return np.where(call, hours * HOUR_MS, days * DAY_MS).astype(np.int64)


def _chargeback_delays(rng: np.random.Generator, n: int) -> IntArray:
    """Chargeback delays: 2 days + Gamma(shape 2, scale 6 days), capped at 60 days.

    Skewed as chargebacks are: median ~12 days, mean ~14, 90 % within ~25 days, a thin tail to 60.
    """
    days = np.minimum(2.0 + rng.gamma(2.0, 6.0, n), 60.0)
    return (days * DAY_MS).astype(np.int64)


def label_times(rng: np.random.Generator, rows: Rows, settings: GeneratorSettings) -> IntArray:
    """Label time of every row (relative ms), -1 for unlabelled rows, by ``settings.label_delay``.

    Every victim reports on their own, what was taken from them in one day at
    once: the fraud rows of one account in one episode on one day are reported
    together, at the last of them plus a delay. A burst (card testing) is one
    report, a takeover one per day of abuse; a compromised terminal's
    cardholders call or charge back one by one, each visit on its own. A
    ``genuine_label_rate`` share of genuine rows is confirmed later.

    - ``mixed``: a report is a call within 1–12 h (30 %) or a chargeback in
      2–45 days; genuine rows are confirmed 1–30 days later;
    - ``fixed``: every label, fraud or genuine, ``label_delay_days`` after its
      own transaction (no grouping into reports);
    - ``chargeback``: every report, and every genuine confirmation, 2–60 days
      later (:func:`_chargeback_delays`).

    The ``mixed`` draws are made whatever the profile (the same rows are
    labelled, and the rest of the history is the same); ``chargeback`` draws
    from a stream of its own, spawned from ``rng`` without moving it.
    """
    n = rows.size
    is_fraud = rows.scenario >= 0
    fraud = np.flatnonzero(is_fraud)
    key = np.stack([rows.episode[fraud], rows.account[fraud], rows.time_ms[fraud] // DAY_MS])
    _, report = np.unique(key, axis=1, return_inverse=True)
    report = report.reshape(-1)
    n_reports = int(report.max(initial=-1)) + 1
    last_event = np.zeros(n_reports, dtype=np.int64)
    np.maximum.at(last_event, report, rows.time_ms[fraud])
    report_ms = last_event + _label_delays(rng, n_reports)
    label_ms = np.full(n, -1, dtype=np.int64)
    label_ms[fraud] = report_ms[report]
    confirm = np.flatnonzero(~is_fraud & (rng.random(n) < settings.genuine_label_rate))
    label_ms[confirm] = rows.time_ms[confirm] + ((1.0 + 29.0 * rng.random(confirm.size)) * DAY_MS).astype(np.int64)
    if settings.label_delay == "fixed":
        labelled = np.flatnonzero(label_ms >= 0)
        label_ms[labelled] = rows.time_ms[labelled] + max(round(settings.label_delay_days * DAY_MS), 1)
    elif settings.label_delay == "chargeback":
        own = rng.spawn(1)[0]
        label_ms[fraud] = (last_event + _chargeback_delays(own, n_reports))[report]
        label_ms[confirm] = rows.time_ms[confirm] + _chargeback_delays(own, confirm.size)
    return label_ms
