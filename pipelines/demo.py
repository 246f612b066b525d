"""`fraudstream demo`: the whole product on one machine in about two minutes.

1. generate a synthetic card-payment history with injected, labelled fraud;
2. train the batch classifier on all but its last ``--live-days`` days, register
   it in a local MLflow store and make it the champion;
3. start an embedded broker and a local Ray, and the scoring job on them;
4. stream the history: the training days as fast as the actors take them
   (warm-up: every account's feature state is built as in production), then,
   once the actors have caught up, the last days at ``--rate`` transactions/s
   (live: days the model never saw);
5. show a live dashboard: events/s, lag, alerts/s, latency, and the alerts read
   back from the ``alerts`` topic matched to the ground truth (precision and
   recall per period);
6. drain, replay the live days through the same features and models to draw the
   precision-recall curve, and write ``reports/demo-<time>/`` (index.html, PNG
   plots, summary.json; the run's history, MLflow store and checkpoints in
   ``run/``).

With ``--console`` the analysts' console (:mod:`pipelines.console`) runs beside
it from the first seconds, on the demo's broker: the alert queue fills as the
actors score; a verdict given there is a label the scoring job learns. After
the report the scoring job starts again from its checkpoints and runs on with
the console until Ctrl-C, so the queue can be worked and its verdicts learned.

Everything it starts (broker, Ray, actors, console, threads) stops when it ends,
also on Ctrl-C; each run has its own folder, broker and Ray, so runs never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from actors.messages import DrainedJob, JobStatus, JobTotals
from configs import ConfigError, Settings
from models.batch import iso_utc
from models.checked_settings import load_settings
from pipelines.alerts import why

console = Console(stderr=True)

#: Where the reports go (a folder per run).
REPORTS = Path("reports")
#: Days of history before the live days: training splits them into fit, calibration, a label-delay gap, test.
MIN_TRAINING_DAYS = 10
#: A stream that scores nothing this long while events wait is stuck: the demo stops and says so.
STALL_S = 120.0
#: Rows per producer chunk: small, so that the live rate is smooth.
CHUNK_ROWS = 100


@dataclass(frozen=True)
class DemoOptions:
    accounts: int = 3000
    days: int = 35
    live_days: int = 7
    rate: float = 2000.0
    actors: int = 2
    seed: int = 7
    reports: Path = REPORTS
    config: Path | None = None
    #: Serve the analysts' console beside the stream (on ``console_port``; None: console.port, or any free one).
    console: bool = False
    console_port: int | None = None

    def check(self) -> None:
        if self.console_port is not None and not 0 <= self.console_port <= 65535:
            raise ConfigError(f"--console-port: a port 0-65535 (0 = any free one), got {self.console_port}")
        if self.accounts < 100:
            raise ConfigError(f"--accounts: at least 100 are needed to train a model, got {self.accounts}")
        if self.live_days < 1:
            raise ConfigError(f"--live-days: at least 1, got {self.live_days}")
        if self.days - self.live_days < MIN_TRAINING_DAYS:
            raise ConfigError(
                f"--days {self.days} leaves {self.days - self.live_days} days to train on before the "
                f"{self.live_days} live days; training needs at least {MIN_TRAINING_DAYS} (a fit, a calibration and a "
                "test period with the label-delay gap between): raise --days or lower --live-days"
            )
        if self.rate < 0:
            raise ConfigError(f"--rate: transactions per second >= 0 (0 = as fast as possible), got {self.rate}")
        if self.actors < 1:
            raise ConfigError(f"--actors: at least 1, got {self.actors}")


def demo_settings(options: DemoOptions, run_dir: Path) -> Settings:
    """The config (default: the bundled local one) with this run's own store, checkpoints and world."""
    database = (run_dir / "mlflow.db").resolve()
    console = {} if options.console_port is None else {"console.port": options.console_port}
    return load_settings(options.config, {
        **console,
        "console.audit_path": str(run_dir / "verdicts.jsonl"),
        "kafka.embedded": True,
        "kafka.embedded_port": 0,
        "generator.accounts": options.accounts,
        "generator.days": options.days,
        "generator.seed": options.seed,
        "mlflow.tracking_uri": f"sqlite:///{database}",
        "stream.checkpoint_uri": str((run_dir / "checkpoints").resolve()),
        "stream.status_path": str(run_dir / "status.json"),
        "stream.status_interval_s": 1.0,
    })  # fmt: skip


