"""Genuine spending: plausible travel, the daily rhythm and usual merchants."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from tests.synthetic.small import distance_km


def test_genuine_travel_exists_without_impossible_speeds(by_account: dict[str, list[dict]]) -> None:
    abroad = 0
    for history in by_account.values():
        genuine = [r for r in history if not r["is_fraud"]]
        home = Counter(r["country"] for r in genuine).most_common(1)[0][0]
        abroad += sum(r["country"] != home and r["channel"] == "pos" for r in genuine)
        for a, b in itertools.pairwise(genuine):
            km = distance_km(a["lat"], a["lon"], b["lat"], b["lon"])
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
