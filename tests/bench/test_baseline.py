"""The textbook baseline: each feature against a per-row brute force, and a small end-to-end run."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from bench.baseline import FEATURES, NEVER_MS, baseline_features, run_baselines
from configs import Settings
from connectors.history import History, read_history
from contracts.arrow import LABEL_SCHEMA, TIME
from synthetic import generate, write_history

DAY, HOUR = 86_400_000, 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday


def _history(rows: list[dict], labels: list[tuple[str, str, str, int]], with_truth: bool = True) -> History:
    columns = {
        "transaction_id": pa.array([r["id"] for r in rows], pa.string()),
        "account_id": pa.array([r["account"] for r in rows], pa.string()),
        "event_time": pa.array([r["t"] for r in rows], pa.int64()).cast(TIME),
        "amount": pa.array([r["amount"] for r in rows], pa.float64()),
        "merchant_id": pa.array([r.get("merchant") for r in rows], pa.string()),
        "terminal_id": pa.array([r.get("terminal") for r in rows], pa.string()),
    }
    if with_truth:
        columns["is_fraud"] = pa.array([r.get("fraud", False) for r in rows], pa.bool_())
    label_table = pa.table(
        {
            "transaction_id": [lab[0] for lab in labels],
            "account_id": [lab[1] for lab in labels],
            "label": [lab[2] for lab in labels],
            "label_time": pa.array([lab[3] for lab in labels], pa.int64()).cast(TIME),
        }
    ).cast(LABEL_SCHEMA)
    return History(pa.table(columns), label_table, "hand-made")


def _random_history(seed: int) -> tuple[list[dict], list[tuple[str, str, str, int]]]:
    """~200 rows over 45 days: 3 accounts, 3 terminals, online rows keyed by merchant, some with neither;
    exact time ties; frauds reported before, at and after later rows."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(200):
        t = T0 + int(rng.integers(0, 45 * DAY))
        if i % 17 == 0 and rows:
            t = rows[-1]["t"]  # an exact tie (same account half of the time)
        kind = rng.integers(0, 5)
        terminal = None if kind >= 3 else f"T{kind}"
        merchant = None if kind == 4 else f"M{rng.integers(0, 2)}"
        amount = float(np.round(rng.lognormal(3, 1), 2))
        row = {"id": f"tx{i:04d}", "account": f"A{rng.integers(0, 3)}", "t": t, "amount": amount,
               "terminal": terminal, "merchant": merchant}  # fmt: skip
        if rng.random() < 0.15:
            row["fraud"] = True
            if rng.random() < 0.85:  # some frauds never get a label
                labels.append((row["id"], row["account"], "fraud", t + int(rng.integers(0, 20 * DAY))))
        elif rng.random() < 0.2:
            labels.append((row["id"], row["account"], "genuine", t + int(rng.integers(0, 20 * DAY))))
        rows.append(row)
    rng.shuffle(rows)  # delivery order is not event-time order
    return rows, labels


