"""The embedded broker: start, topics, clean stop, clear errors."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configs import Settings, TopicSettings
from connectors.broker import BrokerUnavailable, EmbeddedBroker, free_port, port_answers
from connectors.kafka import KafkaSetupError, ensure_topics, partition_counts, wait_until_ready

pytestmark = pytest.mark.integration


def test_broker_answers_kafka_and_topics_match_the_config(kafka_broker: str, local_settings: Settings) -> None:
    counts = asyncio.run(partition_counts(local_settings.kafka, kafka_broker, [t.name for t in local_settings.kafka.topics.all()]))
    assert counts == {"transactions": 4, "labels": 4, "alerts": 4, "transactions.dlq": 1, "terminal.deltas": 4,
                      "terminal.risk": 4}
    # idempotent: a second start-up finds the topics and leaves them alone
    assert asyncio.run(ensure_topics(local_settings.kafka, kafka_broker)) == counts


def test_topic_with_other_partition_count_is_refused(isolated_settings, kafka_broker: str) -> None:
    settings = isolated_settings(partitions=2)
    import msgspec

    wrong = msgspec.structs.replace(
        settings.kafka.topics, transactions=msgspec.structs.replace(settings.kafka.topics.transactions, partitions=3),
        labels=msgspec.structs.replace(settings.kafka.topics.labels, partitions=3),
    )
    kafka = msgspec.structs.replace(settings.kafka, topics=wrong)
    with pytest.raises(KafkaSetupError, match="has 2 partitions but the config says 3"):
        asyncio.run(ensure_topics(kafka, kafka_broker))


async def _topic_configs(kafka_broker: str, name: str) -> dict[str, str]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    try:
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    return {entry[0]: entry[1] for answer in answers for resource in answer.resources for entry in resource[4]}


def test_an_existing_compacted_topic_the_job_writes_without_keys_stops_the_start(
    isolated_settings, kafka_broker: str
) -> None:
    """Kafka refuses keyless records on a compacted topic (every send would be retried for ever): the start
    stops in one line naming the topic and the kafka-configs.sh command that fixes it."""
    import msgspec
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    settings = isolated_settings(partitions=2)
    assert "cleanup.policy" not in settings.kafka.topics.terminal_risk.configs  # not created compacted
    risk = msgspec.structs.replace(settings.kafka.topics.terminal_risk, name=f"{settings.kafka.topics.terminal_risk.name}.c")
    kafka = msgspec.structs.replace(settings.kafka, topics=msgspec.structs.replace(settings.kafka.topics, terminal_risk=risk))

    async def create_compacted() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(risk.name, num_partitions=risk.partitions, replication_factor=1,
                                                topic_configs={"cleanup.policy": "compact"})])
        finally:
            await admin.close()

    asyncio.run(create_compacted())
    with pytest.raises(KafkaSetupError) as failure:
        asyncio.run(ensure_topics(kafka, kafka_broker))
    message = str(failure.value)
    assert "\n" not in message
    assert f"topic {risk.name!r} at {kafka_broker} is compacted" in message
    assert f"--entity-name {risk.name} --add-config cleanup.policy=delete" in message


def test_topic_configs_are_set_at_creation_and_differences_reported_not_changed(
    isolated_settings, kafka_broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import msgspec

    settings = isolated_settings(partitions=2)
    topic = TopicSettings(name=f"{settings.kafka.topics.alerts.name}.kept", partitions=2,
                          configs={"retention.ms": 3_600_000, "cleanup.policy": "delete"})  # fmt: skip
    asyncio.run(ensure_topics(settings.kafka, kafka_broker, [topic]))
    assert asyncio.run(_topic_configs(kafka_broker, topic.name)) == {"retention.ms": "3600000", "cleanup.policy": "delete"}
    assert "warning" not in capsys.readouterr().err  # as configured: nothing to say

    changed = msgspec.structs.replace(topic, configs={"retention.ms": 7_200_000, "cleanup.policy": "delete"})
    asyncio.run(ensure_topics(settings.kafka, kafka_broker, [changed]))
    err = capsys.readouterr().err
    assert f"topic {topic.name!r} exists with retention.ms=3600000, the config says 7200000" in err
    assert "--add-config retention.ms=7200000" in err
    assert asyncio.run(_topic_configs(kafka_broker, topic.name))["retention.ms"] == "3600000"  # left as it was


def test_given_port_in_use_is_a_clear_error(kafka_broker: str) -> None:
    port = int(kafka_broker.rsplit(":", 1)[1])
    with pytest.raises(BrokerUnavailable, match=f"port {port} .* already in use"):
        EmbeddedBroker(port=port).start()


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerUnavailable, match="embedded broker binary not found"):
        EmbeddedBroker().start()


def test_unreachable_kafka_times_out_with_advice(local_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    address = f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.ERROR, logger="aiokafka"), \
            pytest.raises(KafkaSetupError, match=r"did not answer .* check kafka\.bootstrap_servers"):
        asyncio.run(wait_until_ready(local_settings.kafka, address, timeout_s=1.0))
    # one message, ours, not aiokafka's "Unable connect" line for every try
    assert not [r for r in caplog.records if "Unable connect" in r.getMessage()]
    assert not logging.getLogger("aiokafka").filters  # the filter is gone once the wait is over


def test_stop_leaves_no_process_and_frees_the_port() -> None:
    broker = EmbeddedBroker()
    broker.start()
    pid, port = broker.process.pid, broker.port
    broker.stop()
    assert not broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not port_answers("127.0.0.1", port)


@pytest.mark.slow
def test_broker_command_creates_topics_and_stops_on_ctrl_c(tmp_path: Path, local_settings: Settings) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "broker", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / ".fraudstream" / "broker.json").exists():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "broker command did not become ready"
            time.sleep(0.1)
        counts = asyncio.run(partition_counts(local_settings.kafka, f"127.0.0.1:{port}", ["transactions", "transactions.dlq"]))
        assert counts == {"transactions": 4, "transactions.dlq": 1}
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert f"bootstrap_servers=127.0.0.1:{port}" in stdout
    assert "broker stopped" in stderr
    assert not port_answers("127.0.0.1", port)
    assert not (tmp_path / ".fraudstream" / "broker.json").exists()


def test_exactly_once_on_a_broker_without_transactions_stops_the_start_in_one_line(
    isolated_settings, kafka_broker: str, tmp_path: Path
) -> None:
    """The embedded broker gives no producer ids: the job stops before Ray or any actor starts (each actor's
    transactional producer would otherwise fail for ever); the embedded setting itself is refused at load."""
    import msgspec
    import ray

    from pipelines.stream import StreamJob

    settings = isolated_settings(partitions=2)
    settings = msgspec.structs.replace(
        settings, kafka=msgspec.structs.replace(settings.kafka, embedded=False, exactly_once=True),
        stream=msgspec.structs.replace(settings.stream, checkpoint_uri=str(tmp_path / "checkpoints")))
    was_running = ray.is_initialized()
    job = StreamJob(settings, kafka_broker)
    with pytest.raises(KafkaSetupError) as failure:
        job.start(1)
    message = str(failure.value)
    assert message.startswith(f"kafka.exactly_once: the brokers at {kafka_broker} have no transactions (")
    assert "set kafka.exactly_once: false" in message and "\n" not in message
    assert job.controller is None and ray.is_initialized() == was_running
