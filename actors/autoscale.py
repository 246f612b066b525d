"""How many scoring actors the job needs, from its lag: the autoscaler's decision rule (no Ray, no clock).

At every supervision tick (one second) the controller hands :class:`AutoscalePolicy`
the time, the number of actors K and the job's lag (:class:`JobLag`, from every
partition's :class:`~actors.messages.PartitionLag`); the policy answers with a
:class:`Decision`: the K to run now, the K the lag asks for, and why.
:mod:`actors.scaling` does the rest (asks Ray for room, rescales, reports).

The lag in seconds is how long the oldest transaction not scored yet has
waited (now - its Kafka timestamp), the most of any partition; in records, the
records behind, summed. The rule (``stream.autoscale``):

- **out**: the lag stayed above ``scale_out_lag_s`` at every tick for
  ``scale_out_lag_s`` since it rose (one slow poll, a partition just moved, a
  record arriving after a quiet spell do not last that long), and the backlog
  is not about to go by itself: at the pace the records behind fell over that
  span, they would not be gone within another ``scale_out_lag_s``. K doubles,
  to the smallest :func:`useful_sizes` size of at least 2K: a change moves
  partitions (each pauses for a checkpoint and a restore) and a new node takes
  minutes to join, so few large steps; yet jumping to the maximum for a short
  burst would ask for every node at once. The maximum is reached in log2 steps.
- **in**: the lag stayed near 0 (at most :data:`IDLE_LAG_S`, or half
  ``scale_out_lag_s`` when that is less) at every tick for ``scale_in_idle_s``.
  K steps down one useful size, the smallest rise of each actor's share; and
  only when the records read per second over that time would keep the fewer
  actors at most :data:`SCALE_IN_HEADROOM` as busy as the job was the last time
  a backlog kept it saturated (records per second per actor then). Without it,
  a load two actors carry with ease would make them idle, one actor would lag,
  two would be idle again: flapping for as long as the load lasts.
- never within ``cooldown_s`` of the last change (the job's start counts),
  always within [min_actors, max_actors] and never more actors than
  partitions; a K outside the bounds is brought inside them after the cooldown.
- no change on a lag that cannot be seen (a partition without a fetch since it
  was assigned, Kafka not answering, an actor not answering): the windows
  start again.

Against flapping, besides the load check: the band between "near 0" and
``scale_out_lag_s`` moves nothing; both windows start again at every change and
whenever their condition breaks for one tick; the cooldown spaces changes.

>>> from configs import AutoscaleSettings
>>> policy = AutoscalePolicy(AutoscaleSettings(enabled=True, max_actors=4, scale_out_lag_s=2, cooldown_s=2,
...                                            scale_in_idle_s=3), partitions=4)
>>> actors = 1
>>> for t in range(8):  # one tick a second, the backlog growing by 1,000 records a tick
...     decision = policy.decide(t, actors, JobLag(seconds=5.0, records=1000 * (t + 1), position=500 * t))
...     if decision.actors != actors:
...         print(t, decision.reason)
...         actors = decision.actors
2 lag 5.0 s above scale_out_lag_s 2 s for 2 s; 3,000 records behind, not falling: 1 -> 2 actors
5 lag 5.0 s above scale_out_lag_s 2 s for 2 s; 6,000 records behind, not falling: 2 -> 4 actors
>>> policy.decide(8, actors, JobLag(seconds=5.0, records=9000, position=4000)).reason
'lag 5.0 s above scale_out_lag_s 2 s for 2 s; 9,000 records behind, already at max_actors 4'
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from actors.messages import PartitionLag
from configs import AutoscaleSettings

#: A lag at most this long (s) counts as idle (capped at half of scale_out_lag_s).
IDLE_LAG_S = 1.0
#: After a scale-in the actors may be at most this busy, as a share of what they read per second with a backlog.
SCALE_IN_HEADROOM = 0.7


def useful_sizes(partitions: int) -> list[int]:
    """The numbers of actors that each lower the busiest actor's share of partitions (actor k owns the
    partitions p mod K == k, so the busiest owns ceil(P / K)); any other K has the busiest share of the
    next smaller one, with more actors.

    >>> useful_sizes(4), useful_sizes(12)
    ([1, 2, 4], [1, 2, 3, 4, 6, 12])
    """
    return sorted({-(-partitions // share) for share in range(1, partitions + 1)})


@dataclass(frozen=True)
class JobLag:
    """The job's lag at one tick: the longest any partition's oldest unscored transaction has waited (s),
    the records behind and the next offsets, summed (``position``: its rise is what the job read); None
    when any partition's is unknown (``unknown`` says why)."""

    seconds: float | None
    records: int | None
    position: int | None = None
    unknown: str | None = None

    @classmethod
    def of(cls, partitions: int, lags: Mapping[int, PartitionLag]) -> JobLag:
        """From the lags the actors reported this tick (every partition must be there).

        >>> JobLag.of(2, {0: PartitionLag(records=10, seconds=3.5, next_offset=90), 1: PartitionLag(records=0,
        ...                                                                                seconds=0.0, next_offset=7)})
        JobLag(seconds=3.5, records=10, position=97, unknown=None)
        >>> JobLag.of(3, {0: PartitionLag(records=10, seconds=None), 1: PartitionLag()}).unknown
        'partitions [0, 1] have no lag yet (no fetch since they were assigned, or Kafka not answering); no answer for [2]'
        """
        missing = [p for p in range(partitions) if p not in lags]
        present = [lags[p] for p in range(partitions) if p in lags]
        blind = [p for p in range(partitions) if p in lags and lags[p].seconds is None]
        problems = []
        if blind:
            problems.append(f"partitions {blind} have no lag yet (no fetch since they were assigned, or Kafka "
                            "not answering)")
        if missing:
            problems.append(f"no answer for {missing}")
        records = [lag.records for lag in present if lag.records is not None]
        return cls(
            seconds=None if problems else max((lag.seconds or 0.0 for lag in present), default=0.0),
            records=sum(records) if not missing and len(records) == len(present) else None,
            position=None if missing else sum(lag.next_offset for lag in present),
            unknown="; ".join(problems) or None,
        )


