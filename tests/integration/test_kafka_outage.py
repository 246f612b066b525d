"""Kafka goes away mid-stream and comes back: the job stays up, says it is waiting, loses nothing.

The job talks to a broker of its own through the tests' fault proxy (every client connection goes
through it). Mid-stream the proxy refuses connections for longer than the grace: status must show
no lag it cannot know, "waiting for Kafka", and once Kafka answers again no error, every record
scored, every alert on the topic, entity state equal to an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from configs import RuleSettings, Settings, TopicSettings, TopicsSettings
from connectors.broker import EmbeddedBroker
from connectors.kafka import ensure_topics, wait_until_ready
from contracts.records import decode_alert
from pipelines.stream import StreamJob
from synthetic import generate
from tests.integration.faultproxy import FaultProxy
from tests.integration.streamkit import consume_all, produce, wait_labels_read, wait_scored
from tests.integration.streamkit import reference_digests as _reference_digests
from tests.integration.streamkit import reference_run as _reference_run
from tests.integration.test_stream import _digests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRACE_S = 3.0
_topics = itertools.count()


@pytest.fixture(scope="module")
def proxied(local_settings: Settings) -> Iterator[tuple[FaultProxy, EmbeddedBroker]]:
    proxy = FaultProxy()
    broker = EmbeddedBroker(advertised_port=proxy.port)
    with broker, proxy.forward_to(broker.host, broker.port):
        asyncio.run(wait_until_ready(local_settings.kafka, proxy.address))
        yield proxy, broker


def _settings(local_settings: Settings, address: str, tmp_path: Path) -> Settings:
    n = next(_topics)
    topics = TopicsSettings(
        transactions=TopicSettings(name=f"o{n}.transactions", partitions=4),
        labels=TopicSettings(name=f"o{n}.labels", partitions=4),
        alerts=TopicSettings(name=f"o{n}.alerts", partitions=4),
        dead_letters=TopicSettings(name=f"o{n}.dlq", partitions=1),
        terminal_deltas=TopicSettings(name=f"o{n}.terminal.deltas", partitions=4),
        terminal_risk=TopicSettings(name=f"o{n}.terminal.risk", partitions=4),
    )
    # requests fail after 3 s (sends are retried by the job), so an outage shows within seconds
    kafka = msgspec.structs.replace(local_settings.kafka, topics=topics, embedded=False, request_timeout_ms=3_000)
    stream = msgspec.structs.replace(
        local_settings.stream, checkpoint_uri=str(tmp_path / "checkpoints"), status_path=str(tmp_path / "status.json"),
        checkpoint_interval_s=1.0, actor_num_cpus=0.25, max_batch_records=200, kafka_wait_grace_s=GRACE_S,
        delivery_backoff_ms=100, delivery_backoff_max_ms=1_000,
    )  # fmt: skip
    classifier = msgspec.structs.replace(local_settings.scoring.classifier, model_uri="")
    scoring = msgspec.structs.replace(local_settings.scoring, classifier=classifier)
    settings = msgspec.structs.replace(local_settings, kafka=kafka, stream=stream, scoring=scoring)
    asyncio.run(ensure_topics(settings.kafka, address))
    return settings


def _refuse_mid_stream(settings: Settings, proxy: FaultProxy, second_half, latency_ms: int = 50) -> threading.Thread:
    """Send ``second_half`` over a slow path and refuse connections a second in, records in flight;
    returns the sending thread (it finishes once the proxy is restored)."""
    proxy.latency(latency_ms)
    sender = threading.Thread(target=produce, args=(settings, proxy.address, second_half, None, 2_000.0))
    sender.start()
    time.sleep(1.0)
    proxy.refuse()
    return sender


def test_an_outage_mid_stream_is_reported_honestly_and_loses_nothing(
    local_settings: Settings, proxied, ray_session, tmp_path: Path
) -> None:
    proxy, _ = proxied
    settings = _settings(local_settings, proxy.address, tmp_path)
    # sends must be in flight when Kafka goes away: every batch alerts (a rule on every payment) and is scored as
    # it arrives, not held for the terminal table's round trips over the slow path (the drain test below runs
    # aligned through an outage); with a few alerts a second, the refusal sometimes fell between two sends
    everything = RuleSettings(name="every_payment", when="amount >= 0", action="review", score=0.5)
    scoring = msgspec.structs.replace(settings.scoring, rules_file="", rules=(*settings.scoring.rules, everything))
    settings = msgspec.structs.replace(settings, scoring=scoring, stream=msgspec.structs.replace(
        settings.stream, terminal_alignment=False))  # fmt: skip
    history = generate(msgspec.structs.replace(settings.generator, accounts=300, days=4, seed=8))
    tx = history.transactions
    half = tx.num_rows // 2
    produce(settings, proxy.address, tx.slice(0, half), history.labels)
    job = StreamJob(settings, proxy.address)
    job.start(2)
    try:
        sender = _refuse_mid_stream(settings, proxy, tx.slice(half))
        deadline = time.monotonic() + GRACE_S + 20
        seen_waiting = None
        while time.monotonic() < deadline:
            status = job.status()
            actors = status.actors
            if all(a.kafka.state == "waiting" for a in actors):
                seen_waiting = status
                break
            time.sleep(0.5)
        assert seen_waiting is not None, msgspec.json.encode(status).decode()[:3000]
        for actor in seen_waiting.actors:
            assert "waiting for Kafka" in (actor.error or ""), actor.error
            assert actor.running
        partitions = seen_waiting.partitions.values()
        assert all(p.lag is None and p.fetch_age_s > GRACE_S for p in partitions)
        assert seen_waiting.totals.lag is None  # unknown, not 0
        time.sleep(5)  # an outage of ~10 s in all
        proxy.restore()
        sender.join(timeout=120)
        assert not sender.is_alive()
        status = wait_scored(job, tx.num_rows, timeout_s=180)
        assert status.totals.scored == tx.num_rows and status.totals.dead_letters == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(a.error for a in status.actors):
            time.sleep(0.5)
            status = job.status()
        for actor in status.actors:
            assert actor.error is None and actor.kafka.state == "ok", actor.error
            assert actor.kafka.outages == 1 and actor.delivery.state == "ok"
            assert actor.last_error is not None  # what happened stays visible after it cleared
        # sends in flight when Kafka went away were retried until acknowledged, not dropped
        assert sum(a.delivery.retried for a in status.actors) > 0
        alerts = [decode_alert(r.value) for r in asyncio.run(
            consume_all(settings, proxy.address, settings.kafka.topics.alerts.name))]
        ids = {a.alert_id for a in alerts}
        assert len(ids) == status.totals.alerts > 0  # every alert there (a retried send may repeat one)
        wait_labels_read(job)
        digests = _digests(job)
    finally:
        job.drain()
    assert digests == _reference_digests(settings, proxy.address)



def test_a_drain_while_kafka_is_down_checkpoints_nothing_past_undelivered_output(
    local_settings: Settings, proxied, ray_session, tmp_path: Path
) -> None:
    """Stopping with outputs that cannot be sent: no checkpoint covers them, the next run replays them."""
    proxy, _ = proxied
    settings = _settings(local_settings, proxy.address, tmp_path)
    history = generate(msgspec.structs.replace(settings.generator, accounts=300, days=4, seed=9))
    tx = history.transactions
    half = tx.num_rows // 2
    produce(settings, proxy.address, tx.slice(0, half), history.labels)
    first = StreamJob(settings, proxy.address)
    first.start(2)
    try:
        wait_scored(first, half, timeout_s=120)
        sender = _refuse_mid_stream(settings, proxy, tx.slice(half))
        time.sleep(2.0)
    finally:
        final = first.drain()  # with Kafka away: whatever was not delivered is not checkpointed
    stopped = [a for a in final.actors if "replay from their last checkpoint" in (a.error or "")]
    proxy.restore()
    sender.join(timeout=120)
    second = StreamJob(settings, proxy.address)
    second.start(2)
    try:
        status = wait_scored(second, tx.num_rows, timeout_s=180)
        wait_labels_read(second)
        digests = _digests(second)
        alerts = {decode_alert(r.value).alert_id for r in asyncio.run(
            consume_all(settings, proxy.address, settings.kafka.topics.alerts.name))}
    finally:
        second.drain()
    assert status.totals.scored >= tx.num_rows  # at least once: replayed records count again
    reference_digests, reference = _reference_run(settings, proxy.address)
    assert digests == reference_digests
    assert reference <= alerts, f"{len(reference - alerts)} alerts missing"
    assert stopped or status.totals.scored == tx.num_rows, final

