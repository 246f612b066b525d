"""A textbook baseline for the quality benchmark, built from the raw history with pandas/numpy (not our feature code).

The 15 features of Le Borgne et al., *Reproducible Machine Learning for Credit
Card Fraud Detection*, chapter 3 ("Baseline feature transformation"), in the
book's order (:data:`FEATURES`):

- ``TX_AMOUNT``; ``TX_DURING_WEEKEND`` (UTC weekday Saturday or Sunday);
  ``TX_DURING_NIGHT`` (UTC hour <= 6, as the book);
- ``CUSTOMER_ID_NB_TX_{w}DAY_WINDOW`` / ``CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW``
  for w = 1, 7, 30: the account's transactions with event time in (t - w, t],
  up to and including this one (the book's pandas rolling on a time index;
  a transaction at the same millisecond but later in event-time order is not
  yet counted);
- ``TERMINAL_ID_NB_TX_{w}DAY_WINDOW`` / ``TERMINAL_ID_RISK_{w}DAY_WINDOW``: the
  terminal's transactions with event time in (t - delay - w, t - delay], and
  the share of them that are frauds *whose fraud label had arrived by t*
  (``label_time <= t``). The book takes every past fraud as known; here a fraud
  still unreported at t does not count. Risk is 0 when the window is empty.

The terminal is ``terminal_id``, or ``merchant_id`` when ``terminal_id`` is null
(online payments have a device, not a terminal); a row with neither (or a
history with neither column) gets 0 for the six terminal features.

:func:`run_baselines` trains scikit-learn ``LogisticRegression`` (standard
scaled) and ``RandomForestClassifier`` on the rows of a training span, with the
fraud labels known at its end as targets, and reports AP, ROC AUC and card
precision@k on the rows of a test span against the eventual truth, as
:mod:`pipelines.backtest` defines it (``is_fraud`` when the history has it,
else a fraud label at any time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.history import History
from models.batch import average_precision, card_precision_at_k_per_day, mean_of, roc_auc

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WINDOWS_DAYS = (1, 7, 30)
#: ``fraud_label_ms`` of a row without a fraud label.
NEVER_MS = np.iinfo(np.int64).max

FEATURES = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *(f"CUSTOMER_ID_{kind}_{w}DAY_WINDOW" for w in WINDOWS_DAYS for kind in ("NB_TX", "AVG_AMOUNT")),
    *(f"TERMINAL_ID_{kind}_{w}DAY_WINDOW" for w in WINDOWS_DAYS for kind in ("NB_TX", "RISK")),
)


def baseline_features(history: History, delay_days: float = 7) -> pd.DataFrame:
    """The book's 15 features of every transaction, in event-time order.

    Besides :data:`FEATURES`: ``event_time_ms``, ``account_id``, ``truth``
    (eventual fraud) and ``fraud_label_ms`` (when the fraud label arrived,
    :data:`NEVER_MS` for rows without one). ``delay_days`` is the label delay
    the terminal windows end before the transaction.
    """
    if delay_days < 0:
        raise ValueError(f"delay_days must be >= 0, got {delay_days}")
    tx = history.transactions
    times = tx.column("event_time").cast(pa.int64()).to_numpy()
    order = np.argsort(times, kind="stable")
    tx = tx.take(pa.array(order))
    times = times[order]
    amount = tx.column("amount").to_numpy().astype(np.float64)
    account = tx.column("account_id").to_numpy(zero_copy_only=False)
    fraud_label_ms = _fraud_label_ms(tx.column("transaction_id"), history.labels)
    if "is_fraud" in tx.column_names:
        truth = tx.column("is_fraud").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    else:
        truth = fraud_label_ms != NEVER_MS

    columns: dict[str, Any] = {
        "TX_AMOUNT": amount,
        "TX_DURING_WEEKEND": ((times // DAY_MS + 3) % 7 >= 5).astype(np.int64),  # 1970-01-01 was a Thursday
        "TX_DURING_NIGHT": ((times % DAY_MS) // HOUR_MS <= 6).astype(np.int64),
    }
    customer = pd.factorize(account)[0]
    for w in WINDOWS_DAYS:
        count, mean = _customer_window(customer, times, amount, w * DAY_MS)
        columns[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = count
        columns[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = mean
    terminal = _terminal_codes(tx)
    delay_ms = round(delay_days * DAY_MS)
    for w in WINDOWS_DAYS:
        count, risk = _terminal_window(terminal, times, fraud_label_ms, delay_ms, w * DAY_MS)
        columns[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = count
        columns[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = risk
    frame = pd.DataFrame({name: columns[name] for name in FEATURES})
    frame["event_time_ms"] = times
    frame["account_id"] = account
    frame["truth"] = truth
    frame["fraud_label_ms"] = fraud_label_ms
    return frame


def run_baselines(
    history: History,
    train_from_ms: int,
    train_until_ms: int,
    test_from_ms: int,
    test_until_ms: int,
    delay_days: float = 7,
    k: int = 100,
) -> dict[str, dict[str, float | None]]:
    """Train both baselines on [train_from, train_until) and score [test_from, test_until).

    Training targets are the fraud labels with ``label_time <= train_until_ms``;
    the test is judged on the eventual truth. Returns
    ``{"lr": {"ap", "roc_auc", "card_precision_at_100"}, "rf": {...}}``
    (the last key named after ``k``), rounded to 6 decimals; None where a
    metric is undefined (no fraud in the test span).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = baseline_features(history, delay_days)
    times = frame["event_time_ms"].to_numpy()
    train = (times >= train_from_ms) & (times < train_until_ms)
    test = (times >= test_from_ms) & (times < test_until_ms)
    if not test.any():
        raise ValueError("run_baselines: no transactions in the test span")
    x = frame.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    target = frame["fraud_label_ms"].to_numpy()[train] <= train_until_ms
    if target.all() or not target.any():
        raise ValueError("run_baselines: the training span needs both known frauds and genuine rows")
    models = {
        "lr": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "rf": RandomForestClassifier(n_estimators=100, max_depth=20, n_jobs=-1, random_state=0),
    }
    truth = frame["truth"].to_numpy()[test]
    accounts = frame["account_id"].to_numpy()[test]
    results: dict[str, dict[str, float | None]] = {}
    for name, model in models.items():
        model.fit(x[train], target)
        score = model.predict_proba(x[test])[:, 1]
        daily_cards = card_precision_at_k_per_day(times[test], accounts, truth, score, k)
        results[name] = {
            "ap": _round(average_precision(truth, score)),
            "roc_auc": _round(roc_auc(truth, score)),
            f"card_precision_at_{k}": _round(mean_of(daily_cards)),
        }
    return results


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _fraud_label_ms(transaction_id: pa.ChunkedArray, labels: pa.Table | None) -> np.ndarray:
    """Per transaction, the earliest ``label_time`` of a fraud label for it (ms), NEVER_MS when none."""
    out = np.full(len(transaction_id), NEVER_MS, dtype=np.int64)
    if labels is None or labels.num_rows == 0:
        return out
    fraud = labels.filter(pc.equal(labels.column("label"), "fraud"))
    if fraud.num_rows == 0:
        return out
    first = (
        pd.DataFrame(
            {
                "transaction_id": fraud.column("transaction_id").to_numpy(zero_copy_only=False),
                "label_ms": fraud.column("label_time").cast(pa.int64()).to_numpy(),
            }
        )
        .groupby("transaction_id")["label_ms"]
        .min()
    )
    found = pd.Index(first.index).get_indexer(transaction_id.to_numpy(zero_copy_only=False))
    out[found >= 0] = first.to_numpy()[found[found >= 0]]
    return out


