"""End-to-end pipeline throughput, loss and latency on the embedded broker, beside two references.

Phase 1: produce M generated transactions (default 200k) into P partitions
(default 4), then run K=2 scoring actors (full feature set, anomaly model,
rules) on local Ray:
- events_per_s: M / (first event polled -> last offset committed), over actors;
- lost: produced minus distinct scored (offsets scored, from the actors' positions).
Phase 2: a producer at a steady 2,000 events/s; per scored event the time from
its Kafka timestamp (the producer's create time) to the acknowledgement of the
alerts of its micro-batch: p50_ms, p95_ms, p99_ms. The workload is moved in time
so that phase 1 ends when it is generated, and phase 2 runs live by default
(--steady-pace live: a transaction's event time is when it is sent, as in
production); --steady-pace replay keeps the history's own times, days of event
time in seconds, so the terminal alignment holds transactions at every hour
bucket it crosses (one round trip through the terminal stage each).
References, in the same run on the same topic:
- raw_decode_per_s: one plain aiokafka consumer + json.loads (the ceiling);
- reference_loop_per_s: one plain aiokafka loop running the shared reference
  workload's update_features plus reference_model()'s score_one/learn_one per event.
With --kafka, the same workload runs again on a real Apache Kafka 4.x cluster started here
(tests/kafka/cluster.py: 3 KRaft brokers on loopback, topics replicated 3 times, min.insync.replicas=2):
the job as its SASL_SSL/SCRAM-SHA-512 principal with only the ACLs it needs, the producer and the actors
with acks=all (the producer section of configs/cluster.yaml), phases 1 and 2 as above ("kafka"); then once
more there with kafka.exactly_once: true ("kafka_exactly_once", with its cost in throughput). "targets"
checks issue 17's: K=2 on the cluster >= 0.8 x the embedded events/s, p99 <= 100 ms at 2,000 events/s,
exactly-once costing <= 30 % of the throughput. With --kafka every run also reports backlog_batches and
backlog_phase_ms (phase 1's micro-batches and where their time went); --kafka-listener PLAINTEXT runs the
cluster's clients without TLS and SASL, as its super user, to see what those cost.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "bench"))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import reference_workload  # noqa: E402
import yaml  # noqa: E402
from aiokafka import TopicPartition  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402

from actors.clients import kafka_access  # noqa: E402
from actors.messages import DrainedJob, JobStatus  # noqa: E402
from configs import KafkaSettings, ProducerSettings, Settings, TopicSettings, TopicsSettings  # noqa: E402
from connectors.broker import EmbeddedBroker  # noqa: E402
from connectors.kafka import ensure_topics, make_consumer, wait_until_ready  # noqa: E402
from models.checked_settings import load_settings  # noqa: E402
from pipelines.produce import produce_history  # noqa: E402
from pipelines.stream import StreamJob  # noqa: E402
from synthetic import generate  # noqa: E402
from tests.kafka.cluster import KafkaCluster, KafkaClusterError, fetch_kafka, missing_tools  # noqa: E402

#: Issue 17's targets on the real cluster.
MIN_RATIO_TO_EMBEDDED = 0.8
MAX_P99_MS = 100.0
MAX_EXACTLY_ONCE_COST = 0.3


@contextlib.contextmanager
def step(console: Console, what: str) -> Iterator[None]:
    """A spinner with ``what`` and the time it has taken so far, while the block runs."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(what, total=None)
        yield


