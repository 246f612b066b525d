"""Kafka connection adapter: settings -> aiokafka client arguments, topic admin.

The same code talks to the embedded broker and to a real cluster with TLS/SASL;
only the settings differ.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Collection, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from configs import KafkaSettings, ProducerSettings, TopicSettings
from connectors.kafka_checks import (
    CLUSTER_AUTHORIZATION_FAILED,
    PROBE_TIMEOUT_S,
    TOPIC_ALREADY_EXISTS,
    TOPIC_AUTHORIZATION_FAILED,
    access_denied_message,
    compacted_message,
    configs_unreadable_notice,
    create_denied_message,
    create_failed_message,
    denied_operations,
    describe_access,
    principal,
    probe_connection,
    producer_ids_refused,
    unreachable_message,
)


class KafkaSetupError(RuntimeError):
    """Kafka cannot be reached or its topics do not match the configuration."""


def client_kwargs(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka producers, consumers and admin clients.

    ``bootstrap_servers`` overrides the configured servers (the embedded broker's
    address is only known once it runs).
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers or ",".join(kafka.bootstrap_servers),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl_context(kafka)
    if kafka.sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = kafka.sasl_password()
    return kwargs


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A TLS context verifying the brokers against ``ssl_ca_file`` (or the system CAs)."""
    context: ssl.SSLContext = create_ssl_context(
        cafile=kafka.ssl_ca_file, certfile=kafka.ssl_cert_file, keyfile=kafka.ssl_key_file
    )
    context.check_hostname = kafka.ssl_check_hostname
    return context


def producer_kwargs(settings: ProducerSettings) -> dict[str, Any]:
    """aiokafka producer options from the producer settings."""
    return {
        "acks": "all" if settings.acks == "all" else int(settings.acks),
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_size,
        "compression_type": None if settings.compression == "none" else settings.compression,
    }


def make_producer(kafka: KafkaSettings, settings: ProducerSettings, bootstrap_servers: str | None = None, *,
                  idempotent: bool = False, transactional_id: str | None = None) -> AIOKafkaProducer:
    """A producer keyed like Kafka's Java client (murmur2 partitioner); idempotent (no duplicate from its
    own retries) or transactional only where the brokers give producer ids (:func:`start_producer` asks)."""
    options = producer_kwargs(settings)
    if transactional_id is not None:
        options["transactional_id"] = transactional_id
    elif idempotent:
        options["enable_idempotence"] = True
    return AIOKafkaProducer(**client_kwargs(kafka, bootstrap_servers), **options)


async def start_producer(kafka: KafkaSettings, settings: ProducerSettings, bootstrap_servers: str | None = None, *,
                         transactional_id: str | None = None) -> AIOKafkaProducer:
    """A started producer: idempotent where the brokers support it and ``acks`` is ``all`` (the embedded
    broker does not: a plain one there), transactional with ``transactional_id``, which a broker without
    producer ids stops with a KafkaSetupError naming ``kafka.exactly_once``."""
    refused = await producer_ids_unsupported(kafka, bootstrap_servers)
    if transactional_id is not None and refused:
        raise KafkaSetupError(_no_transactions(kafka, bootstrap_servers, refused))
    producer = make_producer(kafka, settings, bootstrap_servers, idempotent=not refused and settings.acks == "all",
                             transactional_id=transactional_id)  # fmt: skip
    await producer.start()
    return producer


