"""The scoring job end to end: embedded broker, real Ray actors, checkpoints on disk. No mocks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import jsonschema
import msgspec
import pyarrow.compute as pc
import pytest
import ray

from actors.worker import checkpoint_key
from configs import Settings
from connectors.checkpoint import CheckpointStore, cluster_namespace
from connectors.kafka import cluster_id, make_producer
from contracts.records import decode_alert, decode_dead_letter
from pipelines.stream import StreamJob
from synthetic import generate
from tests.integration.streamkit import consume_all as _consume_all
from tests.integration.streamkit import produce as _produce
from tests.integration.streamkit import reference_digests as _reference_digests
from tests.integration.streamkit import wait_labels_read
from tests.integration.streamkit import wait_scored as _wait_scored

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture(scope="module")
def history(local_settings: Settings):
    spec = msgspec.structs.replace(local_settings.generator, accounts=400, days=6, seed=5, genuine_label_rate=0.2)
    return generate(spec)


def _digests(job: StreamJob) -> dict[int, str]:
    merged: dict[int, str] = {}
    for digests in ray.get(job.controller.call_all.remote("entity_digests")):
        merged.update({int(k): v for k, v in digests.items()})
    return merged


def _metric_lines(url: str, names: set[str], events: int, timeout_s: float = 60.0) -> dict[str, list[str]]:
    """Lines of the Ray Prometheus endpoint for each metric name, once the events counter
    reaches ``events`` (every actor exports on its own ~10 s cycle)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    found: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        found = {n: [line for line in body.splitlines() if line.startswith(f"ray_{n}")] for n in names}
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in found.get("fraudstream_events_total", []))
        if all(found.values()) and counted >= events:
            break
        time.sleep(2)
    return found


def test_every_transaction_scored_alerts_valid_and_on_fraud(
    stream_settings, kafka_broker, history, job_factory, ray_session
) -> None:
    settings = stream_settings()
    report = _produce(settings, kafka_broker, history.transactions, history.labels)
    job = job_factory(settings, actors=2)
    status = _wait_scored(job, report.transactions)
    totals = status.totals
    assert totals.scored == report.transactions
    assert totals.terminal_stale == 0, totals.terminal_stale
    assert totals.dead_letters == 0
    assert {p.actor for p in status.partitions.values()} == {"scoring-0-0", "scoring-0-1"}
    for actor in status.actors:  # where each loop's time went, phase by phase
        score = actor.phase_ms["score"]
        assert score.samples > 0 and 0.0 <= score.p50 <= score.max
        assert {"poll", "ack", "commit", "checkpoint"} <= set(actor.phase_ms)

    alerts = asyncio.run(_consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))
    assert len(alerts) == totals.alerts > 0
    schema = json.loads((SCHEMAS / "alert.schema.json").read_text())
    decoded = []
    for record in alerts:
        jsonschema.validate(json.loads(record.value), schema)
        alert = decode_alert(record.value)
        assert record.key == alert.account_id.encode()
        decoded.append(alert)
    assert len({a.alert_id for a in decoded}) == len(decoded)

    # alerts concentrate on fraud: far above the base rate
    table = history.transactions
    fraud_ids = set(pc.filter(table.column("transaction_id"), table.column("is_fraud")).to_pylist())
    base_rate = len(fraud_ids) / table.num_rows
    precision = sum(a.transaction_id in fraud_ids for a in decoded) / len(decoded)
    assert precision > 10 * base_rate, (precision, base_rate, len(decoded))

    # the same counts reach the Ray metrics endpoint (Prometheus)
    metrics = _metric_lines(ray_session, {"fraudstream_events_total", "fraudstream_alerts_total",
                                          "fraudstream_batch_latency_ms_bucket", "fraudstream_lag_records",
                                          "fraudstream_checkpoint_seconds_count"}, report.transactions)
    assert all(metrics.values()), {k: len(v) for k, v in metrics.items()}
    events = sum(float(line.rsplit(" ", 1)[1]) for line in metrics["fraudstream_events_total"])
    assert events >= report.transactions


def test_without_alignment_a_backlog_runs_ahead_of_the_terminal_table(
    stream_settings, kafka_broker, history, job_factory
) -> None:
    """What stream.terminal_alignment prevents: the partitions replay days of event time between two flushes
    of the shared table, so most of the backlog is scored with terminal buckets missing."""
    settings = stream_settings(terminal_alignment=False)
    report = _produce(settings, kafka_broker, history.transactions, history.labels)
    job = job_factory(settings, actors=2)
    totals = _wait_scored(job, report.transactions).totals
    assert totals.scored == report.transactions
    assert totals.terminal_stale > report.transactions // 10, totals.terminal_stale


