"""Running the product: the embedded broker (`broker`), the scoring job (`run`) and its `status`.

Registered on the CLI app in ``pipelines/cli.py``; the job itself is
:class:`pipelines.stream.StreamJob`, which ``python -m pipelines.stream`` (what
``ray job submit`` runs) starts too. Bad input raises :class:`configs.ConfigError`,
which the CLI prints as one line and exits 2.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from actors.messages import JobStatus, StoppedJob
from configs import ConfigError
from connectors.broker import BrokerUnavailable, EmbeddedBroker
from pipelines.commandline import ConfigOption, settings_for
from pipelines.session import BROKER_STATE, kafka_for, prepare
from pipelines.stream import StopRequest

console = Console(stderr=True)
out = Console()


def broker_command(
    port: Annotated[int, typer.Option("--port", "-p", help="Loopback port; 0 picks a free one.")] = 0,
    config: ConfigOption = None,
) -> None:
    """Run the embedded Kafka-compatible broker with the configured topics until Ctrl-C."""
    settings = settings_for(config)
    embedded = EmbeddedBroker(port=port or settings.kafka.embedded_port)
    stop = StopRequest()
    previous = {sig: signal.signal(sig, stop.request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with embedded:
            counts = asyncio.run(prepare(settings, embedded.bootstrap_servers))
            BROKER_STATE.parent.mkdir(exist_ok=True)
            BROKER_STATE.write_text(json.dumps({"bootstrap_servers": embedded.bootstrap_servers}))
            table = Table("topic", "partitions", title=f"embedded broker at {embedded.bootstrap_servers}")
            for name, count in counts.items():
                table.add_row(name, str(count))
            console.print(table)
            out.print(f"bootstrap_servers={embedded.bootstrap_servers}", highlight=False)
            console.print("[green]ready[/green] — Ctrl-C to stop (data lives in memory only)")
            try:
                while not stop.is_set() and embedded.running:
                    stop.wait(0.2)
            except KeyboardInterrupt:
                pass
            if not embedded.running and not stop.is_set():
                raise BrokerUnavailable("the embedded broker exited unexpectedly")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        BROKER_STATE.unlink(missing_ok=True)
    console.print("broker stopped")



def _autoscale_lines(status: JobStatus) -> list[str]:
    """The autoscaler's state and its latest changes, as lines under the table (none when it is off)."""
    scale = status.autoscale
    if scale is None:
        return []
    lag = "?" if scale.lag_s is None else f"{scale.lag_s:.1f}s"
    asked = "" if scale.requested_actors is None else f", room asked for {scale.requested_actors}"
    lines = [f"autoscale: {scale.actors} actors ({scale.min_actors}-{scale.max_actors}{asked}), lag {lag}; "
             f"{scale.decision}: {scale.reason}"]
    lines += [f"  {time.strftime('%H:%M:%S', time.localtime(e.time))} {e.event} {e.detail}: {e.reason}"
              for e in status.events if e.actor == "controller" and e.reason is not None][-3:]  # fmt: skip
    return lines


def _status_table(status: JobStatus) -> Table:
    """Per-partition table of a job status (throughput, lag in records and seconds, checkpoint age), with the
    autoscaler's state under it."""
    age = time.time() - status.time
    table = Table(
        "partition", "actor", "scored", "alerts", "dlq", "lag", "lag s", "labels", "late", "checkpoint age", "gaps",
        title=f"{status.events_per_s:,.0f} events/s · status {age:.0f}s old",
        caption="\n".join(_autoscale_lines(status)) or None, caption_justify="left",
    )
    for partition, p in status.partitions.items():
        table.add_row(
            partition, p.actor, f"{p.scored:,}", f"{p.alerts:,}",
            f"{p.dead_letters:,}", "?" if p.lag is None else f"{p.lag:,}",
            "?" if p.lag_s is None else f"{p.lag_s:.1f}",
            f"{p.labels_applied:,}", f"{p.late_events:,}",
            f"{p.checkpoint_age_s:.0f}s", f"{p.offset_gaps:,}",
        )
    return table