# ----------------------------------------------------------------------------------------------- streaming
class DemoError(ConfigError):
    """The demo could not finish (the CLI prints it as one line and exits 2)."""


class Stall:
    """Notices a stream that stopped moving: events waiting (lag) and nothing scored for ``limit_s``."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._scored = -1
        self._since = time.monotonic()

    def check(self, status: JobStatus, now: float | None = None) -> str | None:
        """Why the stream looks stuck (None: it moves, or nothing waits)."""
        now = time.monotonic() if now is None else now
        totals = status.totals
        scored, lag = totals.scored, totals.lag or 0
        if scored != self._scored or lag == 0:
            self._scored, self._since = scored, now
            return None
        if now - self._since < self.limit_s:
            return None
        errors = [f"{a.actor}: {a.error}" for a in status.actors if a.error]
        return f"nothing scored for {self.limit_s:.0f} s with {lag:,} events waiting" + (
            f" ({'; '.join(errors)})" if errors else "")


class Traffic:
    """The producer and a live reader of the alerts topic, on one event loop in a background thread.

    The producer sends the warm-up rows as fast as it can, waits at ``live_row``
    until :attr:`gate` is set (the demo sets it once the actors have caught up),
    then sends the rest at ``rate`` transactions/s. Alerts read back are queued
    as raw values in :attr:`alerts` for the main thread.
    """

    def __init__(self, settings: Settings, servers: str, history: Any, live_row: int, rate: float) -> None:
        self.settings, self.servers, self.history = settings, servers, history
        self.live_row, self.rate = live_row, rate
        self.gate = threading.Event()
        self.alerts: deque[bytes] = deque()
        #: Transactions sent when the producer reached the live rows and began to wait (None before).
        self.waiting_at: int | None = None
        self.produced: int | None = None  # set once every send is acknowledged
        self.error: str | None = None
        self._live: tuple[float, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._producer: asyncio.Task[Any] | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="demo-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop producing (if still at it) and reading; returns once the thread ended."""
        self.gate.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._cancel)
        self._thread.join(timeout_s)

    def _cancel(self) -> None:
        if self._producer is not None and not self._producer.done():
            self._producer.cancel()
        if self._stop is not None:
            self._stop.set()

    async def _pace(self, sent: int) -> None:
        if sent < self.live_row:
            return
        if self._live is None:
            self.waiting_at = sent
            while not self.gate.is_set():
                await asyncio.sleep(0.05)
            self._live = (time.perf_counter(), sent)
            return
        if self.rate > 0:
            started, first = self._live
            ahead = (sent - first) / self.rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def _main(self) -> None:
        from pipelines.alerts import tail_alerts
        from pipelines.produce import produce_history

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        kafka = self.settings.kafka
        reader = asyncio.create_task(tail_alerts(
            kafka, self.servers, kafka.topics.alerts.name, from_beginning=True, follow=True,
            write=lambda line: self.alerts.append(line.encode()), stop=self._stop,
        ))  # fmt: skip
        self._producer = asyncio.create_task(produce_history(
            self.history.transactions, self.history.labels, kafka, self.settings.producer, self.servers,
            chunk_rows=CHUNK_ROWS, pace=self._pace,
        ))  # fmt: skip
        try:
            report = await self._producer
            self.produced = report.transactions
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # shown on the dashboard and in the summary
            self.error = f"producer: {exc}"
        await self._stop.wait()
        try:
            await reader
        except Exception as exc:
            self.error = self.error or f"alerts reader: {exc}"


def read_all_alerts(settings: Settings, servers: str) -> list[bytes]:
    """Every alert on the topic, start to end (after the drain: the complete set)."""
    from pipelines.alerts import tail_alerts

    lines: list[bytes] = []
    topic = settings.kafka.topics.alerts.name
    asyncio.run(tail_alerts(settings.kafka, servers, topic, from_beginning=True, follow=False,
                            write=lambda line: lines.append(line.encode())))
    return lines


