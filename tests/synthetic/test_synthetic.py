"""The synthetic history generator: contracts, calibration, determinism and scenario signatures."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from configs.settings import SCENARIOS, GeneratorSettings
from contracts.arrow import HISTORY_SCHEMA, LABEL_SCHEMA, table_to_records
from contracts.records import Label, Transaction
from synthetic import SyntheticHistory, generate, write_history

SMALL = GeneratorSettings(accounts=2500, days=21, seed=11)


@pytest.fixture(scope="module")
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


def _scenario_rows(rows: list[dict], scenario: str) -> list[dict]:
    return [r for r in rows if r["fraud_scenario"] == scenario]


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, a)))


def _genuine_median(account_rows: list[dict]) -> float:
    return float(np.median([r["amount"] for r in account_rows if not r["is_fraud"]]))


# ----------------------------------------------------------------------------- contracts


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


def test_event_times_lie_in_the_period_and_default_order_is_event_time(history: SyntheticHistory) -> None:
    t = history.transactions.column("event_time").cast(pa.int64()).to_numpy()
    start_ms = int(SMALL.start.timestamp() * 1000)
    assert t.min() >= start_ms and t.max() < start_ms + SMALL.days * 86_400_000
    assert np.all(np.diff(t) >= 0)
    # Transaction ids follow event time, so equal times keep a stable order.
    ids = history.transactions.column("transaction_id").to_pylist()
    assert ids == sorted(ids)


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize(
    ("settings", "target"),
    [
        (SMALL, SMALL.fraud_rate),
        (GeneratorSettings(accounts=2000, days=14, seed=5, fraud_rate=0.015), 0.015),
        (GeneratorSettings(accounts=2000, days=14, seed=6, fraud_rate=0.002), 0.002),
    ],
)
def test_fraud_rate_matches_target(settings: GeneratorSettings, target: float, history: SyntheticHistory) -> None:
    generated = history if settings is SMALL else generate(settings)
    assert abs(generated.fraud_rate - target) <= 0.25 * target
    if settings is SMALL:
        assert 0.001 <= generated.fraud_rate <= 0.02


def test_every_scenario_is_present_in_similar_shares(history: SyntheticHistory) -> None:
    counts = Counter(history.transactions.column("fraud_scenario").drop_null().to_pylist())
    assert set(counts) == set(SCENARIOS)
    total = sum(counts.values())
    for scenario in SCENARIOS:  # equal weights by default
        assert 0.1 <= counts[scenario] / total <= 0.3, (scenario, counts)


def test_a_scenario_with_weight_zero_is_absent() -> None:
    weights = dict.fromkeys(SCENARIOS, 1.0) | {"impossible_travel": 0.0, "bust_out": 3.0}
    generated = generate(GeneratorSettings(accounts=2000, days=14, seed=3, scenario_weights=weights))
    counts = Counter(generated.transactions.column("fraud_scenario").drop_null().to_pylist())
    assert "impossible_travel" not in counts
    assert set(counts) == set(SCENARIOS) - {"impossible_travel"}
    assert counts["bust_out"] > 2 * counts["card_testing"]
    assert abs(generated.fraud_rate - 0.006) <= 0.25 * 0.006


def test_same_seed_same_tables_and_other_seed_other_tables(history: SyntheticHistory) -> None:
    again = generate(SMALL)
    assert again.transactions.equals(history.transactions, check_metadata=True)
    assert again.labels.equals(history.labels, check_metadata=True)
    other = generate(msgspec.structs.replace(SMALL, seed=12))
    assert not other.transactions.equals(history.transactions)
    assert not other.labels.equals(history.labels)


def test_progress_reports_phases() -> None:
    phases: list[str] = []
    generate(GeneratorSettings(accounts=200, days=3, seed=1), progress=phases.append)
    assert len(phases) >= 4 and any("fraud" in p for p in phases)


# ----------------------------------------------------------------------------- labels


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
    for r in _scenario_rows(rows, "compromised_terminal"):
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


# ----------------------------------------------------------------------------- scenario signatures


def test_card_testing_is_bursts_of_tiny_amounts_at_new_merchants(
    rows: list[dict], by_account: dict[str, list[dict]]
) -> None:
    fraud = _scenario_rows(rows, "card_testing")
    tiny = [r for r in fraud if r["amount"] <= 2.0]
    assert len(tiny) >= 0.75 * len(fraud)
    assert sum(r["channel"] == "ecom" for r in fraud) >= 0.7 * len(fraud)
    new = 0
    for r in tiny:
        seen = {
            x["merchant_id"]
            for x in by_account[r["account_id"]]
            if not x["is_fraud"] and x["event_time"] < r["event_time"]
        }
        new += r["merchant_id"] not in seen
    assert new >= 0.95 * len(tiny)
    # Bursts: each account's tiny amounts come within an hour, at least five of them.
    per_account = defaultdict(list)
    for r in tiny:
        per_account[r["account_id"]].append(r["event_time"])
    assert all(len(ts) >= 5 and max(ts) - min(ts) < 3_600_000 for ts in per_account.values())


def test_account_takeover_is_a_new_device_abroad_spending_big(
    by_account: dict[str, list[dict]], rows: list[dict]
) -> None:
    fraud = _scenario_rows(rows, "account_takeover")
    assert fraud
    for r in fraud:
        history = [x for x in by_account[r["account_id"]] if not x["is_fraud"]]
        home_country = Counter(x["country"] for x in history).most_common(1)[0][0]
        assert r["channel"] == "ecom"
        assert r["device_id"] not in {x["device_id"] for x in history}
        assert r["country"] != home_country
        assert r["amount"] >= 3 * _genuine_median(by_account[r["account_id"]])
    # Abused on and off for about two weeks: 2-4 purchases at the takeover, 1-2 on each return 1-4 days apart.
    spans = []
    for account in {r["account_id"] for r in fraud}:
        times = sorted(r["event_time"] for r in fraud if r["account_id"] == account)
        assert 2 <= len(times) <= 4 + 2 * 18
        assert max(np.diff(times), default=0) <= 4 * 86_400_000
        spans.append((times[-1] - times[0]) / 86_400_000)
    assert 7 <= np.median(spans) <= 21, spans
    assert max(spans) <= 18


def test_account_takeover_is_still_under_way_when_a_week_old_label_arrives(rows: list[dict]) -> None:
    """With labels 7 days late (label_delay fixed), most taken-over cards are still abused when the first comes."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for r in _scenario_rows(rows, "account_takeover"):
        first.setdefault(r["account_id"], r["event_time"])
        last[r["account_id"]] = r["event_time"]
    assert len(first) >= 10
    still_abused = sum(last[a] > first[a] + 7 * 86_400_000 for a in first)
    assert still_abused >= 0.7 * len(first), (still_abused, len(first))


