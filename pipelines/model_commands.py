"""The `train`, `promote` and `backtest` commands (registered on the CLI app in ``pipelines/cli.py``).

Heavy imports (MLflow, scikit-learn, matplotlib) happen inside the commands,
so the rest of the CLI starts fast. Bad input raises :class:`configs.ConfigError`
(or its subclasses ``HistoryError``, ``RegistryError``), which the CLI's
``main`` prints as one line and exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from configs import ConfigError, Settings
from pipelines.commandline import ConfigOption, settings_for

console = Console(stderr=True)

HistoryOption = Annotated[
    Path,
    typer.Option(help="Parquet history: a file, or a directory of files (e.g. from `fraudstream generate`)."),
]
LabelsOption = Annotated[
    Path | None,
    typer.Option(help="Labels Parquet (default: a label column, else labels.parquet beside the history)."),
]
FromOption = Annotated[
    str | None,
    typer.Option("--from", help="Start of the span (ISO 8601, UTC if no offset; a date: 00:00); earlier rows warm up."),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", help="End of the span, inclusive (ISO 8601; a date: the whole day); later rows ignored."),
]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    )  # fmt: skip


def _load(settings: Settings, history: Path, labels: Path | None, from_: str | None, until: str | None) -> Any:
    from connectors.history import parse_span, read_history

    span = parse_span(from_, until)
    with console.status(f"reading {history}"):
        loaded = read_history(history, settings.history, labels, until_ms=span.until_ms)
    if loaded.dropped_rows:
        console.print(f"[yellow]{loaded.dropped_rows:,} rows without id, time or amount left out[/yellow]")
    console.print(span.describe(loaded), highlight=False, soft_wrap=True)
    return loaded, span.from_ms, span.until_ms


def _features(settings: Settings, loaded: Any) -> Any:
    from pipelines.train import feature_table

    with _progress() as progress:
        task = progress.add_task("features", total=loaded.transactions.num_rows)
        return feature_table(settings, loaded, on_progress=lambda done: progress.update(task, completed=done))


def train_command(
    history: HistoryOption,
    labels: LabelsOption = None,
    from_: FromOption = None,
    until: UntilOption = None,
    config: ConfigOption = None,
) -> None:
    """Train the batch classifier on a history (time split, label-delay gap), log it to MLflow and register it."""
    from connectors.registry import connect
    from pipelines.train import register, train_model

    settings = settings_for(config)
    loaded, from_ms, _ = _load(settings, history, labels, from_, until)
    client = connect(settings.mlflow)  # a bad store fails before the feature replay
    features = _features(settings, loaded)
    fits = "fitting for the test period, then refitting on the latest labelled data" if settings.training.refit else "fitting"
    with console.status(f"{fits} (calibrated classifier)"):
        trained = train_model(settings, features, from_ms)
    with console.status("logging to MLflow and registering"):
        version = register(settings, trained, str(history), client)
    table = Table("metric", "value", title=f"{version.name} version {version.version} (test period)")
    for key, value in trained.metrics.items():
        table.add_row(key, "-" if value is None else f"{value:,.4f}".rstrip("0").rstrip("."))
    console.print(table)
    typer.echo(json.dumps({
        "registered_model": version.name,
        "version": version.version,
        "run_id": version.run_id,
        "model_uri": version.uri,
        "feature_version": trained.feature_version,
        "split": trained.split.as_iso(),
        "metrics": trained.metrics,
    }))  # fmt: skip


def promote_command(
    version: Annotated[str | None, typer.Option(help="Model version (default: the latest).")] = None,
    alias: Annotated[str, typer.Option(help="champion or challenger.")] = "champion",
    force: Annotated[bool, typer.Option("--force", help="Promote even when the gate refuses.")] = False,
    config: ConfigOption = None,
) -> None:
    """Point the champion (or challenger) alias at a registered version; a champion must not lower the test AP."""
    from connectors.registry import connect, promote

    settings = settings_for(config)
    if version is not None and not version.isdigit():
        raise ConfigError(f"--version: expected a version number, got {version!r}")
    client = connect(settings.mlflow)
    message = promote(client, settings.training.registered_model, version, alias, force)
    typer.echo(message)


def backtest_command(
    history: HistoryOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Metrics JSON to write.")],
    labels: LabelsOption = None,
    scores_out: Annotated[
        Path | None, typer.Option(help="Parquet of every reported row's score and decision.")
    ] = None,
    from_: FromOption = None,
    until: UntilOption = None,
    model: Annotated[
        str | None, typer.Option(help="Batch classifier URI (default: scoring.classifier.model_uri, if set).")
    ] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Without the batch classifier.")] = False,
    config: ConfigOption = None,
) -> None:
    """Replay a history through features, models and decisions in event time; write scores and metrics."""
    import pyarrow.parquet as pq

    from pipelines.backtest import backtest

    settings = settings_for(config)
    batch_model = None if no_model else _batch_model(settings, model)
    loaded, from_ms, until_ms = _load(settings, history, labels, from_, until)
    features = _features(settings, loaded)
    with _progress() as progress:
        task = progress.add_task("scoring", total=features.table.num_rows)
        result = backtest(settings, loaded, features, batch_model, from_ms, until_ms,
                          on_progress=lambda done: progress.update(task, completed=done))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.metrics, indent=1))
    if scores_out is not None:
        scores_out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(result.scores, scores_out, compression="zstd")
    metrics = result.metrics
    table = Table("metric", "value", title=f"backtest {metrics['from'][:10]} .. {metrics['until'][:10]}")
    for key in ("rows", "ap", "roc_auc", "alert_rate", "card_precision_at_k"):
        table.add_row(key, str(metrics.get(key)))
    for name, recall in metrics.get("recall_by_scenario", {}).items():
        table.add_row(f"recall {name}", f"{recall:.3f}")
    console.print(table)
    summary = {key: metrics.get(key) for key in ("rows", "ap", "roc_auc", "alert_rate", "card_precision_at_k",
                                                  "recall_by_scenario", "model_versions")}  # fmt: skip
    typer.echo(json.dumps({**summary, "out": str(out), "scores_out": str(scores_out) if scores_out else None}))


def _batch_model(settings: Settings, uri: str | None) -> Any:
    """The classifier to backtest with: ``uri`` (must load), else the configured one when its alias is set.

    A model trained on another feature layout stops here, before the replay.
    """
    from features import FeatureRegistry
    from models.batch import ClassifierSource

    model = _registered_model(settings, uri)
    if model is not None:
        try:
            ClassifierSource(model, FeatureRegistry.from_settings(settings.features), settings.scoring)
        except ValueError as exc:
            raise ConfigError(f"{uri or 'scoring.classifier.model_uri'}: {exc}") from None
    return model


def _registered_model(settings: Settings, uri: str | None) -> Any:
    from connectors.registry import MissingModel, connect, load_batch_model, store_exists

    if uri is not None:
        with console.status(f"loading {uri}"):
            return load_batch_model(connect(settings.mlflow), uri, "--model")
    uri = settings.scoring.classifier.model_uri
    if not uri:
        return None
    if not store_exists(settings.mlflow):
        console.print(f"[dim]no MLflow store at {settings.mlflow.tracking_uri}: backtesting without a classifier[/dim]")
        return None
    with console.status(f"loading {uri}"):
        try:
            return load_batch_model(connect(settings.mlflow), uri, "scoring.classifier.model_uri")
        except MissingModel as exc:
            console.print(f"[dim]{exc}: backtesting without a classifier[/dim]", highlight=False)
            return None
