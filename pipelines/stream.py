"""The scoring job: what `ray job submit -- python -m pipelines.stream --config …` runs.

It connects to Ray (``stream.ray_address``, else ``RAY_ADDRESS``, else a local
Ray it starts), checks Kafka and the topics, starts the controller and its K
scoring actors, writes the job's status to ``stream.status_path`` every
``stream.status_interval_s`` (``fraudstream status`` reads it) and on SIGINT,
SIGTERM or the end of ``--duration`` drains: every actor finishes its batch
and writes a final checkpoint.

    python -m pipelines.stream --config configs/local.yaml --duration 60
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from actors.messages import DrainedJob, JobStatus, RulesFileStatus, ServingStatus, StoppedJob
from configs import ConfigError, RuleSettings, Settings
from connectors.kafka import check_transactions, ensure_topics, wait_until_ready
from models.rules import load_rules_file, rules_fingerprint
from pipelines.commandline import ClickError, run_app, settings_for
from pipelines.session import kafka_for


def check_layout(settings: Settings) -> None:
    """Labels must be partitioned like transactions: an account's labels meet its state."""
    topics = settings.kafka.topics
    if topics.labels.partitions != topics.transactions.partitions:
        raise ConfigError(
            f"config error: kafka.topics.labels.partitions ({topics.labels.partitions}) must equal "
            f"kafka.topics.transactions.partitions ({topics.transactions.partitions}): labels are keyed "
            "by account like transactions and must reach the partition holding that account's state"
        )


def connect_ray(settings: Settings) -> None:
    """Join the configured Ray cluster (or RAY_ADDRESS), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = settings.stream.ray_address or os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, namespace="fraudstream", logging_level=logging.WARNING, log_to_driver=False,
             configure_logging=True)


def absolute_local_store(settings: Settings) -> Settings:
    """A relative SQLite MLflow store made absolute against the driver's working directory,
    so that every actor opens the store the driver checked, wherever Ray starts it."""
    uri = settings.mlflow.tracking_uri
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or Path(uri.removeprefix(prefix)).is_absolute():
        return settings
    path = Path(uri.removeprefix(prefix)).resolve()
    mlflow = msgspec.structs.replace(settings.mlflow, tracking_uri=f"{prefix}{path}")
    return msgspec.structs.replace(settings, mlflow=mlflow)


def check_start(settings: Settings, actors: int | None) -> None:
    """What a job start can check before anything starts: ``--actors`` (None means stream.actors) and that
    :func:`write_status` can write ``stream.status_path``; ConfigError, one line.

    The status folder is created and a probe file written there and removed: the status file itself
    appears only once the job runs (a reader takes it as the sign that scoring began).
    """
    if actors is not None and actors < 1:
        raise ConfigError(f"config error: --actors must be at least 1, got {actors} (omit it to use stream.actors)")
    path = settings.stream.status_path
    try:
        target = Path(path)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.probe")
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        # mkdir(exist_ok=True) raises FileExistsError only where a file stands in the folder's way
        reason = os.strerror(errno.ENOTDIR) if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        raise ConfigError(
            f"config error: stream.status_path: cannot write {path} ({reason}); "
            "fix: point stream.status_path at a writable file"
        ) from None


def write_status(path: str | Path, status: JobStatus | StoppedJob) -> None:
    """Write the status JSON atomically (readers never see half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
    temp.write_bytes(msgspec.json.encode(status))
    temp.replace(target)


class _Stopped(msgspec.Struct):
    """Just enough of a status file to tell a stopped job's from a running one's."""

    stopped: bool = False


def read_status(data: bytes) -> JobStatus | StoppedJob:
    """A status file's contents (what :func:`write_status` wrote): the running job's status, or the stopped job's."""
    if msgspec.json.decode(data, type=_Stopped).stopped:
        return msgspec.json.decode(data, type=StoppedJob)
    return msgspec.json.decode(data, type=JobStatus)


class RulesWatcher:
    """Notices when ``scoring.rules_file`` changes (size, mtime, content) and reads the new rules."""

    def __init__(self, settings: Settings) -> None:
        from features import FeatureRegistry

        self.path = settings.scoring.rules_file
        self.names = FeatureRegistry.from_settings(settings.features).names
        self.block_threshold = settings.scoring.block_threshold
        self.fingerprint = rules_fingerprint(self.path) if self.path else None
        #: A change seen once: read only when the next poll finds the file the same (not half-written).
        self._settling: str | None = None
        #: The last change that could not be loaded (the actors keep deciding with the rules before it).
        self.error: str | None = None

    def changed(self) -> tuple[RuleSettings, ...] | None:
        """The file's rules when it changed and then stayed the same for one poll, else None; ConfigError
        (one line) when the changed file is invalid (reported once per change).

        Waiting for one unchanged poll means an editor or a copy that writes the file in pieces is
        never read halfway: a truncated file could parse as a shorter, valid rule set.
        """
        if not self.path:
            return None
        fingerprint = rules_fingerprint(self.path)
        if fingerprint == self.fingerprint:
            self._settling = None
            return None
        if fingerprint != self._settling:
            self._settling = fingerprint
            return None
        self.fingerprint, self._settling = fingerprint, None
        try:
            rules = load_rules_file(self.path, self.names, self.block_threshold)
        except ConfigError as exc:
            self.error = str(exc)
            raise
        self.error = None
        return rules


class StopRequest:
    """Ctrl-C / SIGTERM asking a status loop to stop: a plain flag, set from a signal handler.

    Not a ``threading.Event``: its ``set`` takes a lock that ``wait`` holds for a moment each time it wakes,
    and a handler run in that moment (it runs in the waiting thread) blocks on that lock forever. A second
    Ctrl-C then hangs the process (seen: ``demo --console`` stopped with two SIGINTs).
    """

    def __init__(self) -> None:
        self.requested = False

    def request(self, *_: object) -> None:
        self.requested = True

    def is_set(self) -> bool:
        return self.requested

    def wait(self, timeout_s: float, slice_s: float = 0.05) -> bool:
        """Sleep up to ``timeout_s``, waking within ``slice_s`` of a request; whether one came."""
        deadline = time.monotonic() + timeout_s
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(slice_s, left))
        return self.requested


