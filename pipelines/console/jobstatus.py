"""The running job as the console shows it: throughput, lag, alerts/s and the models served, from its status file.

The scoring job writes its :class:`~actors.messages.JobStatus` to
``stream.status_path`` every ``stream.status_interval_s``
(:func:`pipelines.stream.write_status`); :class:`StatusWatch` reads it and
derives alerts/s from two successive readings.

>>> from actors.messages import job_status
>>> status = job_status([], plan=[], stage_plan=[], events=[], now=100.0)
>>> summary = summarize(status, previous=None)
>>> summary.state, summary.scored, summary.alerts_per_s, summary.champion
('running', 0, None, None)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from actors.messages import JobStatus, StoppedJob
from pipelines.console.registry import RegistryVersions
from pipelines.stream import read_status


class JobSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What the page's status bar shows (``state``: running, stopped, absent or unreadable)."""

    state: str
    #: Wall time the job wrote the status (None: no status).
    time: float | None = None
    #: Seconds between that and when it was read.
    age_s: float | None = None
    events_per_s: float | None = None
    alerts_per_s: float | None = None
    scored: int | None = None
    alerts: int | None = None
    #: Labels the job's online classifiers learned (verdicts given here among them).
    labels_learned: int | None = None
    #: Records behind (summed over partitions) and the longest wait (s); None when unknown.
    lag: int | None = None
    lag_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    #: The registry's classifier versions the actors serve (``name/version``), and its URI.
    model_uri: str | None = None
    champion: str | None = None
    challenger: str | None = None
    actors: int | None = None
    message: str | None = None
    #: The versions the registry's aliases name now (:mod:`~pipelines.console.registry`), set by the web app
    #: beside the served ones; None when the console does not look at the registry.
    registry: RegistryVersions | None = None


def summarize(status: JobStatus, previous: JobStatus | None, now: float | None = None) -> JobSummary:
    """The summary of ``status``; alerts/s from ``previous`` (an earlier reading), None without one."""
    rate = None
    if previous is not None and status.time > previous.time:
        rate = round(max(0, status.totals.alerts - previous.totals.alerts) / (status.time - previous.time), 2)
    served = [actor.serving for actor in status.actors if actor.serving is not None]
    latencies = [actor.latency_ms for actor in status.actors if actor.latency_ms.samples]
    return JobSummary(
        state="running",
        time=status.time,
        age_s=None if now is None else round(max(0.0, now - status.time), 1),
        events_per_s=status.events_per_s,
        alerts_per_s=rate,
        scored=status.totals.scored,
        alerts=status.totals.alerts,
        labels_learned=status.totals.labels_learned,
        lag=status.totals.lag,
        lag_s=status.totals.lag_s,
        latency_p50_ms=max((lat.p50 for lat in latencies if lat.p50 is not None), default=None),
        latency_p99_ms=max((lat.p99 for lat in latencies if lat.p99 is not None), default=None),
        model_uri=served[0].uri if served else None,
        champion=next((s.champion for s in served if s.champion), None),
        challenger=next((s.challenger for s in served if s.challenger), None),
        actors=len(status.actors),
    )


class StatusWatch:
    """Reads the status file on demand and remembers the previous reading (for alerts/s)."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path, self.clock = Path(path), clock
        self.previous: JobStatus | None = None
        self.latest: JobStatus | None = None

    def read(self) -> JobSummary:
        """The job's summary now (never raises: a missing or bad file is a state with a message)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return JobSummary(state="absent", message=f"no job status at {self.path} yet: the scoring job has not "
                                                      "started, or it writes another stream.status_path "
                                                      "(`fraudstream run` starts it)")
        except OSError as exc:
            return JobSummary(state="unreadable", message=f"cannot read {self.path}: {exc.strerror}")
        try:
            status = read_status(data)
        except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
            return JobSummary(state="unreadable", message=f"{self.path} is not a job status ({exc})")
        if isinstance(status, StoppedJob):
            return JobSummary(state="stopped", time=status.time, message="the job stopped (drained)")
        if self.latest is None or status.time > self.latest.time:
            self.previous, self.latest = self.latest, status
        # the file read again (the job writes it every stream.status_interval_s) keeps the rate it had
        previous = self.previous if status.time == self.latest.time else None
        return summarize(status, previous, now=self.clock())
