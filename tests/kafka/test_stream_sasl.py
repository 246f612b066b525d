"""The scoring job against the real 3-broker cluster over SASL_SSL, with settings shaped like configs/cluster.yaml
(the CA file, hostname check on, the SCRAM password from the environment) as the job's principal, whose ACLs
let it read and write its topics and nothing else: it may not create them, nor read their configs. The topics
are created by an admin beforehand, replicated 3 times, as a platform team does.

The job runs as ``python -m pipelines.stream --config …`` does under ``ray job submit``: a process of its own
with the local Ray it starts. Its actors read the SASL password from the environment of the Ray workers, and a
Ray already running in the test process (the session's) has the environment it started with, which may predate
the cluster fixture's variables.

A wrong password, a CA that did not sign the brokers' certificates and a principal without Read on the
transactions each stop the same command at start-up with exit code 2 and one line saying what to fix.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from actors.messages import JobStatus
from configs import KafkaSettings
from connectors.kafka import ensure_topics, make_consumer
from contracts.records import decode_alert
from models.checked_settings import load_settings
from pipelines.produce import produce_history
from pipelines.stream import read_status
from tests.kafka.cluster import KafkaCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "configs" / "cluster.yaml"
#: Partitions per topic key of kafka.topics (a multiple of the 2 actors, as configs/cluster.yaml asks).
PARTITIONS = {"transactions": 4, "labels": 4, "alerts": 4, "dead_letters": 1, "terminal_deltas": 4, "terminal_risk": 4}
ACTORS = 2


# -- settings and topics ----------------------------------------------------------------------------------------


def cluster_config(path: Path, workdir: Path, prefix: str, kafka: Mapping[str, Any], replication_factor: int = 3) -> Path:
    """configs/cluster.yaml with ``kafka`` (keys) over its kafka section, its topics named ``prefix.<name>``
    with :data:`PARTITIONS` (and ``replication_factor``: the file's is 3), checkpoints, status and MLflow in ``workdir``, no registry model (there is no
    MLflow server here), 2 actors of half a CPU; everything else as the file says."""
    raw = yaml.safe_load(CLUSTER_YAML.read_text())
    raw["kafka"].update(kafka)
    for key, topic in raw["kafka"]["topics"].items():
        topic.update(name=f"{prefix}.{topic['name']}", partitions=PARTITIONS[key], replication_factor=replication_factor)
    raw["stream"].update(actors=ACTORS, actor_num_cpus=0.5, checkpoint_uri=str(workdir / "checkpoints"),
                         status_path=str(workdir / "status.json"), status_interval_s=0.5, checkpoint_interval_s=2.0)
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{workdir / 'mlflow.db'}"
    raw["scoring"]["classifier"]["model_uri"] = ""
    raw["scoring"]["rules_file"] = str(ROOT / "configs" / "rules.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def sasl_config(cluster: KafkaCluster, workdir: Path, prefix: str, **kafka: Any) -> Path:
    """A cluster.yaml-shaped config for the cluster's SASL_SSL listener as the job's principal (``kafka``:
    keys to change, e.g. another ssl_ca_file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    options = {"bootstrap_servers": cluster.sasl_ssl_bootstrap.split(","), "ssl_ca_file": str(cluster.ca_file),
               "sasl_password_env": cluster.password_env("job"), **kafka}
    config = cluster_config(workdir / "job.yaml", workdir, prefix, options)
    kafka_settings = load_settings(config).kafka  # what configs/cluster.yaml says, but where the brokers are
    assert kafka_settings.security_protocol == "SASL_SSL" and kafka_settings.ssl_check_hostname
    assert (kafka_settings.sasl_mechanism, kafka_settings.sasl_username) == ("SCRAM-SHA-512", cluster.job.name)
    return config


def as_user(cluster: KafkaCluster, kafka: KafkaSettings, user: str) -> KafkaSettings:
    return cluster.kafka_settings(kafka, user)


async def create_topics_as_admin(cluster: KafkaCluster, kafka: KafkaSettings) -> None:
    """Each configured topic with its partitions, replication factor (3) and configs, over the admin listener."""
    admin = AIOKafkaAdminClient(**cluster.client_kwargs(None))
    await admin.start()
    try:
        answer = await admin.create_topics([
            NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=t.kafka_configs())
            for t in kafka.topics.all()
        ])  # fmt: skip
    finally:
        await admin.close()
    assert all(code == 0 for _, code, _ in answer.topic_errors), answer
    for topic in kafka.topics.all():
        await cluster.wait_isr(topic.name, topic.replication_factor)