async def _consume_loop(settings: Any, bootstrap: str | None, topic: str, expected: int, handle: Any) -> float:
    """Seconds for one plain aiokafka consumer to read ``expected`` records and handle each value."""
    consumer = make_consumer(settings.kafka, bootstrap, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka.topics.transactions.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started = None
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
            if batch and started is None:
                started = time.perf_counter()
            for messages in batch.values():
                for message in messages:
                    handle(message.value)
                seen += len(messages)
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--steady-rate", type=float, default=2_000.0)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--steady-pace", choices=("live", "replay"), default="live",
                        help="phase 2's event time: live (each transaction's is when it is sent, as in production) "
                             "or replay (the history's own: days of event time go by in seconds, and the "
                             "terminal alignment holds transactions at every hour bucket it crosses)")
    parser.add_argument("--checkpoint-interval", type=float, default=None,
                        help="stream.checkpoint_interval_s (default: the config's)")
    parser.add_argument("--history-days", type=int, default=30,
                        help="event time the backlog spans: 30 (default) is a month's backfill, one terminal bucket "
                             "per round trip through the terminal stage while catching up (720 round trips); fewer "
                             "days, more accounts: a denser stream, as a production backlog is (hours of lag hold "
                             "millions of events)")
    parser.add_argument("--kafka", action="store_true",
                        help="also run on a 3-broker Apache Kafka cluster (needs Java 17+, and Maven on the first run)")
    parser.add_argument("--kafka-listener", choices=("SASL_SSL", "PLAINTEXT"), default="SASL_SSL",
                        help="the cluster's listener for every client: SASL_SSL as the job's principal with its "
                             "ACLs (as in production), or PLAINTEXT as the super user (no TLS, no SASL)")
    return parser.parse_args()


def _topics(prefix: str, partitions: int, replication_factor: int) -> TopicsSettings:
    """The benchmark's own topics ``prefix.<name>``, ``partitions`` each (the DLQ: one); replicated ones ask for
    min.insync.replicas=2, as configs/cluster.yaml does."""

    def topic(name: str, count: int = partitions) -> TopicSettings:
        configs: dict[str, Any] = {"min.insync.replicas": 2} if replication_factor > 1 else {}
        return TopicSettings(name=f"{prefix}.{name}", partitions=count, replication_factor=replication_factor,
                             configs=configs)

    return TopicsSettings(transactions=topic("transactions"), labels=topic("labels"), alerts=topic("alerts"),
                          dead_letters=topic("dlq", 1), terminal_deltas=topic("terminal.deltas"),
                          terminal_risk=topic("terminal.risk"))  # fmt: skip


def bench_settings(base: Settings, args: argparse.Namespace, workdir: Path, prefix: str = "bench",
              replication_factor: int = 1) -> Settings:  # fmt: skip
    """The config on the benchmark's own topics (P partitions each), checkpoints and status file in ``workdir``."""
    topics = _topics(prefix, args.partitions, replication_factor)
    return msgspec.structs.replace(
        base,
        kafka=msgspec.structs.replace(base.kafka, topics=topics),
        stream=msgspec.structs.replace(
            base.stream, checkpoint_uri=str(workdir / "checkpoints"), status_path=str(workdir / "status.json"),
            actors=args.actors,
            checkpoint_interval_s=args.checkpoint_interval or base.stream.checkpoint_interval_s,
        ),
    )


@dataclass(frozen=True)
class Workload:
    """What every broker gets: phase 1's transactions, then phase 2's (at the steady rate)."""

    transactions: pa.Table
    steady: pa.Table


