"""The 3-broker Kafka 4.x test cluster (tests/kafka/cluster.py) does what the later tests rely on: TLS with
the fixture's CA, SCRAM-SHA-512 logins, the issue's ACLs, idempotent and transactional producers, and
acks=all writes that survive a kill -9 of a partition leader (min.insync.replicas=2) until it rejoins."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError, TransactionalIdAuthorizationFailed

from configs import Settings
from connectors.kafka import make_producer, wait_until_ready
from tests.integration.faultproxy import FaultProxy
from tests.kafka.cluster import (
    JOB_TOPICS_READ,
    JOB_TOPICS_WRITE,
    KafkaCluster,
    KafkaClusterError,
    java_processes_of,
    missing_tools,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPICS = sorted(set(JOB_TOPICS_READ) | set(JOB_TOPICS_WRITE))  # the six of configs/cluster.yaml
PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(kafka_cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """The session's cluster with the six topics of configs/cluster.yaml (RF 3, 3 partitions each)."""
    asyncio.run(kafka_cluster.create_topics(TOPICS, partitions=PARTITIONS, replication_factor=3))
    yield kafka_cluster


async def _produce(cluster: KafkaCluster, user: str | None, topic: str, values: list[bytes], **options: object) -> None:
    producer = AIOKafkaProducer(**cluster.client_kwargs(user, acks="all", **options))
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=value) for value in values]
        await asyncio.gather(*sent)  # each delivery's error, if any (flush() raises none)
    finally:
        await producer.stop()


async def _read_until(cluster: KafkaCluster, user: str | None, topic: str, wanted: set[bytes], timeout_s: float = 30,
                      **options: object) -> set[bytes]:
    """Read ``topic`` from the start (assigned partitions, no group) until every value of ``wanted`` is seen;
    returns all values seen (fewer than wanted on timeout)."""
    consumer = AIOKafkaConsumer(**cluster.client_kwargs(user, auto_offset_reset="earliest",
                                                        enable_auto_commit=False, **options))
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        seen: set[bytes] = set()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not wanted <= seen and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            seen.update(r.value for records in batches.values() for r in records)
        return seen
    finally:
        await consumer.stop()


async def _visible_topics(cluster: KafkaCluster, user: str | None) -> set[str]:
    """The topics a metadata request for all topics shows this principal (those it may Describe), as standard
    names: other tests' topics are ``<prefix>.<standard name>``, with the standard ACLs granted on them."""
    consumer = AIOKafkaConsumer(**cluster.client_kwargs(user))
    await consumer.start()
    try:
        visible = {t for t in await consumer.topics() if not t.startswith("__")}
    finally:
        await consumer.stop()
    return {next((name for name in TOPICS if t.endswith(f".{name}")), t) for t in visible}


def test_missing_tools_are_named_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What the fixture skips with (or, with CI=true, fails with) on a machine without Java and Maven."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no cached jars either
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("FRAUDSTREAM_KAFKA_HOME", raising=False)
    message = missing_tools()
    assert message is not None and "\n" not in message
    assert "Java 17+" in message and "Maven" in message and "FRAUDSTREAM_KAFKA_HOME" in message


def test_three_brokers_replicate_every_topic_three_times(cluster: KafkaCluster) -> None:
    async def check() -> None:
        admin = AIOKafkaAdminClient(**cluster.client_kwargs("admin"))  # the SASL_SSL super user
        await admin.start()
        try:
            described = await admin.describe_cluster()
        finally:
            await admin.close()
        assert sorted(b["node_id"] for b in described["brokers"]) == [1, 2, 3]
        for topic in TOPICS:
            partitions = await cluster.describe_partitions(topic)
            assert len(partitions) == PARTITIONS
            assert all(sorted(p["replicas"]) == [1, 2, 3] == sorted(p["isr"]) for p in partitions.values()), partitions

    asyncio.run(check())


