"""One scoring actor's worker: consume, score and checkpoint the partitions it owns (one asyncio task, one process).

A :class:`ScoringWorker` owns a set of partition numbers of ``transactions``
(and the same numbers of ``labels``, which is keyed and partitioned alike) and
of ``terminal.deltas``. It polls micro-batches with one aiokafka consumer on an
explicit assignment (no consumer-group rebalancing), hands each partition's
records to that partition's :class:`~actors.partition.PartitionProcessor`,
sends alerts and dead letters, and only once those sends are acknowledged
commits the input offsets and, when due, checkpoints the partition. Everything
per event happens in this process (DESIGN.md decision 1).

The worker only wires its parts together and is what the Ray actor
(:mod:`actors.scoring`) calls:

- :mod:`actors.loop`: poll → score → send → acknowledge → commit, and the rewind after a failed step;
- :mod:`actors.ownership`: the owned partitions (assign, restore, release, rescale) and offsets outside the log;
- :mod:`actors.checkpointing`: when a partition or stage partition is checkpointed, and the writes;
- :mod:`actors.terminal_io`: the terminal stage's traffic in and out;
- :mod:`actors.reloads`: classifier versions and rules replaced while running;
- :mod:`actors.status` and :mod:`actors.stats`: status, metrics, latencies, errors;
- :mod:`actors.clients`: the Kafka clients, checkpoint store and metrics opened at start.

One lock keeps partition state unchanged except between two micro-batches: a
step holds it, and so do assignment, checkpoints on demand and the final ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from actors.checkpointing import Checkpointer, checkpoint_key
from actors.clients import Clients
from actors.delivery import Delivery
from actors.health import KafkaHealth
from actors.loop import OffsetCommitter, ScoringLoop
from actors.messages import ActorStatus, PartitionLag
from actors.metrics import ActorMetrics
from actors.ownership import Ownership
from actors.partition import PartitionProcessor
from actors.reloads import Reloads
from actors.serving import ClassifierServing
from actors.stats import ErrorLog, LoopStats
from actors.status import StatusReport
from actors.terminal_io import TerminalIO
from actors.terminal_stage import BroadcastRisk, TerminalStage
from actors.transactions import Transactions
from configs import RuleSettings, Settings
from features import FeatureEngine
from features.runtime import configure_gc_for_streaming

__all__ = ["ScoringWorker", "checkpoint_key"]  # checkpoint_key: tests and tools find a partition's checkpoint

log = logging.getLogger(__name__)


class ScoringWorker:
    """Consume, score and checkpoint a set of partitions (one asyncio task, one process)."""

    def __init__(self, settings: Settings, bootstrap_servers: str | None, name: str) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.name = name
        topics = settings.kafka.topics
        #: The broadcast terminal table every engine of this actor reads (fed by terminal.risk).
        table = FeatureEngine.terminal_risk_for(settings.features)
        table.publish_updates()
        self.broadcast = BroadcastRisk(table, topics.terminal_deltas.partitions)
        stream = settings.stream
        self.clients = Clients()
        self.errors = ErrorLog()
        self.stats = LoopStats()
        self.delivery = Delivery(topics.dead_letters.name, stream.delivery_backoff_ms, stream.delivery_backoff_max_ms)
        self.health = KafkaHealth(stream.kafka_wait_grace_s, name)
        #: The batch classifier(s) served from the registry.
        self.serving = ClassifierServing(settings)
        self.reloads = Reloads(settings, name, self.serving, self.clients)
        self.checkpoints = Checkpointer(settings, name, self.clients, self.errors, self._before_snapshot)
        self.ownership = Ownership(settings, name, self.clients, self.checkpoints, self.broadcast, self.reloads)
        self.terminal = TerminalIO(settings, self.clients, self.ownership, self.checkpoints, self.broadcast)
        self._lock = asyncio.Lock()
        self.loop = ScoringLoop(
            settings, name, lock=self._lock, clients=self.clients, ownership=self.ownership,
            checkpoints=self.checkpoints, terminal=self.terminal, reloads=self.reloads, delivery=self.delivery,
            commits=OffsetCommitter(settings, self.clients, self.ownership, self.errors),
            health=self.health, stats=self.stats, errors=self.errors,
            transactions=Transactions(settings, self.clients, self.delivery) if settings.kafka.exactly_once else None,
        )
        self.status_report = StatusReport(
            settings, name, clients=self.clients, ownership=self.ownership, checkpoints=self.checkpoints,
            loop=self.loop, stats=self.stats, errors=self.errors, delivery=self.delivery, health=self.health,
            serving=self.serving, broadcast=self.broadcast,
        )

    async def _before_snapshot(self, partition: int) -> None:
        """The checkpointer's hook (the loop is built after it): what a checkpoint covers is sent and committed."""
        await self.loop.send_before_snapshot(partition)

    # ------------------------------------------------------------ what is owned
    @property
    def processors(self) -> dict[int, PartitionProcessor]:
        """The owned partitions of transactions/labels."""
        return self.ownership.processors

    @property
    def stages(self) -> dict[int, TerminalStage]:
        """The owned partitions of terminal.deltas."""
        return self.ownership.stages

    # ---------------------------------------------- the clients (tests hand in stand-ins)
    @property
    def consumer(self) -> Any:
        return self.clients.consumer

    @consumer.setter
    def consumer(self, consumer: Any) -> None:
        self.clients.consumer = consumer

    @property
    def producer(self) -> Any:
        return self.clients.producer

    @producer.setter
    def producer(self, producer: Any) -> None:
        self.clients.producer = producer

    @property
    def store(self) -> Any:
        return self.clients.store

    @store.setter
    def store(self, store: Any) -> None:
        self.clients.store = store

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect to Kafka (idempotent)."""
        if self.clients.consumer is not None:
            return
        configure_gc_for_streaming()
        self.health.install()
        self.clients.metrics = ActorMetrics.create()
        await self.clients.connect(self.settings, self.bootstrap_servers, self.name)
        await self.reloads.start()

    def run_in_background(self) -> None:
        """Start the poll loop as a task (idempotent)."""
        self.loop.run_in_background()

    @property
    def running(self) -> bool:
        return self.loop.running

    async def step(self) -> int:
        """Poll one micro-batch, score it, send, acknowledge, commit; returns events scored."""
        return await self.loop.step()

    async def stop(self) -> None:
        """Finish the in-flight batch, checkpoint every partition, disconnect."""
        await self.loop.finish()
        self.reloads.stop()
        async with self._lock:
            if self.loop.undelivered:
                log.error("not checkpointing partitions %s: outputs since their last checkpoint were not delivered; "
                          "they replay from there", sorted(self.processors))
            else:
                await self._checkpoint_everything()
            await self.clients.close()

    # ------------------------------------------------------------ control plane
    async def assign(self, partitions: list[int], stage_partitions: list[int]) -> None:
        """Own exactly these partitions (of transactions/labels, and of terminal.deltas):
        checkpoint and drop the others, restore the new ones from their checkpoints."""
        async with self._lock:
            await self.ownership.assign(partitions, stage_partitions)

    def set_rules(self, rules: tuple[RuleSettings, ...]) -> str:
        """Decide with these rules from the next micro-batch on; returns their version.

        Checked here first (unknown feature, bad expression: ConfigError, the old rules stay).
        """
        return self.reloads.set_rules(rules)

    async def online_snapshots(self) -> dict[int, bytes]:
        """Each owned partition's online classifier, taken between two micro-batches."""
        async with self._lock:
            snapshots = {p: processor.online_snapshot() for p, processor in self.processors.items()}
        return {p: data for p, data in snapshots.items() if data is not None}

    async def checkpoint_all(self) -> None:
        """Checkpoint every owned partition and stage partition now."""
        async with self._lock:
            await self._checkpoint_everything()

    async def _checkpoint_everything(self) -> None:
        ownership = self.ownership
        await self.checkpoints.save_all(ownership.processors, ownership.stages, ownership.stage_offsets)

    # ------------------------------------------------------------------- status
    @property
    def error(self) -> str | None:
        """What is wrong now (None when healthy): loop, delivery, commit, checkpoint and Kafka errors."""
        return self.status_report.error

    def status(self) -> ActorStatus:
        """Per-partition positions, lag, counters and checkpoint age; per-actor rates."""
        return self.status_report.build()

    def lags(self) -> dict[int, PartitionLag]:
        """Each owned partition's lag in records and seconds (what the controller's autoscaler reads)."""
        return self.status_report.lags()

    @staticmethod
    def status_pid() -> int:
        return os.getpid()

    def reset_latency(self) -> None:
        self.stats.reset_latency()

    def latency_samples(self) -> list[float]:
        """Per-event latencies (ms, Kafka timestamp -> alerts acknowledged) since the last reset."""
        return list(self.stats.latencies)

    def entity_digests(self) -> dict[int, str]:
        """Digest of each owned partition's feature state (tests compare runs with it)."""
        return {p: proc.entity_state_digest() for p, proc in self.processors.items()}