def test_impossible_travel_implies_a_speed_above_1000_kmh(by_account: dict[str, list[dict]], rows: list[dict]) -> None:
    accounts = {r["account_id"] for r in _scenario_rows(rows, "impossible_travel")}
    assert accounts
    for account in accounts:
        history = by_account[account]
        i = next(i for i, r in enumerate(history) if r["fraud_scenario"] == "impossible_travel")
        previous, first = history[i - 1], history[i]
        assert i > 0 and first["channel"] == "pos" and first["terminal_id"] is not None
        km = _km(previous["lat"], previous["lon"], first["lat"], first["lon"])
        hours = max(first["event_time"] - previous["event_time"], 1) / 3_600_000
        assert km > 2000 and km / hours > 1000, (account, km, hours)


def test_compromised_terminals_turn_many_accounts_bad_at_few_terminals(rows: list[dict]) -> None:
    fraud = _scenario_rows(rows, "compromised_terminal")
    by_terminal: dict[str, list[dict]] = defaultdict(list)
    for r in fraud:
        by_terminal[r["terminal_id"]].append(r)
    assert None not in by_terminal and all(r["channel"] == "pos" for r in fraud)
    assert len(by_terminal) <= len(fraud) / 5
    assert all(len({r["account_id"] for r in rs}) >= 3 for rs in by_terminal.values())
    for terminal, rs in by_terminal.items():
        start, end = min(r["event_time"] for r in rs), max(r["event_time"] for r in rs)
        assert 86_400_000 <= end - start <= 28 * 86_400_000 or len(rs) < 10
        # Inside the window every payment at the terminal is fraudulent (a few may belong to another scenario).
        at_terminal = [r for r in rows if r["terminal_id"] == terminal and start <= r["event_time"] <= end]
        assert all(r["is_fraud"] for r in at_terminal)


