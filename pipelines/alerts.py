"""`fraudstream alerts tail`: read the alerts topic, filter, print one JSON line per alert.

The tail reads every partition of ``kafka.topics.alerts`` by manual assignment
(no consumer group, nothing committed), so it never disturbs downstream
consumers. Each matching alert goes to stdout exactly as it is on the topic,
one JSON object per line (ready for ``jq``); status, counts and records that
are not alerts go to stderr. The guide for teams consuming the topic is
``docs/alerts.md``.

Where the tail starts and stops: the end of a partition is the high watermark
the broker reports in its first fetch answer (the embedded broker's ListOffsets
answer, which ``seek_to_end`` relies on, lags behind its log after batched
produce). Without ``--from-beginning`` the tail starts there and prints only
alerts written later; ``--no-follow`` stops once every partition is read up to
the end it had when the tail started.

The filters are pure (:class:`AlertFilter`, :func:`make_filter` and the
``parse_*`` helpers); bad option values raise :class:`configs.ConfigError`,
which the CLI prints as one line (exit 2):

>>> from contracts import Alert, Reasons
>>> alert = Alert(alert_id="a1", transaction_id="t1", account_id="acc-7", event_time=1767225600000,
...               score=0.998, decision="block", reasons=Reasons(rules=["card_testing"]),
...               model_versions={}, feature_version="fs1", ingest_time=1767225600000,
...               alert_time=1767225600000)
>>> make_filter(accounts=["acc-7"], decision="block", min_score="0.99", rule="card_testing",
...             since="2026-01-01T00:00:00Z").matches(alert)
True
>>> make_filter(since="2026-01-01T00:00:01Z").matches(alert), make_filter(rule="bust_out").matches(alert)
(False, False)
>>> make_filter(min_score="1.5")
Traceback (most recent call last):
...
configs.settings.ConfigError: --min-score: expected a number between 0 and 1, got '1.5'
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, get_args

import msgspec
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.markup import escape

from configs import ConfigError, KafkaSettings
from connectors.kafka import KafkaSetupError, make_consumer, partition_counts, wait_until_ready
from contracts.errors import RecordError
from contracts.records import Alert, Decision, decode_alert
from pipelines.commandline import ConfigOption, settings_for
from pipelines.session import kafka_for, running_embedded_broker

console = Console(stderr=True)

#: The decisions an alert can carry (``--decision``).
DECISIONS: tuple[str, ...] = get_args(Decision)
_BOOTSTRAP = re.compile(r"^[^\s:,]+:\d{1,5}$")


# ----------------------------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to print: every given criterion must hold (several accounts: any of them)."""

    #: account_id is one of these (empty: any account).
    accounts: frozenset[str] = frozenset()
    decision: str | None = None
    #: score >= this.
    min_score: float | None = None
    #: A rule of this name fired (``reasons.rules`` names it).
    rule: str | None = None
    #: event_time (epoch ms) >= this.
    since_ms: int | None = None

    def matches(self, alert: Alert) -> bool:
        """True when ``alert`` passes every criterion set."""
        return (
            (not self.accounts or alert.account_id in self.accounts)
            and (self.decision is None or alert.decision == self.decision)
            and (self.min_score is None or alert.score >= self.min_score)
            and (self.rule is None or self.rule in alert.reasons.rules)
            and (self.since_ms is None or alert.event_time >= self.since_ms)
        )


def parse_since(value: str | None, option: str = "--since") -> int | None:
    """An RFC 3339 time (or a date: UTC midnight; no offset: UTC) as epoch milliseconds; None stays None.

    >>> parse_since("2026-01-01T00:00:00Z"), parse_since("2026-01-01T01:00:00+01:00"), parse_since("2026-01-01")
    (1767225600000, 1767225600000, 1767225600000)
    >>> parse_since("yesterday")
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: --since: expected an RFC 3339 time such as 2026-01-15T12:00:00Z or 2026-01-15T13:00:00+01:00 (or a date, 2026-01-15, read as UTC midnight), got 'yesterday'
    """
    from connectors.history import parse_time  # the parser `train` and `backtest` use for --from / --until

    if value is None:
        return None
    text = value.strip()
    try:
        if not text[:4].isdigit():  # a time here starts with its year (fromisoformat takes bare times too)
            raise ConfigError(text)
        return parse_time(text, option)
    except ConfigError:
        raise ConfigError(
            f"{option}: expected an RFC 3339 time such as 2026-01-15T12:00:00Z or 2026-01-15T13:00:00+01:00 "
            f"(or a date, 2026-01-15, read as UTC midnight), got {value!r}"
        ) from None


