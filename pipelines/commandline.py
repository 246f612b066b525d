"""What every command-line entry point shares: the ``--config`` option, the checked settings, one-line errors.

Kept below the entry points (``pipelines.cli`` and its command modules,
``python -m pipelines.stream``), so that none of them imports another's module
for it. Bad input is one line and exit code 2, never a traceback:

>>> import typer
>>> app = typer.Typer()
>>> @app.command()
... def show(config: ConfigOption = None) -> None:
...     settings_for(config)
>>> run_app(app, ["--config", "/nowhere.yaml"], prog_name="show")  # stderr: error: config error: file ... not found
2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer import _click

from configs import ConfigError, Settings
from connectors.broker import BrokerUnavailable
from connectors.kafka import KafkaSetupError
from models.checked_settings import load_settings

#: Errors a command reports as one line (exit code 2): bad input or a broker that is not there.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, BrokerUnavailable, KafkaSetupError, FileNotFoundError)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Settings YAML (default: the bundled configs/local.yaml).")
]

#: What click raises for bad usage (typer raises the exceptions of the click it bundles).
ClickError = click.ClickException | _click.ClickException

_console = Console(stderr=True)


def settings_for(config: str | Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """The settings a command runs with: ``config`` (default: configs/local.yaml), the rules file compiled, and
    the ``overrides`` (dotted keys) whose value is not None, i.e. the options given."""
    return load_settings(config, {key: value for key, value in (overrides or {}).items() if value is not None})


def _show_usage_error(error: ClickError) -> None:
    error.show()


def run_app(
    app: typer.Typer,
    args: Sequence[str] | None = None,
    prog_name: str | None = None,
    on_usage_error: Callable[[ClickError], None] = _show_usage_error,
) -> int:
    """Run ``app`` on ``args`` (default: the process's arguments); its exit code.

    0 when the command succeeded (or a command's ``typer.Exit(n)``: n); 2 for
    :data:`USER_ERRORS`, printed as ``error: <message>`` on one line; 130 when
    interrupted; a usage error (a bad option value) is shown by
    ``on_usage_error`` (default: click's usage and ``Error:`` lines) and gives
    its own code (2).
    """
    try:
        code = app(args=args, prog_name=prog_name, standalone_mode=False)
    except USER_ERRORS as exc:
        # escaped: "[in config.yaml]" at the end of a message is text, not rich markup
        _console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:
        _console.print("aborted")
        return 130
    except KeyboardInterrupt:
        _console.print("interrupted")
        return 130
    except Exception as exc:
        if not isinstance(exc, ClickError):
            raise
        on_usage_error(exc)
        return exc.exit_code
    return code if isinstance(code, int) else 0