def test_job_reads_transactions_and_writes_alerts_over_sasl_ssl(cluster: KafkaCluster) -> None:
    async def check() -> None:
        sent = [f"tx-{i}".encode() for i in range(20)]
        await _produce(cluster, None, "transactions", sent)  # the admin (PLAINTEXT) feeds the input
        assert set(sent) <= await _read_until(cluster, "job", "transactions", set(sent))
        alerts = [f"alert-{i}".encode() for i in range(10)]
        await _produce(cluster, "job", "alerts", alerts)
        assert set(alerts) <= await _read_until(cluster, None, "alerts", set(alerts))
        # the job's consumer group (prefix fraudstream) may commit offsets
        consumer = AIOKafkaConsumer(**cluster.client_kwargs("job", group_id="fraudstream-scoring",
                                                            enable_auto_commit=False))
        await consumer.start()
        try:
            tp = TopicPartition("transactions", 0)
            consumer.assign([tp])
            await consumer.commit({tp: 1})
            assert await consumer.committed(tp) == 1
        finally:
            await consumer.stop()

    asyncio.run(check())


def test_job_may_do_nothing_else(cluster: KafkaCluster) -> None:
    async def check() -> None:
        assert await _visible_topics(cluster, "job") == set(TOPICS)
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(cluster, "job", "transactions", [b"forged"])
        consumer = AIOKafkaConsumer(**cluster.client_kwargs("job", auto_offset_reset="earliest"))
        await consumer.start()
        try:
            consumer.assign([TopicPartition("alerts", p) for p in range(PARTITIONS)])
            with pytest.raises(TopicAuthorizationFailedError):  # Write on alerts, not Read
                await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
        admin = AIOKafkaAdminClient(**cluster.client_kwargs("job"))
        await admin.start()
        try:
            from aiokafka.admin import NewTopic

            answer = await admin.create_topics([NewTopic("job-made", 1, 3)])
            assert answer.topic_errors[0][1] == 29, answer  # TOPIC_AUTHORIZATION_FAILED: no Create
        finally:
            await admin.close()

    asyncio.run(check())


def test_reader_only_reads_alerts(cluster: KafkaCluster) -> None:
    async def check() -> None:
        alerts = [f"for-reader-{i}".encode() for i in range(5)]
        await _produce(cluster, "job", "alerts", alerts)
        assert set(alerts) <= await _read_until(cluster, "reader", "alerts", set(alerts))
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(cluster, "reader", "alerts", [b"forged"])
        # the other topics are invisible to it (an assigned consumer of one would spin on metadata forever)
        assert await _visible_topics(cluster, "reader") == {"alerts"}

    asyncio.run(check())


def test_wrong_password_fails_authentication(cluster: KafkaCluster, caplog: pytest.LogCaptureFixture) -> None:
    async def check() -> None:
        producer = AIOKafkaProducer(**cluster.client_kwargs("job", password="not-the-password"))
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()

    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        asyncio.run(check())
    assert "SaslAuthenticationFailed" in caplog.text, caplog.text


def test_untrusted_ca_fails_the_tls_handshake(cluster: KafkaCluster, caplog: pytest.LogCaptureFixture) -> None:
    async def check() -> None:
        producer = AIOKafkaProducer(**cluster.client_kwargs("job", ca_file=cluster.other_ca_file))
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()

    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        asyncio.run(check())
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text


def test_idempotent_and_transactional_producers(cluster: KafkaCluster) -> None:
    async def check() -> None:
        await _produce(cluster, "job", "transactions.dlq", [b"idem-1", b"idem-2"], enable_idempotence=True)
        producer = AIOKafkaProducer(**cluster.client_kwargs("job", transactional_id="fraudstream-test-tx"))
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send("terminal.deltas", b"committed", key=b"k")
                await producer.send_offsets_to_transaction({TopicPartition("transactions", 0): 5},
                                                           "fraudstream-eos")
            await producer.begin_transaction()
            await producer.send("terminal.deltas", b"aborted", key=b"k")
            await producer.abort_transaction()
            async with producer.transaction():  # same key, same partition: read after the aborted one
                await producer.send("terminal.deltas", b"after-abort", key=b"k")
        finally:
            await producer.stop()
        seen = await _read_until(cluster, "job", "terminal.deltas", {b"committed", b"after-abort"},
                                 isolation_level="read_committed")
        assert {b"committed", b"after-abort"} <= seen and b"aborted" not in seen
        assert {b"idem-1", b"idem-2"} <= await _read_until(cluster, None, "transactions.dlq", {b"idem-1", b"idem-2"})
        consumer = AIOKafkaConsumer(**cluster.client_kwargs("job", group_id="fraudstream-eos"))
        await consumer.start()
        try:
            assert await consumer.committed(TopicPartition("transactions", 0)) == 5
        finally:
            await consumer.stop()
        with pytest.raises(TransactionalIdAuthorizationFailed):  # not its prefix
            other = AIOKafkaProducer(**cluster.client_kwargs("job", transactional_id="someone-else"))
            try:
                await other.start()
            finally:
                await other.stop()

    asyncio.run(check())


