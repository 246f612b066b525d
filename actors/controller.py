"""The controller: starts K scoring actors, assigns partitions, supervises, rescales, drains.

Partitions are assigned explicitly (actor k owns the partitions p with
p mod K == k), never by consumer-group rebalancing. Every second the
controller calls :meth:`ScoringActor.ensure` on each actor with its current
assignment: a healthy actor answers at once; one Ray restarted (``max_restarts``)
restores its partitions from their checkpoints and resumes.

Rescaling moves partitions with their state: each partition that changes
owner is first released by its old actor (in-flight batch finished, final
checkpoint written), then taken by its new one (restored from that checkpoint).
Nothing is re-keyed and nothing is scored twice.

With ``stream.autoscale`` on, each supervision tick ends with one call into
:class:`~actors.scaling.Autoscaler`, which reads the partitions' lags from the
tick's heartbeats and may call :meth:`Controller.rescale`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import ray
from ray.exceptions import RayActorError, RayError

from actors.messages import ActorHeartbeat, ActorStatus, DrainedJob, JobEvent, JobStatus, job_status
from actors.scaling import Autoscaler
from actors.scoring import ScoringActor
from configs import RuleSettings, Settings

log = logging.getLogger(__name__)

#: Namespace in which the controller is registered (``fraudstream status`` finds it there).
NAMESPACE = "fraudstream"
SUPERVISE_INTERVAL_S = 1.0


def controller_name(settings: Settings) -> str:
    """The controller's Ray actor name: one job per transactions topic."""
    return f"fraudstream-controller-{settings.kafka.topics.transactions.name}"


def assignment(partitions: int, actors: int) -> list[list[int]]:
    """Partitions of each actor: actor k owns {p : p mod K == k}.

    >>> assignment(4, 2)
    [[0, 2], [1, 3]]
    >>> assignment(3, 4)
    [[0], [1], [2], []]
    """
    return [[p for p in range(partitions) if p % actors == k] for k in range(actors)]