def make_workload(base: Settings, args: argparse.Namespace, console: Console) -> Workload:
    """``--events`` transactions of a generated history of ``--history-days`` days (about two per account a day),
    and the steady phase's next ones;
    moved in time so that the backlog ends now, where a live steady phase (:func:`live_times`) goes on a minute
    or two later (no terminal bucket edge between them, as a rule, for the alignment to wait on)."""
    days = args.history_days
    accounts = max(1_000, args.events // (2 * days))  # the generated cards pay about twice a day
    spec = msgspec.structs.replace(base.generator, accounts=accounts, days=days, seed=3)
    with step(console, "generating the stream"):
        history = generate(spec)
    steady_rows = int(args.steady_rate * args.steady_seconds)
    transactions = history.transactions.slice(0, args.events + steady_rows)
    times = transactions.column("event_time").cast(pa.int64()).to_numpy()
    last_backlog_ms = int(times[: args.events].max())
    shift_ms = int(time.time() * 1000) - last_backlog_ms
    moved = pa.array(times + shift_ms, pa.int64()).cast(transactions.schema.field("event_time").type)
    transactions = transactions.set_column(transactions.schema.get_field_index("event_time"), "event_time", moved)
    return Workload(transactions.slice(0, args.events), transactions.slice(args.events, steady_rows))


def live_times(table: pa.Table, rate: float, start_ms: int) -> pa.Table:
    """``table`` with each transaction's event time the moment it is due to be sent at ``rate`` from
    ``start_ms`` (offset order kept): a live stream, whose event time keeps pace with the clock."""
    due = start_ms + (np.arange(table.num_rows, dtype=np.int64) * 1000 / rate).astype(np.int64)
    field = table.schema.get_field_index("event_time")
    return table.set_column(field, "event_time", pa.array(due, pa.int64()).cast(table.schema.field(field).type))


@dataclass(frozen=True)
class Target:
    """One broker the workload runs on."""

    name: str
    #: The job's settings there: topics, security, producer (acks, linger), checkpoints.
    settings: Settings
    #: None: the configured bootstrap servers (the embedded broker's address is known only once it runs).
    bootstrap: str | None
    #: Who writes the transactions (on the cluster an admin: the job may only read them).
    writer: KafkaSettings
    #: Makes the topics (and grants the job's ACLs on them) before anything is produced.
    prepare: Callable[[], None]
    #: The references that also read the produced transactions: "raw" and "reference_loop".
    references: tuple[str, ...] = ()


def _reference_loop() -> Callable[[bytes], None]:
    """Per record: the shared reference workload's update_features, then its model's score_one and learn_one."""
    states: dict[str, dict[str, Any]] = {}
    model = reference_workload.reference_model()
    update = reference_workload.update_features

    def reference(value: bytes) -> None:
        tx = json.loads(value)
        event = {"account_id": tx["account_id"], "event_time": tx["event_time"] / 1000.0,
                 "amount": tx["amount"], "lat": tx.get("lat"), "lon": tx.get("lon")}
        state = states.get(event["account_id"])
        if state is None:
            state = states[event["account_id"]] = {}
        features = update(state, event)
        model.score_one(features)
        model.learn_one(features)

    return reference


#: name -> (what it does, a maker of its per-record handler).
_REFERENCES: dict[str, tuple[str, Callable[[], Callable[[bytes], Any]]]] = {
    "raw": ("raw consume + json.loads", lambda: json.loads),
    "reference_loop": ("reference loop: consume + update_features + HalfSpaceTrees", _reference_loop),
}


def _references(target: Target, n: int, console: Console) -> dict[str, float]:
    """Seconds for each of the target's references to read the ``n`` produced transactions."""
    topic = target.settings.kafka.topics.transactions.name
    seconds = {}
    for name in target.references:
        what, handler = _REFERENCES[name]
        with step(console, f"{target.name}: {what}"):
            seconds[name] = asyncio.run(_consume_loop(target.settings, target.bootstrap, topic, n, handler()))
    return seconds


def _catch_up(job: StreamJob, n: int, partitions: int) -> JobStatus:
    """Poll the job's status until every partition is owned and the ``n`` produced transactions are scored
    (RuntimeError when that takes far longer than any healthy run)."""
    timeout_s = 120 + n / 200
    deadline = time.monotonic() + timeout_s
    while True:
        status = job.status()
        parts = status.partitions.values()
        scored = sum(p.next_offset for p in parts)
        if len(status.partitions) == partitions and all(p.lag == 0 for p in parts) and scored >= n:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n - scored:,} of {n:,} transactions not scored within {timeout_s:.0f}s "
                               f"({len(status.partitions)} of {partitions} partitions owned)")
        time.sleep(0.5)


def _pipeline_seconds(status: JobStatus) -> float:
    """First event polled -> last offset committed, over the actors."""
    firsts = [a.first_poll_wall for a in status.actors if a.first_poll_wall]
    lasts = [a.last_commit_wall for a in status.actors if a.last_commit_wall]
    return max(lasts) - min(firsts)


