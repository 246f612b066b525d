"""Submit the scoring job to a Ray cluster, follow its logs, stop it: Ray's ``JobSubmissionClient``.

The same job ``ray job submit`` starts::

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m pipelines.stream --config configs/cluster.yaml

from Python (a notebook, a deployment script)::

    from pipelines.jobs import ScoringJobs
    jobs = ScoringJobs("http://HEAD:8265")
    job_id = jobs.submit("configs/cluster.yaml")
    jobs.follow(job_id)            # prints the job's log lines until it ends (Ctrl-C stops following, not the job)
    jobs.stop(job_id)              # SIGTERM: the job drains (every actor finishes its batch and checkpoints)

The working directory (the project, minus virtual environments, data and
local stores) is uploaded with the job; the config path is relative to it or
absolute on the cluster. Ray gives a stopped job ``RAY_JOB_STOP_WAIT_TIME_S``
(3 s by default) between SIGTERM and SIGKILL; a drain takes longer, so the
job's runtime environment raises it to ``drain_timeout_s``.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: What is never uploaded with the job (relative to the working directory, gitignore syntax).
UPLOAD_EXCLUDES = (
    ".venv", "venv", ".git", "mlruns", "data", "reports", "checkpoints", ".fraudstream", "build", "dist",
    "**/__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", "features/_native", "*.so",
)  # fmt: skip

#: Job states after which nothing changes any more.
TERMINAL = {"STOPPED", "SUCCEEDED", "FAILED"}

#: What Ray's job server answers while the head's job agent has not registered yet (it waits 10 s for it, then
#: gives up with HTTP 500): just after ``ray up`` or ``ray start --head`` on a slow machine. Worth a retry.
AGENT_NOT_READY = ("No available agent to submit job", "Head node id has not yet been persisted")


def agent_not_ready(error: BaseException) -> bool:
    """Whether ``error`` is the job server saying its agent is not up yet (try again), not a refused job.

    >>> agent_not_ready(RuntimeError("Request failed with status code 500: No available agent to submit job, ..."))
    True
    >>> agent_not_ready(RuntimeError("Request failed with status code 400: bad runtime_env"))
    False
    """
    return isinstance(error, RuntimeError) and any(text in str(error) for text in AGENT_NOT_READY)


def stream_entrypoint(
    config: str, duration_s: float | None = None, actors: int | None = None, bootstrap: str | None = None
) -> str:
    """The shell command the job runs: ``python -m pipelines.stream`` with its options.

    >>> stream_entrypoint("configs/cluster.yaml", actors=4)
    'python -m pipelines.stream --config configs/cluster.yaml --actors 4'
    """
    args = ["python", "-m", "pipelines.stream", "--config", config]
    if duration_s is not None:
        args += ["--duration", f"{duration_s:g}"]
    if actors is not None:
        args += ["--actors", str(actors)]
    if bootstrap is not None:
        args += ["--bootstrap", bootstrap]
    return shlex.join(args)


def runtime_env(
    working_dir: str | Path = ".",
    drain_timeout_s: float = 120.0,
    env_vars: dict[str, str] | None = None,
    excludes: Sequence[str] = UPLOAD_EXCLUDES,
) -> dict[str, Any]:
    """The job's Ray runtime environment: the uploaded project and the stop grace period.

    >>> env = runtime_env("/srv/fraudstream", drain_timeout_s=60)
    >>> env["working_dir"], env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"], ".venv" in env["excludes"]
    ('/srv/fraudstream', '60', True)
    """
    return {
        "working_dir": str(working_dir),
        "excludes": list(excludes),
        "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(int(drain_timeout_s)), **(env_vars or {})},
    }


class ScoringJobs:
    """The scoring jobs of one Ray cluster, through its job server (the dashboard address, port 8265)."""

    def __init__(self, address: str) -> None:
        from ray.job_submission import JobSubmissionClient

        self.address = address
        self.client = JobSubmissionClient(address)

    def submit(
        self,
        config: str,
        *,
        working_dir: str | Path = ".",
        duration_s: float | None = None,
        actors: int | None = None,
        bootstrap: str | None = None,
        drain_timeout_s: float = 120.0,
        env_vars: dict[str, str] | None = None,
        submission_id: str | None = None,
        agent_timeout_s: float = 120.0,
    ) -> str:
        """Start ``python -m pipelines.stream`` on the cluster; its submission id.

        A cluster that has just started may answer that its job agent is not available yet: the submission is
        retried (every 2 s) for up to ``agent_timeout_s``, then Ray's error is raised as it came."""
        deadline = time.monotonic() + agent_timeout_s
        while True:
            try:
                return str(
                    self.client.submit_job(
                        entrypoint=stream_entrypoint(config, duration_s, actors, bootstrap),
                        runtime_env=runtime_env(working_dir, drain_timeout_s, env_vars),
                        submission_id=submission_id,
                        metadata={"job": "fraudstream-scoring", "config": config},
                    )
                )
            except RuntimeError as error:
                if not agent_not_ready(error):
                    raise
                if time.monotonic() + 2.0 > deadline:
                    raise RuntimeError(
                        f"{error} (still after {agent_timeout_s:g} s: the head's job agent is not running; its log "
                        "is dashboard_agent.log in the head's Ray session logs, e.g. its port 52365 taken by another "
                        "Ray on that host)"
                    ) from None
                time.sleep(2.0)

    def status(self, job_id: str) -> str:
        """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
        return str(self.client.get_job_status(job_id).value)

    def logs(self, job_id: str) -> str:
        """Everything the job printed so far."""
        return str(self.client.get_job_logs(job_id))

    def follow(self, job_id: str, on_line: Callable[[str], None] = print) -> str:
        """Pass the job's log lines to ``on_line`` as they come until the job ends; its final status."""

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                for line in chunk.splitlines():
                    on_line(line)

        asyncio.run(tail())
        return self.wait(job_id, timeout_s=30.0)

    def wait(self, job_id: str, timeout_s: float, until: Sequence[str] = tuple(TERMINAL)) -> str:
        """Poll until the job reaches one of ``until``; its status (TimeoutError naming it when it does not)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if status in until:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {status} after {timeout_s:g} s")
            time.sleep(0.5)

    def stop(self, job_id: str, timeout_s: float = 150.0) -> str:
        """Ask the job to stop (SIGTERM: it drains and checkpoints) and wait until it has; its final status."""
        self.client.stop_job(job_id)
        return self.wait(job_id, timeout_s)