def grant_topic_acls(cluster: KafkaCluster, names: Mapping[str, str],
                     without: Collection[tuple[str, str]] = ()) -> None:  # fmt: skip
    """The cluster's standard topic ACLs (the job's and the reader's) on this test's topics: ``names`` maps each
    standard topic (configs/cluster.yaml's name) to this test's; ``without``: (operation, standard topic) pairs
    left out. The job's group and transactional-id ACLs are prefixed: the fixture's hold for every test."""
    grants = []
    for args in cluster.standard_acls():
        if "--topic" not in args:
            continue
        operation = args[args.index("--operation") + 1]
        head = [arg for i, arg in enumerate(args) if arg != "--topic" and (i == 0 or args[i - 1] != "--topic")]
        topics = [args[i + 1] for i, arg in enumerate(args) if arg == "--topic"]
        kept = [arg for topic in topics if (operation, topic) not in without for arg in ("--topic", names[topic])]
        if kept:
            grants.append(head + kept)
    cluster.add_acls(grants)


def prepare_topics(cluster: KafkaCluster, config: Path, without: Collection[tuple[str, str]] = ()) -> KafkaSettings:
    """The config's topics created by the admin and the standard ACLs granted on them; the job's Kafka settings."""
    kafka = load_settings(config).kafka
    standard = yaml.safe_load(CLUSTER_YAML.read_text())["kafka"]["topics"]
    names = {standard[key]["name"]: getattr(kafka.topics, key).name for key in standard}
    asyncio.run(create_topics_as_admin(cluster, kafka))
    grant_topic_acls(cluster, names, without)
    return kafka


# -- running the job -----------------------------------------------------------------------------------------------