class StreamJob:
    """Controller handle and lifecycle of one scoring job (driver side)."""

    def __init__(self, settings: Settings, bootstrap_servers: str | None) -> None:
        self.settings = absolute_local_store(settings)
        self.bootstrap_servers = bootstrap_servers
        self.controller: Any = None
        #: Whether :meth:`start` started Ray itself (then the job shuts it down when it ends or fails to start).
        self.started_ray = False
        #: What the job serves from the registry, as checked at start (None before).
        self.serving: ServingStatus | None = None
        self.rules_watcher = RulesWatcher(self.settings)
        self._last_online_log = time.monotonic()

    def start(self, actors: int | None = None) -> JobStatus:
        """Check the settings, Kafka and the topics, then start Ray (unless it runs) and the controller with
        ``actors`` scoring actors (None: stream.actors); a failure after Ray started leaves nothing running."""
        import ray

        from actors.clients import kafka_access
        from actors.controller import NAMESPACE, Controller, controller_name
        from connectors.checkpoint import CheckpointStore

        check_layout(self.settings)
        check_start(self.settings, actors)
        CheckpointStore(self.settings.stream.checkpoint_uri)  # an unusable URI stops here, in one line
        if self.settings.scoring.classifier.model_uri:
            from actors.serving import check_serving

            # a bad model URI, a missing alias (when_missing: error) or a model trained on other
            # features stops here, in one line, before any actor starts
            self.serving = check_serving(self.settings)
        asyncio.run(wait_until_ready(self.settings.kafka, self.bootstrap_servers))
        # a principal that may not read or write a topic of the job stops here: an actor's consumer would
        # retry "not authorized" forever
        asyncio.run(ensure_topics(self.settings.kafka, self.bootstrap_servers, access=kafka_access(self.settings)))
        if self.settings.kafka.exactly_once:  # every actor would fail to start its transactional producer
            asyncio.run(check_transactions(self.settings.kafka, self.bootstrap_servers))
        self.started_ray = not ray.is_initialized()
        try:
            connect_ray(self.settings)
            stream = self.settings.stream
            # restartable: a controller whose process or node died comes back on another node and replaces its
            # scoring actors (actors/controller.py); calls cut off by its death are sent again once it is back
            self.controller = Controller.options(  # type: ignore[attr-defined]
                name=controller_name(self.settings), namespace=NAMESPACE, max_restarts=stream.max_restarts,
                max_task_retries=-1, resources=dict(stream.controller_resources),
            ).remote(self.settings, self.bootstrap_servers)
            status: JobStatus = ray.get(self.controller.start.remote(actors))
            return status
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the controller (its scoring actors go with it) and shut Ray down if this job started it."""
        import ray

        from actors.controller import NAMESPACE, controller_name

        if self.controller is not None and ray.is_initialized():
            controller, self.controller = self.controller, None
            ray.kill(controller)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the name is free again once Ray has removed the actor
                try:
                    ray.get_actor(controller_name(self.settings), namespace=NAMESPACE)
                except ValueError:
                    break
                time.sleep(0.1)
        if self.started_ray:
            self.started_ray = False
            ray.shutdown()

    def status(self) -> JobStatus:
        """The job's status, with the rules file's; also written to ``stream.status_path``."""
        import ray

        gathered: JobStatus = ray.get(self.controller.status.remote())
        rules_file = RulesFileStatus(path=self.rules_watcher.path or None, error=self.rules_watcher.error)
        status = msgspec.structs.replace(gathered, rules_file=rules_file)
        write_status(self.settings.stream.status_path, status)
        return status

    def reload_rules_if_changed(self) -> list[str] | None:
        """When the rules file changed: every actor decides with the new rules from its next micro-batch
        (their versions). An invalid file is reported (stderr, status) and changes nothing."""
        import ray

        try:
            rules = self.rules_watcher.changed()
        except ConfigError as exc:
            print(f"warning: rules not reloaded, still deciding with the previous ones: {exc}", file=sys.stderr)
            return None
        if rules is None:
            return None
        versions: list[str] = ray.get(self.controller.reload_rules.remote(rules))
        print(f"rules reloaded from {self.rules_watcher.path}: {len(rules)} rules ({versions[0]})", file=sys.stderr)
        return versions

    def log_online_models(self) -> Any:
        """Log every partition's online classifier to MLflow as a new version of ``scoring.online.registered_model``
        (None when there is none); a failing store is reported, never stops the job."""
        import ray

        from connectors.registry import connect, log_online_snapshot
        from features import FeatureRegistry
        from models.state import unpack

        online = self.settings.scoring.online
        snapshots: dict[int, bytes] = {}
        for part in ray.get(self.controller.call_all.remote("online_snapshots")):
            snapshots.update(part)
        status = self.status()
        if not snapshots:
            return None
        partitions = status.partitions.values()
        try:
            version = log_online_snapshot(
                connect(self.settings.mlflow), self.settings.mlflow,
                experiment=self.settings.training.experiment, registered_model=online.registered_model,
                snapshots=snapshots,
                online_version=unpack(next(iter(snapshots.values())))[0]["version"],
                feature_version=FeatureRegistry.from_settings(self.settings.features).version,
                metrics={"scored": float(sum(p.scored for p in partitions)),
                         "labels_learned": float(sum(p.labels_learned for p in partitions))},
            )
        except Exception as exc:  # the stream matters more than its snapshot
            print(f"warning: online models not logged to MLflow: {exc}", file=sys.stderr)
            return None
        self._last_online_log = time.monotonic()
        return version

    def rescale(self, actors: int) -> JobStatus:
        """Change the number of scoring actors while running; the job's status after."""
        import ray

        status: JobStatus = ray.get(self.controller.rescale.remote(actors))
        return status

    def drain(self) -> DrainedJob:
        """Every actor finishes its batch and writes a final checkpoint; then :meth:`stop` (also on failure)."""
        import ray

        try:
            final: DrainedJob = ray.get(self.controller.drain.remote())
        finally:
            self.stop()
        write_status(self.settings.stream.status_path, StoppedJob(time=time.time(), final=final))
        return final

    def run(
        self,
        duration_s: float | None = None,
        on_status: Callable[[JobStatus], None] | None = None,
        until: Callable[[JobStatus], bool] | None = None,
        before_drain: Callable[[], None] | None = None,
    ) -> DrainedJob:
        """Report status until ``duration_s`` passes, ``until(status)`` holds or a signal arrives; drain.

        ``before_drain`` runs while the actors still run (e.g. to collect their latency samples).
        """
        stop = StopRequest()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, stop.request)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        interval = self.settings.scoring.online.snapshot_interval_s
        try:
            while not stop.is_set():
                self.reload_rules_if_changed()
                if interval and time.monotonic() - self._last_online_log >= interval:
                    self.log_online_models()
                status = self.status()
                if on_status is not None:
                    on_status(status)
                if until is not None and until(status):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                stop.wait(self.settings.stream.status_interval_s)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            try:
                if interval and self.settings.scoring.online.enabled:
                    self.log_online_models()  # what the online models learned, before the actors stop
                if before_drain is not None:
                    before_drain()
            finally:
                final = self.drain()
        return final