def test_killed_actor_restarts_from_checkpoint_and_loses_nothing(stream_settings, kafka_broker, history, job_factory) -> None:
    settings = stream_settings(checkpoint_interval_s=0.5)
    table = history.transactions
    first, rest = table.slice(0, table.num_rows // 2), table.slice(table.num_rows // 2)
    job = job_factory(settings, actors=2)
    _produce(settings, kafka_broker, first, None)
    _wait_scored(job, first.num_rows)
    deadline = time.monotonic() + 30  # every partition has a checkpoint of the first half
    while not all(p.checkpoint_seq > 0 for p in job.status().partitions.values()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    alerts_before = asyncio.run(_consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))

    producer = threading.Thread(target=_produce, args=(settings, kafka_broker, rest, history.labels, 4_000.0))
    producer.start()
    time.sleep(1.0)
    victim = ray.get(job.controller.actor_handles.remote())[0]
    ray.kill(victim, no_restart=False)
    producer.join()
    status = _wait_scored(job, table.num_rows)

    partitions = status.partitions.values()
    assert all(p.lag == 0 for p in partitions)
    assert sum(p.next_offset for p in partitions) == table.num_rows  # every offset scored at least once
    # the restarted actor restored its partitions from their checkpoints (status may lag the restart a tick)
    deadline = time.monotonic() + 30
    while not any(p.restored_from is not None for p in status.partitions.values()):
        assert time.monotonic() < deadline, json.dumps(
            {"actors": [{k: getattr(a, k) for k in ("actor", "pid", "restarted", "restarts", "error")} for a in status.actors],
             "partitions": msgspec.to_builtins(status.partitions), "events": msgspec.to_builtins(status.events)})[:3000]
        time.sleep(0.5)
        status = job.status()
    wait_labels_read(job)  # the digests cover the pending labels
    assert _digests(job) == _reference_digests(settings, kafka_broker)

    # a replayed alert is the same alert
    alerts = [decode_alert(r.value) for r in asyncio.run(_consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))]
    by_tx: dict[str, set[str]] = {}
    for alert in alerts:
        by_tx.setdefault(alert.transaction_id, set()).add(alert.alert_id)
    assert all(len(ids) == 1 for ids in by_tx.values())
    assert {decode_alert(r.value).alert_id for r in alerts_before} <= {a.alert_id for a in alerts}


def test_stop_and_start_resumes_from_checkpoints_without_rescoring(stream_settings, kafka_broker, history, job_factory) -> None:
    settings = stream_settings()
    table = history.transactions
    first, rest = table.slice(0, 3_000), table.slice(3_000)
    _produce(settings, kafka_broker, first, None)
    job = job_factory(settings, actors=2)
    _wait_scored(job, first.num_rows)
    job.drain()

    second = job_factory(settings, actors=2)
    status = second.status()
    assert all(p.restored_from is not None for p in status.partitions.values())
    assert sum(p.next_offset for p in status.partitions.values()) == first.num_rows
    _produce(settings, kafka_broker, rest, None)
    status = _wait_scored(second, table.num_rows)
    # counters come back with the checkpoints: scored exactly once over both runs
    assert status.totals.scored == table.num_rows


def test_malformed_records_go_to_the_dead_letter_topic_with_reasons(stream_settings, kafka_broker, history, job_factory) -> None:
    settings = stream_settings()
    good = history.transactions.slice(0, 500)
    bad_values = [
        b"{not json",
        b'{"transaction_id":"b1","account_id":"A1","event_time":1767225600000,"amount":"12.5"}',
        b'{"transaction_id":"b2","account_id":"A1","amount":3.0}',
        b'{"transaction_id":"b3","account_id":"A1","event_time":1767225600000,"amount":1e300}',
        b"\xff\xfe binary",
    ]

    async def send_bad() -> None:
        producer = make_producer(settings.kafka, settings.producer, kafka_broker)
        await producer.start()
        try:
            for value in bad_values:
                await producer.send_and_wait(settings.kafka.topics.transactions.name, value, key=b"A1")
        finally:
            await producer.stop()

    _produce(settings, kafka_broker, good.slice(0, 250), None)
    asyncio.run(send_bad())
    _produce(settings, kafka_broker, good.slice(250), None)
    job = job_factory(settings, actors=2)
    status = _wait_scored(job, good.num_rows + len(bad_values))
    assert status.totals.scored == good.num_rows
    assert status.totals.dead_letters == len(bad_values)

    letters = [decode_dead_letter(r.value) for r in asyncio.run(
        _consume_all(settings, kafka_broker, settings.kafka.topics.dead_letters.name))]
    assert sorted(letter.value for letter in letters) == sorted(bad_values)
    schema = json.loads((SCHEMAS / "dead_letter.schema.json").read_text())
    fields = {letter.value: letter.field for letter in letters}
    assert fields[bad_values[1]] == "amount" and fields[bad_values[2]] == "event_time" and fields[bad_values[3]] == "amount"
    for letter in letters:
        assert letter.topic == settings.kafka.topics.transactions.name and letter.key == b"A1"
        assert "fix:" in letter.error or "JSON" in letter.error
        jsonschema.validate(json.loads(msgspec.json.encode(letter)), schema)