def _terminal_codes(tx: pa.Table) -> np.ndarray:
    """Terminal of each row as a code: terminal_id, else merchant_id (prefixed apart), -1 when neither."""
    key = None
    if "terminal_id" in tx.column_names:
        key = pc.binary_join_element_wise("t:", tx.column("terminal_id"), "")
    if "merchant_id" in tx.column_names:
        merchant = pc.binary_join_element_wise("m:", tx.column("merchant_id"), "")
        key = merchant if key is None else pc.coalesce(key, merchant)
    if key is None:
        return np.full(tx.num_rows, -1, dtype=np.int64)
    return pd.factorize(key.to_numpy(zero_copy_only=False), use_na_sentinel=True)[0].astype(np.int64)


def _composite(group: np.ndarray, times: np.ndarray, reach_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order by (group, time), and the sorted int64 keys group * stride + reach + (time - first time).

    Each group's keys sit in a band padded by ``reach_ms`` on both sides, so a
    search up to ``reach_ms`` before or after a key never lands in another group.
    """
    base = int(times.min()) if len(times) else 0
    relative = times - base
    stride = int(relative.max() if len(times) else 0) + 2 * reach_ms + 1
    if (int(group.max()) + 2 if len(group) else 1) * stride >= 2**62:
        raise ValueError("too many entities over too long a span for int64 keys")
    order = np.lexsort((relative, group))
    key = group[order] * stride + reach_ms + relative[order]
    return order, key


def _customer_window(
    customer: np.ndarray, times: np.ndarray, amount: np.ndarray, window_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Count and mean amount of the customer's rows in (t - window, t], up to and including each row."""
    order, key = _composite(customer, times, window_ms)
    end = np.arange(1, len(key) + 1)
    start = np.searchsorted(key, key - window_ms, side="right")
    cumulative = np.concatenate([[0.0], np.cumsum(amount[order])])
    count = end - start
    mean = (cumulative[end] - cumulative[start]) / count
    count_out, mean_out = np.empty(len(key), np.int64), np.empty(len(key), np.float64)
    count_out[order], mean_out[order] = count, mean
    return count_out, mean_out


def _terminal_window(
    terminal: np.ndarray, times: np.ndarray, fraud_label_ms: np.ndarray, delay_ms: int, window_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Count of the terminal's rows in (t - delay - window, t - delay], and the share with a fraud label by t.

    Rows with terminal -1 get 0 and 0. A labelled fraud at time s, reported at
    L, counts for the terminal's rows at t in [max(s + delay, L), s + delay + window),
    which a difference array over the sorted rows adds up.
    """
    has = terminal >= 0
    count_out, risk_out = np.zeros(len(times), np.int64), np.zeros(len(times), np.float64)
    if not has.any():
        return count_out, risk_out
    rows = np.flatnonzero(has)
    group, t = terminal[rows], times[rows]
    order, key = _composite(group, t, delay_ms + window_ms)
    base = int(t.min())
    origin = key - (t[order] - base)  # each row's group key at time ``base``
    hi = np.searchsorted(key, key - delay_ms, side="right")
    lo = np.searchsorted(key, key - delay_ms - window_ms, side="right")
    count = hi - lo
    label = fraud_label_ms[rows][order]
    fraud = np.flatnonzero(label != NEVER_MS)
    s = t[order][fraud] - base
    reach_end = s + delay_ms + window_ms
    reach_start = np.minimum(np.maximum(s + delay_ms, label[fraud] - base), reach_end)
    first = np.searchsorted(key, origin[fraud] + reach_start, side="left")
    past = np.searchsorted(key, origin[fraud] + reach_end, side="left")
    diff = np.zeros(len(key) + 1, np.int64)
    np.add.at(diff, first, 1)
    np.add.at(diff, past, -1)
    frauds = np.cumsum(diff[:-1])
    risk = np.divide(frauds, count, out=np.zeros(len(key)), where=count > 0)
    count_out[rows[order]], risk_out[rows[order]] = count, risk
    return count_out, risk_out
