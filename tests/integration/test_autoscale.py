"""Lag-driven autoscaling end to end: embedded broker, real Ray actors, the controller rescaling K by itself.

A producer far faster than one actor makes the lag grow: the controller doubles K to the maximum; the lag
falls; the producer stops, the actors go idle and K comes back to the minimum. Nothing is lost, no partition
is scored twice, and the entity state is that of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from itertools import pairwise
from typing import Any

import msgspec
import pytest

from actors.messages import JobEvent, JobStatus
from configs import AutoscaleSettings, Settings
from contracts.records import decode_alert
from pipelines.produce import ProduceReport, produce_history
from synthetic import generate
from tests.integration.streamkit import consume_all, wait_labels_read, wait_scored
from tests.integration.streamkit import reference_run as _reference_run
from tests.integration.test_stream import _digests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The history the producer draws from (6 days of this many accounts: ~340,000 transactions, more than it needs).
ACCOUNTS = 20_000
#: The producer sends this many transactions at a time, as fast as it goes, whenever fewer than BACKLOG wait.
CHUNK = 20_000
BACKLOG = 50_000
AUTOSCALE = AutoscaleSettings(enabled=True, min_actors=1, max_actors=4, scale_out_lag_s=2.0, scale_in_idle_s=3.0,
                              cooldown_s=2.0)


class Watch:
    """The job's status every half second (from a thread): K, the lag, and every event the controller logged."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.samples: list[tuple[float, int, float | None, int | None]] = []  # (time, K, lag s, lag records)
        self.events: dict[tuple[float, str], JobEvent] = {}
        self.latest: JobStatus | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.observe()
            self._stop.wait(0.5)

    def observe(self) -> JobStatus:
        status = self.job.status()
        scale = status.autoscale
        assert scale is not None
        self.latest = status
        self.events.update({(e.time, e.event): e for e in status.events})
        self.samples.append((time.monotonic(), scale.actors, status.totals.lag_s, status.totals.lag))
        return status

    def wait_for(self, actors: int, timeout_s: float) -> JobStatus:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.latest
            if status is not None and status.autoscale is not None and status.autoscale.actors == actors \
                    and len(status.plan) == actors:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"K did not reach {actors} in {timeout_s} s: {self.timeline()}")
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def scaled(self) -> list[JobEvent]:
        return sorted((e for e in self.events.values() if e.event in ("scaled_out", "scaled_in")), key=lambda e: e.time)

    def timeline(self) -> str:
        events = [(round(e.time, 1), e.event, e.detail, e.reason) for e in sorted(self.events.values(), key=lambda e: e.time)]
        reason = None if self.latest is None or self.latest.autoscale is None else self.latest.autoscale.reason
        start = self.samples[0][0] if self.samples else 0.0
        samples = [(round(t - start, 1), k, s, r) for t, k, s, r in self.samples]
        return f"events {events}; samples {samples}; latest reason {reason}"


class Producer:
    """Far faster than one actor: sends the history CHUNK transactions at a time (with their labels), each as
    fast as it goes, whenever fewer than BACKLOG records wait, until told to stop; so a backlog lasts until K
    is at its maximum, whatever this machine's speed."""

    def __init__(self, settings: Settings, bootstrap: str, history: Any, watch: Watch) -> None:
        self.settings, self.bootstrap, self.history, self.watch = settings, bootstrap, history, watch
        self.reports: list[ProduceReport] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def send(self, offset: int) -> int:
        chunk = self.history.transactions.slice(offset, CHUNK)
        settings = self.settings
        self.reports.append(asyncio.run(produce_history(chunk, self.history.labels, settings.kafka, settings.producer,
                                                        self.bootstrap, limit=chunk.num_rows)))  # its own labels
        return offset + chunk.num_rows

    def start(self, offset: int) -> None:
        self._offset = offset
        self._thread.start()

    def _run(self) -> None:
        offset, sent_at = self._offset, len(self.watch.samples)
        while offset < self.history.transactions.num_rows and not self.stop.is_set():
            status = self.watch.latest
            lag = None if status is None else status.totals.lag
            if len(self.watch.samples) > sent_at and lag is not None and lag < BACKLOG:  # a status since the last send
                offset = self.send(offset)
                sent_at = len(self.watch.samples)
            else:
                self.stop.wait(0.2)

    def join(self) -> None:
        self.stop.set()
        self._thread.join(timeout=60)

    @property
    def transactions(self) -> int:
        return sum(r.transactions for r in self.reports)

    def per_partition(self, partition: int) -> int:
        return sum(r.transactions_per_partition[partition] for r in self.reports)