def parse_decision(value: str | None) -> str | None:
    """``review`` or ``block`` (any case); None stays None.

    >>> parse_decision("Block")
    'block'
    >>> parse_decision("deny")
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: --decision: expected review or block, got 'deny'
    """
    if value is None:
        return None
    if value.strip().lower() not in DECISIONS:
        raise ConfigError(f"--decision: expected {' or '.join(DECISIONS)}, got {value!r}")
    return value.strip().lower()


def parse_min_score(value: str | float | None) -> float | None:
    """A score threshold in [0, 1]; None stays None.

    >>> parse_min_score("0.995"), parse_min_score("1")
    (0.995, 1.0)
    >>> parse_min_score("nan")
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: --min-score: expected a number between 0 and 1, got 'nan'
    """
    if value is None:
        return None
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not 0.0 <= score <= 1.0:  # also refuses nan
        raise ConfigError(f"--min-score: expected a number between 0 and 1, got {str(value)!r}")
    return score


def parse_limit(value: str | int | None) -> int | None:
    """A positive number of alerts to print; None (no limit) stays None.

    >>> parse_limit("3")
    3
    >>> parse_limit("0")
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: --limit: expected a whole number of at least 1, got '0'
    """
    if value is None:
        return None
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"--limit: expected a whole number of at least 1, got {str(value)!r}")
    return limit


def make_filter(
    accounts: Iterable[str] | None = None,
    decision: str | None = None,
    min_score: str | float | None = None,
    rule: str | None = None,
    since: str | None = None,
) -> AlertFilter:
    """The filter the tail options describe; a bad value raises ConfigError naming the option."""
    wanted = frozenset(accounts or ())
    if "" in wanted:
        raise ConfigError("--account: expected an account id, got ''")
    if rule is not None and not rule.strip():
        raise ConfigError("--rule: expected the name of a decision rule (e.g. card_testing), got ''")
    return AlertFilter(
        accounts=wanted,
        decision=parse_decision(decision),
        min_score=parse_min_score(min_score),
        rule=None if rule is None else rule.strip(),
        since_ms=parse_since(since),
    )


