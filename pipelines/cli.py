"""The ``fraudstream`` command line."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from configs import ConfigError, Settings, load_settings
from connectors.broker import BrokerUnavailable, EmbeddedBroker
from connectors.kafka import KafkaSetupError
from pipelines.session import BROKER_STATE, kafka_for
from pipelines.session import prepare as _prepare

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fraudstream: real-time fraud detection on Kafka with Ray actors, River, scikit-learn and MLflow.",
)
console = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Settings YAML (default: the bundled configs/local.yaml).")
]


def _settings(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    return load_settings(config, {k: v for k, v in (overrides or {}).items() if v is not None})


@app.command()
def broker(
    port: Annotated[int, typer.Option("--port", "-p", help="Loopback port; 0 picks a free one.")] = 0,
    config: ConfigOption = None,
) -> None:
    """Run the embedded Kafka-compatible broker with the configured topics until Ctrl-C."""
    settings = _settings(config)
    embedded = EmbeddedBroker(port=port or settings.kafka.embedded_port)
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with embedded:
            counts = asyncio.run(_prepare(settings, embedded.bootstrap_servers))
            BROKER_STATE.parent.mkdir(exist_ok=True)
            BROKER_STATE.write_text(json.dumps({"bootstrap_servers": embedded.bootstrap_servers}))
            table = Table("topic", "partitions", title=f"embedded broker at {embedded.bootstrap_servers}")
            for name, count in counts.items():
                table.add_row(name, str(count))
            console.print(table)
            out.print(f"bootstrap_servers={embedded.bootstrap_servers}", highlight=False)
            console.print("[green]ready[/green] — Ctrl-C to stop (data lives in memory only)")
            try:
                while not stop and embedded.running:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
            if not embedded.running and not stop:
                raise BrokerUnavailable("the embedded broker exited unexpectedly")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        BROKER_STATE.unlink(missing_ok=True)
    console.print("broker stopped")


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for transactions.parquet and labels.parquet.")],
    accounts: Annotated[int | None, typer.Option(help="Number of accounts.")] = None,
    days: Annotated[int | None, typer.Option(help="Days of history.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same data).")] = None,
    fraud_rate: Annotated[float | None, typer.Option(help="Target share of fraudulent transactions.")] = None,
    out_of_order: Annotated[float | None, typer.Option(help="Share of events delivered out of order.")] = None,
    late: Annotated[float | None, typer.Option(help="Share of events delivered very late.")] = None,
    config: ConfigOption = None,
) -> None:
    """Generate a synthetic card-payment history with injected, labelled fraud."""
    from synthetic import generate as generate_history
    from synthetic import write_history

    settings = _settings(
        config,
        {
            "generator.accounts": accounts,
            "generator.days": days,
            "generator.seed": seed,
            "generator.fraud_rate": fraud_rate,
            "generator.out_of_order_rate": out_of_order,
            "generator.late_rate": late,
        },
    )
    spec = settings.generator
    with console.status(f"generating {spec.accounts:,} accounts × {spec.days} days") as status:
        history = generate_history(spec, progress=lambda phase: status.update(f"generating: {phase}"))
        status.update("writing Parquet")
        tx_path, label_path = write_history(history, out_dir)
    _print_history_summary(history.transactions, history.labels)
    out.print(f"wrote {tx_path} and {label_path}", highlight=False)


def _print_history_summary(transactions: Any, labels: Any) -> None:
    import pyarrow.compute as pc

    n = transactions.num_rows
    frauds = pc.sum(transactions.column("is_fraud")).as_py() or 0
    table = Table("scenario", "transactions", title=f"{n:,} transactions, fraud {frauds / max(n, 1):.2%}")
    counts = pc.value_counts(transactions.column("fraud_scenario").drop_null()).to_pylist()
    for item in sorted(counts, key=lambda c: str(c["values"])):
        table.add_row(str(item["values"]), f"{item['counts']:,}")
    table.add_row("labels", f"{labels.num_rows:,}")
    console.print(table)


@app.command()
def produce(
    history: Annotated[
        Path | None,
        typer.Option(help="History directory (from `fraudstream generate`); generated from the config when absent."),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Transactions per second; 0 = as fast as possible.")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers host:port (overrides the config).")] = None,
    limit: Annotated[int | None, typer.Option(help="Send at most this many transactions.")] = None,
    accounts: Annotated[int | None, typer.Option(help="Accounts, when generating.")] = None,
    days: Annotated[int | None, typer.Option(help="Days, when generating.")] = None,
    config: ConfigOption = None,
) -> None:
    """Stream a history to the transactions and labels topics (labels after their delay)."""
    from pipelines.produce import produce_history, read_history

    settings = _settings(config, {"generator.accounts": accounts, "generator.days": days})
    if history is None:
        from synthetic import generate as generate_history

        with console.status("generating a synthetic history"):
            generated = generate_history(settings.generator)
        transactions, labels = generated.transactions, generated.labels
    else:
        transactions, labels = read_history(history)
    total = transactions.num_rows if limit is None else min(limit, transactions.num_rows)
    with kafka_for(settings, bootstrap) as servers:
        if servers is not None and bootstrap is not None:
            asyncio.run(_prepare(settings, servers))
        with Progress(
            TextColumn("[bold]producing[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[labels]:,} labels"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("produce", total=total, labels=0)
            report = asyncio.run(
                produce_history(
                    transactions,
                    labels,
                    settings.kafka,
                    settings.producer,
                    bootstrap_servers=servers,
                    rate=rate,
                    limit=limit,
                    on_progress=lambda n, m: progress.update(task, completed=n, labels=m),
                )
            )
    table = Table("partition", "transactions", "labels", title=f"sent in {report.seconds:.1f}s ({report.rate:,.0f} tx/s)")
    for partition in sorted(set(report.transactions_per_partition) | set(report.labels_per_partition)):
        table.add_row(
            str(partition),
            f"{report.transactions_per_partition[partition]:,}",
            f"{report.labels_per_partition[partition]:,}",
        )
    console.print(table)
    typer.echo(
        json.dumps({"transactions": report.transactions, "labels": report.labels, "seconds": round(report.seconds, 3)})
    )


@app.command("features")
def features_command(
    history: Annotated[
        Path,
        typer.Option(help="Parquet history: a file, or a directory of files (columns mapped by history.columns)."),
    ],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Training table to write (Parquet).")],
    partitions: Annotated[
        int | None, typer.Option(help="Partitions to key by (default: the transactions topic's).")
    ] = None,
    label_delay_days: Annotated[
        float | None, typer.Option(help="A label counts only if it arrived within this delay (default: any).")
    ] = None,
    order: Annotated[str, typer.Option(help="Replay order: event_time or delivery.")] = "event_time",
    config: ConfigOption = None,
) -> None:
    """Build the training table from a history with the same feature code the actors run.

    The history is read as `train` and `backtest` read it (``history.columns``, labels beside or in a column).
    """
    import msgspec
    import pyarrow.parquet as pq

    from connectors.history import HistoryError, Span, read_history
    from features.offline import build_feature_table

    if order not in ("event_time", "delivery"):
        raise ConfigError(f"--order: expected event_time or delivery, got {order!r}")
    settings = _settings(config)
    with console.status(f"reading {history}"):
        loaded = read_history(history, settings.history)
    if loaded.dropped_rows:
        console.print(f"[yellow]{loaded.dropped_rows:,} rows without id, time or amount left out[/yellow]")
    console.print(Span().describe(loaded), highlight=False, soft_wrap=True)
    with Progress(
        TextColumn("[bold]features[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    ) as progress:
        task = progress.add_task("features", total=loaded.transactions.num_rows)
        try:
            table = build_feature_table(
                loaded.transactions,
                loaded.labels,
                settings.features,
                partitions=partitions or settings.kafka.topics.transactions.partitions,
                label_delay_ms=None if label_delay_days is None else int(label_delay_days * 86_400_000),
                order=order,  # type: ignore[arg-type]
                on_progress=lambda done: progress.update(task, completed=done),
            )
        except msgspec.ValidationError as exc:
            raise HistoryError(
                f"history: a row is not a valid transaction or label ({exc}); fix or map that column (history.columns)"
            ) from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_path, compression="zstd")
    version = (table.schema.metadata or {}).get(b"feature_version", b"").decode()
    typer.echo(json.dumps({"rows": table.num_rows, "columns": table.num_columns, "feature_version": version,
                          "out": str(out_path)}))


def _status_table(status: dict[str, Any]) -> Table:
    """Per-partition table of a job status (throughput, lag, checkpoint age)."""
    age = time.time() - status.get("time", time.time())
    table = Table(
        "partition", "actor", "scored", "alerts", "dlq", "lag", "labels", "late", "checkpoint age", "gaps",
        title=f"{status.get('events_per_s', 0):,.0f} events/s · status {age:.0f}s old",
    )
    for partition, p in status.get("partitions", {}).items():
        table.add_row(
            partition, str(p.get("actor", "")), f"{p.get('scored', 0):,}", f"{p.get('alerts', 0):,}",
            f"{p.get('dead_letters', 0):,}", "?" if p.get("lag") is None else f"{p['lag']:,}",
            f"{p.get('labels_applied', 0):,}", f"{p.get('late_events', 0):,}",
            f"{p.get('checkpoint_age_s', 0):.0f}s", f"{p.get('offset_gaps', 0):,}",
        )
    return table


@app.command()
def run(
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

    settings = _settings(config, {"generator.accounts": accounts, "generator.days": days})
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

        def finished(status: dict[str, Any]) -> bool:
            if not produce or duration is not None or "transactions" not in produced:
                return False
            parts = status.get("partitions", {}).values()
            return sum(p.get("next_offset", 0) for p in parts) >= produced["transactions"] and all(
                p.get("lag") == 0 for p in parts)

        with Live(console=console, refresh_per_second=2, transient=False) as live:
            final = job.run(duration, on_status=lambda status: live.update(_status_table(status)), until=finished)
    parts = [part for actor in final["actors"] for part in actor.get("partitions", {}).values()]
    typer.echo(json.dumps({
        "stopped": True,
        "scored": sum(p.get("scored", 0) for p in parts),
        "alerts": sum(p.get("alerts", 0) for p in parts),
        "dead_letters": sum(p.get("dead_letters", 0) for p in parts),
        "checkpoint_uri": settings.stream.checkpoint_uri,
    }))


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw status JSON.")] = False,
) -> None:
    """Throughput, lag (highwater - position) and checkpoint age per partition of the running job."""
    settings = _settings(config)
    path = Path(settings.stream.status_path)
    if not path.is_file():
        raise FileNotFoundError(f"no job status at {path}; start one with `fraudstream run`")
    data = json.loads(path.read_text())
    if as_json:
        typer.echo(json.dumps(data))
        return
    if data.get("stopped"):
        console.print(f"the job stopped {time.time() - data['time']:.0f}s ago (final checkpoints written)")
        return
    out.print(_status_table(data))


# Batch model commands (defined in pipelines/model_commands.py).
from pipelines.model_commands import backtest_command, promote_command, train_command

app.command("train")(train_command)
app.command("promote")(promote_command)
app.command("backtest")(backtest_command)

# `fraudstream demo` (defined in pipelines/demo.py).
from pipelines.demo import demo_command

app.command("demo")(demo_command)

# `fraudstream alerts tail` (defined in pipelines/alerts.py).
from pipelines.alerts import alerts_app

app.add_typer(alerts_app, name="alerts")


def main() -> None:
    """Console entry point: bad input ends with one clear line, not a traceback."""
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n here
    except (ConfigError, BrokerUnavailable, KafkaSetupError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors (typer raises those of the click it bundles)
        import click
        from typer import _click

        if isinstance(exc, click.ClickException | _click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
