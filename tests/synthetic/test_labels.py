"""Label times: every fraud reported, victims reporting a day's fraud at once, and the delay profiles."""

from __future__ import annotations

from collections import defaultdict

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from synthetic import SyntheticHistory, generate
from tests.synthetic.small import SMALL, scenario_rows


def test_labels_match_their_transactions(history: SyntheticHistory) -> None:
    tx = history.transactions
    event = dict(
        zip(tx.column("transaction_id").to_pylist(), tx.column("event_time").cast(pa.int64()).to_pylist(), strict=True)
    )
    account = dict(zip(tx.column("transaction_id").to_pylist(), tx.column("account_id").to_pylist(), strict=True))
    fraud = dict(zip(tx.column("transaction_id").to_pylist(), tx.column("is_fraud").to_pylist(), strict=True))
    labels = history.labels
    label_time = labels.column("label_time").cast(pa.int64()).to_pylist()
    assert label_time == sorted(label_time)
    labelled = labels.column("transaction_id").to_pylist()
    assert len(set(labelled)) == len(labelled)
    for tx_id, acc, label, at in zip(
        labelled, labels.column("account_id").to_pylist(), labels.column("label").to_pylist(), label_time, strict=True
    ):
        assert tx_id in event
        assert account[tx_id] == acc
        assert (label == "fraud") == fraud[tx_id]
        assert at > event[tx_id]
    # Every fraud is reported; about genuine_label_rate of genuine rows are confirmed.
    fraud_ids = {t for t, f in fraud.items() if f}
    fraud_labels = {t for t, lab in zip(labelled, labels.column("label").to_pylist(), strict=True) if lab == "fraud"}
    assert fraud_labels == fraud_ids
    genuine_labels = len(labelled) - len(fraud_labels)
    assert genuine_labels / (tx.num_rows - len(fraud_ids)) == pytest.approx(SMALL.genuine_label_rate, rel=0.05)


def test_fraud_report_delays_mix_calls_and_chargebacks(history: SyntheticHistory, rows: list[dict]) -> None:
    event = {r["transaction_id"]: r["event_time"] for r in rows}
    delays_h = [
        (at - event[t]) / 3_600_000
        for t, lab, at in zip(
            history.labels.column("transaction_id").to_pylist(),
            history.labels.column("label").to_pylist(),
            history.labels.column("label_time").cast(pa.int64()).to_pylist(),
            strict=True,
        )
        if lab == "fraud"
    ]
    assert min(delays_h) > 0
    assert any(d < 24 for d in delays_h) and any(d > 7 * 24 for d in delays_h)
    assert max(delays_h) < 60 * 24