def test_bust_out_ramps_up_then_maxes_out_and_goes_silent(by_account: dict[str, list[dict]], rows: list[dict]) -> None:
    fraud = _scenario_rows(rows, "bust_out")
    accounts = {r["account_id"] for r in fraud}
    assert accounts
    above = sum(r["amount"] > _genuine_median(by_account[r["account_id"]]) for r in fraud)
    assert above >= 0.99 * len(fraud)
    for account in accounts:
        history = by_account[account]
        busts = [r for r in history if r["fraud_scenario"] == "bust_out"]
        genuine_before = [r for r in history if not r["is_fraud"] and r["event_time"] < busts[0]["event_time"]]
        assert len(genuine_before) >= 3
        assert not [r for r in history if not r["is_fraud"] and r["event_time"] > busts[-1]["event_time"]]
        assert busts[-1]["event_time"] - busts[0]["event_time"] >= 3 * 86_400_000
        # The max-out: the last rows are the biggest.
        amounts = [r["amount"] for r in busts]
        assert np.mean(amounts[-5:]) > np.mean(amounts[: len(amounts) // 2])
        assert sum(r["merchant_category"] in {"electronics", "jewelry", "travel"} for r in busts[-5:]) == 5


# ----------------------------------------------------------------------------- genuine behaviour


def test_genuine_travel_exists_without_impossible_speeds(by_account: dict[str, list[dict]]) -> None:
    abroad = 0
    for history in by_account.values():
        genuine = [r for r in history if not r["is_fraud"]]
        home = Counter(r["country"] for r in genuine).most_common(1)[0][0]
        abroad += sum(r["country"] != home and r["channel"] == "pos" for r in genuine)
        for a, b in itertools.pairwise(genuine):
            km = _km(a["lat"], a["lon"], b["lat"], b["lon"])
            if km > 300:
                assert km / max(b["event_time"] - a["event_time"], 1) * 3_600_000 < 1000
    assert abroad > 100  # geographic novelty alone is not fraud


def test_daily_rhythm_and_usual_merchants(rows: list[dict], by_account: dict[str, list[dict]]) -> None:
    # US east-coast-ish accounts (UTC-5): local night is quiet, the evening busy.
    local_hours = Counter(
        ((r["event_time"] // 3_600_000) - 5) % 24 for r in rows if r["currency"] == "USD" and r["lon"] > -82
    )
    night = sum(local_hours[h] for h in (2, 3, 4))
    evening = sum(local_hours[h] for h in (18, 19, 20))
    assert night < evening / 5
    # Most genuine spending goes to a handful of usual merchants.
    shares = []
    for history in list(by_account.values())[:500]:
        merchants = Counter(r["merchant_id"] for r in history if not r["is_fraud"])
        if sum(merchants.values()) >= 20:
            shares.append(sum(c for _, c in merchants.most_common(12)) / sum(merchants.values()))
    assert np.median(shares) > 0.6


# ----------------------------------------------------------------------------- delivery order


def test_out_of_order_and_late_delivery() -> None:
    settings = GeneratorSettings(
        accounts=2000, days=14, seed=4, out_of_order_rate=0.05, late_rate=0.02, max_disorder_s=60, max_late_s=6 * 3600
    )
    generated = generate(settings)
    t = generated.transactions.column("event_time").cast(pa.int64()).to_numpy()
    assert np.any(np.diff(t) < 0)
    running_max = np.maximum.accumulate(t)
    behind = np.concatenate([[0], running_max[:-1] - t[1:]])
    late = behind > settings.max_disorder_s * 1000
    assert late.mean() == pytest.approx(settings.late_rate, rel=0.1)
    assert behind.max() <= settings.max_late_s * 1000
    disordered = (behind > 0) & ~late
    assert disordered.mean() > 0.3 * settings.out_of_order_rate
    # Same world, only the order differs.
    plain = generate(msgspec.structs.replace(settings, out_of_order_rate=0.0, late_rate=0.0))
    key = "transaction_id"
    assert generated.transactions.sort_by(key).equals(plain.transactions.sort_by(key))
    assert generated.labels.equals(plain.labels)


# ----------------------------------------------------------------------------- files


def test_write_history_round_trips(tmp_path: Path) -> None:
    generated = generate(GeneratorSettings(accounts=500, days=7, seed=2))
    tx_path, label_path = write_history(generated, tmp_path / "out" / "history")
    assert tx_path == tmp_path / "out" / "history" / "transactions.parquet"
    assert label_path.name == "labels.parquet"
    assert pq.read_table(tx_path).equals(generated.transactions, check_metadata=True)
    assert pq.read_table(label_path).equals(generated.labels, check_metadata=True)
    assert pq.ParquetFile(tx_path).metadata.row_group(0).column(0).compression == "ZSTD"