@contextlib.contextmanager
def local_ray(settings: Settings) -> Iterator[str]:
    """A Ray of this run's own (never a running cluster), stopped with every process it started."""
    import ray

    from actors.controller import NAMESPACE

    temp_dir = tempfile.mkdtemp(prefix="fsdemo-ray-")  # short: Ray's socket paths must stay < 108 bytes
    # Ray turns token authentication on for a new local cluster and says so; it stays on, the line stays out
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(address="local", namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False,
             include_dashboard=False, configure_logging=True, _temp_dir=temp_dir)
    try:
        yield temp_dir
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- dashboard
@dataclass
class Dashboard:
    """What the live view shows, updated from each job status and the alerts read back."""

    board: Any  # pipelines.scoreboard.Scoreboard
    total: int
    model: str
    started: float = field(default_factory=time.monotonic)
    phase: str = "warm-up"
    #: The console's address (``--console``), shown in the header.
    console_url: str | None = None
    #: The latest job status (None before the first).
    status: JobStatus | None = None
    #: (seconds since the stream started, events/s, total lag) per status.
    throughput: list[tuple[float, float, int]] = field(default_factory=list)
    alerts_per_s: float = 0.0
    _last: tuple[float, int, int] | None = None  # (time, scored, alerts)

    def update(self, status: JobStatus, now: float | None = None) -> None:
        """Take a job status; ``now`` is seconds since the stream started (default: the clock)."""
        now = time.monotonic() - self.started if now is None else now
        totals = status.totals
        scored, alerts = totals.scored, totals.alerts
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (scored - self._last[1]) / (now - self._last[0])
            self.alerts_per_s = (alerts - self._last[2]) / (now - self._last[0])
        self._last = (now, scored, alerts)
        self.status = status
        self.throughput.append((round(now, 2), round(rate, 1), totals.lag or 0))

    def render(self, note: str = "", width: int = 100) -> Group:
        """The dashboard for a terminal ``width`` columns wide."""
        status = self.status
        totals = status.totals if status is not None else JobTotals.of([])
        elapsed = time.monotonic() - self.started
        rate = self.throughput[-1][1] if self.throughput else 0.0
        latencies = [a.latency_ms for a in status.actors] if status is not None else []
        p50 = max((lat.p50 or 0 for lat in latencies), default=0)
        p99 = max((lat.p99 or 0 for lat in latencies), default=0)
        stream = Table.grid(padding=(0, 2))
        stream.add_column(style="bold")
        stream.add_column(justify="right")
        stream.add_row("events/s", f"{rate:,.0f}")
        stream.add_row("scored", f"{totals.scored:,} / {self.total:,}")
        stream.add_row("lag", f"{totals.lag or 0:,}")
        stream.add_row("alerts/s", f"{self.alerts_per_s:,.1f}")
        stream.add_row("alerts", f"{totals.alerts:,}")
        stream.add_row("latency p50/p99", f"{p50:,.0f} / {p99:,.0f} ms")
        stream.add_row("dead letters", f"{totals.dead_letters:,}")
        stream.add_row("terminal-stale", f"{totals.terminal_stale:,}")
        truth = Table("period", "scored", "frauds", "alerts", "precision", "recall", box=None, header_style="bold",
                      caption="warm-up: trained on · live: never seen")
        for phase in ("warm-up", "live"):
            m = self.board.phase(phase)
            truth.add_row(phase, f"{m.scored:,}", f"{m.frauds:,}", f"{m.alerts:,}", _pct(m.precision), _pct(m.recall))
        latest = Table(box=None, header_style="bold")
        # fixed widths and reasons cut to what is left: rich would rather drop whole columns than cut a long cell
        fixed = (("event time", 11), ("account", 9), ("score", 6), ("decision", 8), ("truth", 14))
        for name, size in fixed:
            latest.add_column(name, no_wrap=True, width=size, overflow="ellipsis")
        latest.add_column("why", no_wrap=True)
        room = max(8, width - sum(size for _, size in fixed) - 2 * (len(fixed) + 1) - 4)
        for alert, row in reversed(self.board.latest()):
            scenario = self.board.truth.scenario[row]
            verdict = f"[red]{scenario}[/red]" if self.board.truth.fraud[row] else "[dim]genuine[/dim]"
            reason = why(alert)
            latest.add_row(
                iso_utc(alert.event_time)[5:16].replace("T", " "), alert.account_id, f"{alert.score:.4f}",
                alert.decision, verdict, reason if len(reason) <= room else reason[: room - 1] + "…",
            )  # fmt: skip
        header = Text.assemble(
            ("fraudstream demo", "bold"), f" · {self.phase} · {elapsed:,.0f}s · model {self.model}",
            (f" · console {self.console_url}" if self.console_url else "", "cyan"),
            (f" · {note}" if note else "", "yellow"),
        )
        panels = [Panel(stream, title="stream", expand=False),
                  Panel(truth, title="alerts against the ground truth", expand=False)]  # fmt: skip
        if width >= 110:  # side by side
            top = Table.grid(padding=(0, 2))
            top.add_row(*panels)
            return Group(header, top, Panel(latest, title="latest alerts"))
        return Group(header, *panels, Panel(latest, title="latest alerts"))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


