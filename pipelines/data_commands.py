"""The data commands: `generate` a synthetic history, `produce` one to Kafka, build its training table (`features`).

Registered on the CLI app in ``pipelines/cli.py``. Bad input raises
:class:`configs.ConfigError` (or ``HistoryError``), which the CLI prints as one
line and exits 2.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from configs import ConfigError
from pipelines.commandline import ConfigOption, settings_for
from pipelines.session import kafka_for, prepare

console = Console(stderr=True)
out = Console()


def generate_command(
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

    settings = settings_for(
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


def produce_command(
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

    settings = settings_for(config, {"generator.accounts": accounts, "generator.days": days})
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
            asyncio.run(prepare(settings, servers))
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
    settings = settings_for(config)
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

