"""The ``fraudstream`` command line: one typer app gathering the command groups.

Each group's commands live in their own module, and none of them imports this
one (what they share is in :mod:`pipelines.commandline` and
:mod:`pipelines.session`, below them):

- ``broker``, ``run``, ``status``: :mod:`pipelines.stream_commands`
- ``generate``, ``produce``, ``features``: :mod:`pipelines.data_commands`
- ``train``, ``promote``, ``backtest``: :mod:`pipelines.model_commands`
- ``demo``: :mod:`pipelines.demo`
- ``alerts tail``: :mod:`pipelines.alerts`
- ``console`` (and ``console hash-password``): :mod:`pipelines.console.command`

``python -m pipelines.stream`` (what ``ray job submit`` runs) is the scoring
job's own command line, in :mod:`pipelines.stream`.
"""

from __future__ import annotations

import sys

import typer

from pipelines import data_commands, model_commands, stream_commands
from pipelines.alerts import alerts_app
from pipelines.commandline import run_app
from pipelines.console.command import console_app
from pipelines.demo import demo_command

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fraudstream: real-time fraud detection on Kafka with Ray actors, River, scikit-learn and MLflow.",
)

# in this order in `fraudstream --help`
app.command("broker")(stream_commands.broker_command)
app.command("generate")(data_commands.generate_command)
app.command("produce")(data_commands.produce_command)
app.command("features")(data_commands.features_command)
app.command("run")(stream_commands.run_command)
app.command("status")(stream_commands.status_command)
app.command("train")(model_commands.train_command)
app.command("promote")(model_commands.promote_command)
app.command("backtest")(model_commands.backtest_command)
app.command("demo")(demo_command)
app.add_typer(alerts_app, name="alerts")
app.add_typer(console_app, name="console")


def main() -> None:
    """Console entry point: bad input ends with one clear line, not a traceback."""
    code = run_app(app)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