def run_command(
    config: ConfigOption = None,
    duration: Annotated[float | None, typer.Option(help="Stop (drain and checkpoint) after this many seconds.")] = None,
    actors: Annotated[int | None, typer.Option(min=1, help="Scoring actors K (default: stream.actors).")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers host:port (overrides the config).")] = None,
    produce: Annotated[
        bool, typer.Option("--produce", help="Also generate a synthetic history and stream it in while scoring.")
    ] = False,
    accounts: Annotated[int | None, typer.Option(help="Accounts, with --produce.")] = None,
    days: Annotated[int | None, typer.Option(help="Days, with --produce.")] = None,
    rate: Annotated[float | None, typer.Option(help="Transactions per second, with --produce (0 = as fast as possible).")] = None,
) -> None:
    """Run the scoring job on Ray (the cluster in stream.ray_address / RAY_ADDRESS, else local Ray).

    With --produce and no --duration it stops once everything produced is scored.
    """
    import threading

    from rich.live import Live

    from pipelines.stream import StreamJob, check_start

    settings = settings_for(config, {"generator.accounts": accounts, "generator.days": days})
    check_start(settings, actors)  # before a broker, Kafka or Ray is started or waited for
    with kafka_for(settings, bootstrap) as servers:
        job = StreamJob(settings, servers)
        with console.status("starting Ray and the scoring actors"):
            job.start(actors)
        produced: dict[str, Any] = {}
        producer = None
        if produce:
            from pipelines.produce import produce_history
            from synthetic import generate as generate_history

            with console.status("generating a synthetic history"):
                history = generate_history(settings.generator)

            def send() -> None:
                report = asyncio.run(produce_history(history.transactions, history.labels, settings.kafka,
                                                     settings.producer, servers, rate=rate,
                                                     chunk_rows=max(1, int((rate or 0) // 100)) if rate else 2_000))
                produced["transactions"] = report.transactions

            producer = threading.Thread(target=send, daemon=True)
            producer.start()

        def finished(status: JobStatus) -> bool:
            if not produce or duration is not None or "transactions" not in produced:
                return False
            parts = status.partitions.values()
            return sum(p.next_offset for p in parts) >= produced["transactions"] and all(p.lag == 0 for p in parts)

        with Live(console=console, refresh_per_second=2, transient=False) as live:
            final = job.run(duration, on_status=lambda status: live.update(_status_table(status)), until=finished)
    parts = [part for actor in final.actors for part in actor.partitions.values()]
    typer.echo(json.dumps({
        "stopped": True,
        "scored": sum(p.scored for p in parts),
        "alerts": sum(p.alerts for p in parts),
        "dead_letters": sum(p.dead_letters for p in parts),
        "checkpoint_uri": settings.stream.checkpoint_uri,
    }))


def status_command(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw status JSON.")] = False,
) -> None:
    """Throughput, lag (highwater - position, and seconds waited) and checkpoint age per partition of the running
    job, and the autoscaler's state when it is on."""
    from pipelines.stream import read_status

    settings = settings_for(config)
    path = Path(settings.stream.status_path)
    if not path.is_file():
        raise FileNotFoundError(f"no job status at {path}; start one with `fraudstream run`")
    data = path.read_bytes()
    if as_json:
        typer.echo(json.dumps(json.loads(data)))
        return
    try:
        status = read_status(data)
    except msgspec.MsgspecError as exc:
        raise ConfigError(f"{path} is not a job status this version of fraudstream reads ({exc}); "
                          "`fraudstream status --json` prints it as it is") from None
    if isinstance(status, StoppedJob):
        console.print(f"the job stopped {time.time() - status.time:.0f}s ago (final checkpoints written)")
        return
    out.print(_status_table(status))