def test_rescale_one_to_two_actors_moves_state_with_partitions(stream_settings, kafka_broker, history, job_factory) -> None:
    settings = stream_settings()
    table = history.transactions
    job = job_factory(settings, actors=1)
    producer = threading.Thread(target=_produce, args=(settings, kafka_broker, table, history.labels, 3_000.0))
    producer.start()
    time.sleep(1.5)
    status = job.rescale(2)
    assert status.plan == [[0, 2], [1, 3]]
    producer.join()
    status = _wait_scored(job, table.num_rows)
    assert status.totals.scored == table.num_rows  # nothing lost, nothing scored twice
    assert {p.actor for p in status.partitions.values()} == {"scoring-0-0", "scoring-1-1"}
    wait_labels_read(job)  # the digests cover the pending labels
    assert _digests(job) == _reference_digests(settings, kafka_broker)


def test_partial_checkpoint_is_never_loaded(stream_settings, kafka_broker, history, job_factory) -> None:
    settings = stream_settings(checkpoint_interval_s=0.2, checkpoint_interval_events=200)
    table = history.transactions
    job = job_factory(settings, actors=2)
    producer = threading.Thread(target=_produce, args=(settings, kafka_broker, table, history.labels, 3_000.0))
    producer.start()
    # kill the actors again and again while they checkpoint every 200 events
    for _ in range(4):
        time.sleep(0.7)
        for actor in ray.get(job.controller.actor_handles.remote()):
            ray.kill(actor, no_restart=False)
    producer.join()
    status = _wait_scored(job, table.num_rows, timeout_s=180)
    partitions = status.partitions.values()
    assert sum(p.next_offset for p in partitions) == table.num_rows
    wait_labels_read(job)  # the digests cover the pending labels
    assert _digests(job) == _reference_digests(settings, kafka_broker)
    store = _store(settings, kafka_broker)
    for partition in range(4):
        latest = store.load_latest(checkpoint_key(settings.kafka.topics.transactions.name, partition))
        assert latest is not None and latest.meta["next_offset"] <= table.num_rows


def _store(settings: Settings, bootstrap: str, namespace: str | None = None) -> CheckpointStore:
    """The checkpoint store the scoring actors use with this broker (or another namespace)."""
    if namespace is None:
        namespace = cluster_namespace(asyncio.run(cluster_id(settings.kafka, bootstrap)))
    return CheckpointStore(settings.stream.checkpoint_uri, namespace=namespace)


def _scored_then_moved(stream_settings, kafka_broker, table, job_factory, namespace: str | None = None) -> Settings:
    """Score ``table`` and drain; copy its checkpoints to fresh topics (in ``namespace``, default this
    cluster's) as if those topics had been scored: returns the fresh topics' settings."""
    settings = stream_settings()
    _produce(settings, kafka_broker, table, None)
    job = job_factory(settings, actors=1)
    _wait_scored(job, table.num_rows)
    job.drain()
    fresh = msgspec.structs.replace(stream_settings(), stream=settings.stream)
    here, there = _store(settings, kafka_broker), _store(settings, kafka_broker, namespace)
    for partition in range(4):
        old = here.load_latest(checkpoint_key(settings.kafka.topics.transactions.name, partition))
        assert old is not None
        there.save(checkpoint_key(fresh.kafka.topics.transactions.name, partition), old.blobs,
                   {**old.meta, "transactions_topic": fresh.kafka.topics.transactions.name})
    return fresh


