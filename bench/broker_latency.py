"""The embedded broker's own latency floor: no scoring, just produce -> fetch.

A producer sends 300-byte records at a steady rate (default 2,000/s) into P
partitions (default 4), keyed, with the configured producer settings; two plain
aiokafka consumers (the scoring actors' fetch settings, P/2 partitions each) read
them. Per record, the time from its Kafka timestamp (taken at the send) to the
poll that returned it; reported overall and per 5-second window, because the
embedded broker (Tansu, memory storage) lists every batch of a partition on each
fetch, so its latency grows with the number of batches in the log.

This is the floor under `bench/pipeline.py`'s p50/p95/p99 on the same machine:
the pipeline cannot be faster than the broker it reads from.

    python bench/broker_latency.py [--rate 2000] [--seconds 40] [--linger-ms 25]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
from aiokafka import TopicPartition  # noqa: E402
from rich.console import Console  # noqa: E402

from configs import StreamSettings, TopicSettings  # noqa: E402
from connectors.broker import EmbeddedBroker  # noqa: E402
from connectors.kafka import ensure_topics, make_consumer, make_producer, wait_until_ready  # noqa: E402
from models.checked_settings import load_settings  # noqa: E402

WINDOW_S = 5.0


async def measure(settings, bootstrap: str, topic: str, partitions: int, rate: float, seconds: float,
                  fetch_max_wait_ms: int) -> np.ndarray:
    """(poll wall ms, latency ms) per record."""
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def consume(owned: list[int]) -> None:
        consumer = make_consumer(settings.kafka, bootstrap, fetch_max_wait_ms=fetch_max_wait_ms,
                                 max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in owned]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=50, max_records=5_000)
                now = time.time() * 1000.0
                for records in batch.values():
                    samples.extend((now, now - r.timestamp) for r in records)
        finally:
            await consumer.stop()

    readers = [asyncio.create_task(consume(list(range(k, partitions, 2)))) for k in range(2)]
    await asyncio.sleep(1.0)
    producer = make_producer(settings.kafka, settings.producer, bootstrap)
    await producer.start()
    payload = b"x" * 300
    try:
        started = time.monotonic()
        sent = 0
        chunk = max(1, int(rate // 200))  # paced every 5 ms, as bench/pipeline.py
        while time.monotonic() - started < seconds:
            for _ in range(chunk):
                await producer.send(topic, payload, key=str(sent).encode())
                sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    deadline = time.monotonic() + 30
    while len(samples) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*readers)
    return np.asarray(samples, dtype=np.float64).reshape(-1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--linger-ms", type=int, default=None, help="producer.linger_ms (default: the config's)")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=StreamSettings().fetch_max_wait_ms)
    args = parser.parse_args()

    base = load_settings()
    producer = base.producer if args.linger_ms is None else msgspec.structs.replace(base.producer, linger_ms=args.linger_ms)
    settings = msgspec.structs.replace(base, producer=producer)
    topic = TopicSettings(name="bench.broker", partitions=args.partitions)
    status = Console(stderr=True).status(f"{args.rate:,.0f} records/s for {args.seconds:.0f}s, broker only")
    with status, EmbeddedBroker() as broker:
        asyncio.run(wait_until_ready(settings.kafka, broker.bootstrap_servers))
        asyncio.run(ensure_topics(settings.kafka, broker.bootstrap_servers, [topic]))
        samples = asyncio.run(measure(settings, broker.bootstrap_servers, topic.name, args.partitions,
                                      args.rate, args.seconds, args.fetch_max_wait_ms))
    latency = samples[:, 1]
    windows = []
    if samples.size:
        start = samples[0, 0]
        for w in range(int(np.ceil(args.seconds / WINDOW_S))):
            inside = latency[(samples[:, 0] >= start + w * WINDOW_S * 1000) & (samples[:, 0] < start + (w + 1) * WINDOW_S * 1000)]
            if inside.size:
                windows.append({"from_s": w * WINDOW_S, "p50_ms": round(float(np.percentile(inside, 50)), 1),
                                "p99_ms": round(float(np.percentile(inside, 99)), 1)})
    p50, p95, p99 = (round(float(v), 2) for v in np.percentile(latency, [50, 95, 99])) if latency.size else (None,) * 3
    print(json.dumps({
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": round(float(latency.max()), 1) if latency.size else None,
        "records": int(latency.size), "windows": windows, "rate": args.rate, "seconds": args.seconds,
        "partitions": args.partitions, "linger_ms": settings.producer.linger_ms,
        "fetch_max_wait_ms": args.fetch_max_wait_ms,
    }))


if __name__ == "__main__":
    main()