def _brute_force(rows: list[dict], labels: list[tuple[str, str, str, int]], delay_days: float) -> list[dict]:
    ordered = sorted(rows, key=lambda r: r["t"])  # stable: ties keep delivery order
    reported = {}
    for tx_id, _, label, label_ms in labels:
        if label == "fraud":
            reported[tx_id] = min(label_ms, reported.get(tx_id, NEVER_MS))
    delay = delay_days * DAY
    out = []
    for i, row in enumerate(ordered):
        t = row["t"]
        hour, weekday = (t % DAY) // HOUR, ((t // DAY) + 3) % 7
        f = {"TX_AMOUNT": row["amount"], "TX_DURING_WEEKEND": int(weekday >= 5), "TX_DURING_NIGHT": int(hour <= 6)}
        for w in (1, 7, 30):
            mine = [r["amount"] for r in ordered[: i + 1] if r["account"] == row["account"] and r["t"] > t - w * DAY]
            f[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = len(mine)
            f[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = sum(mine) / len(mine)
        key = ("t", row["terminal"]) if row["terminal"] else ("m", row["merchant"]) if row["merchant"] else None
        for w in (1, 7, 30):
            seen = [
                r for r in ordered
                if key is not None
                and (("t", r["terminal"]) if r["terminal"] else ("m", r["merchant"])) == key
                and t - delay - w * DAY < r["t"] <= t - delay
            ]  # fmt: skip
            frauds = sum(1 for r in seen if reported.get(r["id"], NEVER_MS) <= t)
            f[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = len(seen)
            f[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = frauds / len(seen) if seen else 0.0
        f["event_time_ms"], f["account_id"], f["truth"] = t, row["account"], bool(row.get("fraud", False))
        f["fraud_label_ms"] = reported.get(row["id"], NEVER_MS)
        out.append(f)
    return out


@pytest.mark.parametrize(("seed", "delay_days"), [(1, 7), (2, 7), (3, 2), (4, 0)])
def test_every_feature_matches_a_per_row_brute_force(seed: int, delay_days: float) -> None:
    rows, labels = _random_history(seed)
    frame = baseline_features(_history(rows, labels), delay_days=delay_days)
    expected = _brute_force(rows, labels, delay_days)
    assert list(frame.columns[: len(FEATURES)]) == list(FEATURES)
    assert len(FEATURES) == 15 and len(frame) == len(expected)
    for name in (*FEATURES, "event_time_ms", "fraud_label_ms"):
        np.testing.assert_allclose(frame[name].to_numpy(), [e[name] for e in expected], rtol=1e-12, err_msg=name)
    assert frame["account_id"].tolist() == [e["account_id"] for e in expected]
    assert frame["truth"].tolist() == [e["truth"] for e in expected]
    assert frame["TERMINAL_ID_RISK_30DAY_WINDOW"].gt(0).any()  # the data does exercise the risk


def test_terminal_risk_counts_only_frauds_reported_by_t_in_a_window_ending_delay_before_t() -> None:
    fraud_at, reported_at = T0 + 12 * HOUR, T0 + 7 * DAY + 14 * HOUR
    rows = [
        {"id": "f", "account": "A", "t": fraud_at, "amount": 10.0, "terminal": "T", "fraud": True},
        {"id": "a", "account": "B", "t": T0 + 7 * DAY + 11 * HOUR, "amount": 1.0, "terminal": "T"},  # before window
        {"id": "b", "account": "B", "t": T0 + 7 * DAY + 12 * HOUR, "amount": 1.0, "terminal": "T"},  # window ends at f
        {"id": "c", "account": "B", "t": T0 + 7 * DAY + 13 * HOUR, "amount": 1.0, "terminal": "T"},  # not yet reported
        {"id": "d", "account": "B", "t": T0 + 7 * DAY + 15 * HOUR, "amount": 1.0, "terminal": "T"},  # reported
        {"id": "e", "account": "B", "t": T0 + 8 * DAY + 12 * HOUR, "amount": 1.0, "terminal": "T"},  # opens after f
        {"id": "g", "account": "C", "t": T0 + 7 * DAY + 15 * HOUR, "amount": 1.0, "merchant": "T"},  # another key
    ]  # fmt: skip
    frame = baseline_features(_history(rows, [("f", "A", "fraud", reported_at)]), delay_days=7)
    by_id = dict(zip([r["id"] for r in sorted(rows, key=lambda r: r["t"])], range(len(rows)), strict=True))
    count = frame["TERMINAL_ID_NB_TX_1DAY_WINDOW"].to_numpy()
    risk = frame["TERMINAL_ID_RISK_1DAY_WINDOW"].to_numpy()
    assert [int(count[by_id[i]]) for i in "abcdeg"] == [0, 1, 1, 1, 0, 0]
    assert [float(risk[by_id[i]]) for i in "abcdeg"] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert frame["fraud_label_ms"].iloc[by_id["f"]] == reported_at


def test_truth_falls_back_to_fraud_labels_without_is_fraud() -> None:
    rows, labels = _random_history(5)
    frame = baseline_features(_history(rows, labels, with_truth=False))
    fraud_ids = {lab[0] for lab in labels if lab[2] == "fraud"}
    expected = [r["id"] in fraud_ids for r in sorted(rows, key=lambda r: r["t"])]
    assert frame["truth"].tolist() == expected


def test_run_baselines_on_a_small_generated_history(local_settings: Settings, tmp_path: Path) -> None:
    settings = msgspec.structs.replace(local_settings.generator, accounts=300, days=20, seed=5, fraud_rate=0.02)
    generated = generate(settings)
    write_history(generated, tmp_path)
    history = read_history(tmp_path, local_settings.history)
    start = int(settings.start.timestamp() * 1000)
    result = run_baselines(history, start, start + 10 * DAY, start + 12 * DAY, start + 20 * DAY, delay_days=2)
    assert set(result) == {"lr", "rf"}
    test_rows = baseline_features(history, delay_days=2).query(f"{start + 12 * DAY} <= event_time_ms")
    fraud_rate = float(test_rows["truth"].mean())
    for metrics in result.values():
        assert set(metrics) == {"ap", "roc_auc", "card_precision_at_100"}
        assert fraud_rate < metrics["ap"] <= 1.0
        assert 0.5 < metrics["roc_auc"] <= 1.0
        assert 0.0 <= metrics["card_precision_at_100"] <= 1.0
        assert all(round(v, 6) == v for v in metrics.values())
