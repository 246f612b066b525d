"""End-to-end pipeline throughput, loss and latency on the embedded broker, beside two references.

Phase 1: produce M generated transactions (default 200k) into P partitions
(default 4), then run K=2 scoring actors (full feature set, anomaly model,
rules) on local Ray:
- events_per_s: M / (first event polled -> last offset committed), over actors;
- lost: produced minus distinct scored (offsets scored, from the actors' positions).
Phase 2: a producer at a steady 2,000 events/s; per scored event the time from
its Kafka timestamp (the producer's create time) to the acknowledgement of the
alerts of its micro-batch: p50_ms, p95_ms, p99_ms.
References, in the same run on the same topic:
- raw_decode_per_s: one plain aiokafka consumer + json.loads (the ceiling);
- reference_loop_per_s: one plain aiokafka loop running the shared reference
  workload's update_features plus reference_model()'s score_one/learn_one per event.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "bench"))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import reference_workload  # noqa: E402
from aiokafka import TopicPartition  # noqa: E402
from rich.console import Console  # noqa: E402

from actors.messages import DrainedJob, JobStatus  # noqa: E402
from configs import Settings, TopicSettings, TopicsSettings  # noqa: E402
from connectors.broker import EmbeddedBroker  # noqa: E402
from connectors.kafka import ensure_topics, make_consumer, wait_until_ready  # noqa: E402
from models.checked_settings import load_settings  # noqa: E402
from pipelines.produce import produce_history  # noqa: E402
from pipelines.stream import StreamJob  # noqa: E402
from synthetic import generate  # noqa: E402


async def _consume_loop(settings: Any, bootstrap: str, topic: str, expected: int, handle: Any) -> float:
    """Seconds for one plain aiokafka consumer to read ``expected`` records and handle each value."""
    consumer = make_consumer(settings.kafka, bootstrap, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--steady-rate", type=float, default=2_000.0)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--checkpoint-interval", type=float, default=None,
                        help="stream.checkpoint_interval_s (default: the config's)")
    return parser.parse_args()


def _settings(base: Settings, args: argparse.Namespace, workdir: Path) -> Settings:
    """The config on the benchmark's own topics (P partitions each), checkpoints and status file."""
    P = args.partitions
    topics = TopicsSettings(
        transactions=TopicSettings(name="bench.transactions", partitions=P),
        labels=TopicSettings(name="bench.labels", partitions=P),
        alerts=TopicSettings(name="bench.alerts", partitions=P),
        dead_letters=TopicSettings(name="bench.dlq", partitions=1),
        terminal_deltas=TopicSettings(name="bench.terminal.deltas", partitions=P),
        terminal_risk=TopicSettings(name="bench.terminal.risk", partitions=P),
    )
    return msgspec.structs.replace(
        base,
        kafka=msgspec.structs.replace(base.kafka, topics=topics),
        stream=msgspec.structs.replace(
            base.stream, checkpoint_uri=str(workdir / "checkpoints"), status_path=str(workdir / "status.json"),
            actors=args.actors,
            checkpoint_interval_s=args.checkpoint_interval or base.stream.checkpoint_interval_s,
        ),
    )


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


def _references(settings: Settings, bootstrap: str, n: int, console: Console) -> tuple[float, float]:
    """Seconds to read the ``n`` produced transactions: with json.loads alone, and with the reference loop."""
    topic = settings.kafka.topics.transactions.name
    with console.status("raw consume + json.loads"):
        raw_s = asyncio.run(_consume_loop(settings, bootstrap, topic, n, json.loads))
    with console.status("reference loop: consume + update_features + HalfSpaceTrees"):
        reference_s = asyncio.run(_consume_loop(settings, bootstrap, topic, n, _reference_loop()))
    return raw_s, reference_s


def _catch_up(job: StreamJob, n: int, partitions: int) -> JobStatus:
    """Poll the job's status until every partition is owned and the ``n`` produced transactions are scored."""
    while True:
        status = job.status()
        parts = status.partitions.values()
        if len(status.partitions) == partitions and all(p.lag == 0 for p in parts) and \
                sum(p.next_offset for p in parts) >= n:
            return status
        time.sleep(0.5)