def check_bootstrap(value: str | None) -> str | None:
    """``HOST:PORT`` (comma-separated for several brokers); None stays None.

    >>> check_bootstrap("127.0.0.1:9092,kafka-2:9092")
    '127.0.0.1:9092,kafka-2:9092'
    >>> check_bootstrap("localhost")
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: --bootstrap: expected HOST:PORT (comma-separated for several brokers), got 'localhost'
    """
    if value is None:
        return None
    if not all(_BOOTSTRAP.match(part.strip()) for part in value.split(",")):
        raise ConfigError(f"--bootstrap: expected HOST:PORT (comma-separated for several brokers), got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------- records
def read_alert(value: bytes | None) -> Alert:
    """Decode a record value as an alert; RecordError says why it is not one.

    >>> read_alert(b'{"alert_id": "a1"}')
    Traceback (most recent call last):
    ...
    contracts.errors.RecordError: alert.transaction_id: required field is missing (fix: send a non-empty string of at most 128 characters)
    """
    if value is None:
        raise RecordError("alert", None, "the record has no value (a tombstone)")
    try:
        return decode_alert(value)
    except UnicodeDecodeError as exc:  # msgspec checks UTF-8 only inside strings
        raise RecordError("alert", None, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


def why(alert: Alert) -> str:
    """A short why for one line of a queue: its rules, then its top two features (the demo's dashboard and the
    console's queue show it)."""
    parts = [f"rule {name}" for name in alert.reasons.rules]
    parts += [f"{f.name}={f.value:,.4g}" for f in alert.reasons.top_features[:2]]
    return ", ".join(parts[:3])


def alert_line(value: bytes) -> str:
    """The record value as one line: as on the topic (a value spanning lines loses the whitespace between tokens).

    >>> alert_line(b'{"alert_id":"a1","score":0.99}')
    '{"alert_id":"a1","score":0.99}'
    >>> alert_line(b'{\\n  "alert_id": "a1"\\n}\\n')
    '{"alert_id":"a1"}'
    """
    line = value.strip()
    if b"\n" in line or b"\r" in line:  # JSON strings cannot hold raw line breaks: these are whitespace
        line = msgspec.json.format(line, indent=-1)
    return line.decode("utf-8")


# ----------------------------------------------------------------------------------------------- the tail
@dataclass
class TailStats:
    """What a tail did, updated as it goes (so it is complete even after Ctrl-C)."""

    topic: str = ""
    partitions: int = 0
    printed: int = 0
    #: Alerts the filter left out.
    filtered: int = 0
    #: Records that did not decode as alerts.
    not_alerts: int = 0
    #: Every partition was read to the end it had at the start (``--no-follow``).
    reached_end: bool = False
    limit_reached: bool = False


async def topic_partitions(
    kafka: KafkaSettings, bootstrap: str | None, topic: str, consumer: AIOKafkaConsumer
) -> list[int]:
    """The topic's partition ids (from the consumer's metadata, else a fresh metadata request)."""
    found = consumer.partitions_for_topic(topic)
    if not found:
        count = (await partition_counts(kafka, bootstrap, [topic], timeout_s=5.0)).get(topic, 0)
        found = set(range(count))
    if not found:
        servers = bootstrap or ",".join(kafka.bootstrap_servers)
        raise KafkaSetupError(
            f"topic {topic!r} does not exist at {servers}; check kafka.topics.alerts.name "
            "(the scoring job creates it when it starts)"
        )
    return sorted(found)


async def tail_alerts(
    kafka: KafkaSettings,
    bootstrap: str | None,
    topic: str,
    *,
    alert_filter: AlertFilter | None = None,
    from_beginning: bool = False,
    follow: bool = True,
    limit: int | None = None,
    write: Callable[[str], None],
    report: Callable[[str], None] = lambda message: None,
    on_ready: Callable[[TailStats], None] = lambda stats: None,
    stop: asyncio.Event | None = None,
    stats: TailStats | None = None,
    poll_ms: int = 300,
) -> TailStats:
    """Read ``topic`` from all partitions and ``write`` each matching alert as one JSON line.

    ``report`` gets one message per record that is not an alert (topic,
    partition, offset and why); ``on_ready`` is called once the end of every
    partition is known (from then on, every alert written to the topic is
    seen). Returns when ``stop`` is set, ``limit`` alerts were written, or,
    without ``follow``, every partition was read to the end it had at the start.
    """
    stats = stats if stats is not None else TailStats()
    stats.topic = topic
    stop = stop if stop is not None else asyncio.Event()
    # with exactly-once actors, only committed alerts (an aborted batch's are replayed and committed again)
    isolation = "read_committed" if kafka.exactly_once else "read_uncommitted"
    consumer = make_consumer(kafka, bootstrap, auto_offset_reset="earliest", isolation_level=isolation)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(kafka, bootstrap, topic, consumer)]
        stats.partitions = len(tps)
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        tail = _Tail(consumer, tps, stats, from_beginning=from_beginning, follow=follow,
                     answer_s=max(10.0, kafka.request_timeout_ms / 1000))  # fmt: skip
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=poll_ms, max_records=2_000)
            if not tail.ready and await tail.learn_ends():
                on_ready(stats)
            for tp in sorted(batch, key=lambda tp: tp.partition):
                for record in tail.wanted(tp, batch[tp]):
                    try:
                        alert = read_alert(record.value)
                    except RecordError as exc:
                        stats.not_alerts += 1
                        report(f"{topic} partition {tp.partition} offset {record.offset}: not an alert, skipped: {exc}")
                        continue
                    if alert_filter is not None and not alert_filter.matches(alert):
                        stats.filtered += 1
                        continue
                    write(alert_line(record.value))
                    stats.printed += 1
                    if limit is not None and stats.printed >= limit:
                        stats.limit_reached = True
                        return stats
            if not follow and await tail.all_read():
                stats.reached_end = True
                return stats
        return stats
    finally:
        await consumer.stop()


