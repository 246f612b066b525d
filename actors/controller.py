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

Placement: ``stream.placement: spread`` starts each actor on another node that
has room (Ray's SPREAD strategy), so a lost node takes few partitions with it;
Ray restarts the actors it held on the surviving nodes, where ``ensure``
restores their partitions (and terminal.deltas partitions) from their checkpoints.

The controller itself is restartable (``stream.max_restarts``). Ray ties an
actor to its owner's process, so the scoring actors die with the controller's
process: a restarted controller replaces them. What it needs for that (names,
plan, rules, restarts) it keeps in a :class:`ControllerRecord` in Ray's GCS
key-value store, written at every change; on restart it waits until Ray has
removed the old actors, starts new ones under the same names (so exactly-once
transactional ids fence anything the old ones left open) and the same plan, and
they restore from the checkpoints, as after an actor restart: nothing is scored
twice beyond what the checkpoints had not covered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import msgspec
import ray
from ray.exceptions import RayActorError, RayError
from ray.experimental import internal_kv

from actors.messages import (
    ActorHeartbeat,
    ActorStatus,
    ControllerStatus,
    DrainedJob,
    JobEvent,
    JobStatus,
    job_status,
)
from actors.scaling import Autoscaler
from actors.scoring import ScoringActor
from configs import RuleSettings, Settings

log = logging.getLogger(__name__)

#: Namespace in which the controller is registered (``fraudstream status`` finds it there).
NAMESPACE = "fraudstream"
SUPERVISE_INTERVAL_S = 1.0
#: Longest a (restarted) controller waits for Ray to remove a scoring actor of the same name before starting its own.
NAME_FREE_TIMEOUT_S = 60.0


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


def ray_actor_name(settings: Settings, name: str) -> str:
    """A scoring actor's Ray name (in :data:`NAMESPACE`): unique per job, e.g. ``fraudstream-transactions-scoring-0-1``."""
    return f"fraudstream-{settings.kafka.topics.transactions.name}-{name}"


class ControllerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a restarted controller needs to replace its scoring actors (kept in Ray's GCS key-value store)."""

    generation: int
    names: list[str]
    plan: list[list[int]]
    stage_plan: list[list[int]]
    rules: tuple[RuleSettings, ...] | None = None
    restarts: list[int]
    #: How often Ray restarted the controller.
    controller_restarts: int = 0


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
        #: How often Ray restarted this controller (from its record, once resumed).
        self.controller_restarts = 0
        self._drained = False
        self._created_at = time.monotonic()
        context = ray.get_runtime_context()
        if context.was_current_actor_reconstructed:
            # Ray restarted this controller: its scoring actors died with its old process. Replace them now, not at
            # the driver's next call (a call to itself runs once __init__ has returned).
            self._resuming = context.current_actor.resume.remote()
        else:  # a record left by a job of this topic that ended without draining is not this job's
            internal_kv._internal_kv_del(self._record_key(), namespace=NAMESPACE)

    async def _new_actor(self, index: int, name: str | None = None) -> tuple[Any, str]:
        stream = self.settings.stream
        name = name or f"scoring-{self._generation}-{index}"
        ray_name = ray_actor_name(self.settings, name)
        await self._wait_until_name_free(ray_name)
        actor = ScoringActor.options(  # type: ignore[attr-defined]
            name=ray_name,
            namespace=NAMESPACE,
            num_cpus=stream.actor_num_cpus,
            max_restarts=stream.max_restarts,
            max_task_retries=0,
            scheduling_strategy="SPREAD" if stream.placement == "spread" else "DEFAULT",
        ).remote(self.settings, self.bootstrap_servers, name)
        return actor, name

    @staticmethod
    async def _wait_until_name_free(ray_name: str) -> None:
        """Until Ray has removed an actor of this name (one of a controller that died, being torn down)."""
        deadline = time.monotonic() + NAME_FREE_TIMEOUT_S
        while True:
            try:
                ray.get_actor(ray_name, namespace=NAMESPACE)
            except ValueError:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"a Ray actor named {ray_name!r} (namespace {NAMESPACE!r}) is still alive after "
                    f"{NAME_FREE_TIMEOUT_S:.0f} s: another job scores the same transactions topic; stop it first"
                )
            await asyncio.sleep(0.1)

    async def start(self, actors: int | None = None) -> JobStatus:
        """Start K actors with their partitions and the supervision loop (once: again, it returns the status)."""
        count = actors or self.settings.stream.actors
        async with self._lock:
            if not self.plan:  # not started yet, nor resumed after a restart (Ray retries a start the restart cut off)
                self.plan = assignment(self.partitions, count)
                self.stage_plan = assignment(self.stage_partitions, count)
                for index in range(count):
                    actor, name = await self._new_actor(index)
                    self.actors.append(actor)
                    self.names.append(name)
                    self.restarts.append(0)
                self._save_record()
                await self._ensure_all()
        self._start_supervisor()
        return await self.status()

    def _start_supervisor(self) -> None:
        if self._supervisor is None and not self._drained:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    # ------------------------------------------------------------------ restarts of the controller
    def _record_key(self) -> str:
        return f"{controller_name(self.settings)}/record"

    def _save_record(self) -> None:
        """Keep what a restarted controller needs in Ray's GCS key-value store (survives any node but the head)."""
        record = ControllerRecord(generation=self._generation, names=list(self.names), plan=self.plan,
                                  stage_plan=self.stage_plan, rules=self.rules, restarts=list(self.restarts),
                                  controller_restarts=self.controller_restarts)  # fmt: skip
        internal_kv._internal_kv_put(self._record_key(), msgspec.json.encode(record), namespace=NAMESPACE)

    def _load_record(self) -> ControllerRecord | None:
        data = internal_kv._internal_kv_get(self._record_key(), namespace=NAMESPACE)
        return None if data is None else msgspec.json.decode(data, type=ControllerRecord)

    async def resume(self) -> JobStatus:
        """After Ray restarted this controller: new scoring actors under the recorded names, with the recorded
        plan and rules, restored from their partitions' checkpoints; then supervision again. Idempotent."""
        async with self._lock:
            record = None if self.plan or self._drained else self._load_record()
            if record is not None:  # None: started already, drained, or it died before its first start finished
                self._generation, self.rules = record.generation, record.rules
                self.plan, self.stage_plan = record.plan, record.stage_plan
                self.controller_restarts = record.controller_restarts + 1
                started = time.monotonic()
                for index, (name, restarts) in enumerate(zip(record.names, record.restarts, strict=True)):
                    actor, _ = await self._new_actor(index, name)
                    self.actors.append(actor)
                    self.names.append(name)
                    self.restarts.append(restarts + 1)  # each was replaced
                created = time.monotonic()
                self._save_record()
                await self._ensure_all()
                self.events.append(JobEvent(
                    time=time.time(), event="controller_restarted", actor="controller",
                    detail=f"restart {self.controller_restarts}: {len(self.names)} scoring actors replaced, restored "
                           f"and running {time.monotonic() - self._created_at:.1f} s after the controller came back "
                           f"(resume began after {started - self._created_at:.1f} s; the old actors' names were "
                           f"free {created - started:.1f} s into it)",
                ))  # fmt: skip
        if record is not None:
            self._start_supervisor()
        return await self.status()

    def whereabouts(self) -> ControllerStatus:
        """The controller's process, node and restarts."""
        context = ray.get_runtime_context()
        node: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]  # unannotated in ray
        return ControllerStatus(pid=os.getpid(), node=node, node_id=context.get_node_id(),
                                restarts=self.controller_restarts)

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
                actor, name = await self._new_actor(index)
                self.actors.append(actor)
                self.names.append(name)
                self.restarts.append(0)
            self.plan, self.stage_plan = new_plan, new_stage_plan
            self._save_record()
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
            if self.plan:
                self._save_record()
        self._event("rules_reloaded", 0, f"{len(rules)} rules, {versions[0] if versions else '-'}")
        return list(versions)

    async def status(self) -> JobStatus:
        """Per-actor and per-partition status (positions, lag, rates, checkpoint age)."""
        members = list(zip(self.actors, self.names, self.restarts, strict=True))  # a rescale may change them meanwhile
        results = await asyncio.gather(*(self._actor_status(*member) for member in members))
        return job_status(list(results), plan=self.plan, stage_plan=self.stage_plan, events=self.events[-10:],
                          now=time.time(), autoscale=self.autoscaler.status(len(self.actors)),
                          controller=self.whereabouts())

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
        self._drained = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        self.autoscaler.stop()
        async with self._lock:
            final = await asyncio.gather(*(a.drain.remote() for a in self.actors), return_exceptions=True)
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            internal_kv._internal_kv_del(self._record_key(), namespace=NAMESPACE)
        return DrainedJob(actors=[
            msgspec.structs.replace(f, restarts=restarts) if isinstance(f, ActorStatus)
            else ActorStatus(actor=name, error=repr(f), restarts=restarts)
            for f, name, restarts in zip(final, self.names, self.restarts, strict=True)
        ])
