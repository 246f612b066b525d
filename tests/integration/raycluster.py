"""A Ray cluster of several nodes on this machine, for tests of placement, node loss and scaling.

Each node is a ``ray start --block`` process in a session of its own: the head (``--num-cpus`` 0 by
default, so scoring actors go to the worker nodes), then worker nodes joining it with ``--address``, each
with its own temp dir, CPUs and custom resources. Everything a node starts (raylet, agents, the worker
processes holding actors) stays in that session; Ray gives each worker process a process group of its own,
so a node is its session, not its process group. :meth:`RayCluster.kill_node` loses a node as a machine
would (SIGKILL to every process of the session, nothing shut down cleanly) and :meth:`RayCluster.stop`
leaves no process behind. It never runs ``ray stop``, which would stop every Ray on the machine (the tests' own, other
users'), and it never touches ``/tmp/ray``: its nodes' addresses stay in their own temp dirs, out of the way
of a later ``ray.init()`` of the tests.

The tests' own Ray (``ray_session``) lives in the pytest process; a job for this cluster runs as a process of
its own with :meth:`RayCluster.driver_env` (``RAY_ADDRESS`` = the head), and connects to the head's raylet
(Ray prefers the head among nodes of one host). All nodes use 127.0.0.1, so a driver's address matches them.

Ray notices a lost node by health checks from the head (by default every few seconds, several misses in a
row); the cluster shortens them (``health_check_period_ms``, ``health_check_failure_threshold``) so that
tests measure recovery, not Ray's patience. Typical use::

    with RayCluster() as cluster:
        cluster.add_node(num_cpus=2)
        node = cluster.add_node(num_cpus=2, resources={"controller": 1})
        with ClusterJob(cluster, config, log) as job:  # python -m pipelines.stream with RAY_ADDRESS = the head
            status = job.wait_for(lambda s: len(s.actors) == 2, "two actors")
            cluster.kill_node(cluster.node_by_id(status.actors[0].node_id))
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connectors.broker import free_port
from tests.kafka.jobkit import JobProcess

ROOT = Path(__file__).resolve().parents[2]

#: Started, but not registered with the head in this long: the node failed to start.
START_TIMEOUT_S = 90.0


def _pids_in_session(sid: int) -> list[int]:
    """Every live process (not a zombie) of session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, _group, session = stat.rsplit(")", 1)[1].split()[:4]  # after "pid (comm)"
        if int(session) == sid and state != "Z":
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    """A process's command line as ``ps`` shows it (Ray workers set it to their title, ``ray::ScoringActor...``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _kill_session(sid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL every process of session ``sid``, again until none is left (a raylet may start a worker meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while pids := _pids_in_session(sid):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of session {sid} survive SIGKILL: {pids}")
        time.sleep(0.05)


@dataclass
class RayNode:
    """One node: its ``ray start --block`` process (leader of the node's session) and what it offers."""

    name: str
    head: bool
    num_cpus: float
    resources: dict[str, float]
    temp_dir: str
    log: Path
    process: subprocess.Popen[bytes]
    #: The Ray node id (hex) of its raylet, once it runs.
    node_id: str = ""
    #: Wall time (time.time()) and monotonic time at which kill_node SIGKILLed it.
    killed_at: float | None = None
    killed_monotonic: float | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def sid(self) -> int:
        """The node's session id: the pid of its ``ray start`` process."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """Every process of the node (raylet, agents, workers)."""
        return _pids_in_session(self.sid)

    def worker_titles(self) -> dict[int, str]:
        """The node's Ray worker processes by pid, with their titles (``ray::ScoringActor.ensure``, ``ray::IDLE``)."""
        return {pid: title for pid in self.pids() if (title := _cmdline(pid)).startswith("ray::")}

    def actor_pids(self, class_name: str = "") -> list[int]:
        """Pids of the node's processes holding an actor (of ``class_name``, e.g. ``ScoringActor``, if given)."""
        return sorted(pid for pid, title in self.worker_titles().items()
                      if title != "ray::IDLE" and title.removeprefix("ray::").startswith(class_name))  # fmt: skip

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class RayCluster:
    """A head and worker nodes on this machine (see the module's docstring); a context manager that stops them."""

    def __init__(self, *, head_cpus: float = 0, head_resources: Mapping[str, float] | None = None,
                 health_check_period_ms: int | None = 1000, health_check_failure_threshold: int = 3,
                 object_store_bytes: int = 100 * 1024 * 1024) -> None:  # fmt: skip
        """``health_check_period_ms`` None: Ray's own node failure detection (a check every 3 s, 10 s timeout,
        dead after 5 misses: about 15 s for a node whose raylet is gone)."""
        self.head_cpus = head_cpus
        self.head_resources = dict(head_resources or {})
        self.object_store_bytes = object_store_bytes
        self.root = tempfile.mkdtemp(prefix="rc-")  # short: Ray's socket paths must stay under 108 bytes
        self.port = 0
        self.nodes: list[RayNode] = []
        venv = Path(sys.executable).parent
        self._ray = str(venv / "ray")
        self.env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ.get('PATH', '')}",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # fmt: skip
        self.env.pop("RAY_ADDRESS", None)
        if health_check_period_ms is not None:  # how soon the head declares a node dead that stopped answering
            self.env.update(RAY_health_check_period_ms=str(health_check_period_ms),
                            RAY_health_check_timeout_ms=str(health_check_period_ms),
                            RAY_health_check_failure_threshold=str(health_check_failure_threshold))  # fmt: skip

    # ---------------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> RayCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """The head's GCS address, what ``RAY_ADDRESS`` or ``ray.init(address=...)`` takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    @property
    def workers(self) -> list[RayNode]:
        """The worker nodes still running."""
        return [node for node in self.nodes[1:] if node.killed_at is None]

    def start(self) -> RayNode:
        """Start the head node; returns it."""
        assert not self.nodes, "started already"
        self.port = free_port()
        return self._start_node("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                                         f"--ray-client-server-port={free_port()}"],
                                self.head_cpus, self.head_resources)  # fmt: skip

    def add_node(self, num_cpus: float = 2, resources: Mapping[str, float] | None = None) -> RayNode:
        """Start a worker node joining the head; returns it once its raylet runs."""
        assert self.nodes, "start() the head first"
        return self._start_node(f"node{len(self.nodes)}", [f"--address={self.address}"], num_cpus,
                                dict(resources or {}))  # fmt: skip

    def _start_node(self, name: str, role: list[str], num_cpus: float, resources: dict[str, float]) -> RayNode:
        temp_dir = os.path.join(self.root, name)
        log = Path(self.root) / f"{name}.log"
        args = [self._ray, "start", "--block", *role, "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
                f"--object-store-memory={self.object_store_bytes}", f"--dashboard-agent-listen-port={free_port()}",
                "--min-worker-port=0", "--max-worker-port=0"]  # fmt: skip
        with open(log, "wb") as out:
            process = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        node = RayNode(name=name, head=not self.nodes, num_cpus=num_cpus, resources=resources, temp_dir=temp_dir,
                       log=log, process=process, env=self.env)  # fmt: skip
        self.nodes.append(node)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not node.node_id:
            if not node.alive:
                raise RuntimeError(f"ray start of {name} exited ({process.returncode}):\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start in {START_TIMEOUT_S:.0f} s:\n{node.log_tail()}")
            if "Ray runtime started" in node.log_tail(100_000):
                node.node_id = self._raylet_node_id(node)
            time.sleep(0.2)
        return node

    @staticmethod
    def _raylet_node_id(node: RayNode) -> str:
        """The ``--node_id`` its raylet was started with ("" before the raylet runs)."""
        for pid in node.pids():
            line = _cmdline(pid)
            if "raylet" in line.split(" ", 1)[0]:
                for arg in line.split():
                    if arg.startswith("--node_id="):
                        return arg.removeprefix("--node_id=")
        return ""

    def kill_node(self, node: RayNode) -> float:
        """Lose ``node`` as a machine would: SIGKILL to every process of its session (raylet, agents, the workers
        holding its actors), nothing shut down cleanly. Returns the monotonic time of the kill."""
        assert not node.head, "killing the head ends the cluster (its GCS holds everything)"
        node.killed_at, node.killed_monotonic = time.time(), time.monotonic()
        _kill_session(node.sid)
        node.process.wait(10)
        return node.killed_monotonic

    def node_by_id(self, node_id: str | None) -> RayNode | None:
        return next((node for node in self.nodes if node.node_id and node.node_id == node_id), None)

    def node_of_pid(self, pid: int | None) -> RayNode | None:
        """The node whose session holds ``pid`` (None: no node's)."""
        if pid is None:
            return None
        try:
            sid = os.getsid(pid)
        except OSError:
            return None
        return next((node for node in self.nodes if node.sid == sid), None)

    def driver_env(self, **overrides: str) -> dict[str, str]:
        """The environment of a driver process for this cluster: ``RAY_ADDRESS`` = the head, the project's venv first
        on PATH."""
        return {**self.env, "RAY_ADDRESS": self.address, "MLFLOW_DISABLE_TELEMETRY": "true", **overrides}

    def stop(self) -> None:
        """Stop every node (workers first, the head last), then remove the temp dirs; nothing is left running."""
        for node in reversed(self.nodes):
            if node.alive:
                node.process.terminate()  # `ray start --block` stops what it started on SIGTERM
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(30)
            _kill_session(node.sid)  # whatever outlived it
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


class ClusterJob(JobProcess):
    """The scoring job as a driver of ``cluster``: ``python -m pipelines.stream --config CONFIG [--actors K]`` with
    ``RAY_ADDRESS`` = the head, in a session of its own (status, waiting and stopping as :class:`JobProcess`)."""

    def __init__(self, cluster: RayCluster, config: Path, log: Path, actors: int | None = None) -> None:
        super().__init__(config, cluster.driver_env(), log)
        self.actors = actors

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.status_path.unlink()  # a previous run's "stopped" file is not this run's status
        actors = [] if self.actors is None else ["--actors", str(self.actors)]
        with open(self.log, "a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "pipelines.stream", "--config", str(self.config),
                                             *actors], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