def _steady(job: StreamJob, target: Target, steady: pa.Table, rate: float, scored_before: int,
            pace: str) -> JobStatus:  # fmt: skip
    """Produce ``steady`` at ``rate`` events/s (paced every 5 ms, not in bursts), in event time as it is sent
    (``pace`` live) or as the history has it (replay); the status once it is scored (or after 30 s)."""
    chunk = max(1, int(rate // 200))
    if pace == "live":
        steady = live_times(steady, rate, int(time.time() * 1000))
    producer = threading.Thread(target=lambda: asyncio.run(produce_history(
        steady, None, target.writer, target.settings.producer, target.bootstrap, rate=rate, chunk_rows=chunk)))
    producer.start()
    producer.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = job.status()
        if sum(p.next_offset for p in status.partitions.values()) >= scored_before + steady.num_rows:
            break
        time.sleep(0.5)
    return status


def _latency_samples(job: StreamJob) -> np.ndarray:
    """Every actor's per-event latencies (ms) since the last reset."""
    import ray

    samples = ray.get(job.controller.call_all.remote("latency_samples"))
    return np.concatenate([np.asarray(s, dtype=np.float64) for s in samples] or [np.empty(0)])


def _worst_phases(status: JobStatus) -> dict[str, dict[str, float]]:
    """Where the loop's time went: per phase, the worst actor's p99 and max."""
    phase_ms: dict[str, dict[str, float]] = {}
    for actor in status.actors:
        for phase, figures in actor.phase_ms.items():
            worst = phase_ms.setdefault(phase, {"p99": 0.0, "max": 0.0})
            worst["p99"] = max(worst["p99"], figures.p99 or 0.0)
            worst["max"] = max(worst["max"], figures.max or 0.0)
    return phase_ms


@dataclass(frozen=True)
class Measured:
    """What one run measured, for :func:`run_figures`."""

    events: int
    steady_events: int
    #: Seconds: the pipeline's first poll -> last commit, the raw consumer, the reference loop (None: not run).
    pipeline_s: float
    raw_s: float | None
    reference_s: float | None
    lost: int
    #: Per-event latencies (ms) of the steady phase; the job's status after phase 1, at the end of phase 2 and
    #: after the drain.
    samples: np.ndarray
    caught_up: JobStatus
    steady: JobStatus
    final: DrainedJob


def _phases(job: StreamJob, target: Target, workload: Workload, args: argparse.Namespace,
            console: Console) -> tuple[JobStatus, JobStatus, np.ndarray]:  # fmt: skip
    """Phase 1 (the produced backlog scored) and phase 2 (a steady rate): the status after each, phase 2's
    latencies."""
    import ray

    n = workload.transactions.num_rows
    with step(console, f"{target.name}: scoring {n:,} transactions with {args.actors} actors"):
        job.start(args.actors)
        caught_up = _catch_up(job, n, args.partitions)
    ray.get(job.controller.call_all.remote("reset_latency"))
    with step(console, f"{target.name}: steady {args.steady_rate:,.0f} events/s for {args.steady_seconds:.0f}s"):
        steady = _steady(job, target, workload.steady, args.steady_rate, n, args.steady_pace)
    return caught_up, steady, _latency_samples(job)


def run_workload(target: Target, workload: Workload, args: argparse.Namespace, console: Console) -> Measured:
    """The module docstring's phases on one broker: topics, the backlog produced, the references, the job
    started, phase 1, phase 2, the job drained."""
    settings, n = target.settings, workload.transactions.num_rows
    with step(console, f"{target.name}: topics"):
        target.prepare()
    with step(console, f"{target.name}: producing {n:,} transactions"):
        asyncio.run(produce_history(workload.transactions, None, target.writer, settings.producer, target.bootstrap))
    references = _references(target, n, console)
    job = StreamJob(settings, target.bootstrap)
    try:
        caught_up, steady, samples = _phases(job, target, workload, args, console)
        final = job.drain()
    except BaseException:
        job.stop()
        raise
    measured = Measured(
        events=n, steady_events=workload.steady.num_rows, pipeline_s=_pipeline_seconds(caught_up),
        raw_s=references.get("raw"), reference_s=references.get("reference_loop"),
        lost=n - sum(p.next_offset for p in caught_up.partitions.values()), samples=samples, caught_up=caught_up,
        steady=steady, final=final,
    )
    console.log(f"{target.name}: {n / measured.pipeline_s:,.0f} events/s, lost {measured.lost}, "
                f"p99 {percentiles(samples)[2]} ms")
    return measured


def percentiles(samples: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """p50, p95, p99 (ms, 2 decimals); None without samples."""
    if not samples.size:
        return None, None, None
    p50, p95, p99 = (round(float(v), 2) for v in np.percentile(samples, [50, 95, 99]))
    return p50, p95, p99


def run_figures(measured: Measured, args: argparse.Namespace) -> dict[str, Any]:
    """One run's figures (the whole JSON line without --kafka); the references' only where they ran."""
    m, n = measured, measured.events
    p50, p95, p99 = percentiles(m.samples)
    references: dict[str, Any] = {}
    if m.raw_s is not None:
        references["raw_decode_per_s"] = round(n / m.raw_s)
    if m.reference_s is not None:
        references["reference_loop_per_s"] = round(n / m.reference_s)
        references["ratio_to_reference_loop"] = round((n / m.pipeline_s) / (n / m.reference_s), 3)
    return {
        "events_per_s": round(n / m.pipeline_s),
        "lost": m.lost,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "latency_samples": int(m.samples.size),
        "fetch_delay_ms": [msgspec.to_builtins(a.fetch_delay_ms) for a in m.steady.actors],
        "phase_ms": _worst_phases(m.steady),
        **references,
        "events": n,
        "steady_events": m.steady_events,
        "steady_pace": args.steady_pace,
        "history_days": args.history_days,
        "alerts": sum(p.alerts for a in m.final.actors for p in a.partitions.values()),
        "partitions": args.partitions,
        "actors": args.actors,
    }


def _backlog_figures(measured: Measured) -> dict[str, Any]:
    """How phase 1 went (--kafka only): its micro-batches over the actors, and the loop's phases then."""
    return {"backlog_batches": sum(a.batches for a in measured.caught_up.actors),
            "backlog_phase_ms": _worst_phases(measured.caught_up)}


def embedded_target(settings: Settings, bootstrap: str) -> Target:
    async def prepare() -> None:
        await wait_until_ready(settings.kafka, bootstrap)
        await ensure_topics(settings.kafka, bootstrap)

    return Target("embedded", settings, bootstrap, settings.kafka, lambda: asyncio.run(prepare()),
                   references=("raw", "reference_loop"))


# -- the real cluster (--kafka) ---------------------------------------------------------------------------------


def _kafka_libs(console: Console) -> Path:
    """The Kafka jars (Maven fetches them on the first run); SystemExit with one line when a tool is missing."""
    missing = missing_tools()
    if missing:
        raise SystemExit(f"error: --kafka: {missing}")
    try:
        with step(console, "Kafka jars: from the cache, else Maven fetches them (~55 MB, the first time)"):
            report = fetch_kafka()
    except KafkaClusterError as exc:
        raise SystemExit(f"error: --kafka: {exc}") from exc
    how = f"fetched in {report.seconds:.0f}s" if report.fetched else "cached"
    console.log(f"Kafka jars {how}: {report.libs} ({report.jar_bytes / 1e6:.0f} MB)")
    return report.libs


@contextlib.contextmanager
def _kafka_cluster(libs: Path, console: Console) -> Iterator[KafkaCluster]:
    """The 3-broker test cluster in a temporary folder, its users' passwords in this process's environment (for
    the clients, and the Ray workers of a Ray started afterwards); every broker killed, the folder removed at the
    end."""
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-kafka-") as folder:
        cluster = KafkaCluster(Path(folder), libs=libs, heap="1g")
        try:
            with step(console, f"starting {cluster.size} Kafka brokers (KRaft, SASL_SSL, ACLs)"):
                cluster.start()
            console.log(f"Kafka cluster ready in {cluster.timings['start_s']:.0f}s: {cluster.sasl_ssl_bootstrap}")
            for user in cluster.users.values():
                os.environ[cluster.password_env(user)] = user.password
            yield cluster
        finally:
            cluster.stop()


def _cluster_producer() -> ProducerSettings:
    """configs/cluster.yaml's producer section (acks=all, the short linger a real Kafka is fine with)."""
    raw = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())["producer"]
    return msgspec.convert(raw, ProducerSettings)


def _job_acls(principal: str, settings: Settings) -> list[list[str]]:
    """``kafka-acls`` arguments granting ``principal`` what the scoring actors do on each topic (no more); its
    groups and transactional ids (prefixed ``fraudstream``) the cluster grants at start."""
    by_operation: dict[str, list[str]] = {}
    for topic, operations in kafka_access(settings).items():
        for operation in operations:
            by_operation.setdefault(operation, []).extend(("--topic", topic))
    return [["--allow-principal", principal, "--operation", op, *topics] for op, topics in by_operation.items()]


def _prepare_cluster_topics(cluster: KafkaCluster, settings: Settings) -> None:
    """The topics created by an admin (the job may not create them), every replica in sync; the job's ACLs."""

    async def create() -> None:
        await ensure_topics(cluster.kafka_settings(settings.kafka, "admin"))
        topics = settings.kafka.topics.all()
        await asyncio.gather(*(cluster.wait_isr(t.name, t.replication_factor) for t in topics))

    asyncio.run(create())
    cluster.add_acls(_job_acls(cluster.job.principal, settings))


def _on_listener(cluster: KafkaCluster, kafka: KafkaSettings, listener: str, user: str) -> KafkaSettings:
    """``kafka`` pointed at the cluster: SASL_SSL as ``user``, or PLAINTEXT (whoever connects is the super user)."""
    if listener == "SASL_SSL":
        return cluster.kafka_settings(kafka, user)
    return msgspec.structs.replace(kafka, embedded=False, bootstrap_servers=tuple(cluster.plaintext_bootstrap.split(",")),
                                   security_protocol="PLAINTEXT", ssl_ca_file=None, sasl_mechanism=None,
                                   sasl_username=None)  # fmt: skip


def _cluster_target(cluster: KafkaCluster, base: Settings, args: argparse.Namespace, workdir: Path, name: str,
                    exactly_once: bool = False) -> Target:  # fmt: skip
    """The job as the cluster's principal (``--kafka-listener``) on topics ``<name>.*`` replicated on every
    broker, with configs/cluster.yaml's producer (acks=all) for the transactions and the actors' outputs; an
    admin writes the transactions."""
    settings = bench_settings(base, args, workdir / name, prefix=name, replication_factor=cluster.size)
    kafka = _on_listener(cluster, settings.kafka, args.kafka_listener, "job")
    if exactly_once:
        kafka = msgspec.structs.replace(kafka, exactly_once=True)
    # configs/cluster.yaml's idle fetch wait: an actor's empty fetch every 5 ms keeps three brokers busy here
    cluster_yaml = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())
    stream = msgspec.structs.replace(settings.stream, fetch_max_wait_ms=cluster_yaml["stream"]["fetch_max_wait_ms"])
    settings = msgspec.structs.replace(settings, kafka=kafka, producer=_cluster_producer(), stream=stream)
    return Target(name, settings, None, _on_listener(cluster, kafka, args.kafka_listener, "admin"),
                   lambda: _prepare_cluster_topics(cluster, settings),
                   references=() if exactly_once else ("raw",))


def _cluster_facts(cluster: KafkaCluster, target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """How the job talked to the cluster, for the JSON line."""
    kafka, producer = target.settings.kafka, target.settings.producer
    return {
        "listener": kafka.security_protocol,
        "sasl_mechanism": kafka.sasl_mechanism,
        "principal": f"User:{kafka.sasl_username or 'ANONYMOUS'}",
        "brokers": cluster.size,
        "replication_factor": kafka.topics.transactions.replication_factor,
        "min_insync_replicas": kafka.topics.transactions.configs.get("min.insync.replicas"),
        "acks": producer.acks,
        "producer_linger_ms": producer.linger_ms,
        "exactly_once": kafka.exactly_once,
        "steady_rate": args.steady_rate,
    }


def _attempt(console: Console, what: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s figures, or {"error": its first line} (the traceback on the console): one failed run on the
    cluster does not throw away the others' figures."""
    try:
        return run()
    except Exception as exc:
        console.print_exception()
        return {"error": f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def _kafka_figures(cluster: KafkaCluster, target: Target, workload: Workload, args: argparse.Namespace,
                   console: Console) -> dict[str, Any]:  # fmt: skip
    measured = run_workload(target, workload, args, console)
    return {**_cluster_facts(cluster, target, args), **run_figures(measured, args), **_backlog_figures(measured)}


def _kafka_runs(libs: Path, base: Settings, args: argparse.Namespace, workdir: Path, workload: Workload,
                embedded: dict[str, Any], console: Console) -> dict[str, Any]:  # fmt: skip
    """The workload on the cluster with acks=all, then with exactly-once: "kafka", "kafka_exactly_once", "targets"."""
    with _kafka_cluster(libs, console) as cluster:
        plain = _cluster_target(cluster, base, args, workdir, "kafka")
        kafka = _attempt(console, "kafka", lambda: _kafka_figures(cluster, plain, workload, args, console))
        if "events_per_s" in kafka:
            kafka["ratio_to_embedded"] = round(kafka["events_per_s"] / embedded["events_per_s"], 3)
        eos = _cluster_target(cluster, base, args, workdir, "kafka-exactly-once", exactly_once=True)
        exactly_once = _attempt(console, "kafka_exactly_once",
                                lambda: _kafka_figures(cluster, eos, workload, args, console))
        if "events_per_s" in kafka and "events_per_s" in exactly_once:
            exactly_once["cost"] = round(1 - exactly_once["events_per_s"] / kafka["events_per_s"], 3)
    return {"kafka": kafka, "kafka_exactly_once": exactly_once, "targets": _targets(kafka, exactly_once)}


def _targets(kafka: dict[str, Any], exactly_once: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 17's targets: the value measured, the target, whether it is met (None: not measured)."""

    def check(value: float | None, bound: float, at_least: bool) -> dict[str, Any]:
        met = None if value is None else (value >= bound if at_least else value <= bound)
        return {"value": value, "target": f"{'>=' if at_least else '<='} {bound:g}", "met": met}

    return {
        "kafka_ratio_to_embedded": check(kafka.get("ratio_to_embedded"), MIN_RATIO_TO_EMBEDDED, at_least=True),
        "kafka_p99_ms": check(kafka.get("p99_ms"), MAX_P99_MS, at_least=False),
        "exactly_once_cost": check(exactly_once.get("cost"), MAX_EXACTLY_ONCE_COST, at_least=False),
    }


def main() -> None:
    args = _arguments()
    console = Console(stderr=True)
    libs = _kafka_libs(console) if args.kafka else None  # a missing tool stops the run before it starts

    base = load_settings()
    workload = make_workload(base, args, console)
    workdir = Path(tempfile.mkdtemp(prefix="fraudstream-bench-"))
    settings = bench_settings(base, args, workdir)
    with EmbeddedBroker() as broker:
        measured = run_workload(embedded_target(settings, broker.bootstrap_servers), workload, args, console)
    figures = run_figures(measured, args)
    if libs is not None:
        figures.update(_backlog_figures(measured))
        figures.update(_kafka_runs(libs, base, args, workdir, workload, figures, console))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
