"""`fraudstream alerts tail` against the real embedded broker: alerts produced with aiokafka, read by the CLI."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from configs import Settings
from connectors.kafka import make_producer
from contracts import Alert, FeatureContribution, Reasons, SourcePosition, encode
from tests.integration.streamkit import run_cli

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000


def make_alert(n: int, account: str, hours: int, score: float, decision: str, rules: tuple[str, ...] = ()) -> Alert:
    return Alert(
        alert_id=f"{n:032x}", transaction_id=f"tx-{n}", account_id=account, event_time=T0 + hours * HOUR,
        score=score, decision=decision,  # type: ignore[arg-type]
        reasons=Reasons(rules=list(rules), top_features=[FeatureContribution(name="amount", value=120.0,
                                                                             contribution=2.5)]),
        model_versions={"anomaly": "river.HalfSpaceTrees:25x8w250s1", "rules": "rules-457fa01e"},
        feature_version="fs1-0", ingest_time=T0 + hours * HOUR + 5, alert_time=T0 + hours * HOUR + 20,
        source=SourcePosition(topic="transactions", partition=n % 4, offset=100 + n),
    )  # fmt: skip


ALERTS = [
    make_alert(0, "acc-1", 0, 0.996, "review"),
    make_alert(1, "acc-2", 1, 0.9996, "block", ("card_testing",)),
    make_alert(2, "acc-1", 24, 0.97, "review", ("account_takeover",)),
    make_alert(3, "acc-3", 36, 0.99, "block", ("card_testing",)),
    make_alert(4, "acc-2", 48, 0.998, "review"),
    make_alert(5, "acc-4", 48, 0.97, "review", ("bust_out", "account_takeover")),
    make_alert(6, "acc-1", 72, 0.9999, "block"),
]
BAD_VALUE = b'{"alert_id": "broken", "score": "high"}'


@dataclass
class AlertsTopic:
    settings: Settings
    bootstrap: str
    config: Path
    topic: str
    #: Each produced alert's JSON line -> (partition, offset).
    positions: dict[str, tuple[int, int]]
    #: Where the undecodable record landed.
    bad: tuple[int, int]

    def lines(self, indices: list[int]) -> list[str]:
        return [encode(ALERTS[n]).decode() for n in indices]


async def _send(settings: Settings, bootstrap: str, records: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """Send (key, value) records in batches, as the scoring job does (per partition in send order);
    (partition, offset) of each."""
    producer = make_producer(settings.kafka, settings.producer, bootstrap)
    await producer.start()
    try:
        topic = settings.kafka.topics.alerts.name
        pending = [await producer.send(topic, value, key=key) for key, value in records]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*pending)]
    finally:
        await producer.stop()


def send(topic: AlertsTopic, alerts: list[Alert]) -> list[tuple[int, int]]:
    return asyncio.run(_send(topic.settings, topic.bootstrap, [(a.account_id.encode(), encode(a)) for a in alerts]))


@pytest.fixture
def alerts_topic(isolated_settings, kafka_broker: str, tmp_path: Path) -> AlertsTopic:
    """A fresh alerts topic (4 partitions) holding ALERTS keyed by account, with one undecodable record after
    the fourth; a config file naming the topic."""
    settings = isolated_settings(partitions=4)
    topic = settings.kafka.topics.alerts.name
    records = [(a.account_id.encode(), encode(a)) for a in ALERTS]
    records.insert(4, (b"acc-3", BAD_VALUE))
    positions = asyncio.run(_send(settings, kafka_broker, records))
    bad = positions.pop(4)
    config = tmp_path / "config.yaml"
    config.write_text(f"kafka:\n  topics:\n    alerts: {{name: {topic}, partitions: 4}}\n")
    by_line = {encode(a).decode(): where for a, where in zip(ALERTS, positions, strict=True)}
    # the per-partition order checks below mean something only if partitions hold several alerts
    per_partition = defaultdict(int)
    for partition, _ in positions:
        per_partition[partition] += 1
    assert len(per_partition) >= 2 and max(per_partition.values()) >= 2, per_partition
    return AlertsTopic(settings, kafka_broker, config, topic, by_line, bad)


def tail(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], topic: AlertsTopic, *args: str
) -> tuple[int, list[str], str]:
    code, out, err = run_cli(monkeypatch, capsys, "alerts", "tail", "--config", str(topic.config),
                             "--bootstrap", topic.bootstrap, *args)  # fmt: skip
    return code, out.splitlines(), err


def assert_partition_order(topic: AlertsTopic, lines: list[str]) -> None:
    """Within each partition the lines come in offset order."""
    offsets: dict[int, list[int]] = defaultdict(list)
    for line in lines:
        partition, offset = topic.positions[line]
        offsets[partition].append(offset)
    for partition, seen in offsets.items():
        assert seen == sorted(seen), (partition, seen)


def test_from_beginning_prints_every_alert_as_on_the_topic_and_reports_the_bad_record(
    alerts_topic: AlertsTopic, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, err = tail(monkeypatch, capsys, alerts_topic, "--from-beginning", "--no-follow")
    assert code == 0, err
    assert sorted(lines) == sorted(alerts_topic.lines(list(range(len(ALERTS)))))
    assert len(lines) == len(ALERTS)  # each once
    assert_partition_order(alerts_topic, lines)
    partition, offset = alerts_topic.bad
    assert f"{alerts_topic.topic} partition {partition} offset {offset}: not an alert, skipped: alert.score" in err
    assert "end of every partition: 7 alerts printed; 1 record skipped as not an alert" in err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--decision", "block", "--account", "acc-1", "--account", "acc-2"], [1, 6]),
        (["--rule", "account_takeover"], [2, 5]),
        (["--min-score", "0.998", "--since", "2026-01-02T00:00:00Z"], [4, 6]),
        (["--since", "2026-01-02T12:00:00+01:00", "--decision", "review"], [4, 5]),
        (["--account", "acc-9"], []),
    ],
)
def test_filters_print_exactly_the_matching_alerts(
    alerts_topic: AlertsTopic, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    options: list[str], expected: list[int],
) -> None:  # fmt: skip
    code, lines, err = tail(monkeypatch, capsys, alerts_topic, "--from-beginning", "--no-follow", *options)
    assert code == 0, err
    assert sorted(lines) == sorted(alerts_topic.lines(expected))
    assert_partition_order(alerts_topic, lines)
    assert f"{len(ALERTS) - len(expected)} left out by the filters" in err


def test_limit_stops_after_n_alerts_taken_in_partition_order(
    alerts_topic: AlertsTopic, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, err = tail(monkeypatch, capsys, alerts_topic, "--from-beginning", "--no-follow", "--limit", "3")
    assert code == 0, err
    assert len(lines) == 3 and len(set(lines)) == 3
    assert set(lines) <= set(alerts_topic.lines(list(range(len(ALERTS)))))
    # what a partition contributed is the start of that partition, in order
    printed: dict[int, list[int]] = defaultdict(list)
    for line in lines:
        partition, offset = alerts_topic.positions[line]
        printed[partition].append(offset)
    for partition, offsets in printed.items():
        in_partition = sorted(o for p, o in alerts_topic.positions.values() if p == partition)
        assert offsets == in_partition[: len(offsets)], (partition, offsets, in_partition)
    assert "--limit reached: 3 alerts printed" in err


def test_without_from_beginning_it_starts_at_the_end(
    alerts_topic: AlertsTopic, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the embedded broker answers ListOffsets with a position inside the log: trusting it printed old alerts)
    code, lines, err = tail(monkeypatch, capsys, alerts_topic, "--no-follow")
    assert code == 0, err
    assert lines == []
    assert "end of every partition: 0 alerts printed" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--since", "last tuesday", "--since: expected an RFC 3339 time such as 2026-01-15T12:00:00Z"),
        ("--decision", "deny", "--decision: expected review or block, got 'deny'"),
        ("--min-score", "1.5", "--min-score: expected a number between 0 and 1, got '1.5'"),
        ("--min-score", "high", "--min-score: expected a number between 0 and 1, got 'high'"),
        ("--limit", "0", "--limit: expected a whole number of at least 1, got '0'"),
    ],
)
def test_bad_option_values_stop_with_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    # no broker at this address: the options are checked before anything connects
    code, out, err = run_cli(monkeypatch, capsys, "alerts", "tail", "--bootstrap", "127.0.0.1:9", option, value)
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith(f"error: {message}")
    assert "Traceback" not in err


def _lines(stream, sink: queue.Queue) -> None:  # type: ignore[no-untyped-def]
    for line in iter(stream.readline, ""):
        sink.put(line.rstrip("\n"))


def _next_line(sink: queue.Queue, contains: str, timeout_s: float, seen: list[str]) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = sink.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(line)
        if contains in line:
            return line
    raise AssertionError(f"no line with {contains!r} in {timeout_s}s; got {seen}")


def test_follow_prints_only_new_alerts_and_ctrl_c_ends_cleanly(alerts_topic: AlertsTopic, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "alerts", "tail", "--config", str(alerts_topic.config),
         "--bootstrap", alerts_topic.bootstrap, "--decision", "block"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out: queue.Queue = queue.Queue()
    err: queue.Queue = queue.Queue()
    for stream, sink in ((process.stdout, out), (process.stderr, err)):
        threading.Thread(target=_lines, args=(stream, sink), daemon=True).start()
    seen_err: list[str] = []
    try:
        _next_line(err, "waiting for new alerts", 30.0, seen_err)  # every partition's end is known
        new = [make_alert(10, "acc-5", 80, 0.97, "review"), make_alert(11, "acc-1", 81, 0.9991, "block"),
               make_alert(12, "acc-6", 82, 0.9997, "block")]  # fmt: skip
        send(alerts_topic, new)
        seen_out: list[str] = []
        _next_line(out, encode(new[1]).decode(), 15.0, seen_out)
        _next_line(out, encode(new[2]).decode(), 15.0, seen_out)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        time.sleep(0.2)  # the reader threads drain the pipes
        while not out.empty():
            seen_out.append(out.get())
        while not err.empty():
            seen_err.append(err.get())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # only the new block alerts (nothing that was on the topic before the tail started), each once
    assert sorted(seen_out) == sorted(encode(a).decode() for a in new[1:])
    assert any("stopped: 2 alerts printed; 1 left out by the filters" in line for line in seen_err), seen_err
    assert not any("Traceback" in line for line in seen_err), seen_err