async def check_transactions(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> None:
    """KafkaSetupError (one line, naming ``kafka.exactly_once``) when the brokers have no transactions."""
    refused = await producer_ids_unsupported(kafka, bootstrap_servers)
    if refused:
        raise KafkaSetupError(_no_transactions(kafka, bootstrap_servers, refused))


def _no_transactions(kafka: KafkaSettings, bootstrap_servers: str | None, refused: str) -> str:
    servers = client_kwargs(kafka, bootstrap_servers)["bootstrap_servers"]
    return (f"kafka.exactly_once: the brokers at {servers} have no transactions ({refused}); set "
            "kafka.exactly_once: false (at-least-once, alert_id deduplicates) or use a Kafka cluster")


async def producer_ids_unsupported(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> str | None:
    """Why the brokers give no producer ids (no idempotence, no transactions), None when they do."""
    admin = AIOKafkaAdminClient(**client_kwargs(kafka, bootstrap_servers))
    try:
        await admin.start()
        return await producer_ids_refused(admin)
    finally:
        await admin.close()


def make_consumer(kafka: KafkaSettings, bootstrap_servers: str | None = None, **options: Any) -> AIOKafkaConsumer:
    """A consumer without group management unless ``group_id`` is passed."""
    options.setdefault("enable_auto_commit", False)
    return AIOKafkaConsumer(**client_kwargs(kafka, bootstrap_servers), **options)


class _NoConnectErrors(logging.Filter):
    """Drops aiokafka's "Unable connect" lines (one every try, every 0.2 s) while we wait for a broker:
    the wait ends in one message of its own when no broker answers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect")


async def wait_until_ready(kafka: KafkaSettings, bootstrap_servers: str | None = None, timeout_s: float = 30.0) -> None:
    """Return once a broker answers a metadata request; raise KafkaSetupError on timeout."""
    quiet = _NoConnectErrors()
    logger = logging.getLogger("aiokafka")
    logger.addFilter(quiet)
    try:
        await _wait_until_ready(kafka, bootstrap_servers, timeout_s)
    finally:
        logger.removeFilter(quiet)


async def _wait_until_ready(kafka: KafkaSettings, bootstrap_servers: str | None, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: BaseException | None = None
    reasons: list[str] = []
    options = client_kwargs(kafka, bootstrap_servers)
    servers = options["bootstrap_servers"]
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(**options)
        try:
            await admin.start()
            await admin.describe_cluster()
            return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        # aiokafka says only "Unable to bootstrap": one connection of our own tells a refused login or
        # certificate (which no retry mends: stop now) from a broker not up yet (wait on)
        left = deadline - asyncio.get_running_loop().time()
        fatal, reasons = await probe_connection(kafka, servers.split(","), options, min(PROBE_TIMEOUT_S, max(left, 1.0)))
        if fatal is not None:
            raise KafkaSetupError(fatal)
        await asyncio.sleep(0.2)
    raise KafkaSetupError(unreachable_message(servers, timeout_s, reasons, last))


async def cluster_id(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> str | None:
    """The Kafka cluster's id from its metadata (None when the broker reports none)."""
    admin = AIOKafkaAdminClient(**client_kwargs(kafka, bootstrap_servers))
    try:
        await admin.start()
        found = (await admin.describe_cluster()).get("cluster_id")
        return str(found) if found else None
    finally:
        await admin.close()


async def ensure_topics(
    kafka: KafkaSettings,
    bootstrap_servers: str | None = None,
    topics: list[TopicSettings] | None = None,
    access: Mapping[str, Collection[str]] | None = None,
) -> dict[str, int]:
    """Create the configured topics when missing (with their configs); return name -> partition count.

    ``access``: the operations (``Read``, ``Write``) the caller will perform on each topic, by name. Where
    the brokers tell what the principal may do (Kafka's authorizer), a topic it may not describe, or not
    read or write as needed, stops here in one line naming the topic, the operation and the principal;
    so does a missing topic it may not create. Every topic needs Describe.

    An existing topic with a different partition count is an error: keys would
    land on other partitions than the state that belongs to them. An existing
    topic whose configs differ is left alone, with a warning on stderr (a notice
    instead when the principal may not read topic configs).
    """
    wanted = topics if topics is not None else kafka.topics.all()
    options = client_kwargs(kafka, bootstrap_servers)
    servers = options["bootstrap_servers"]
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await describe_access(admin, [t.name for t in wanted])
        if described is not None:
            needs = {t.name: tuple((access or {}).get(t.name, ())) for t in wanted}
            denied = denied_operations(described, needs)
            if denied:
                raise KafkaSetupError(access_denied_message(principal(kafka), servers, denied))
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            await _create_topics(admin, kafka, servers, missing)
        counts = await partition_counts(kafka, bootstrap_servers, [t.name for t in wanted])
        keyless = {t.name for t in kafka.topics.keyless().values()}
        described_topics = [t for t in wanted if (t.configs or t.name in keyless) and t.name in existing]
        actual, messages = await _existing_configs(admin, kafka, described_topics)
        compacted = [name for name in sorted(keyless & set(actual)) if "compact" in actual[name].get("cleanup.policy", "")]
        if compacted:
            raise KafkaSetupError(compacted_message(servers, compacted))
        for message in messages + _config_differences(described_topics, actual):
            print(message, file=sys.stderr)
    finally:
        await admin.close()
    for topic in wanted:
        if counts.get(topic.name) != topic.partitions:
            raise KafkaSetupError(
                f"topic {topic.name!r} has {counts.get(topic.name)} partitions but the config says "
                f"{topic.partitions}; change kafka.topics to match or recreate the topic"
            )
    return counts


async def _create_topics(admin: AIOKafkaAdminClient, kafka: KafkaSettings, servers: str,
                         missing: list[TopicSettings]) -> None:
    """Create the missing topics; KafkaSetupError (one line) for each kind of refusal but "exists already"
    (another client created it meanwhile)."""
    answer = await admin.create_topics([
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication_factor,
                 topic_configs=t.kafka_configs())
        for t in missing
    ])  # fmt: skip
    errors = {  # (topic, error code[, message]): version 0 of the answer has no message
        name: (code, rest[0] if rest else None)
        for name, code, *rest in answer.topic_errors if code not in (0, TOPIC_ALREADY_EXISTS)
    }  # fmt: skip
    denied = [t for t in missing if errors.get(t.name, (0, None))[0] in (TOPIC_AUTHORIZATION_FAILED,
                                                                          CLUSTER_AUTHORIZATION_FAILED)]
    if denied:
        raise KafkaSetupError(create_denied_message(principal(kafka), servers, denied))
    if errors:
        raise KafkaSetupError(create_failed_message(servers, [(n, code, text) for n, (code, text) in errors.items()]))


async def _existing_configs(admin: AIOKafkaAdminClient, kafka: KafkaSettings,
                            topics: list[TopicSettings]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Each existing topic's configs, by name, and a line for each that could not be read."""
    if not topics:
        return {}, []
    try:
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in topics]  # all: Tansu drops named lookups
        )
    except (KafkaError, OSError) as exc:  # a broker that cannot describe configs: say so, do not stop
        return {}, [f"warning: could not read the configs of {', '.join(t.name for t in topics)} ({exc!r})"]
    actual: dict[str, dict[str, str]] = {}
    unauthorized: list[str] = []
    lines = []
    for answer in answers:
        for resource in answer.resources:
            code, text, name, entries = resource[0], resource[1], resource[3], resource[4]
            if code == TOPIC_AUTHORIZATION_FAILED:
                unauthorized.append(name)
            elif code:
                lines.append(f"warning: could not read the configs of {name!r} (error {code}: {text})")
            else:
                actual[name] = {entry[0]: entry[1] for entry in entries}
    if unauthorized:  # an ACL choice, not a difference: one line for all of them
        lines.append(configs_unreadable_notice(principal(kafka), [t.name for t in topics if t.name in unauthorized]))
    return actual, lines


def _config_differences(topics: list[TopicSettings], actual: Mapping[str, Mapping[str, str]]) -> list[str]:
    """One line per existing topic whose configs differ from the settings (the job never alters a topic)."""
    lines = []
    for topic in topics:
        found = actual.get(topic.name)
        if found is None:
            continue
        for key, value in topic.kafka_configs().items():
            if found.get(key) != value:
                lines.append(
                    f"warning: topic {topic.name!r} exists with {key}={found.get(key, 'unset')}, the config says "
                    f"{value}; the job does not change existing topics: kafka-configs.sh --alter --entity-type "
                    f"topics --entity-name {topic.name} --add-config {key}={value}"
                )
    return lines


async def partition_counts(
    kafka: KafkaSettings, bootstrap_servers: str | None, names: list[str], timeout_s: float = 10.0
) -> dict[str, int]:
    """Partition count per topic, from cluster metadata (waits for new topics to appear)."""
    consumer = make_consumer(kafka, bootstrap_servers)
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            await consumer._client.force_metadata_update()
            counts = {n: len(consumer.partitions_for_topic(n) or ()) for n in names}
            if all(counts.values()) or asyncio.get_running_loop().time() > deadline:
                return counts
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