# ----------------------------------------------------------------------------------------------- the run
def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _folder(root: Path) -> Path:
    base = root / f"demo-{_stamp()}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    (out / "run").mkdir(parents=True)
    return out


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}[/bold]"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def train_champion(settings: Settings, history_dir: Path, until_ms: int, client: Any) -> dict[str, Any]:
    """Train on the history before ``until_ms``, register the model and make it the champion."""
    from connectors.history import read_history
    from connectors.registry import promote
    from pipelines.train import feature_table, register, train_model

    loaded = read_history(history_dir, settings.history, until_ms=until_ms - 1)
    with _progress() as progress:
        task = progress.add_task("features for training", total=loaded.transactions.num_rows)
        features = feature_table(settings, loaded, on_progress=lambda done: progress.update(task, completed=done))
    with console.status("fitting the calibrated classifier"):
        trained = train_model(settings, features)
    with console.status("registering in MLflow"):
        version = register(settings, trained, str(history_dir), client)
        promote(client, version.name, version.version, "champion", force=False)
    return {
        "name": version.name,
        "version": version.version,
        "alias": "champion",
        "test_ap": trained.metrics.get("test_ap"),
        "test_roc_auc": trained.metrics.get("test_roc_auc"),
        "trained_until": iso_utc(until_ms),
    }


def replay_live(settings: Settings, history_dir: Path, live_from_ms: int, client: Any) -> Any:
    """The live days replayed through the same features and models (event time, no Kafka): every row's score."""
    from connectors.history import read_history
    from connectors.registry import load_batch_model
    from pipelines.backtest import backtest
    from pipelines.train import feature_table

    loaded = read_history(history_dir, settings.history)
    model = load_batch_model(client, settings.scoring.classifier.model_uri)
    with _progress() as progress:
        task = progress.add_task("replay: features", total=loaded.transactions.num_rows)
        features = feature_table(settings, loaded, on_progress=lambda done: progress.update(task, completed=done))
        task = progress.add_task("replay: scores", total=loaded.transactions.num_rows)
        return backtest(settings, loaded, features, model, from_ms=live_from_ms,
                        on_progress=lambda done: progress.update(task, completed=done))