def test_the_products_kafka_settings_reach_the_cluster(cluster: KafkaCluster, local_settings: Settings) -> None:
    """connectors/kafka.py's clients (TLS with hostname check, SCRAM, password from the environment)."""
    kafka = cluster.kafka_settings(local_settings.kafka, "job")
    assert kafka.sasl_password() == cluster.job.password  # exported by the fixture

    async def check() -> None:
        await wait_until_ready(kafka, timeout_s=30)
        producer = make_producer(kafka, local_settings.producer)
        await producer.start()
        try:
            await producer.send_and_wait("alerts", b"from-the-product", key=b"k")
        finally:
            await producer.stop()
        assert b"from-the-product" in await _read_until(cluster, None, "alerts", {b"from-the-product"})

    asyncio.run(check())


def test_a_broker_that_cannot_start_is_reported_with_its_log(cluster: KafkaCluster, tmp_path: Path) -> None:
    broken = KafkaCluster(tmp_path / "broken", size=1, libs=cluster.libs,
                          overrides={"listener.name.sasl_ssl.ssl.keystore.password": "not-the-password"})
    started = time.monotonic()
    with pytest.raises(KafkaClusterError) as failure, broken:
        pass
    message = str(failure.value)
    assert "broker 1 exited" in message, message
    assert "keystore" in message.lower(), message  # the broker's own log says why
    assert time.monotonic() - started < 60
    assert not java_processes_of(tmp_path / "broken")


def test_clients_can_reach_the_brokers_through_fault_proxies(cluster: KafkaCluster, tmp_path: Path) -> None:
    """The later outage tests' set-up: SASL_SSL advertised on a FaultProxy port, PLAINTEXT (admin) direct."""
    proxies: dict[int, FaultProxy] = {}

    def advertise(node_id: int, listener: str, port: int) -> int:
        if listener != "SASL_SSL":
            return port
        proxies[node_id] = FaultProxy(target_port=port)
        return proxies[node_id].port

    proxied = KafkaCluster(tmp_path / "proxied", size=1, libs=cluster.libs, advertise=advertise)
    with proxied, proxies[1]:
        proxy = proxies[1]
        assert proxied.sasl_ssl_bootstrap == proxy.address

        async def check() -> None:
            await proxied.create_topics(["alerts"], partitions=PARTITIONS, replication_factor=1)
            await _produce(proxied, "job", "alerts", [b"through-the-proxy"])
            assert proxy.accepted > 0 and proxy.bytes_up > 0
            proxy.refuse()
            with pytest.raises(KafkaConnectionError):
                await _produce(proxied, "job", "alerts", [b"refused"])
            await proxied.wait_ready_async(30)  # readiness asks the brokers directly, not through the proxies
            proxy.restore()
            await _produce(proxied, "job", "alerts", [b"after-restore"])

        asyncio.run(check())
    assert not java_processes_of(tmp_path / "proxied")


def test_acks_all_survives_kill_9_of_a_leader_which_rejoins(cluster: KafkaCluster) -> None:
    """Runs last: it leaves all three brokers up and every ISR at 3 again."""

    async def check() -> None:
        before = await cluster.describe_partitions("alerts")
        victim = before[0]["leader"]
        cluster.kill_broker(victim)
        process = cluster.broker(victim).process
        assert process is not None and process.returncode == -signal.SIGKILL
        try:
            sent = [f"during-outage-{i}".encode() for i in range(30)]
            await asyncio.wait_for(_produce(cluster, "job", "alerts", sent, request_timeout_ms=20_000), 90)
            after = await cluster.wait_isr("alerts", 2, timeout_s=60)  # the dead broker is fenced, out of every ISR
            assert all(victim not in p["isr"] for p in after.values()), after
            assert after[0]["leader"] != victim
        finally:
            cluster.start_broker(victim)
        await cluster.wait_ready_async(120)
        for topic in TOPICS:
            await cluster.wait_isr(topic, 3, timeout_s=120)
        assert cluster.broker(victim).alive
        assert set(sent) <= await _read_until(cluster, None, "alerts", set(sent))

    asyncio.run(check())