def test_lag_grows_k_to_the_maximum_then_idle_shrinks_it_to_the_minimum_losing_nothing(
    stream_settings, kafka_broker, job_factory
) -> None:
    settings = stream_settings(autoscale=AUTOSCALE)
    history = generate(msgspec.structs.replace(settings.generator, accounts=ACCOUNTS, days=6, seed=11,
                                               genuine_label_rate=0.2))  # fmt: skip
    started = time.monotonic()
    job = job_factory(settings, actors=1)
    watch = Watch(job)
    producer = Producer(settings, kafka_broker, history, watch)
    try:
        offset = producer.send(producer.send(producer.send(0)))  # a burst, then more whenever the backlog shrinks
        producer.start(offset)
        at_max = watch.wait_for(4, timeout_s=120)
        reached_max_s = time.monotonic() - started
        producer.join()  # the producer stops
        produced = producer.transactions
        scored = wait_scored(job, produced, timeout_s=180)
        caught_up_s = time.monotonic() - started
        final = watch.wait_for(1, timeout_s=90)
        at_min_s = time.monotonic() - started
        wait_labels_read(job)  # the digests cover the pending labels
        digests = _digests(job)
        final = watch.observe()
    finally:
        producer.join()
        watch.stop()
    print(f"{produced} transactions produced; K=4 after {reached_max_s:.0f} s, caught up after {caught_up_s:.0f} s, "
          f"K=1 after {at_min_s:.0f} s; {watch.timeline()}")

    # the decisions: doubling out to the maximum while the lag stayed above 2 s, one step in at a time once idle
    scaled = watch.scaled()
    assert [(e.event, e.detail) for e in scaled] == [
        ("scaled_out", "1 -> 2 actors"), ("scaled_out", "2 -> 4 actors"),
        ("scaled_in", "4 -> 2 actors"), ("scaled_in", "2 -> 1 actors")], watch.timeline()
    for event in scaled:
        assert event.actor == "controller" and event.reason is not None
        expected = "above scale_out_lag_s 2 s for" if event.event == "scaled_out" else "idle (lag at most 1 s) for"
        assert expected in event.reason, event.reason
    assert all(later.time - earlier.time >= AUTOSCALE.cooldown_s for earlier, later in pairwise(scaled))
    assert at_max.autoscale is not None and at_max.autoscale.max_actors == 4
    # the lag was above the threshold before K grew, and fell to nothing with K at the maximum
    first_out = scaled[0].time
    assert any(lag_s is not None and lag_s > AUTOSCALE.scale_out_lag_s for _, _, lag_s, _ in watch.samples)
    peak = max(lag for _, _, _, lag in watch.samples if lag is not None)
    assert peak > 0 and scored.totals.lag == 0 and scored.totals.lag_s == 0.0
    assert first_out < scaled[1].time < scaled[2].time
    scale = final.autoscale
    assert scale is not None and (scale.actors, scale.changes, scale.requested_actors) == (1, 4, 1)
    assert scale.last_change is not None and scale.last_change.to_actors == 1

    # nothing lost, nothing scored twice: every offset of every partition counted once, through three moves
    partitions = final.partitions
    assert {p.actor for p in partitions.values()} == {final.actors[0].actor}
    for key, p in partitions.items():
        assert p.next_offset == p.highwater == producer.per_partition(int(key)), key
        assert p.scored + p.dead_letters == p.next_offset, key  # counters travel with the checkpoints
    assert final.totals.scored == produced
    alerts = [decode_alert(r.value) for r in asyncio.run(
        consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))]
    ids = [a.alert_id for a in alerts]
    assert len(ids) == len(set(ids)) == final.totals.alerts  # a partition scored again would send its alerts again

    # the entity state of an uninterrupted run
    reference_digests, reference_alerts = _reference_run(settings, kafka_broker)
    assert digests == reference_digests
    assert reference_alerts <= set(ids)