def run_demo(
    options: DemoOptions, on_report: Callable[[Path, dict[str, Any]], None] | None = None
) -> tuple[Path, dict[str, Any]]:
    """The demo, start to end; returns the report's path and the summary (its summary.json).

    ``on_report`` is called once the report is written; with ``--console`` the console and the scoring job
    then run on until Ctrl-C (:func:`_linger`) before this returns.
    """
    from connectors.broker import EmbeddedBroker
    from connectors.registry import connect

    options.check()
    wall = time.monotonic()
    timings: dict[str, float] = {}
    out = _folder(options.reports)
    run_dir = out / "run"
    settings = demo_settings(options, run_dir)
    console.print(f"[bold]fraudstream demo[/bold] → {out}")
    with contextlib.ExitStack() as stack:
        mark = time.monotonic()
        with console.status("starting the embedded broker"):
            servers = stack.enter_context(EmbeddedBroker(port=0)).bootstrap_servers
        url = _start_console(settings, servers, stack, explicit_port=options.console_port is not None) \
            if options.console else None  # fmt: skip
        timings["broker"] = time.monotonic() - mark

        mark = time.monotonic()
        history, truth, live_from_ms = _history(options, settings, run_dir)
        timings["generate"] = time.monotonic() - mark

        mark = time.monotonic()
        client = connect(settings.mlflow)
        model = train_champion(settings, run_dir / "history", live_from_ms, client)
        timings["train"] = time.monotonic() - mark
        model_name = f"{model['name']} v{model['version']}"
        console.print(f"  model: {model_name} (test AP {model['test_ap']:.3f}) is the champion")

        run = _StreamRun(options, settings, history, truth, model_name)
        run.dash.console_url = url
        run.stream(timings, servers, stack)
        if run.failure is not None:
            raise DemoError(f"the demo stopped: {run.failure}; the run's files are in {run_dir}")

        replay = None
        if not run.interrupted:
            mark = time.monotonic()
            replay = replay_live(settings, run_dir / "history", live_from_ms, client)
            timings["replay"] = time.monotonic() - mark
        summary = _summary(options, settings, truth, run.board, model, run.dash, run.final, run.latency, replay,
                           run.interrupted, live_from_ms)  # fmt: skip
        summary["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
        summary["console"] = url
        summary["wall_s"] = round(time.monotonic() - wall, 1)  # to the report (which takes about a second)
        _write(out, summary, run.dash, run.phases, run.latency, truth, run.board, replay)
        summary["wall_s"] = round(time.monotonic() - wall, 1)
        _write_summary(out, summary)
        if on_report is not None:
            on_report(out / "index.html", summary)
        if url is not None and not run.interrupted:
            _linger(options, settings, servers, url)
        console.print("  stopping " + ("the console, " if url else "") + "Ray and the broker")
    return out / "index.html", summary


def _start_console(settings: Settings, servers: str, stack: contextlib.ExitStack, explicit_port: bool) -> str:
    """The analysts' console on the demo's broker, from a thread (stopped by ``stack``); its address."""
    from connectors.kafka import ensure_topics
    from pipelines.console.command import ConsoleThread, check_console, listen

    secret = check_console(settings)
    asyncio.run(ensure_topics(settings.kafka, servers))  # the console reads alerts before the job creates them
    try:
        sock = listen(settings.console.host, settings.console.port)
    except ConfigError:
        if explicit_port:
            raise
        sock = listen(settings.console.host, 0)  # console.port is taken (another console?): any free one
    thread = ConsoleThread(settings, servers, sock, secret)
    with console.status("starting the console"):
        url = thread.start()
    stack.callback(thread.stop)
    console.print(f"  console: [bold cyan]{url}[/bold cyan] · the alert queue, live · verdicts become labels "
                  "the scoring job learns", soft_wrap=True)  # fmt: skip
    return url


def _linger(options: DemoOptions, settings: Settings, servers: str, url: str) -> None:
    """After the report: the scoring job again (from its checkpoints) beside the console, until Ctrl-C."""
    from pipelines.stream import StreamJob

    with console.status("starting the scoring job again from its checkpoints, for the console's verdicts"):
        job = StreamJob(settings, servers)
        job.start(options.actors)
    console.print(f"  the console stays open at [bold cyan]{url}[/bold cyan] and the scoring job runs on: "
                  "verdicts given there are labels the online classifier learns · Ctrl-C to stop", soft_wrap=True)  # fmt: skip

    def line(status: JobStatus) -> Text:
        totals = status.totals
        return Text.assemble(("console ", "bold"), (url, "cyan"), f" · scored {totals.scored:,} · alerts "
                             f"{totals.alerts:,} · labels learned {totals.labels_learned:,} · Ctrl-C to stop")  # fmt: skip

    with Live(Text(""), console=console, refresh_per_second=2, transient=True) as live:
        job.run(None, on_status=lambda status: live.update(line(status)))


def _history(options: DemoOptions, settings: Settings, run_dir: Path) -> tuple[Any, Any, int]:
    """Generate and write the demo's history; (history, ground truth, first live event time in ms)."""
    from pipelines.scoreboard import GroundTruth
    from synthetic import generate, write_history

    with console.status(f"generating {options.accounts:,} accounts × {options.days} days of card payments"):
        history = generate(settings.generator)
        write_history(history, run_dir / "history")
    start_ms = int(history.transactions.column("event_time").cast("int64")[0].as_py())
    first_day = datetime.fromtimestamp(start_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    live_from = first_day + timedelta(days=options.days - options.live_days)
    live_from_ms = int(live_from.timestamp() * 1000)
    truth = GroundTruth(history.transactions, settings.kafka.topics.transactions.partitions, live_from_ms)
    frauds = int(truth.fraud.sum())
    console.print(f"  history: {len(truth):,} transactions, {frauds:,} fraudulent; live from {iso_utc(live_from_ms)}")
    return history, truth, live_from_ms


class _StreamRun:
    """The streamed part of the demo: broker, Ray and actors up, traffic in, the dashboard live, all down after.

    After :meth:`stream`: ``final`` (the job's last status), ``latency`` samples, ``phases`` (name, start s,
    end s), ``interrupted`` (stopped before every transaction was scored) and ``failure`` (why it stopped early).
    """

    def __init__(self, options: DemoOptions, settings: Settings, history: Any, truth: Any, model_name: str) -> None:
        from pipelines.scoreboard import Scoreboard

        self.options, self.settings, self.history, self.truth = options, settings, history, truth
        self.live_row = int(np.argmax(truth.live)) if truth.live.any() else len(truth)
        self.board = Scoreboard(truth)
        self.dash = Dashboard(self.board, total=len(truth), model=model_name)
        self.latency: list[float] = []
        self.phases: list[tuple[str, float, float]] = []
        self.interrupted = False
        self.live_started: float | None = None
        self.final = DrainedJob(actors=[])
        self.failure: str | None = None
        self.stall = Stall(STALL_S)

    def stream(self, timings: dict[str, float], servers: str, resources: contextlib.ExitStack) -> None:
        """Run the stream to its end (or a failure, or Ctrl-C) and collect every alert after the drain; the local
        Ray it starts stays up (stopped by ``resources``)."""
        from pipelines.stream import StreamJob

        with contextlib.ExitStack() as stack:
            mark = time.monotonic()
            with console.status("starting a local Ray and the scoring actors"):
                resources.enter_context(local_ray(self.settings))
                self.job = StreamJob(self.settings, servers)
                self.job.start(self.options.actors)
            timings["start"] = time.monotonic() - mark
            self.traffic = Traffic(self.settings, servers, self.history, self.live_row, self.options.rate)
            stack.callback(self.traffic.stop)

            mark = time.monotonic()
            self.dash.started = mark
            self.traffic.start()
            with Live(self.dash.render(width=console.width), console=console, refresh_per_second=4,
                      transient=False) as self.live:  # fmt: skip
                self.final = self.job.run(None, on_status=self.on_status, until=self.done,
                                          before_drain=self.collect_latency)  # fmt: skip
            if not console.is_terminal:
                console.print()  # the last frame ends without a line break when it is not drawn on a terminal
            stream_end = time.monotonic() - self.dash.started
            self.interrupted = not self.finished(self.dash.status)
            self.traffic.stop()
            if self.failure is not None:
                return
            timings["stream"] = time.monotonic() - mark
            self.phases.append(("warm-up", 0.0, self.live_started if self.live_started is not None else stream_end))
            if self.live_started is not None:
                self.phases.append(("live", self.live_started, stream_end))
            _read_alerts(self.board, read_all_alerts(self.settings, servers))  # the complete set, after the drain

    def on_status(self, status: JobStatus) -> None:
        """Each status of the job: alerts onto the board, the dashboard redrawn, the live days let in."""
        _read_alerts(self.board, self.traffic.alerts)
        positions = {int(p): s.next_offset for p, s in status.partitions.items()}
        self.board.set_positions(positions)
        self.dash.update(status)
        waiting_at = self.traffic.waiting_at
        if waiting_at is not None and not self.traffic.gate.is_set() and sum(positions.values()) >= waiting_at:
            import ray  # the actors caught up with the warm-up: the live days begin

            ray.get(self.job.controller.call_all.remote("reset_latency"))
            self.live_started = time.monotonic() - self.dash.started
            rate = self.options.rate
            self.dash.phase = f"live at {rate:,.0f} tx/s" if rate else "live"
            self.traffic.gate.set()
        self.live.update(self.dash.render(self.traffic.error or "", console.width))

    def finished(self, status: JobStatus | None) -> bool:
        """Every produced transaction scored: no lag, offsets summing to what was produced (None: no status yet)."""
        parts = status.partitions.values() if status is not None else []
        return self.traffic.produced is not None and all(p.lag == 0 for p in parts) and sum(
            p.next_offset for p in parts) >= self.traffic.produced

    def done(self, status: JobStatus) -> bool:
        """Stop streaming: finished, or a failure (the traffic's, or a stall)."""
        self.failure = self.traffic.error or self.stall.check(status)
        return self.failure is not None or self.finished(status)

    def collect_latency(self) -> None:
        """Before the drain: every actor's latency samples (a report without them beats none)."""
        import ray

        try:
            for samples in ray.get(self.job.controller.call_all.remote("latency_samples"), timeout=30):
                self.latency.extend(samples)
        except Exception as exc:  # a report without latency beats none
            console.print(f"[yellow]latency samples not collected: {exc}[/yellow]")


def _read_alerts(board: Any, values: deque[bytes] | list[bytes]) -> None:
    """Record alert values (raw JSON): all of a list, or what a deque being filled holds now (taken out)."""
    from contracts.errors import RecordError
    from pipelines.alerts import read_alert

    taken = [values.popleft() for _ in range(len(values))] if isinstance(values, deque) else values
    for value in taken:
        try:
            board.add(read_alert(value))
        except RecordError:
            board.unknown += 1


def _latency_summary(latency: list[float]) -> dict[str, Any]:
    if not latency:
        return {"samples": 0}
    values = np.asarray(latency)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"samples": len(values), "p50": round(float(p50), 1), "p95": round(float(p95), 1),
            "p99": round(float(p99), 1), "max": round(float(values.max()), 1)}


def _summary(
    options: DemoOptions, settings: Settings, truth: Any, board: Any, model: dict[str, Any], dash: Dashboard,
    final: DrainedJob, latency: list[float], replay: Any, interrupted: bool, live_from_ms: int,
) -> dict[str, Any]:
    parts = [part for actor in final.actors for part in actor.partitions.values()]
    rates = [rate for _, rate, _ in dash.throughput if rate > 0]
    phases = {phase: board.phase(phase).as_dict() for phase in ("warm-up", "live")}
    live = phases["live"]
    summary: dict[str, Any] = {
        # the headline first (the report shows these scalars at the top)
        "wall_s": None,  # filled in at the end
        "interrupted": interrupted,
        "events_scored": sum(p.scored for p in parts),
        "alerts": len(board.records),
        "live_precision": live["precision"],
        "live_recall": live["recall"],
        "live_ap_replay": None if replay is None else replay.metrics.get("ap"),
        "latency_p99_ms": _latency_summary(latency).get("p99"),
        "peak_events_per_s": round(max(rates, default=0.0), 1),
        "history": {
            "accounts": options.accounts, "days": options.days, "live_days": options.live_days, "seed": options.seed,
            "transactions": len(truth), "frauds": int(truth.fraud.sum()), "live_from": iso_utc(live_from_ms),
            "live_transactions": int(truth.live.sum()),
        },
        "model": {**model, "tracking_uri": settings.mlflow.tracking_uri},
        "stream": {
            "actors": options.actors, "partitions": settings.kafka.topics.transactions.partitions,
            "scored": sum(p.scored for p in parts), "alerts": sum(p.alerts for p in parts),
            "dead_letters": sum(p.dead_letters for p in parts),
            # scored before every partition's terminal updates for their buckets were in (catching up: many)
            "terminal_stale": sum(p.terminal_stale for p in parts),
            "peak_events_per_s": round(max(rates, default=0.0), 1),
            "mean_events_per_s": round(float(np.mean(rates)), 1) if rates else 0.0,
            "live_rate": options.rate, "checkpoint_uri": settings.stream.checkpoint_uri,
        },
        "latency_ms": _latency_summary(latency),
        "ground_truth": phases,
        "scenarios_live": board.by_scenario("live"),
        # the backlog replayed before the live days: caught like the live days once the keyed stage is aligned
        "scenarios_warmup": board.by_scenario("warm-up"),
        "scenarios_all": board.by_scenario(),
        "false_alerts_live": board.false_alerts("live"),
        "false_alerts_warmup": board.false_alerts("warm-up"),
        "alerts_read": {"distinct": len(board.records), "not_in_history": board.unknown},
    }  # fmt: skip
    if replay is not None:
        m = replay.metrics
        summary["replay"] = {key: m.get(key) for key in (
            "rows", "frauds", "ap", "roc_auc", "alert_rate", "alerts", "alert_precision", "fraud_recall",
            "recall_by_scenario", "model_versions")}  # fmt: skip
    return summary


def _write(
    out: Path, summary: dict[str, Any], dash: Dashboard, phases: list[tuple[str, float, float]], latency: list[float],
    truth: Any, board: Any, replay: Any,
) -> None:
    from pipelines.report import ReportData, write_report

    pr_truth = pr_score = None
    points: list[tuple[str, float, float]] = []
    live = board.phase("live")
    if replay is not None:
        rows = np.fromiter((truth.index[tx] for tx in replay.scores.column("transaction_id").to_pylist()), dtype=np.int64)
        pr_truth, pr_score = truth.fraud[rows], replay.scores.column("score").to_numpy()
        m = replay.metrics
        if m.get("fraud_recall") is not None and m.get("alert_precision") is not None:
            points.append(("replayed alerts", m["fraud_recall"], m["alert_precision"]))
    if live.recall is not None and live.precision is not None:
        points.append(("live alerts (stream)", live.recall, live.precision))
    sample = []
    live_alerts = [(alert, row) for alert, row in board.records if truth.live[row]]
    for alert, row in sorted(live_alerts, key=lambda item: item[0].event_time)[-20:]:
        sample.append({
            "event_time": iso_utc(alert.event_time), "account_id": alert.account_id, "score": round(alert.score, 4),
            "decision": alert.decision, "truth": str(truth.scenario[row]) if truth.fraud[row] else "genuine",
            "reasons": why(alert),
        })  # fmt: skip
    title = f"fraudstream demo, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    write_report(out, ReportData(
        title=title, summary=summary, throughput=dash.throughput, phases=phases, latency_ms=np.asarray(latency),
        pr_truth=pr_truth, pr_score=pr_score, operating_points=points, scenarios=summary["scenarios_live"],
        false_alerts=summary["false_alerts_live"], alerts_sample=sample,
        warmup_scenarios=summary["scenarios_warmup"], warmup_false_alerts=summary["false_alerts_warmup"],
    ))  # fmt: skip


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    import json

    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def _print_summary(summary: dict[str, Any]) -> None:
    live, latency = summary["ground_truth"]["live"], summary["latency_ms"]
    table = Table("", "value", title="demo summary", show_header=False)
    table.add_row("wall time", f"{summary['wall_s']:.0f} s")
    table.add_row("scored", f"{summary['events_scored']:,} events, {summary['alerts']:,} alerts")
    table.add_row("throughput", f"peak {summary['stream']['peak_events_per_s']:,.0f} events/s")
    if latency.get("samples"):
        table.add_row("latency (live)", f"p50 {latency['p50']:,.0f} ms, p99 {latency['p99']:,.0f} ms")
    table.add_row("live precision / recall", f"{_pct(live['precision'])} / {_pct(live['recall'])}")
    for period, key in (("live", "scenarios_live"), ("warm-up", "scenarios_warmup")):
        caught = ", ".join(f"{row['scenario']} {row['caught']}/{row['accounts']}" for row in summary.get(key, []))
        if caught:
            table.add_row(f"accounts caught ({period})", caught)
    if "replay" in summary:
        table.add_row("live AP (replay)", f"{summary['replay']['ap']:.3f}")
    console.print(table)