class _Tail:
    """Where "now" is on each partition of a tail, and which records fall inside the tail's span.

    "Now" is each partition's high watermark in the first fetch answer; a tail that does not start from
    the beginning reads from there, one that does not follow stops there.
    """

    def __init__(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], stats: TailStats, *,
                 from_beginning: bool, follow: bool, answer_s: float) -> None:  # fmt: skip
        self.consumer, self.tps, self.stats = consumer, tps, stats
        self.from_beginning, self.follow, self.answer_s = from_beginning, follow, answer_s
        self.ends: dict[TopicPartition, int] = {}
        self.done: set[TopicPartition] = set()
        self.deadline = asyncio.get_running_loop().time() + answer_s

    @property
    def ready(self) -> bool:
        """Every partition's end is known: from now on every alert written to the topic is seen."""
        return len(self.ends) == len(self.tps)

    async def learn_ends(self) -> bool:
        """Record the ends the last fetch answered; True once all are known; KafkaSetupError after the deadline."""
        for tp in self.tps:
            high = self.consumer.highwater(tp) if tp not in self.ends else None
            if high is None:
                continue
            self.ends[tp] = high
            if not self.from_beginning and await self.consumer.position(tp) < high:
                self.consumer.seek(tp, high)  # skips what is already there (and drops what was prefetched)
        if self.ready:
            return True
        if asyncio.get_running_loop().time() > self.deadline:
            missing = sorted(tp.partition for tp in self.tps if tp not in self.ends)
            raise KafkaSetupError(
                f"partitions {missing} of {self.stats.topic!r} gave no fetch answer in {self.answer_s:.0f}s; "
                "check that their leaders are up"
            )
        return False

    def wanted(self, tp: TopicPartition, records: list[Any]) -> list[Any]:
        """The records of ``tp`` inside the span (none before the partition's end is known, unless from the start)."""
        first = 0 if self.from_beginning else self.ends.get(tp)
        if first is None:
            return []
        last = None if self.follow else self.ends.get(tp)
        return [r for r in records if r.offset >= first and (last is None or r.offset < last)]

    async def all_read(self) -> bool:
        """Without follow: every partition read up to its end (each is paused once it is)."""
        if not self.ready:
            return False
        for tp in self.tps:
            if tp not in self.done and await self.consumer.position(tp) >= self.ends[tp]:
                self.done.add(tp)
                self.consumer.pause(tp)
        return len(self.done) == len(self.tps)


def stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (`fraudstream alerts tail | head -3`).

    Without it a following tail would notice only at its next alert.
    """
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR and POLLHUP are always reported
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is not a file (tests)
        return False


def run_tail(
    kafka: KafkaSettings,
    bootstrap: str | None,
    topic: str,
    stats: TailStats,
    watch_stdout: bool = False,
    **options: object,
) -> None:
    """Run :func:`tail_alerts` until it returns or Ctrl-C/SIGTERM (which end it cleanly, between two polls).

    With ``watch_stdout`` it also stops once the reader of stdout has gone.
    """

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            if stdout_closed():
                stop.set()
            await asyncio.sleep(0.5)

    async def main() -> None:
        await wait_until_ready(kafka, bootstrap)  # Ctrl-C while it waits: KeyboardInterrupt
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        watcher = asyncio.create_task(watch(stop)) if watch_stdout else None
        installed = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        try:
            await tail_alerts(kafka, bootstrap, topic, stop=stop, stats=stats, **options)  # type: ignore[arg-type]
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if watcher is not None:
                watcher.cancel()

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------- the command
alerts_app = typer.Typer(
    no_args_is_help=True,
    help="Read the alerts topic (guide for downstream consumers: docs/alerts.md).",
)


def _write_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _summary(stats: TailStats, follow: bool, from_beginning: bool) -> str:
    parts = [f"{stats.printed:,} alert{'s' if stats.printed != 1 else ''} printed"]
    if stats.filtered:
        parts.append(f"{stats.filtered:,} left out by the filters")
    if stats.not_alerts:
        parts.append(f"{stats.not_alerts:,} record{'s' if stats.not_alerts != 1 else ''} skipped as not an alert")
    if stats.limit_reached:
        why = "--limit reached"
    elif stats.reached_end:
        why = "end of every partition"
        if not from_beginning:
            parts.append("the tail started at the end: --from-beginning reads the alerts already there")
    else:
        why = "stopped"
    return f"{why}: {'; '.join(parts)}"


@alerts_app.command("tail")
def tail_command(
    config: ConfigOption = None,
    bootstrap: Annotated[
        str | None,
        typer.Option("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (overrides the config)."),
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest alert kept (default: only new alerts).")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option("--follow/--no-follow", help="Keep waiting for new alerts until Ctrl-C, or stop at the end."),
    ] = True,
    account: Annotated[
        list[str] | None, typer.Option("--account", metavar="ID", help="Only this account (repeat for several).")
    ] = None,
    decision: Annotated[
        str | None, typer.Option("--decision", metavar="review|block", help="Only this decision.")
    ] = None,
    min_score: Annotated[
        str | None, typer.Option("--min-score", metavar="FLOAT", help="Only scores >= this (0..1).")
    ] = None,
    rule: Annotated[
        str | None, typer.Option("--rule", metavar="NAME", help="Only alerts this decision rule fired.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", metavar="ISO", help="Only event times at or after this (RFC 3339).")
    ] = None,
    limit: Annotated[str | None, typer.Option("--limit", metavar="N", help="Stop after printing N alerts.")] = None,
) -> None:
    """Print alerts from the alerts topic as JSON lines on stdout (status on stderr); Ctrl-C stops."""
    alert_filter = make_filter(account, decision, min_score, rule, since)
    max_alerts = parse_limit(limit)
    check_bootstrap(bootstrap)
    settings = settings_for(config)
    topic = settings.kafka.topics.alerts.name
    if bootstrap is None and settings.kafka.embedded and running_embedded_broker() is None:
        console.print(
            "[yellow]no `fraudstream broker` runs in this folder: the broker started for this tail is new and "
            "empty, and no scoring job writes to it; start `fraudstream broker` (and the job) here, or pass "
            "--bootstrap HOST:PORT[/yellow]",
            soft_wrap=True,
        )

    stats = TailStats()

    def ready(stats: TailStats) -> None:
        where = f"{escape(topic)} ({stats.partitions} partitions)"
        if from_beginning:
            then = ", then waiting for new ones; Ctrl-C to stop" if follow else " up to its current end"
            console.print(f"[dim]reading {where} from the beginning{then}[/dim]", soft_wrap=True)
        elif follow:
            console.print(f"[dim]waiting for new alerts on {where}; Ctrl-C to stop[/dim]", soft_wrap=True)

    with kafka_for(settings, bootstrap) as servers:
        try:
            run_tail(
                settings.kafka, servers, topic, stats,
                alert_filter=alert_filter, from_beginning=from_beginning, follow=follow, limit=max_alerts,
                write=_write_line, on_ready=ready, watch_stdout=follow,
                report=lambda message: console.print(f"[yellow]{escape(message)}[/yellow]", soft_wrap=True),
            )  # fmt: skip
        except BrokenPipeError:  # `fraudstream alerts tail | head`: the reader left, which is fine
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        except KeyboardInterrupt:  # Ctrl-C before the tail was reading (connecting, looking up the topic)
            pass
    console.print(_summary(stats, follow, from_beginning), highlight=False, soft_wrap=True)
