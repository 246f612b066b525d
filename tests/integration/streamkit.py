"""Helpers of the stream-job tests: produce a history, read a topic whole, wait until a job scored everything."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pyarrow as pa
from aiokafka import TopicPartition

from configs import Settings
from pipelines.kafka import make_consumer
from pipelines.produce import produce_history
from pipelines.stream import StreamJob


async def consume_all(settings: Settings, bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Any]:
    """Every record of ``topic`` up to its current end."""
    consumer = make_consumer(settings.kafka, bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            quiet = 0 if batch else quiet + 1
            for messages in batch.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()


def produce(settings: Settings, bootstrap: str, transactions: pa.Table, labels: pa.Table | None, rate: float = 0.0):
    return asyncio.run(produce_history(transactions, labels, settings.kafka, settings.producer, bootstrap, rate=rate))


def wait_scored(job: StreamJob, expected: int, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = job.status()
        partitions = status["partitions"].values()
        done = sum(p["scored"] + p["dead_letters"] for p in partitions)
        if done >= expected and all(p["lag"] == 0 for p in partitions) and len(status["partitions"]):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {expected} records scored in {timeout_s}s: {json.dumps(status)[:2000]}")
        time.sleep(0.5)


