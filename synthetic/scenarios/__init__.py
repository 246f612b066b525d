"""The five fraud scenarios, and :func:`inject_fraud`, which budgets and runs them.

Each scenario has its module (named as in ``configs.settings.SCENARIOS``);
``episodes`` holds what they share. :func:`inject_fraud` splits
``settings.fraud_rate`` by ``settings.scenario_weights``, runs the scenarios in
a fixed order (they share one random stream and one account pool), silences
busted-out accounts, and makes episode ids unique across scenarios.
"""

from __future__ import annotations

import numpy as np

from configs.settings import SCENARIOS, GeneratorSettings
from synthetic.categories import round_amounts
from synthetic.clock import Clock
from synthetic.rows import SCENARIO_INDEX, Rows
from synthetic.sampling import BoolArray
from synthetic.scenarios.account_takeover import account_takeover
from synthetic.scenarios.bust_out import bust_out
from synthetic.scenarios.card_testing import card_testing
from synthetic.scenarios.compromised_terminal import compromised_terminal
from synthetic.scenarios.episodes import AccountPool, GenuineHistory
from synthetic.scenarios.impossible_travel import impossible_travel
from synthetic.world import World

__all__ = ["inject_fraud"]


def inject_fraud(
    rng: np.random.Generator,
    world: World,
    clock: Clock,
    rows: Rows,
    traveller: BoolArray,
    settings: GeneratorSettings,
) -> tuple[Rows, int]:
    """Genuine rows plus every scenario's fraud; returns the rows and the number of device ids in use.

    The budget: four scenarios add rows, compromised_terminal converts genuine
    rows, so the fraud total F solves F = rate * (genuine + added), with
    added = F * (1 - compromised share).
    """
    genuine = GenuineHistory.of(rows, world.accounts)
    weights = np.array([max(settings.scenario_weights.get(name, 0.0), 0.0) for name in SCENARIOS])
    share = weights / weights.sum()
    r = settings.fraud_rate
    fraud_total = r * rows.size / (1.0 - r * (1.0 - share[SCENARIO_INDEX["compromised_terminal"]]))
    target = {name: fraud_total * share[i] for i, name in enumerate(SCENARIOS)}

    pool = AccountPool(rng, ~traveller)
    parts: list[Rows] = []
    next_device = world.account_devices
    if target["card_testing"] > 0:
        part, next_device = card_testing(rng, world, clock, genuine, pool, target["card_testing"], next_device)
        parts.append(part)
    if target["account_takeover"] > 0:
        part, next_device = account_takeover(rng, world, clock, genuine, pool, target["account_takeover"], next_device)
        parts.append(part)
    if target["impossible_travel"] > 0:
        parts.append(impossible_travel(rng, world, clock, genuine, pool, target["impossible_travel"]))
    if target["bust_out"] > 0:
        part, busted, silent_from = bust_out(rng, world, clock, genuine, pool, target["bust_out"])
        parts.append(part)
        # After the max-out the account goes silent.
        silent = np.full(world.accounts, clock.period_ms, dtype=np.int64)
        silent[busted] = silent_from
        rows = rows.take(rows.time_ms < silent[rows.account])
    if target["compromised_terminal"] > 0:
        index, episode = compromised_terminal(rng, world, clock, rows, target["compromised_terminal"])
        cat = world.merchant_cat[rows.merchant[index]]
        rows.amount[index] = round_amounts(rows.amount[index] * (1.2 + 0.8 * rng.random(index.size)), cat)
        rows.scenario[index] = SCENARIO_INDEX["compromised_terminal"]
        rows.episode[index] = episode
    # Episode ids unique across scenarios.
    episode_base = int(rows.episode.max(initial=-1)) + 1
    for part in parts:
        part.episode[:] += episode_base
        episode_base = int(part.episode.max(initial=episode_base - 1)) + 1
    rows = Rows.concat([rows, *parts])
    np.clip(rows.time_ms, 0, clock.period_ms - 1, out=rows.time_ms)
    return rows, next_device
