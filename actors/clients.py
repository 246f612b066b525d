"""What a scoring actor opens at start and closes at stop: the Kafka clients, the checkpoint store, the metrics.

:class:`Clients` holds them for every part of the worker, which reads them here
each time it needs one and never keeps a copy: a test hands in stand-ins (an
in-memory consumer and producer, a local store) after the worker is built.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from actors.metrics import ActorMetrics
from configs import Settings
from connectors.checkpoint import CheckpointStore, cluster_namespace
from connectors.kafka import cluster_id, make_consumer, start_producer

log = logging.getLogger(__name__)


#: Longest a producer's stop may wait for brokers (it flushes what it holds first).
CLOSE_TIMEOUT_S = 30.0


class TopicNames(NamedTuple):
    """The topics an actor reads and writes, and the terminal stage's partition count."""

    transactions: str
    labels: str
    deltas: str
    risk: str
    stage_count: int

    @classmethod
    def of(cls, settings: Settings) -> TopicNames:
        topics = settings.kafka.topics
        return cls(topics.transactions.name, topics.labels.name, topics.terminal_deltas.name,
                   topics.terminal_risk.name, topics.terminal_deltas.partitions)  # fmt: skip


def kafka_access(settings: Settings) -> dict[str, tuple[str, ...]]:
    """What the scoring actors do on each topic, as Kafka ACL operations (the job's start asks the brokers
    whether its principal may, before any actor starts): they read transactions and labels, write alerts
    and dead letters, read and write the terminal stage's topics, and write transactions again when
    ``stream.wrong_key`` is ``rekey``."""
    topics = settings.kafka.topics
    needs: dict[str, tuple[str, ...]] = {
        topics.transactions.name: ("Read", "Write") if settings.stream.wrong_key == "rekey" else ("Read",),
        topics.labels.name: ("Read",),
        topics.alerts.name: ("Write",),
        topics.dead_letters.name: ("Write",),
    }
    for stage in (topics.terminal_deltas.name, topics.terminal_risk.name):
        needs[stage] = ("Read", "Write")
    return needs


def scoring_group(settings: Settings) -> str:
    """The consumer group the scoring actors commit their input offsets to (lag tooling; with exactly-once,
    the offsets the last committed transaction recorded)."""
    return f"{settings.kafka.client_id}-scoring"


@dataclass
class Clients:
    """The consumer (explicit assignment), the producer, this cluster's checkpoint store and the Ray metrics
    (None outside a Ray worker); all None until :meth:`connect`."""

    consumer: Any = None
    producer: Any = None
    #: With exactly-once, a plain (idempotent) producer for the terminal stage's records, which replace values
    #: and so need no transaction: the stage's round trips do not wait for commits. None otherwise.
    stage_producer: Any = None
    #: Checkpoints of this job's Kafka cluster (opened by :meth:`connect`, which learns its id).
    store: CheckpointStore | Any = None
    metrics: ActorMetrics | None = None

    #: Makes and starts a producer (set by :meth:`connect`; :meth:`ensure_producer` calls it for a new one).
    producer_factory: Callable[[], Awaitable[Any]] | None = None

    async def connect(self, settings: Settings, bootstrap_servers: str | None, name: str) -> None:
        """Start the consumer and producer, then open the checkpoints of the cluster they talk to.

        With ``kafka.exactly_once`` the consumer reads committed records only and the producer is
        transactional, its id the client id and the actor's name (stable across restarts: a restarted
        actor fences its predecessor); otherwise it is idempotent where the brokers allow."""
        kafka = settings.kafka
        self.consumer = make_consumer(
            kafka,
            bootstrap_servers,
            group_id=scoring_group(settings),
            auto_offset_reset="none",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # a fetch returns as soon as data is there; bound how long the broker may hold an empty one
            fetch_max_wait_ms=settings.stream.fetch_max_wait_ms,
            isolation_level="read_committed" if kafka.exactly_once else "read_uncommitted",
        )
        # alerts of a batch are sent together and then awaited: lingering would only add latency
        producer_settings = msgspec.structs.replace(settings.producer, linger_ms=0)
        transactional_id = f"{kafka.client_id}-{name}" if kafka.exactly_once else None

        async def new_producer() -> Any:
            return await start_producer(kafka, producer_settings, bootstrap_servers, transactional_id=transactional_id)

        self.producer_factory = new_producer
        await self.consumer.start()
        await self.ensure_producer()
        if transactional_id is not None:
            self.stage_producer = await start_producer(kafka, producer_settings, bootstrap_servers)
        # offsets mean something only in the cluster they came from: a checkpoint of another
        # cluster (a new in-memory broker, a migrated topic) is never resumed from
        stream = settings.stream
        namespace = cluster_namespace(await cluster_id(kafka, bootstrap_servers))
        self.store = CheckpointStore(stream.checkpoint_uri, keep=stream.checkpoint_keep, namespace=namespace)
        if self.store.other_namespaces:
            log.warning("checkpoints of other Kafka clusters are not used (%s); this cluster's are in %s/%s",
                        ", ".join(self.store.other_namespaces), stream.checkpoint_uri, namespace)

    async def ensure_producer(self) -> Any:
        """The producer, made and started anew if it was dropped (:meth:`drop_producer`)."""
        if self.producer is None:
            assert self.producer_factory is not None, "connect() first"
            self.producer = await self.producer_factory()
        return self.producer

    async def drop_producer(self) -> None:
        """Stop and forget the producer (a transactional one after a failed transaction); a stop that waits on
        brokers not answering is given up after CLOSE_TIMEOUT_S."""
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(close_client(producer), CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning("the producer did not stop within %.0f s (Kafka not answering); dropped", CLOSE_TIMEOUT_S)

    async def close(self) -> None:
        """Stop the consumer and the producer (the store and the metrics need no closing)."""
        if self.consumer is not None:
            await close_client(self.consumer)
            self.consumer = None
        await self.drop_producer()
        if self.stage_producer is not None:
            await close_client(self.stage_producer)
            self.stage_producer = None


async def close_client(client: Any) -> None:
    """Stop a Kafka client; with no broker answering, aiokafka's stop can fail (or leak a cancellation
    of its own tasks): the actor's stop goes on, unless it is itself being cancelled."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("%s stopped with its own tasks cancelled (Kafka not answering)", type(client).__name__)
    except Exception as exc:  # stopping anyway
        log.warning("%s did not stop cleanly: %r", type(client).__name__, exc)
