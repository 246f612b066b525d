"""Helpers of the tests that run the stream job against the real Kafka cluster (tests/kafka/cluster.py).

Settings shaped like configs/cluster.yaml (SASL_SSL as the job's principal, topics created by an admin with the
standard ACLs), the job run as ``python -m pipelines.stream --config …`` (what ``ray job submit`` runs: a process
of its own with the local Ray it starts), a history produced as the admin, the alerts read back, and each
partition's entity state read from the job's final checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import yaml
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from actors.checkpointing import checkpoint_key
from actors.messages import JobStatus, PartitionCheckpointMeta
from actors.partition import PartitionProcessor
from actors.terminal_stage import BroadcastRisk
from configs import KafkaSettings, ProducerSettings
from connectors.checkpoint import CheckpointStore, cluster_namespace
from connectors.kafka import ensure_topics, make_consumer
from features import FeatureEngine
from models.checked_settings import load_settings
from pipelines.produce import ProduceReport, produce_history
from pipelines.stream import read_status
from tests.kafka.cluster import KafkaCluster

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


def as_plaintext_admin(cluster: KafkaCluster, kafka: KafkaSettings) -> KafkaSettings:
    """``kafka`` over the PLAINTEXT listener (a super user; never behind a fault proxy): the admin's and the
    test producer's way in while the job's SASL_SSL path is broken."""
    return msgspec.structs.replace(
        kafka, bootstrap_servers=tuple(cluster.plaintext_bootstrap.split(",")), security_protocol="PLAINTEXT",
        ssl_ca_file=None, sasl_mechanism=None, sasl_username=None)  # fmt: skip


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


@contextlib.contextmanager
def ray_tmpdir() -> Iterator[str]:
    """A short temporary folder for a job's RAY_TMPDIR (Ray's socket paths must stay short)."""
    with tempfile.TemporaryDirectory(prefix="fss", dir="/tmp") as folder:
        yield folder


def _json(status: JobStatus | None) -> str:
    return msgspec.json.encode(status).decode()[:2000]


def scored(produced: int, labels_read: bool = False) -> Callable[[JobStatus], bool]:
    """Every partition is in the status with lag 0 and ``produced`` records were scored (or dead-lettered);
    with ``labels_read``, every partition also read its labels to the end (those not due yet are held)."""

    def done(status: JobStatus) -> bool:
        partitions = status.partitions.values()
        if len(status.partitions) != PARTITIONS["transactions"] or not all(p.lag == 0 for p in partitions):
            return False
        if labels_read and not all(p.label_lag is not None and p.label_lag == p.held_labels for p in partitions):
            return False
        return sum(p.scored + p.dead_letters for p in partitions) >= produced

    return done


class JobProcess:
    """``python -m pipelines.stream --config CONFIG --actors 2`` in a process group of its own (with the local Ray
    it starts), its output in ``log``. A context manager: the group is killed at exit if still running."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config, self.env, self.log = config, env, log
        self.status_path = Path(load_settings(config).stream.status_path)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> JobProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.status_path.unlink()  # a previous run's "stopped" file is not this run's status
        with open(self.log, "a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "pipelines.stream", "--config", str(self.config),
                                             "--actors", str(ACTORS)], cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self, tail: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def status(self) -> JobStatus | None:
        """The running job's status file (None before the first write, or once it says the job stopped)."""
        try:
            found = read_status(self.status_path.read_bytes())
        except (OSError, msgspec.DecodeError):
            return None
        return found if isinstance(found, JobStatus) else None

    def wait_for(self, done: Callable[[JobStatus], bool], what: str, timeout_s: float = 180,
                 stuck_s: float | None = 30) -> JobStatus:  # fmt: skip
        """The first status for which ``done`` holds; fails if the job exits, ``timeout_s`` passes, or (unless
        ``stuck_s`` is None) an actor's outputs stay undelivered for ``stuck_s``."""
        deadline = time.monotonic() + timeout_s
        status: JobStatus | None = None
        while True:
            assert self.running, f"the job exited ({self.process and self.process.returncode}) before {what}:\n" \
                                 f"{self.output(4000)}"  # fmt: skip
            found = self.status()
            if found is not None:
                status = found
                if done(status):
                    return status
                if stuck_s is not None:
                    stuck = [a.delivery for a in status.actors if getattr(a.delivery, "since_s", 0) > stuck_s]
                    assert not stuck, f"outputs not delivered for {stuck_s:.0f} s: {stuck}\n{self.output()}"
            assert time.monotonic() < deadline, f"not {what} within {timeout_s:.0f}s: {_json(status)}\n{self.output()}"
            time.sleep(0.25)

    def stop(self, timeout_s: float = 180) -> str:
        """SIGTERM: the job drains (final checkpoints, then its Ray stops) and must exit with 0; its output."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=timeout_s) == 0, self.output(4000)
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)  # its process group: the job and the Ray it started
            self.process.wait()


def run_job_until_scored(config: Path, produced: int, env: dict[str, str], log: Path,
                         timeout_s: float = 300, labels_read: bool = False) -> tuple[JobStatus, str]:  # fmt: skip
    """Run the job until its status file says every partition has lag 0 and ``produced`` records were scored
    (with ``labels_read``, every label read too), then SIGTERM it (it drains) and wait for exit code 0.
    (That status, the job's output.)"""
    with JobProcess(config, env, log) as job:
        status = job.wait_for(scored(produced, labels_read), f"{produced} records scored", timeout_s)
        return status, job.stop()


def run_on_embedded_broker(kafka_broker: str, workdir: Path, prefix: str, history: Any,
                           producer: ProducerSettings) -> tuple[JobStatus, KafkaSettings]:  # fmt: skip
    """The same history and cluster.yaml-shaped settings, uninterrupted, on the embedded broker (PLAINTEXT,
    one replica): the reference a run on the cluster is compared with. (Its last status, its Kafka settings.)"""
    workdir.mkdir(parents=True, exist_ok=True)
    config = cluster_config(workdir / "job.yaml", workdir, prefix, {
        "bootstrap_servers": [kafka_broker], "security_protocol": "PLAINTEXT", "ssl_ca_file": None,
        "sasl_mechanism": None, "sasl_username": None,
    }, replication_factor=1)  # fmt: skip
    kafka = load_settings(config).kafka
    asyncio.run(ensure_topics(kafka))
    report = produce(kafka, producer, history)
    with ray_tmpdir() as ray_tmp:
        status, _ = run_job_until_scored(config, report.transactions, job_env(RAY_TMPDIR=ray_tmp), workdir / "job.log")
    return status, kafka


def start_job_expecting_failure(config: Path, env: dict[str, str]) -> tuple[int, list[str], float]:
    """(exit code, stderr lines, seconds) of a job start that must fail."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.stream", "--config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    return done.returncode, done.stderr.strip().splitlines(), time.monotonic() - started


# -- records in and out --------------------------------------------------------------------------------------------


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


def produce(kafka: KafkaSettings, settings_producer: ProducerSettings, history: Any) -> ProduceReport:
    return produce_records(kafka, settings_producer, history.transactions, history.labels)


def produce_records(kafka: KafkaSettings, settings_producer: ProducerSettings, transactions: pa.Table,
                    labels: pa.Table | None, rate: float = 0.0) -> ProduceReport:  # fmt: skip
    """``produce_history`` of these records (idempotent on the real cluster: a batch retried after its leader
    died is written once)."""
    return asyncio.run(produce_history(transactions, labels, kafka, settings_producer, None, rate=rate))


class StreamProducer:
    """``produce_records`` at ``rate`` transactions/s in a thread of its own, from construction until :meth:`join`."""

    def __init__(self, kafka: KafkaSettings, settings_producer: ProducerSettings, transactions: pa.Table,
                 labels: pa.Table | None, rate: float) -> None:  # fmt: skip
        self._report: list[ProduceReport] = []
        self._error: list[BaseException] = []
        args = (kafka, settings_producer, transactions, labels, rate)
        self._thread = threading.Thread(target=self._run, args=args, name="stream-producer", daemon=True)
        self._thread.start()

    def _run(self, *args: Any) -> None:
        try:
            self._report.append(produce_records(*args))
        except BaseException as exc:  # handed to join()
            self._error.append(exc)

    @property
    def running(self) -> bool:
        """Still sending (not every record acknowledged yet)."""
        return self._thread.is_alive()

    def join(self, timeout_s: float = 180) -> ProduceReport:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the producer did not finish within {timeout_s:.0f}s"
        if self._error:
            raise self._error[0]
        return self._report[0]


# -- what the job left in its checkpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionState:
    """A transactions partition's latest checkpoint: its metadata and the digest of its entity state."""

    meta: PartitionCheckpointMeta
    digest: str


def checkpointed_state(config: Path, cluster_id: str) -> dict[int, PartitionState]:
    """Each transactions partition's latest checkpoint in the job's store (under the cluster's namespace),
    restored as the job restores it, with the digest of its entity state (accounts and pending labels)."""
    settings = load_settings(config)
    topics = settings.kafka.topics
    store = CheckpointStore(settings.stream.checkpoint_uri, namespace=cluster_namespace(cluster_id))
    broadcast = BroadcastRisk(FeatureEngine.terminal_risk_for(settings.features), topics.terminal_deltas.partitions)
    found = {}
    for partition in range(topics.transactions.partitions):
        checkpoint = store.load_latest(checkpoint_key(topics.transactions.name, partition))
        assert checkpoint is not None, f"no checkpoint of partition {partition} in {settings.stream.checkpoint_uri}"
        meta = PartitionCheckpointMeta.from_store(checkpoint.meta)
        processor = PartitionProcessor.restore(settings, partition, broadcast, checkpoint.blobs, meta)
        found[partition] = PartitionState(meta, processor.entity_state_digest())
    return found
