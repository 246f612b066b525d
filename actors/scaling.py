"""The controller's autoscaler: reads the lag, asks Ray for room, rescales, reports (``stream.autoscale``).

:class:`Autoscaler` is the controller's hook, called once per supervision tick
(:meth:`Autoscaler.tick`) with the heartbeats the actors answered in that tick,
each carrying its partitions' :class:`~actors.messages.PartitionLag`. It asks
:class:`~actors.autoscale.AutoscalePolicy` (the decision rule, pure) what K to
run, keeps the Ray autoscaler's standing request at the K the lag asks for
(``ray.autoscaler.sdk.request_resources``: one ``{"CPU": stream.actor_num_cpus}``
bundle per actor, so a ``ray up`` cluster adds nodes up to its ``max_workers``
and drops them again once idle after a scale-in; a local Ray only records it),
scales out only as far as the nodes have room for now (the partitions that move
would otherwise wait, released, for an actor that cannot start), and rescales
with the controller's own ``rescale`` (partitions move with their checkpoints).
Every change is logged with its reason and becomes a
:class:`~actors.messages.JobEvent`; the current state is ``JobStatus.autoscale``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import ray

from actors.autoscale import AutoscalePolicy, Decision, JobLag
from actors.messages import ActorHeartbeat, AutoscaleChange, AutoscaleStatus, JobEvent, JobStatus
from configs import Settings

log = logging.getLogger(__name__)

#: Events the controller keeps (the status shows the latest ten).
EVENTS_KEPT = 50


class Scalable(Protocol):
    """What the autoscaler needs of the controller: its actors, its events and its rescale."""

    actors: list[Any]
    events: list[JobEvent]

    async def rescale(self, actors: int) -> JobStatus: ...


def placeable_actors(actor_num_cpus: float) -> int:
    """How many more actors of ``actor_num_cpus`` CPUs the nodes have room for now, each on one node.

    Per node from Ray's state (not a public API); summed over the cluster when that is not available,
    which can overstate the room by one actor per node.
    """
    try:
        from ray._private.state import available_resources_per_node

        per_node = available_resources_per_node()  # type: ignore[no-untyped-call]  # unannotated in ray
        free = [float(resources.get("CPU", 0.0)) for resources in per_node.values()]
    except Exception:  # another Ray version: the cluster's total
        free = [float(ray.available_resources().get("CPU", 0.0))]  # type: ignore[no-untyped-call]
    return sum(int(cpus / actor_num_cpus + 1e-9) for cpus in free)


def request_room(actors: int, actor_num_cpus: float) -> None:
    """Ask the Ray autoscaler to keep room for ``actors`` scoring actors (0: withdraw the request)."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"CPU": actor_num_cpus} for _ in range(actors)])


class Autoscaler:
    """The controller's hook: once per supervision tick, decide and act; the state for the job's status."""

    def __init__(self, settings: Settings, partitions: int) -> None:
        self.settings = settings.stream.autoscale
        self.actor_num_cpus = settings.stream.actor_num_cpus
        self.partitions = partitions
        #: None: autoscaling is off (every call returns at once).
        self.policy = AutoscalePolicy(self.settings, partitions) if self.settings.enabled else None
        self.lag: JobLag | None = None
        self.decision: Decision | None = None
        #: Actors the Ray autoscaler was asked to keep room for (None: nothing asked).
        self.requested: int | None = None
        self.last_change: AutoscaleChange | None = None
        self.changes = 0
        self._logged: tuple[str, int] | None = None

    async def tick(self, job: Scalable, heartbeats: Mapping[int, ActorHeartbeat]) -> None:
        """Read the lag from this tick's heartbeats, decide, ask for room, rescale when decided (never raises:
        the supervision loop goes on whatever happens here)."""
        if self.policy is None:
            return
        try:
            await self._tick(self.policy, job, heartbeats)
        except Exception:
            log.exception("autoscaler: the tick failed; K stays as it is")

    async def _tick(self, policy: AutoscalePolicy, job: Scalable, heartbeats: Mapping[int, ActorHeartbeat]) -> None:
        actors = len(job.actors)
        lag = JobLag.of(self.partitions, {p: lag for beat in heartbeats.values() for p, lag in beat.lags.items()})
        decision = policy.decide(time.monotonic(), actors, lag, placeable_actors(self.actor_num_cpus))
        self.lag, self.decision = lag, decision
        self._request(decision.wanted)
        if decision.actors == actors:
            self._log_hold(job, decision)
            return
        log.warning("autoscaler: %s", decision.reason)
        try:
            await job.rescale(decision.actors)
        except Exception as exc:
            log.exception("autoscaler: rescaling %d -> %d actors failed", actors, decision.actors)
            self._event(job, "autoscale_failed", f"{actors} -> {decision.actors} actors: {exc!r}"[:200], decision)
        else:
            self.changes += 1
            self.last_change = AutoscaleChange(time=time.time(), from_actors=actors, to_actors=decision.actors,
                                               reason=decision.reason)
            kind = "scaled_out" if decision.actors > actors else "scaled_in"
            self._event(job, kind, f"{actors} -> {decision.actors} actors", decision)
        finally:
            policy.changed(time.monotonic(), len(job.actors))  # the cooldown runs from the end of the rescale

    def _log_hold(self, job: Scalable, decision: Decision) -> None:
        """A hold worth knowing (at the maximum, catching up, waiting for room) is logged when it begins;
        waiting for room is an event too."""
        key = (decision.code, decision.wanted)
        if key == self._logged:
            return
        self._logged = key
        if decision.code in ("max", "catching_up", "room"):
            log.info("autoscaler: holding at %d actors: %s", decision.actors, decision.reason)
        if decision.code == "room":
            self._event(job, "autoscale_waiting", f"{decision.actors} -> {decision.wanted} actors", decision)

    @staticmethod
    def _event(job: Scalable, kind: str, detail: str, decision: Decision) -> None:
        job.events.append(JobEvent(time=time.time(), event=kind, actor="controller", detail=detail,
                                   reason=decision.reason))
        del job.events[:-EVENTS_KEPT]

    def _request(self, actors: int) -> None:
        """Keep the Ray autoscaler's standing request at ``actors`` actors (asked again only when it changes)."""
        if actors == self.requested:
            return
        self.requested = actors
        try:
            request_room(actors, self.actor_num_cpus)
        except Exception as exc:  # no autoscaler API on this Ray: the nodes there are all there is
            log.warning("autoscaler: could not ask Ray for room for %d actors (%r); scaling within the nodes "
                        "there are", actors, exc)

    def stop(self) -> None:
        """Withdraw the request for room (the job is draining), so the Ray autoscaler may drop idle nodes."""
        if self.requested is not None:
            self._request(0)

    def status(self, actors: int) -> AutoscaleStatus | None:
        """The state for ``JobStatus.autoscale`` (None when autoscaling is off)."""
        policy = self.policy
        if policy is None:
            return None
        decision, lag = self.decision, self.lag
        return AutoscaleStatus(
            actors=actors,
            min_actors=policy.min_actors,
            max_actors=policy.max_actors,
            lag_s=None if lag is None else lag.seconds,
            lag_records=None if lag is None else lag.records,
            decision="hold" if decision is None else decision.kind,
            reason="no supervision tick yet" if decision is None else decision.reason,
            requested_actors=self.requested,
            cooldown_left_s=round(policy.cooldown_left_s(time.monotonic()), 1),
            last_change=self.last_change,
            changes=self.changes,
        )
