"""The fraud scenarios: the budget (fraud rate and shares by scenario) and each scenario's signature."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from configs.settings import SCENARIOS, GeneratorSettings
from synthetic import SyntheticHistory, generate
from tests.synthetic.small import SMALL, distance_km, scenario_rows


def _genuine_median(account_rows: list[dict]) -> float:
    return float(np.median([r["amount"] for r in account_rows if not r["is_fraud"]]))


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


# ----------------------------------------------------------------------------- scenario signatures


def test_card_testing_is_bursts_of_tiny_amounts_at_new_merchants(
    rows: list[dict], by_account: dict[str, list[dict]]
) -> None:
    fraud = scenario_rows(rows, "card_testing")
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
    fraud = scenario_rows(rows, "account_takeover")
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
    for r in scenario_rows(rows, "account_takeover"):
        first.setdefault(r["account_id"], r["event_time"])
        last[r["account_id"]] = r["event_time"]
    assert len(first) >= 10
    still_abused = sum(last[a] > first[a] + 7 * 86_400_000 for a in first)
    assert still_abused >= 0.7 * len(first), (still_abused, len(first))


def test_impossible_travel_implies_a_speed_above_1000_kmh(by_account: dict[str, list[dict]], rows: list[dict]) -> None:
    accounts = {r["account_id"] for r in scenario_rows(rows, "impossible_travel")}
    assert accounts
    for account in accounts:
        history = by_account[account]
        i = next(i for i, r in enumerate(history) if r["fraud_scenario"] == "impossible_travel")
        previous, first = history[i - 1], history[i]
        assert i > 0 and first["channel"] == "pos" and first["terminal_id"] is not None
        km = distance_km(previous["lat"], previous["lon"], first["lat"], first["lon"])
        hours = max(first["event_time"] - previous["event_time"], 1) / 3_600_000
        assert km > 2000 and km / hours > 1000, (account, km, hours)


def test_compromised_terminals_turn_many_accounts_bad_at_few_terminals(rows: list[dict]) -> None:
    fraud = scenario_rows(rows, "compromised_terminal")
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
    fraud = scenario_rows(rows, "bust_out")
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
