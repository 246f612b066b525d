"""The tests' fault proxy in front of the embedded broker: clients really use it, and each fault does what it says.

What aiokafka does (0.14, request_timeout_ms = REQUEST_TIMEOUT_MS):

- refuse(): "Unable connect to node with id N: [Errno 111] Connect call failed" and "Unable to update
  metadata" at once and every ~0.1 s after; a pending send_and_wait fails with NodeNotReadyError when
  its batch expires (after request_timeout_ms); the batch never reached the broker.
- blackhole(): nothing logged until request_timeout_ms, then "Failed fetch messages ... RequestTimedOutError"
  and the send fails with RequestTimedOutError, although the held request still reaches the broker
  on restore(): a timed-out send may have been written.
- cut(): "Failed fetch messages from N: KafkaConnectionError: Connection at ... closed"; the next
  request reconnects by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Iterator

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, NodeNotReadyError, RequestTimedOutError

from configs import KafkaSettings, Settings, TopicSettings
from connectors.broker import EmbeddedBroker
from connectors.kafka import ensure_topics, make_consumer, make_producer, wait_until_ready
from tests.integration.faultproxy import FaultProxy

pytestmark = [pytest.mark.integration]

_topics = itertools.count()
REQUEST_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def proxied(local_settings: Settings) -> Iterator[tuple[FaultProxy, EmbeddedBroker, KafkaSettings]]:
    """A broker of its own that advertises the proxy's port, the proxy in front."""
    kafka = msgspec.structs.replace(local_settings.kafka, request_timeout_ms=REQUEST_TIMEOUT_MS)
    proxy = FaultProxy()
    broker = EmbeddedBroker(advertised_port=proxy.port)
    with broker, proxy.forward_to(broker.host, broker.port):
        assert broker.advertised_servers == proxy.address
        asyncio.run(wait_until_ready(kafka, proxy.address))
        yield proxy, broker, kafka


@pytest.fixture
def proxy(proxied: tuple[FaultProxy, EmbeddedBroker, KafkaSettings]) -> Iterator[FaultProxy]:
    yield proxied[0]
    proxied[0].restore()  # the next test starts with a healthy path


async def _clients(kafka: KafkaSettings, settings: Settings, producer_servers: str,
                   consumer_servers: str) -> tuple[AIOKafkaProducer, AIOKafkaConsumer, str]:  # fmt: skip
    """A producer, and a consumer reading a fresh topic from its start (not seek_to_end: Tansu's latest
    offset is the last batch's base offset + 1, not the end of the log)."""
    topic = f"faultproxy.{next(_topics)}"
    await ensure_topics(kafka, consumer_servers, [TopicSettings(name=topic, partitions=1)])
    producer = make_producer(kafka, settings.producer, producer_servers)
    consumer = make_consumer(kafka, consumer_servers, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    return producer, consumer, topic


async def _read(consumer: AIOKafkaConsumer, count: int, timeout_s: float = 10.0) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=200)).values():
            values += [record.value for record in records]
    return values


def test_clients_reach_the_broker_only_through_the_proxy(proxy: FaultProxy, proxied, local_settings: Settings) -> None:
    _, broker, kafka = proxied

    async def run() -> list[bytes]:
        # the producer bootstraps at the broker's own port: the metadata sends it to the proxy all the same
        producer, consumer, topic = await _clients(kafka, local_settings, broker.bootstrap_servers, proxy.address)
        try:
            for payload in payloads:
                await producer.send(topic, payload)
            await producer.flush()
            return await _read(consumer, len(payloads))
        finally:
            await producer.stop()
            await consumer.stop()

    payloads = [os.urandom(1024) for _ in range(20)]  # incompressible: lz4 leaves them 20 KB
    accepted, up, down = proxy.accepted, proxy.bytes_up, proxy.bytes_down
    assert asyncio.run(run()) == payloads
    assert proxy.accepted > accepted
    assert proxy.bytes_up - up >= 20 * 1024  # the produce requests went through the proxy
    assert proxy.bytes_down - down >= 20 * 1024  # and so did the fetched records