def job_env(**overrides: str) -> dict[str, str]:
    """This process's environment (with the cluster fixture's passwords) for a job process: no RAY_ADDRESS, so
    the job starts a local Ray of its own."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", **overrides}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fss", dir="/tmp") as folder:  # short: Ray's socket paths
        yield folder


def _done(status: JobStatus | None, produced: int) -> bool:
    if not isinstance(status, JobStatus) or len(status.partitions) != PARTITIONS["transactions"]:
        return False
    partitions = status.partitions.values()
    return all(p.lag == 0 for p in partitions) and sum(p.scored + p.dead_letters for p in partitions) >= produced


def run_job_until_scored(config: Path, produced: int, env: dict[str, str], log: Path,
                         timeout_s: float = 300) -> tuple[JobStatus, str]:  # fmt: skip
    """Run ``python -m pipelines.stream --config CONFIG --actors 2`` until its status file says every partition
    has lag 0 and ``produced`` records were scored, then SIGTERM it (it drains) and wait for exit code 0.
    (That status, the job's output.)"""
    status_path = Path(load_settings(config).stream.status_path)
    started = time.monotonic()
    with open(log, "w") as out:
        job = subprocess.Popen([sys.executable, "-m", "pipelines.stream", "--config", str(config), "--actors",
                                str(ACTORS)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        status: JobStatus | None = None
        while not _done(status, produced):
            assert job.poll() is None, f"the job exited ({job.returncode}):\n{log.read_text()[-4000:]}"
            assert time.monotonic() - started < timeout_s, (
                f"not scored in {timeout_s:.0f}s: {msgspec.json.encode(status)[:2000]!r}\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
            try:
                found = read_status(status_path.read_bytes())
            except (OSError, msgspec.DecodeError):
                continue  # not written yet
            status = found if isinstance(found, JobStatus) else None
            stuck = [a.delivery for a in (status.actors if status else []) if getattr(a.delivery, "since_s", 0) > 30]
            assert not stuck, f"outputs not delivered for 30 s: {stuck}\n{log.read_text()[-3000:]}"
        job.send_signal(signal.SIGTERM)  # the job drains: final checkpoints, then its Ray stops
        assert job.wait(timeout=180) == 0, log.read_text()[-4000:]
        assert isinstance(status, JobStatus)
        return status, log.read_text()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)  # its process group: the job and the Ray it started
            job.wait()


def start_job_expecting_failure(config: Path, env: dict[str, str]) -> tuple[int, list[str], float]:
    """(exit code, stderr lines, seconds) of a job start that must fail."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.stream", "--config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    return done.returncode, done.stderr.strip().splitlines(), time.monotonic() - started


async def _read_topic(kafka: KafkaSettings, topic: str, partitions: int, timeout_s: float) -> list[Any]:
    consumer = make_consumer(kafka, None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        # a real broker's first metadata names no topic (streamkit.consume_all asks the consumer for them)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout_s:.0f}s"
            for batch in (await consumer.getmany(timeout_ms=300, max_records=10_000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def read_alerts(kafka: KafkaSettings) -> list[Any]:
    """Every record of the alerts topic, to its current end."""
    alerts = kafka.topics.alerts
    return asyncio.run(_read_topic(kafka, alerts.name, alerts.partitions, timeout_s=60.0))


def produce(kafka: KafkaSettings, settings_producer: Any, history: Any) -> Any:
    return asyncio.run(produce_history(history.transactions, history.labels, kafka, settings_producer, None))


# -- the tests ---------------------------------------------------------------------------------------------------


def test_the_job_scores_every_transaction_over_sasl_ssl_with_alerts_as_on_the_embedded_broker(
    kafka_cluster: KafkaCluster, kafka_broker: str, history: Any, tmp_path: Path, ray_tmp: str
) -> None:
    config = sasl_config(kafka_cluster, tmp_path / "sasl", "sasl")
    job_kafka = prepare_topics(kafka_cluster, config)
    producer = load_settings(config).producer
    report = produce(as_user(kafka_cluster, job_kafka, "admin"), producer, history)  # the job may not write them
    assert report.transactions == history.transactions.num_rows

    status, output = run_job_until_scored(config, report.transactions, job_env(RAY_TMPDIR=ray_tmp),
                                          tmp_path / "sasl.log")
    partitions = status.partitions.values()
    assert sum(p.next_offset for p in partitions) == report.transactions  # every offset, once
    assert all(p.lag == 0 for p in partitions) and status.totals.scored == report.transactions
    assert status.totals.dead_letters == 0 and status.totals.offset_gaps == 0
    assert {p.actor for p in partitions} == {"scoring-0-0", "scoring-0-1"}
    # the job may not read topic configs: one notice, not a false "min.insync.replicas=unset" per topic
    assert "notice: not comparing the configs of topics" in output and "exists with" not in output, output[-3000:]

    records = read_alerts(as_user(kafka_cluster, job_kafka, "reader"))  # the reader's ACL: Read on alerts only
    alerts = [decode_alert(r.value) for r in records]
    assert len(alerts) == status.totals.alerts > 0
    produced_ids = set(history.transactions.column("transaction_id").to_pylist())
    assert all(a.transaction_id in produced_ids for a in alerts)
    assert all(r.key == a.account_id.encode() for r, a in zip(records, alerts, strict=True))
    assert len({a.alert_id for a in alerts}) == len(alerts)

    # the same history and settings on the embedded broker (PLAINTEXT) give the same alerts
    reference = cluster_config(tmp_path / "embedded.yaml", tmp_path / "embedded", "reference", {
        "bootstrap_servers": [kafka_broker], "security_protocol": "PLAINTEXT", "ssl_ca_file": None,
        "sasl_mechanism": None, "sasl_username": None,
    }, replication_factor=1)  # fmt: skip
    reference_kafka = load_settings(reference).kafka
    asyncio.run(ensure_topics(reference_kafka))
    produce(reference_kafka, producer, history)
    with tempfile.TemporaryDirectory(prefix="fse", dir="/tmp") as other_ray:
        embedded, _ = run_job_until_scored(reference, report.transactions, job_env(RAY_TMPDIR=other_ray),
                                           tmp_path / "embedded.log")
    expected = [decode_alert(r.value) for r in read_alerts(reference_kafka)]
    assert embedded.totals.alerts == len(expected) == len(alerts)
    assert sorted((a.transaction_id, a.decision) for a in alerts) == sorted((a.transaction_id, a.decision) for a in expected)


def test_a_wrong_password_stops_the_start_in_one_line(kafka_cluster: KafkaCluster, tmp_path: Path) -> None:
    config = sasl_config(kafka_cluster, tmp_path, "pw")
    variable = kafka_cluster.password_env("job")
    code, lines, seconds = start_job_expecting_failure(config, job_env(**{variable: "not-the-password"}))
    first = kafka_cluster.sasl_ssl_bootstrap.split(",")[0]
    assert (code, lines) == (2, [
        f"error: kafka error: authentication failed at {first} (SASL SCRAM-SHA-512 as 'fraudstream'): "
        f"check kafka.sasl_username and the password in ${variable}"
    ]), lines  # fmt: skip
    assert not (tmp_path / "status.json").exists()
    print(f"wrong password refused in {seconds:.1f}s")


def test_a_ca_that_did_not_sign_the_brokers_stops_the_start_in_one_line(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    config = sasl_config(kafka_cluster, tmp_path, "ca", ssl_ca_file=str(kafka_cluster.other_ca_file))
    code, lines, seconds = start_job_expecting_failure(config, job_env())
    first = kafka_cluster.sasl_ssl_bootstrap.split(",")[0]
    assert (code, lines) == (2, [
        f"error: kafka error: TLS handshake with {first} failed: certificate not trusted (self-signed certificate "
        f"in certificate chain) by kafka.ssl_ca_file {kafka_cluster.other_ca_file}; set kafka.ssl_ca_file to the "
        "CA that signed the brokers' certificates"
    ]), lines  # fmt: skip
    assert not (tmp_path / "status.json").exists()
    print(f"untrusted certificate refused in {seconds:.1f}s")


def test_a_principal_that_may_not_read_the_transactions_stops_the_start_in_one_line(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    """An assigned consumer on a topic it may not read would retry "not authorized" forever: the start asks the
    brokers first. Without Read on transactions (its only ACL there) the job may not even describe the topic."""
    config = sasl_config(kafka_cluster, tmp_path, "deny")
    prepare_topics(kafka_cluster, config, without={("Read", "transactions")})
    code, lines, seconds = start_job_expecting_failure(config, job_env())
    assert (code, lines) == (2, [
        f"error: kafka error: User:fraudstream is not authorized to Read topic 'deny.transactions' at "
        f"{kafka_cluster.sasl_ssl_bootstrap}; fix: grant it: kafka-acls.sh --add --allow-principal User:fraudstream "
        "--operation Read --topic deny.transactions"
    ]), lines  # fmt: skip
    assert not (tmp_path / "status.json").exists()
    print(f"missing ACL refused in {seconds:.1f}s")


def test_missing_topics_the_job_may_not_create_stop_the_start_in_one_line(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    """The job's principal may describe its topics' names (its ACLs are on the names), so the brokers say they
    do not exist; it may not create them."""
    config = sasl_config(kafka_cluster, tmp_path, "absent")
    kafka = load_settings(config).kafka
    standard = yaml.safe_load(CLUSTER_YAML.read_text())["kafka"]["topics"]
    grant_topic_acls(kafka_cluster, {standard[key]["name"]: getattr(kafka.topics, key).name for key in standard})
    code, lines, _ = start_job_expecting_failure(config, job_env())
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        "error: kafka error: topics 'absent.transactions', 'absent.labels', 'absent.alerts', 'absent.transactions.dlq', "
        f"'absent.terminal.deltas', 'absent.terminal.risk' do not exist at {kafka_cluster.sasl_ssl_bootstrap} and "
        "User:fraudstream is not authorized to create them; fix: create them as an admin (kafka-topics.sh --create "
        "--topic absent.transactions --partitions 4 --replication-factor 3 --config min.insync.replicas=2; "
    ), lines[0]
    assert lines[0].endswith(
        "or grant User:fraudstream Create on them (kafka-acls.sh --add --allow-principal User:fraudstream --operation "
        "Create --topic absent.transactions --topic absent.labels --topic absent.alerts --topic absent.transactions.dlq "
        "--topic absent.terminal.deltas --topic absent.terminal.risk)"
    ), lines[0]