# ----------------------------------------------------------------------------------------------- the command line
#: How the job's command line names itself in its usage and error lines.
PROG = "python -m pipelines.stream"

#: ``-h`` as well as ``--help``, as the argparse command line this replaces had.
job_app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


def _at_least_one(value: int | None) -> int | None:
    """``--actors``: a whole number of at least 1 (None: stream.actors)."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be at least 1, got {value}")
    return value


@job_app.command()
def job_command(
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings (default: configs/local.yaml)")] = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: run until signalled)")
    ] = None,
    actors: Annotated[
        int | None, typer.Option(callback=_at_least_one, help="scoring actors K (default: stream.actors)")
    ] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (overrides the config)")] = None,
) -> None:
    """The scoring job: what `ray job submit -- python -m pipelines.stream --config …` runs."""
    settings = settings_for(config)  # the rules file compiled too
    check_start(settings, actors)  # before a broker, Kafka or Ray is started or waited for
    if settings.kafka.embedded and bootstrap is None:
        with kafka_for(settings, None) as servers:
            _run(settings, servers, duration, actors)
        return
    _run(settings, bootstrap, duration, actors)


def _run(settings: Settings, servers: str | None, duration: float | None, actors: int | None) -> None:
    """Start the job and print its totals as a JSON line at every status until it drains."""
    job = StreamJob(settings, servers)
    job.start(actors)

    def show(status: JobStatus) -> None:
        print(json.dumps({"events_per_s": status.events_per_s, **msgspec.to_builtins(status.totals)}), flush=True)

    job.run(duration, on_status=show)


def _exit_with_usage(error: ClickError) -> None:
    """A usage error as this command line has always written it: the usage, then one line
    ``python -m pipelines.stream: error: argument --actors: must be at least 1, got 0``; exits 2."""
    context = getattr(error, "ctx", None)  # a usage error knows its command
    if context is not None:
        print(context.get_usage(), file=sys.stderr)
    message = error.format_message()
    if isinstance(error, typer.BadParameter) and error.param is not None and error.param.opts:
        message = f"argument {error.param.opts[0]}: {error.message}"
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.stream``: 0 once the job drained; 2 with one ``error:`` line for a bad config, status
    path or Kafka (nothing started). Bad usage (``--actors 0``) exits 2 with a usage line and one error line."""
    return run_app(job_app, argv, prog_name=PROG, on_usage_error=_exit_with_usage)


if __name__ == "__main__":
    sys.exit(main())