def _pipeline_seconds(status: JobStatus) -> float:
    """First event polled -> last offset committed, over the actors."""
    firsts = [a.first_poll_wall for a in status.actors if a.first_poll_wall]
    lasts = [a.last_commit_wall for a in status.actors if a.last_commit_wall]
    return max(lasts) - min(firsts)


def _steady(job: StreamJob, settings: Settings, bootstrap: str, steady: Any, rate: float, scored_before: int) -> JobStatus:
    """Produce ``steady`` at ``rate`` events/s (paced every 5 ms, not in bursts); the status once it is scored
    (or after 30 s)."""
    chunk = max(1, int(rate // 200))
    producer = threading.Thread(target=lambda: asyncio.run(produce_history(
        steady, None, settings.kafka, settings.producer, bootstrap, rate=rate, chunk_rows=chunk)))
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
class _Measured:
    """What the run measured, for :func:`_figures`."""

    events: int
    steady_events: int
    #: Seconds: the pipeline's first poll -> last commit, the raw consumer, the reference loop.
    pipeline_s: float
    raw_s: float
    reference_s: float
    lost: int
    #: Per-event latencies (ms) of the steady phase, and the job's status at its end and after the drain.
    samples: np.ndarray
    steady: JobStatus
    final: DrainedJob


def _figures(measured: _Measured, args: argparse.Namespace) -> dict[str, Any]:
    """The JSON line the benchmark prints."""
    m, n = measured, measured.events
    samples = m.samples
    p50, p95, p99 = (round(float(v), 2) for v in np.percentile(samples, [50, 95, 99])) if samples.size else (None,) * 3
    return {
        "events_per_s": round(n / m.pipeline_s),
        "lost": m.lost,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "latency_samples": int(samples.size),
        "fetch_delay_ms": [msgspec.to_builtins(a.fetch_delay_ms) for a in m.steady.actors],
        "phase_ms": _worst_phases(m.steady),
        "raw_decode_per_s": round(n / m.raw_s),
        "reference_loop_per_s": round(n / m.reference_s),
        "ratio_to_reference_loop": round((n / m.pipeline_s) / (n / m.reference_s), 3),
        "events": n,
        "steady_events": m.steady_events,
        "alerts": sum(p.alerts for a in m.final.actors for p in a.partitions.values()),
        "partitions": args.partitions,
        "actors": args.actors,
    }


def main() -> None:
    args = _arguments()
    console = Console(stderr=True)

    base = load_settings()
    accounts = max(1_000, args.events // 60)
    spec = msgspec.structs.replace(base.generator, accounts=accounts, days=30, seed=3)
    with console.status("generating the stream"):
        history = generate(spec)
    transactions = history.transactions.slice(0, args.events)
    steady_rows = int(args.steady_rate * args.steady_seconds)
    steady = history.transactions.slice(args.events, steady_rows)
    n = transactions.num_rows
    settings = _settings(base, args, Path(tempfile.mkdtemp(prefix="fraudstream-bench-")))

    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        asyncio.run(wait_until_ready(settings.kafka, bootstrap))
        asyncio.run(ensure_topics(settings.kafka, bootstrap))
        with console.status(f"producing {n:,} transactions"):
            asyncio.run(produce_history(transactions, None, settings.kafka, settings.producer, bootstrap))
        raw_s, reference_s = _references(settings, bootstrap, n, console)

        job = StreamJob(settings, bootstrap)
        with console.status(f"scoring {n:,} transactions with {args.actors} actors"):
            job.start(args.actors)
            caught_up = _catch_up(job, n, args.partitions)

        import ray

        ray.get(job.controller.call_all.remote("reset_latency"))
        with console.status(f"steady {args.steady_rate:,.0f} events/s for {args.steady_seconds:.0f}s"):
            steady_status = _steady(job, settings, bootstrap, steady, args.steady_rate, n)
        samples = _latency_samples(job)
        final = job.drain()

    measured = _Measured(
        events=n, steady_events=steady.num_rows, pipeline_s=_pipeline_seconds(caught_up), raw_s=raw_s,
        reference_s=reference_s, lost=n - sum(p.next_offset for p in caught_up.partitions.values()),
        samples=samples, steady=steady_status, final=final,
    )
    print(json.dumps(_figures(measured, args)))


if __name__ == "__main__":
    main()