def demo_command(
    accounts: Annotated[int, typer.Option(help="Accounts in the synthetic world.")] = DemoOptions.accounts,
    days: Annotated[int, typer.Option(help="Days of history (the last --live-days are streamed live).")] = DemoOptions.days,
    live_days: Annotated[int, typer.Option(help="Days streamed live, after the model was trained on the rest.")] = DemoOptions.live_days,
    rate: Annotated[float, typer.Option(help="Transactions/s of the live days (0 = as fast as possible).")] = DemoOptions.rate,
    actors: Annotated[int, typer.Option(help="Scoring actors.")] = DemoOptions.actors,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic world.")] = DemoOptions.seed,
    reports: Annotated[Path, typer.Option(help="Folder of the reports (one sub-folder per run).")] = REPORTS,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Settings YAML (default: configs/local.yaml).")] = None,
    with_console: Annotated[bool, typer.Option("--console", help="Serve the analysts' console beside the stream (its address is printed); after the report it stays up with the scoring job until Ctrl-C.")] = False,
    console_port: Annotated[int | None, typer.Option(help="Port of the console (default: console.port, or any free one when that is taken; 0 = any free one).")] = None,
) -> None:
    """The whole product on this machine: train, register, stream live traffic with fraud, watch, report."""
    import json

    def reported(report: Path, summary: dict[str, Any]) -> None:
        _print_summary(summary)
        line = {"report": str(report), "wall_s": summary["wall_s"], "interrupted": summary["interrupted"]}
        if summary.get("console"):
            line["console"] = summary["console"]
        typer.echo(json.dumps(line))
        if summary["interrupted"]:
            console.print(f"interrupted: the report covers what was streamed until then: {report}")
            return
        console.print(f"report: {report}")
        console.print(f"models: mlflow ui --backend-store-uri {summary['model']['tracking_uri']}", soft_wrap=True)

    options = DemoOptions(accounts, days, live_days, rate, actors, seed, reports, config, with_console, console_port)
    _, summary = run_demo(options, on_report=reported)
    if summary["interrupted"]:
        raise typer.Exit(130)