@ray.remote(num_cpus=0)
class Controller:
    """Owns the scoring actors of one job."""

    def __init__(self, settings: Settings, bootstrap_servers: str | None) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.partitions = settings.kafka.topics.transactions.partitions
        self.stage_partitions = settings.kafka.topics.terminal_deltas.partitions
        self.actors: list[Any] = []
        self.names: list[str] = []
        self.plan: list[list[int]] = []
        self.stage_plan: list[list[int]] = []
        self.restarts: list[int] = []
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._generation = 0
        #: Each actor's latest answer to the supervision tick.
        self.last_status: dict[int, ActorHeartbeat] = {}
        self.events: list[JobEvent] = []
        #: Rules reloaded while running (None: the config's); restarted and new actors get them too.
        self.rules: tuple[RuleSettings, ...] | None = None
        #: Lag-driven autoscaling (stream.autoscale): called once per supervision tick.
        self.autoscaler = Autoscaler(settings, self.partitions)

    def _new_actor(self, index: int) -> Any:
        stream = self.settings.stream
        name = f"scoring-{self._generation}-{index}"
        actor = ScoringActor.options(  # type: ignore[attr-defined]
            num_cpus=stream.actor_num_cpus,
            max_restarts=stream.max_restarts,
            max_task_retries=0,
        ).remote(self.settings, self.bootstrap_servers, name)
        return actor, name

    async def start(self, actors: int | None = None) -> JobStatus:
        """Start K actors with their partitions and the supervision loop."""
        count = actors or self.settings.stream.actors
        async with self._lock:
            self.plan = assignment(self.partitions, count)
            self.stage_plan = assignment(self.stage_partitions, count)
            for index in range(count):
                actor, name = self._new_actor(index)
                self.actors.append(actor)
                self.names.append(name)
                self.restarts.append(0)
            await self._ensure_all()
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        return await self.status()

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            heartbeats: dict[int, ActorHeartbeat] = {}
            async with self._lock:
                for index, actor in enumerate(self.actors):
                    try:
                        status: ActorHeartbeat = await asyncio.wait_for(
                            actor.ensure.remote(self.plan[index], self.stage_plan[index], self.rules), timeout=60
                        )
                    except (TimeoutError, RayActorError, RayError) as exc:
                        self._event("actor_unavailable", index, repr(exc)[:200])
                        continue
                    previous = self.last_status.get(index)
                    if previous is not None and previous.pid != status.pid:
                        self.restarts[index] += 1
                        self._event("actor_restarted", index, f"pid {previous.pid} -> {status.pid}")
                    self.last_status[index] = status
                    heartbeats[index] = status
            await self.autoscaler.tick(self, heartbeats)  # may rescale (outside the lock: rescale takes it)

    def _event(self, kind: str, index: int, detail: str) -> None:
        self.events.append(JobEvent(time=time.time(), event=kind, actor=self.names[index], detail=detail))
        del self.events[:-50]

    async def rescale(self, actors: int) -> JobStatus:
        """Change K while running; each moving partition travels with its checkpointed state."""
        if actors < 1:
            raise ValueError("actors: give at least 1")
        async with self._lock:
            new_plan = assignment(self.partitions, actors)
            new_stage_plan = assignment(self.stage_partitions, actors)
            # 1. old owners let go of partitions that move (final checkpoint each)
            releases = []
            for index, actor in enumerate(self.actors):
                keep = new_plan[index] if index < actors else []
                keep_stages = new_stage_plan[index] if index < actors else []
                leaving = [p for p in self.plan[index] if p not in keep]
                leaving_stages = [d for d in self.stage_plan[index] if d not in keep_stages]
                if leaving or leaving_stages:
                    releases.append(actor.release.remote(leaving, leaving_stages))
            await asyncio.gather(*releases)
            # 2. retire surplus actors, start new ones
            for index in range(actors, len(self.actors)):
                await self.actors[index].drain.remote()
                ray.kill(self.actors[index], no_restart=True)
            del self.actors[actors:], self.names[actors:], self.restarts[actors:]
            self._generation += 1
            for index in range(len(self.actors), actors):
                actor, name = self._new_actor(index)
                self.actors.append(actor)
                self.names.append(name)
                self.restarts.append(0)
            self.plan, self.stage_plan = new_plan, new_stage_plan
            self.last_status.clear()
            # 3. new owners restore and resume
            await self._ensure_all()
        return await self.status()

    async def _ensure_all(self) -> None:
        await asyncio.gather(
            *(actor.ensure.remote(self.plan[i], self.stage_plan[i], self.rules) for i, actor in enumerate(self.actors))
        )

    async def reload_rules(self, rules: tuple[RuleSettings, ...]) -> list[str]:
        """Every actor decides with ``rules`` from its next micro-batch on; their version per actor.

        A rule set the actors refuse (ConfigError) leaves every actor on its old rules.
        """
        async with self._lock:
            versions = await asyncio.gather(*(actor.set_rules.remote(rules) for actor in self.actors))
            self.rules = rules
        self._event("rules_reloaded", 0, f"{len(rules)} rules, {versions[0] if versions else '-'}")
        return list(versions)

    async def status(self) -> JobStatus:
        """Per-actor and per-partition status (positions, lag, rates, checkpoint age)."""
        members = list(zip(self.actors, self.names, self.restarts, strict=True))  # a rescale may change them meanwhile
        results = await asyncio.gather(*(self._actor_status(*member) for member in members))
        return job_status(list(results), plan=self.plan, stage_plan=self.stage_plan, events=self.events[-10:],
                          now=time.time(), autoscale=self.autoscaler.status(len(self.actors)))

    async def _actor_status(self, actor: Any, name: str, restarts: int) -> ActorStatus:
        """The actor's status with its restarts; one that does not answer in time: its name, error and restarts."""
        try:
            status: ActorStatus = await asyncio.wait_for(actor.status.remote(), timeout=10)
        except (TimeoutError, RayActorError, RayError) as exc:
            return ActorStatus(actor=name, error=repr(exc)[:200], restarts=restarts)
        return msgspec.structs.replace(status, restarts=restarts)

    async def call_all(self, method: str) -> list[Any]:
        """Call a no-argument method on every actor (tests and benchmarks: digests, latency reset)."""
        return list(await asyncio.gather(*(getattr(a, method).remote() for a in self.actors)))

    def actor_handles(self) -> list[Any]:
        return list(self.actors)

    async def drain(self) -> DrainedJob:
        """Stop supervising, let every actor finish its batch and checkpoint, then stop them.

        Each actor's final status; one whose drain failed: its name, the error and its restarts.
        """
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        self.autoscaler.stop()
        async with self._lock:
            final = await asyncio.gather(*(a.drain.remote() for a in self.actors), return_exceptions=True)
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        return DrainedJob(actors=[
            msgspec.structs.replace(f, restarts=restarts) if isinstance(f, ActorStatus)
            else ActorStatus(actor=name, error=repr(f), restarts=restarts)
            for f, name, restarts in zip(final, self.names, self.restarts, strict=True)
        ])
