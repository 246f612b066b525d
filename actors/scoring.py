"""The scoring actor: a Ray actor (one process) running a :class:`~actors.worker.ScoringWorker`.

Ray places, supervises and restarts it; every call on it is control plane
(assign partitions, status, drain), never per event (DESIGN.md decision 1).
After a restart Ray runs ``__init__`` again with the original arguments; the
controller's next supervision tick calls :meth:`ScoringActor.ensure` with the
current assignment, which restores the partitions from their checkpoints and
resumes polling.
"""

from __future__ import annotations

import msgspec
import ray

from actors.messages import ActorHeartbeat, ActorStatus
from actors.worker import ScoringWorker
from configs import RuleSettings, Settings


@ray.remote
class ScoringActor:
    """Owns a set of partitions of ``transactions``/``labels`` (assigned by the controller)."""

    def __init__(self, settings: Settings, bootstrap_servers: str | None, name: str) -> None:
        self.worker = ScoringWorker(settings, bootstrap_servers, name)
        context = ray.get_runtime_context()
        self.restarted = bool(context.was_current_actor_reconstructed)

    async def ensure(self, partitions: list[int], stage_partitions: list[int],
                     rules: tuple[RuleSettings, ...] | None = None) -> ActorHeartbeat:
        """Own exactly these partitions (transactions/labels; terminal.deltas) and be polling them, deciding
        with ``rules`` when given (a reload the controller holds; idempotent); returns its heartbeat (with
        each partition's lag, which the autoscaler reads)."""
        await self.worker.start()
        if rules is not None:
            self.worker.set_rules(rules)
        if sorted(partitions) != sorted(self.worker.processors) or sorted(stage_partitions) != sorted(self.worker.stages):
            await self.worker.assign(partitions, stage_partitions)
        self.worker.run_in_background()
        return ActorHeartbeat(pid=self.worker.status_pid(), restarted=self.restarted, running=self.worker.running,
                              error=self.worker.error, lags=self.worker.lags())

    async def release(self, partitions: list[int], stage_partitions: list[int]) -> ActorStatus:
        """Stop owning these partitions after a final checkpoint (for a move to another actor)."""
        keep = [p for p in self.worker.processors if p not in set(partitions)]
        keep_stages = [d for d in self.worker.stages if d not in set(stage_partitions)]
        await self.worker.assign(keep, keep_stages)
        return self.status()

    def set_rules(self, rules: tuple[RuleSettings, ...]) -> str:
        """Reload the decision rules (between micro-batches); their version. ConfigError keeps the old ones."""
        return self.worker.set_rules(rules)

    async def online_snapshots(self) -> dict[int, bytes]:
        """Each owned partition's online classifier (between micro-batches)."""
        return await self.worker.online_snapshots()

    def terminal_stats(self, terminal_id: str, event_time_ms: int) -> tuple[int, int]:
        """What this actor's broadcast table answers for a terminal at a time (tests compare actors)."""
        stats: tuple[int, int] = self.worker.broadcast.table.stats(terminal_id, event_time_ms)
        return stats

    async def checkpoint(self) -> ActorStatus:
        """Checkpoint every owned partition now."""
        await self.worker.checkpoint_all()
        return self.status()

    def status(self) -> ActorStatus:
        """The worker's status, with whether Ray restarted this actor and the node it runs on."""
        node: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]  # unannotated in ray
        return msgspec.structs.replace(self.worker.status(), restarted=self.restarted, node=node,
                                       node_id=ray.get_runtime_context().get_node_id())

    def reset_latency(self) -> None:
        self.worker.reset_latency()

    def latency_samples(self) -> list[float]:
        """Per-event ingest -> acknowledged latencies (ms) since the last reset."""
        return self.worker.latency_samples()

    def entity_digests(self) -> dict[int, str]:
        return self.worker.entity_digests()

    async def drain(self) -> ActorStatus:
        """Finish the in-flight batch, checkpoint every partition, disconnect."""
        await self.worker.stop()
        return self.status()
