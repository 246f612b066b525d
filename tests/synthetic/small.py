"""SMALL, the history most synthetic tests share, and helpers over its rows (dicts in event-time order)."""

from __future__ import annotations

import math

from configs.settings import GeneratorSettings

SMALL = GeneratorSettings(accounts=2500, days=21, seed=11)


def scenario_rows(rows: list[dict], scenario: str) -> list[dict]:
    return [r for r in rows if r["fraud_scenario"] == scenario]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, a)))