def test_checkpoints_of_another_kafka_cluster_are_not_resumed(
    stream_settings, kafka_broker, history, job_factory
) -> None:
    # the same topics on another cluster (e.g. a new in-memory broker): their checkpoints are
    # under that cluster's namespace, and their offsets mean nothing here
    fresh = _scored_then_moved(stream_settings, kafka_broker, history.transactions.slice(0, 1_000), job_factory,
                               namespace="cluster-elsewhere")
    small = history.transactions.slice(1_000, 300)
    _produce(fresh, kafka_broker, small, None)
    second = job_factory(fresh, actors=1)
    status = _wait_scored(second, small.num_rows)
    assert status.totals.scored == small.num_rows  # a fresh start: no state, no counters carried over
    assert status.totals.offset_gaps == 0
    assert all(p.restored_from is None for p in status.partitions.values())


def test_checkpoint_beyond_the_log_end_resumes_from_the_start_and_counts_the_gap(
    stream_settings, kafka_broker, history, job_factory
) -> None:
    table = history.transactions.slice(0, 2_000)
    # the topic is "recreated": same name, empty log, while the checkpoints remember old offsets
    fresh = _scored_then_moved(stream_settings, kafka_broker, table, job_factory)
    small = history.transactions.slice(2_000, 300)
    _produce(fresh, kafka_broker, small, None)
    second = job_factory(fresh, actors=1)
    status = _wait_scored(second, table.num_rows + small.num_rows)
    totals = status.totals
    assert totals.offset_gaps > 0
    assert totals.scored == table.num_rows + small.num_rows  # restored counters + the new log, whole
    assert all(p.next_offset == p.highwater for p in status.partitions.values())


def test_terminal_seen_from_every_partition_agrees_across_actors_and_with_offline(
    stream_settings, kafka_broker, job_factory
) -> None:
    from contracts.partitioning import partition_for
    from contracts.records import Label, Transaction, encode
    from features.offline import PartitionedFeatures, interleave

    settings = stream_settings()
    partitions = settings.kafka.topics.transactions.partitions
    accounts: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while min(len(a) for a in accounts.values()) < 3:
        accounts[partition_for(f"acct-{n}".encode(), partitions)].append(f"acct-{n}")
        n += 1
    users = [a for p in range(partitions) for a in accounts[p][:3]]
    start, minute = 1_767_225_600_000, 60_000
    transactions = [
        Transaction(transaction_id=f"tx{i}", account_id=users[i % len(users)], event_time=start + i * 7 * minute,
                    amount=10.0 + i % 17, terminal_id="T-shared" if i % 3 else f"T-{i % 5}", country="FR")
        for i in range(900)  # ~4.4 days
    ]
    end = transactions[-1].event_time
    labels = [
        Label(transaction_id=tx.transaction_id, account_id=tx.account_id, label="fraud" if i % 11 == 0 else "genuine",
              label_time=tx.event_time + 3 * 60 * minute)
        for i, tx in enumerate(transactions) if i % 4 == 0 and tx.event_time + 3 * 60 * minute < end - 60 * minute
    ]

    async def send() -> None:
        producer = make_producer(settings.kafka, settings.producer, kafka_broker)
        await producer.start()
        try:
            for item in interleave(transactions, labels):  # labels after the clock passes them, as produced live
                topic = settings.kafka.topics.labels.name if isinstance(item, Label) else settings.kafka.topics.transactions.name
                await producer.send(topic, encode(item), key=item.account_id.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    job = job_factory(settings, actors=2)
    _wait_scored(job, len(transactions))
    deadline = time.monotonic() + 60  # until every actor's broadcast table is complete
    while True:
        status = job.status()
        done = [a.broadcast_complete_through_ms for a in status.actors]
        labels_done = sum(p.labels_applied for p in status.partitions.values()) == len(labels)
        if labels_done and all(c >= end for c in done):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)

    offline = PartitionedFeatures(settings.features, partitions)
    for item in interleave(transactions, labels):
        (offline.observe_label if isinstance(item, Label) else offline.transform_one)(item)
    actors = ray.get(job.controller.actor_handles.remote())
    probes = [start + k * 97 * minute for k in range(80)]
    for terminal in ["T-shared", "T-1", "T-4"]:
        expected = [offline.terminal_risk.stats(terminal, t) for t in probes]
        assert any(f for _, f in expected) or terminal != "T-shared"  # frauds are known there
        for actor in actors:
            seen = ray.get([actor.terminal_stats.remote(terminal, t) for t in probes])
            assert [tuple(s) for s in seen] == expected, terminal
