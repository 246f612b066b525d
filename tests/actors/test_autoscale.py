"""The autoscaler's decision rule (actors/autoscale.py): out, in, cooldown, bounds, room, flapping. No Ray, no clock:
time is an argument, and a small simulated stream (:class:`Stream`) plays the job the policy scales."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import pairwise

import pytest

from actors.autoscale import AutoscalePolicy, JobLag, useful_sizes
from actors.messages import PartitionLag
from configs import AutoscaleSettings


def _policy(partitions: int = 4, **settings: float) -> AutoscalePolicy:
    options = {"enabled": True, "min_actors": 1, "max_actors": 4, "scale_out_lag_s": 2.0, "scale_in_idle_s": 3.0,
               "cooldown_s": 2.0, **settings}
    return AutoscalePolicy(AutoscaleSettings(**options), partitions)  # type: ignore[arg-type]


def _lag(seconds: float | None, records: int | None = 0, position: int | None = 0) -> JobLag:
    return JobLag(seconds=seconds, records=records, position=position, unknown=None if seconds is not None else "x")


class Stream:
    """A job the policy scales, one tick a second: ``load(t)`` records arrive each second, each actor reads
    ``per_actor`` a second, oldest first; the lag is how long the oldest unread record has waited."""

    def __init__(self, per_actor: float) -> None:
        self.per_actor = per_actor
        self.backlog: deque[list[float]] = deque()  # [arrival second, records]
        self.position = 0.0

    def tick(self, t: int, arriving: float, actors: int) -> JobLag:
        if arriving:
            self.backlog.append([t, arriving])
        budget = actors * self.per_actor
        while budget > 1e-9 and self.backlog:
            taken = min(budget, self.backlog[0][1])
            self.backlog[0][1] -= taken
            budget -= taken
            self.position += taken
            if self.backlog[0][1] <= 1e-9:
                self.backlog.popleft()
        seconds = float(t - self.backlog[0][0]) if self.backlog else 0.0
        return JobLag(seconds=seconds, records=round(sum(r for _, r in self.backlog)), position=round(self.position))


def _run(policy: AutoscalePolicy, stream: Stream, load: Callable[[int], float], ticks: int, actors: int = 1,
         placeable: int | None = None) -> tuple[list[tuple[int, int, int, str]], int]:
    """Tick the policy against the stream; every change is applied at once, as the controller's autoscaler
    does (the cooldown from the end of the rescale). Returns (t, from, to, reason) of each change and the final K."""
    changes = []
    for t in range(ticks):
        decision = policy.decide(float(t), actors, stream.tick(t, load(t), actors), placeable)
        if decision.actors != actors:
            changes.append((t, actors, decision.actors, decision.reason))
            actors = decision.actors
            policy.changed(float(t), actors)
    return changes, actors


def _spaced(changes: list[tuple[int, int, int, str]], at_least: float) -> bool:
    return all(later[0] - earlier[0] >= at_least for earlier, later in pairwise(changes))


# ---------------------------------------------------------------------------------------------------- sizes


def test_useful_sizes_lower_the_busiest_share_and_steps_double_out_and_go_one_down() -> None:
    assert useful_sizes(4) == [1, 2, 4] and useful_sizes(24) == [1, 2, 3, 4, 5, 6, 8, 12, 24]
    policy = _policy(partitions=12, max_actors=12)
    assert [policy.step_up(k) for k in (1, 2, 3, 4, 6)] == [2, 4, 6, 12, 12]
    assert [policy.step_down(k) for k in (12, 6, 4, 3, 2)] == [6, 4, 3, 2, 1]
    bounded = _policy(partitions=12, min_actors=3, max_actors=5)
    assert (bounded.step_up(3), bounded.step_down(5), bounded.step_down(4)) == (5, 4, 3)


def test_job_lag_is_unknown_while_a_partition_has_none_or_no_actor_answered_for_it() -> None:
    lags = {0: PartitionLag(records=5, seconds=1.5, next_offset=10), 1: PartitionLag(records=0, seconds=0.0,
                                                                                   next_offset=4)}
    assert JobLag.of(2, lags) == JobLag(seconds=1.5, records=5, position=14)
    assert JobLag.of(3, lags).seconds is None and "no answer for [2]" in (JobLag.of(3, lags).unknown or "")
    blind = JobLag.of(2, {**lags, 1: PartitionLag(records=7, seconds=None, next_offset=4)})
    assert blind.seconds is None and blind.records == 12 and "partitions [1] have no lag yet" in (blind.unknown or "")


# ------------------------------------------------------------------------------------------------------ out


def test_a_lag_that_stays_above_the_threshold_doubles_k_to_the_maximum_one_cooldown_apart() -> None:
    policy = _policy(cooldown_s=5.0)
    changes, actors = _run(policy, Stream(per_actor=100), lambda t: 1_000, ticks=40)
    assert [(before, after) for _, before, after, _ in changes] == [(1, 2), (2, 4)]
    assert actors == 4 and _spaced(changes, 5.0)
    t, _, _, reason = changes[0]
    assert t >= 2 + 2  # the lag passes 2 s, then stays above it for 2 s more
    assert reason.startswith("lag ") and "above scale_out_lag_s 2 s for 2 s" in reason and reason.endswith("1 -> 2 actors")
    last = policy.decide(40.0, actors, _lag(30.0, 10_000, 9_000))
    assert last.kind == "hold" and last.code == "max" and "already at max_actors 4" in last.reason


def test_never_more_actors_than_partitions() -> None:
    policy = _policy(partitions=4, max_actors=16)
    changes, actors = _run(policy, Stream(per_actor=100), lambda t: 5_000, ticks=60)
    assert actors == 4 == max(after for _, _, after, _ in changes)
    assert "already at the 4 partitions" in policy.decide(60.0, 4, _lag(50.0, 1, 1)).reason


def test_a_backlog_falling_fast_enough_is_left_to_drain_a_slow_one_is_not() -> None:
    fast = _policy(cooldown_s=0.0)
    decisions = [fast.decide(float(t), 1, _lag(10.0 + t, 10_000 - 3_000 * t, 3_000 * t)) for t in range(3)]
    assert decisions[-1].code == "catching_up" and "gone in ~1 s" in decisions[-1].reason
    slow = _policy(cooldown_s=0.0)
    decisions = [slow.decide(float(t), 1, _lag(10.0 + t, 10_000 - 100 * t, 100 * t)) for t in range(3)]
    assert decisions[-1].kind == "out" and "gone in ~98 s at this pace" in decisions[-1].reason


# ------------------------------------------------------------------------------------------------------- in


def test_idle_for_scale_in_idle_s_steps_in_one_useful_size_at_a_time_down_to_the_minimum() -> None:
    policy = _policy(partitions=12, max_actors=12, min_actors=2, scale_in_idle_s=3.0, cooldown_s=0.0)
    changes, actors = _run(policy, Stream(per_actor=100), lambda t: 0, ticks=40, actors=12)
    assert [(before, after) for _, before, after, _ in changes] == [(12, 6), (6, 4), (4, 3), (3, 2)]
    assert actors == 2 and _spaced(changes, 3.0)
    assert changes[0][3].startswith("idle (lag at most 1 s) for 3 s") and changes[0][3].endswith("12 -> 6 actors")
    assert policy.decide(41.0, 2, _lag(0.0)).code == "min"


def test_idle_broken_by_one_tick_of_lag_starts_its_window_again() -> None:
    policy = _policy(cooldown_s=0.0)
    lags = [0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0]  # 1.5 s: not idle (above 1 s), not above 2 s
    kinds = [policy.decide(float(t), 2, _lag(s)).kind for t, s in enumerate(lags)]
    assert kinds == ["hold"] * 7 + ["in"]  # idle from t=4, 3 s later


def test_a_load_the_fewer_actors_could_not_carry_keeps_them_instead_of_flapping() -> None:
    # 150 records/s, 100 per actor: 2 actors are idle most of the time, 1 would lag again; then the load goes
    policy = _policy(cooldown_s=2.0, scale_in_idle_s=3.0)
    changes, actors = _run(policy, Stream(per_actor=100), lambda t: 150 if t < 300 else 0, ticks=320)
    assert [(before, after) for _, before, after, _ in changes] == [(1, 2), (2, 1)] and actors == 1
    assert changes[1][0] > 300  # not before the load went
    assert policy.capacity_per_actor == pytest.approx(100.0)


def test_the_load_check_names_the_rate_and_the_capacity() -> None:
    policy = _policy(cooldown_s=0.0)
    policy.capacity_per_actor = 100.0
    decisions = [policy.decide(float(t), 2, _lag(0.0, 0, 90 * t)) for t in range(5)]
    assert decisions[-1].code == "load"
    assert "90 records/s would keep 1 actors more than 70% busy (an actor read 100/s with a backlog)" in decisions[-1].reason
    light = _policy(cooldown_s=0.0)
    light.capacity_per_actor = 100.0
    decisions = [light.decide(float(t), 2, _lag(0.0, 0, 60 * t)) for t in range(5)]
    assert decisions[3].kind == "in" and "60 records/s" in decisions[3].reason


# ------------------------------------------------------------------------------------------------ cooldown


def test_no_change_within_the_cooldown_of_the_start_and_of_the_last_change_but_room_is_asked_for_early() -> None:
    policy = _policy(cooldown_s=10.0)
    decisions = [policy.decide(float(t), 1, _lag(5.0, 1_000 * t, 0)) for t in range(11)]
    assert [d.kind for d in decisions] == ["hold"] * 10 + ["out"]
    assert decisions[5].code == "cooldown" and decisions[5].wanted == 2 and "cooldown 5 s left" in decisions[5].reason
    policy.changed(10.0, 2)
    assert policy.cooldown_left_s(12.0) == 8.0
    later = [policy.decide(float(t), 2, _lag(5.0, 1_000 * t, 0)) for t in range(11, 21)]
    assert all(d.kind == "hold" for d in later[:-1]) and later[-1].kind == "out" and later[-1].actors == 4


def test_a_rescale_from_outside_counts_as_a_change() -> None:
    policy = _policy(cooldown_s=5.0)
    for t in range(10):
        policy.decide(float(t), 1, _lag(0.5))
    decision = policy.decide(10.0, 3, _lag(0.5))  # someone ran `rescale(3)`
    assert policy.actors == 3 and policy.changed_at == 10.0 and decision.kind == "hold"


# -------------------------------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(("partitions", "settings", "start", "expected", "why"), [
    (4, {"min_actors": 2}, 1, 2, "1 actors is below min_actors 2"),
    (4, {"max_actors": 3}, 4, 3, "4 actors is above max_actors 3"),
    (4, {"max_actors": 8}, 6, 4, "6 actors is more than the 4 partitions"),
])  # fmt: skip
def test_a_k_outside_the_bounds_is_brought_inside_them_after_the_cooldown(
    partitions: int, settings: dict[str, int], start: int, expected: int, why: str
) -> None:
    policy = _policy(partitions=partitions, cooldown_s=3.0, **settings)
    decisions = [policy.decide(float(t), start, _lag(0.5)) for t in range(4)]
    assert [d.kind for d in decisions[:3]] == ["hold"] * 3 and decisions[0].code == "cooldown"
    assert decisions[3].actors == expected and decisions[3].reason == f"{why}: {start} -> {expected} actors"


def test_unknown_lag_holds_and_starts_the_windows_again() -> None:
    policy = _policy(cooldown_s=0.0)
    lags = [5.0, 5.0, None, 5.0, 5.0, 5.0]
    decisions = [policy.decide(float(t), 1, _lag(s, 100 * t if s else None, 0)) for t, s in enumerate(lags)]
    assert decisions[2].code == "unknown" and "no change on a lag that cannot be seen" in decisions[2].reason
    assert [d.kind for d in decisions] == ["hold"] * 5 + ["out"]  # above again from t=3, 2 s later


# ---------------------------------------------------------------------------------------------------- room


def test_scale_out_goes_as_far_as_the_cluster_has_room_for_and_waits_for_the_rest() -> None:
    waiting = _policy(cooldown_s=0.0)
    decisions = [waiting.decide(float(t), 1, _lag(5.0, 1_000 * t, 0), placeable=0) for t in range(3)]
    assert decisions[-1].code == "room" and (decisions[-1].actors, decisions[-1].wanted) == (1, 2)
    assert "waiting for room for 1 more actors (0 fit now; asked the Ray autoscaler for 2)" in decisions[-1].reason
    partial = _policy(partitions=12, max_actors=12, cooldown_s=0.0)
    decisions = [partial.decide(float(t), 2, _lag(5.0, 1_000 * t, 0), placeable=1) for t in range(3)]
    assert (decisions[-1].kind, decisions[-1].actors, decisions[-1].wanted) == ("out", 3, 4)
    assert "(room for 3 now; asked the Ray autoscaler for 4): 2 -> 3 actors" in decisions[-1].reason
    useless = _policy(partitions=4, cooldown_s=0.0)  # 3 actors of 4 partitions: the busiest still owns 2
    decisions = [useless.decide(float(t), 2, _lag(5.0, 1_000 * t, 0), placeable=1) for t in range(3)]
    assert decisions[-1].code == "room" and decisions[-1].wanted == 4


# ------------------------------------------------------------------------------------------------ flapping


def test_a_lag_swinging_across_the_band_every_tick_moves_nothing() -> None:
    policy = _policy(cooldown_s=0.0)
    kinds = {policy.decide(float(t), 2, _lag(5.0 if t % 2 else 0.0, 100, 0)).kind for t in range(100)}
    assert kinds == {"hold"}


def test_bursts_and_quiet_spells_change_k_no_more_often_than_the_windows_and_cooldown_allow() -> None:
    policy = _policy(cooldown_s=4.0, scale_in_idle_s=3.0)
    # 12 s bursts at 6x one actor's rate, 12 s quiet: a change every few seconds at most, never two within 4 s
    changes, _ = _run(policy, Stream(per_actor=100), lambda t: 600 if t % 24 < 12 else 0, ticks=240)
    assert changes and _spaced(changes, 4.0)
    assert len(changes) <= 240 / 4
    assert all(1 <= after <= 4 for _, _, after, _ in changes)