def test_each_victim_reports_a_days_fraud_at_once(history: SyntheticHistory, rows: list[dict]) -> None:
    """A compromised terminal's cardholders report one by one (per account and day), after their payments."""
    label_time = dict(
        zip(
            history.labels.column("transaction_id").to_pylist(),
            history.labels.column("label_time").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    )
    reports: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    last: dict[tuple[str, str, int], int] = {}
    for r in scenario_rows(rows, "compromised_terminal"):
        key = (r["terminal_id"], r["account_id"], r["event_time"] // 86_400_000)  # the period starts at midnight UTC
        reports[key].add(label_time[r["transaction_id"]])
        last[key] = max(last.get(key, 0), r["event_time"])
    assert reports
    assert all(len(times) == 1 for times in reports.values())  # one report per victim and day
    assert all(min(reports[key]) > last[key] for key in reports)  # after the day's last fraudulent payment
    by_terminal: dict[str, set[int]] = defaultdict(set)
    for (terminal, _, _), times in reports.items():
        by_terminal[terminal] |= times
    # victims report on their own: a terminal's reports come at many different times
    assert all(len(times) >= 3 for times in by_terminal.values())


def _report_delays_h(history: SyntheticHistory) -> tuple[np.ndarray, np.ndarray]:
    """Per fraud row: hours to its label; per report (rows of one account sharing a label time): hours from its
    last row to the label."""
    tx = history.transactions
    event = dict(
        zip(tx.column("transaction_id").to_pylist(), tx.column("event_time").cast(pa.int64()).to_pylist(), strict=True)
    )
    labels = history.labels.filter(pc.equal(history.labels.column("label"), "fraud"))
    last: dict[tuple[str, int], int] = {}
    per_row = []
    for tx_id, account, at in zip(
        labels.column("transaction_id").to_pylist(),
        labels.column("account_id").to_pylist(),
        labels.column("label_time").cast(pa.int64()).to_pylist(),
        strict=True,
    ):
        per_row.append((at - event[tx_id]) / 3_600_000)
        last[(account, at)] = max(last.get((account, at), event[tx_id]), event[tx_id])
    per_report = [(at - t) / 3_600_000 for (_, at), t in last.items()]
    return np.array(per_row), np.array(per_report)


def test_mixed_label_delays_are_calls_and_chargebacks_per_report(history: SyntheticHistory) -> None:
    """The default profile: ~30 % of reports are calls within 1-12 h, the rest chargebacks in 2-45 days."""
    assert SMALL.label_delay == "mixed"
    _, per_report = _report_delays_h(history)
    calls = per_report <= 12
    assert calls.mean() == pytest.approx(0.3, abs=0.04)
    assert per_report[calls].min() >= 1
    assert per_report[~calls].min() >= 48 and per_report[~calls].max() <= 45 * 24


@pytest.fixture(scope="module")
def fixed() -> SyntheticHistory:
    return generate(msgspec.structs.replace(SMALL, label_delay="fixed", label_delay_days=3.5))


def test_fixed_label_delay_labels_every_transaction_exactly_that_late(
    fixed: SyntheticHistory, history: SyntheticHistory
) -> None:
    tx = fixed.transactions
    event = dict(
        zip(tx.column("transaction_id").to_pylist(), tx.column("event_time").cast(pa.int64()).to_pylist(), strict=True)
    )
    labels = fixed.labels
    delay = [
        at - event[t]
        for t, at in zip(
            labels.column("transaction_id").to_pylist(),
            labels.column("label_time").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    ]
    assert set(delay) == {round(3.5 * 86_400_000)}  # fraud and genuine labels alike, each after its own transaction
    # The same world and the same labelled rows as the default profile: only the label times differ.
    assert tx.equals(history.transactions)
    key = ["transaction_id", "account_id", "label"]
    assert labels.select(key).sort_by("transaction_id").equals(history.labels.select(key).sort_by("transaction_id"))


def test_chargeback_label_delay_is_2_to_60_days_and_skewed(history: SyntheticHistory) -> None:
    generated = generate(msgspec.structs.replace(SMALL, label_delay="chargeback"))
    assert generated.transactions.equals(history.transactions)
    per_row, per_report = _report_delays_h(generated)
    assert per_report.min() >= 2 * 24 and per_report.max() <= 60 * 24
    assert per_row.min() >= 2 * 24 and per_row.max() <= 61 * 24  # a report covers one day's rows
    days = per_report / 24
    assert np.unique(per_report).size > 0.9 * per_report.size  # spread, not one delay
    assert 8 <= np.median(days) <= 16 and np.percentile(days, 90) <= 35 and np.percentile(days, 10) >= 3
    assert np.mean(days) > np.median(days)  # a tail of late chargebacks
    # Genuine confirmations follow the same profile, each after its own transaction.
    tx = generated.transactions
    event = dict(
        zip(tx.column("transaction_id").to_pylist(), tx.column("event_time").cast(pa.int64()).to_pylist(), strict=True)
    )
    genuine = generated.labels.filter(pc.equal(generated.labels.column("label"), "genuine"))
    delays = (
        np.array(
            [
                at - event[t]
                for t, at in zip(
                    genuine.column("transaction_id").to_pylist(),
                    genuine.column("label_time").cast(pa.int64()).to_pylist(),
                    strict=True,
                )
            ]
        )
        / 86_400_000
    )
    assert delays.min() >= 2 and delays.max() <= 60 and 8 <= np.median(delays) <= 16
    assert genuine.num_rows == history.labels.num_rows - pc.sum(tx.column("is_fraud")).as_py()