#: The rule that decided (a hold's code says what it waits for).
Code = Literal["out", "in", "bounds", "cooldown", "rising", "max", "catching_up", "room", "idling", "min", "load",
               "between", "unknown"]


@dataclass(frozen=True)
class Decision:
    """What to do at one tick: run ``actors`` now (the current K: hold); ``wanted`` is the K the lag asks for
    (more than ``actors`` while waiting for room or a cooldown); ``code`` names the rule that decided."""

    kind: Literal["out", "in", "hold"]
    actors: int
    wanted: int
    reason: str
    code: Code


class AutoscalePolicy:
    """The decision rule of the module docstring, with what it remembers between ticks: the last change,
    since when the lag has been above scale_out_lag_s (and the records behind at each tick since), since
    when it has been near 0, the job's position at each recent tick, and what an actor read per second
    the last time a backlog kept the job saturated."""

    def __init__(self, settings: AutoscaleSettings, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions
        self.min_actors = min(settings.min_actors, partitions)
        self.max_actors = max(self.min_actors, min(settings.max_actors, partitions))
        self.idle_lag_s = min(IDLE_LAG_S, settings.scale_out_lag_s / 2)
        self.sizes = useful_sizes(partitions)
        #: K as last seen, and when it last changed (None: never seen).
        self.actors: int | None = None
        self.changed_at = -math.inf
        #: Since when the lag has been above scale_out_lag_s, and (time, records behind) of those ticks.
        self.over_since: float | None = None
        self.behind: deque[tuple[float, int | None]] = deque()
        #: Since when the lag has been near 0.
        self.idle_since: float | None = None
        #: (time, position) of the ticks since the last change, as far back as the longer window.
        self.positions: deque[tuple[float, int]] = deque()
        #: Records per second one actor read while a backlog kept the job saturated (None: never seen).
        self.capacity_per_actor: float | None = None

    # ------------------------------------------------------------------ memory
    def changed(self, now: float, actors: int) -> None:
        """K is ``actors`` from ``now`` on (a change made, the job's start, a rescale from outside): the
        cooldown starts and every window starts again."""
        self.actors = actors
        self.changed_at = now
        self.over_since = None
        self.behind.clear()
        self.idle_since = None
        self.positions.clear()

    def cooldown_left_s(self, now: float) -> float:
        """Seconds until a change may be made."""
        return max(0.0, self.changed_at + self.settings.cooldown_s - now)

    def _observe(self, now: float, lag: JobLag) -> None:
        settings = self.settings
        window = settings.scale_out_lag_s
        if lag.position is not None:
            self.positions.append((now, lag.position))
            horizon = now - max(window, settings.scale_in_idle_s)
            while len(self.positions) > 2 and self.positions[1][0] <= horizon:
                self.positions.popleft()
        if lag.seconds is None or lag.seconds <= window:
            self.over_since = None
            self.behind.clear()
        else:
            if self.over_since is None:
                self.over_since = now
            self.behind.append((now, lag.records))
            while len(self.behind) > 2 and self.behind[1][0] <= now - window:
                self.behind.popleft()  # keep the newest tick at or before the window's start
        if lag.seconds is None or lag.seconds > self.idle_lag_s:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now

    def catch_up_s(self) -> float | None:
        """Seconds until the records behind are gone at the pace they fell over the window (None: they did
        not fall, or are unknown)."""
        (first_t, first), (last_t, last) = self.behind[0], self.behind[-1]
        if first is None or last is None or last_t <= first_t or last >= first:
            return None
        return last / ((first - last) / (last_t - first_t))

    def read_per_s(self, since: float) -> float | None:
        """Records the job read per second from ``since`` to the latest tick (None: fewer than two ticks, or
        the position went back, as when a partition resumed from an older checkpoint)."""
        samples = [(t, position) for t, position in self.positions if t >= since]
        if len(samples) < 2 or samples[-1][1] < samples[0][1]:
            return None
        (first_t, first), (last_t, last) = samples[0], samples[-1]
        return (last - first) / (last_t - first_t)

    # ----------------------------------------------------------------- sizes
    def step_up(self, actors: int) -> int:
        """The smallest useful size of at least 2K, at most max_actors (and the partitions)."""
        return min(next((size for size in self.sizes if size >= 2 * actors), self.max_actors), self.max_actors)

    def step_down(self, actors: int) -> int:
        """The next smaller useful size, at least min_actors."""
        return max(max((size for size in self.sizes if size < actors), default=1), self.min_actors)

    def _largest_fitting(self, actors: int, target: int, placeable: int) -> int:
        """The largest useful size (or ``target``) above ``actors`` with room for its new actors; ``actors`` if none."""
        room = actors + placeable
        fitting = [size for size in (*self.sizes, target) if actors < size <= min(target, room)]
        return max(fitting, default=actors)

    # -------------------------------------------------------------- decision
    def decide(self, now: float, actors: int, lag: JobLag, placeable: int | None = None) -> Decision:
        """What to run at ``now`` (seconds, monotonic) with ``actors`` running and this lag; ``placeable``:
        how many more actors the cluster has room for now (None: no limit known)."""
        if actors != self.actors:
            self.changed(now, actors)  # the start, or a rescale the autoscaler did not make
        self._observe(now, lag)
        settings = self.settings
        lo, hi = self.min_actors, self.max_actors
        cooldown = self.cooldown_left_s(now)
        wait = f"; cooldown {cooldown:.0f} s left"

        def hold(code: Code, reason: str, wanted: int = actors) -> Decision:
            return Decision("hold", actors, wanted, reason, code)

        if not lo <= actors <= hi:
            target = lo if actors < lo else hi
            why = (f"{actors} actors is below min_actors {lo}" if actors < lo else
                   f"{actors} actors is above max_actors {hi}" if hi == settings.max_actors else
                   f"{actors} actors is more than the {self.partitions} partitions")
            if cooldown > 0:
                return hold("cooldown", why + wait, target)
            return self._move(actors, target, why, placeable, "bounds")
        if lag.seconds is None:
            return hold("unknown", f"lag unknown ({lag.unknown}): no change on a lag that cannot be seen")
        behind = "" if lag.records is None else f"; {lag.records:,} records behind"
        if self.over_since is not None:
            return self._over(now, actors, lag, behind, placeable, cooldown)
        if self.idle_since is not None:
            return self._idle(now, actors, cooldown)
        return hold("between", f"lag {lag.seconds:.1f} s: above idle ({self.idle_lag_s:g} s), not above "
                               f"scale_out_lag_s ({settings.scale_out_lag_s:g} s){behind}")

    def _over(self, now: float, actors: int, lag: JobLag, behind: str, placeable: int | None,
              cooldown: float) -> Decision:
        """The lag is above scale_out_lag_s: out once it stayed there long enough and is not about to go."""
        assert self.over_since is not None and lag.seconds is not None
        window = self.settings.scale_out_lag_s
        above = now - self.over_since
        head = f"lag {lag.seconds:.1f} s above scale_out_lag_s {window:g} s for {above:.0f} s"
        if above < window or len(self.behind) < 2:
            return Decision("hold", actors, actors, f"{head} (of {window:g} s){behind}", "rising")
        read = self.read_per_s(now - window)
        if read:  # saturated for a whole window: what an actor reads per second with a backlog
            self.capacity_per_actor = read / actors
        if actors >= self.max_actors:
            limit = (f"max_actors {self.max_actors}" if self.max_actors == self.settings.max_actors
                     else f"the {self.partitions} partitions")
            return Decision("hold", actors, actors, f"{head}{behind}, already at {limit}", "max")
        eta = self.catch_up_s()
        if eta is not None and eta <= window:
            return Decision("hold", actors, actors, f"{head}{behind}, falling: gone in ~{eta:.0f} s at this pace",
                            "catching_up")
        pace = ", not falling" if eta is None else f", gone in ~{eta:.0f} s at this pace"
        target = self.step_up(actors)
        if cooldown > 0:
            return Decision("hold", actors, target, f"{head}{behind}{pace}; cooldown {cooldown:.0f} s left",
                            "cooldown")
        return self._move(actors, target, f"{head}{behind}{pace}", placeable, "out")

    def _idle(self, now: float, actors: int, cooldown: float) -> Decision:
        """The lag is near 0: one step in once it stayed there long enough and the load fits fewer actors."""
        assert self.idle_since is not None
        settings = self.settings
        idle = now - self.idle_since
        head = f"idle (lag at most {self.idle_lag_s:g} s) for {idle:.0f} s"
        if idle < settings.scale_in_idle_s:
            return Decision("hold", actors, actors, f"{head} (of {settings.scale_in_idle_s:g} s)", "idling")
        if actors <= self.min_actors:
            return Decision("hold", actors, actors, f"{head}, already at min_actors {self.min_actors}", "min")
        target = self.step_down(actors)
        read, capacity = self.read_per_s(now - settings.scale_in_idle_s), self.capacity_per_actor
        if read is not None and capacity is not None and read > SCALE_IN_HEADROOM * capacity * target:
            return Decision("hold", actors, actors, (
                f"{head}, but {read:,.0f} records/s would keep {target} actors more than {SCALE_IN_HEADROOM:.0%} "
                f"busy (an actor read {capacity:,.0f}/s with a backlog)"), "load")
        load = "" if read is None else f", {read:,.0f} records/s"
        if cooldown > 0:
            return Decision("hold", actors, actors, f"{head}{load}; cooldown {cooldown:.0f} s left", "cooldown")
        return self._move(actors, target, f"{head}{load}", None, "in")

    def _move(self, actors: int, target: int, why: str, placeable: int | None,
              code: Literal["out", "in", "bounds"]) -> Decision:
        """Change to ``target``, or as far towards it as the cluster has room for now (or wait for room)."""
        now_to = target
        if target > actors and placeable is not None:
            now_to = self._largest_fitting(actors, target, placeable)
            if now_to == actors:
                return Decision("hold", actors, target, f"{why}; waiting for room for {target - actors} more "
                                f"actors ({placeable} fit now; asked the Ray autoscaler for {target})", "room")
            if now_to < target:
                why += f" (room for {now_to} now; asked the Ray autoscaler for {target})"
        kind: Literal["out", "in"] = "out" if now_to > actors else "in"
        return Decision(kind, now_to, target, f"{why}: {actors} -> {now_to} actors", code)