def test_refused_kafka_fails_sends_then_the_same_clients_recover(
    proxy: FaultProxy, proxied, local_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = proxied[2]

    async def run() -> None:
        producer, consumer, topic = await _clients(kafka, local_settings, proxy.address, proxy.address)
        try:
            await producer.send_and_wait(topic, b"before")
            assert await _read(consumer, 1) == [b"before"]

            proxy.refuse()
            assert proxy.open_connections == 0
            started = time.monotonic()
            with pytest.raises((KafkaError, asyncio.TimeoutError)) as failure:
                await asyncio.wait_for(producer.send_and_wait(topic, b"during"), 3.0)
            assert time.monotonic() - started < 3.5
            assert isinstance(failure.value, NodeNotReadyError)  # the batch expired unsent
            assert await _read(consumer, 1, timeout_s=0.5) == []

            proxy.restore()
            await asyncio.wait_for(producer.send_and_wait(topic, b"after"), 5.0)
            assert await _read(consumer, 1) == [b"after"]  # "during" never reached the broker
        finally:
            await producer.stop()
            await consumer.stop()

    with caplog.at_level(logging.WARNING, logger="aiokafka"):
        asyncio.run(run())
    assert any("Connect call failed" in r.getMessage() for r in caplog.records)


def test_blackholed_kafka_times_out_requests_and_delivers_them_late(
    proxy: FaultProxy, proxied, local_settings: Settings
) -> None:
    kafka = proxied[2]

    async def run() -> list[bytes]:
        producer, consumer, topic = await _clients(kafka, local_settings, proxy.address, proxy.address)
        try:
            await producer.send_and_wait(topic, b"before")
            assert await _read(consumer, 1) == [b"before"]

            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises((KafkaError, asyncio.TimeoutError)) as failure:
                await asyncio.wait_for(producer.send_and_wait(topic, b"during"), 3.0)
            assert REQUEST_TIMEOUT_MS / 1000 - 0.2 < time.monotonic() - started < 3.5
            assert isinstance(failure.value, RequestTimedOutError)
            assert proxy.open_connections > 0  # kept, only silent

            proxy.restore()
            await asyncio.wait_for(producer.send_and_wait(topic, b"after"), 5.0)
            return await _read(consumer, 2)
        finally:
            await producer.stop()
            await consumer.stop()

    values = asyncio.run(run())
    # the held request reached the broker after all: a timed-out send is not proof of a lost record
    assert b"during" in values and values[-1] == b"after"


def test_latency_slows_every_round_trip(proxy: FaultProxy, proxied, local_settings: Settings) -> None:
    kafka = proxied[2]

    async def round_trip(producer: AIOKafkaProducer, topic: str) -> float:
        started = time.monotonic()
        await producer.send_and_wait(topic, b"ping")
        return time.monotonic() - started

    async def run() -> tuple[float, float, float]:
        producer, consumer, topic = await _clients(kafka, local_settings, proxy.address, proxy.address)
        try:
            fast = min([await round_trip(producer, topic) for _ in range(3)])
            proxy.latency(200)
            slow = await round_trip(producer, topic)
            proxy.latency(0)
            again = min([await round_trip(producer, topic) for _ in range(3)])
            return fast, slow, again
        finally:
            await producer.stop()
            await consumer.stop()

    fast, slow, again = asyncio.run(run())
    assert slow > 0.15 and slow > fast + 0.15, (fast, slow)
    assert again < slow - 0.15, (again, slow)


def test_cut_drops_connections_and_clients_reconnect(proxy: FaultProxy, proxied, local_settings: Settings) -> None:
    kafka = proxied[2]

    async def run() -> None:
        producer, consumer, topic = await _clients(kafka, local_settings, proxy.address, proxy.address)
        try:
            await producer.send_and_wait(topic, b"before")
            assert await _read(consumer, 1) == [b"before"]
            accepted = proxy.accepted
            assert proxy.open_connections > 0

            proxy.cut()
            assert proxy.open_connections == 0
            await asyncio.wait_for(producer.send_and_wait(topic, b"after"), 5.0)
            assert await _read(consumer, 1) == [b"after"]
            assert proxy.accepted > accepted  # new connections, made by the clients themselves
        finally:
            await producer.stop()
            await consumer.stop()

    asyncio.run(run())
