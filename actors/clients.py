"""What a scoring actor opens at start and closes at stop: the Kafka clients, the checkpoint store, the metrics.

:class:`Clients` holds them for every part of the worker, which reads them here
each time it needs one and never keeps a copy: a test hands in stand-ins (an
in-memory consumer and producer, a local store) after the worker is built.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from actors.metrics import ActorMetrics
from configs import Settings
from connectors.checkpoint import CheckpointStore, cluster_namespace
from connectors.kafka import cluster_id, make_consumer, make_producer

log = logging.getLogger(__name__)

#: Longest the broker may hold a fetch that finds no data.
FETCH_MAX_WAIT_MS = 5


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


@dataclass
class Clients:
    """The consumer (explicit assignment), the producer, this cluster's checkpoint store and the Ray metrics
    (None outside a Ray worker); all None until :meth:`connect`."""

    consumer: Any = None
    producer: Any = None
    #: Checkpoints of this job's Kafka cluster (opened by :meth:`connect`, which learns its id).
    store: CheckpointStore | Any = None
    metrics: ActorMetrics | None = None

    async def connect(self, settings: Settings, bootstrap_servers: str | None) -> None:
        """Start the consumer and producer, then open the checkpoints of the cluster they talk to."""
        kafka = settings.kafka
        self.consumer = make_consumer(
            kafka,
            bootstrap_servers,
            group_id=f"{kafka.client_id}-scoring",
            auto_offset_reset="none",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # a fetch returns as soon as data is there; bound how long the broker may hold an empty one
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        # alerts of a batch are sent together and then awaited: lingering would only add latency
        producer_settings = msgspec.structs.replace(settings.producer, linger_ms=0)
        self.producer = make_producer(kafka, producer_settings, bootstrap_servers)
        await self.consumer.start()
        await self.producer.start()
        # offsets mean something only in the cluster they came from: a checkpoint of another
        # cluster (a new in-memory broker, a migrated topic) is never resumed from
        stream = settings.stream
        namespace = cluster_namespace(await cluster_id(kafka, bootstrap_servers))
        self.store = CheckpointStore(stream.checkpoint_uri, keep=stream.checkpoint_keep, namespace=namespace)
        if self.store.other_namespaces:
            log.warning("checkpoints of other Kafka clusters are not used (%s); this cluster's are in %s/%s",
                        ", ".join(self.store.other_namespaces), stream.checkpoint_uri, namespace)

    async def close(self) -> None:
        """Stop the consumer and the producer (the store and the metrics need no closing)."""
        if self.consumer is not None:
            for client in (self.consumer, self.producer):
                await close_client(client)
            self.consumer = self.producer = None


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
