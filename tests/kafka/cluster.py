"""A real, replicated Apache Kafka 4.x test cluster (KRaft), started from jars that Maven fetches.

Three combined broker+controller nodes on loopback, each with four listeners:

- ``CONTROLLER`` (PLAINTEXT): the KRaft quorum (static ``controller.quorum.voters``);
- ``INTERNAL`` (PLAINTEXT): replication between brokers; never behind a fault proxy;
- ``PLAINTEXT``: admin and test clients, principal ``User:ANONYMOUS`` (a super user);
- ``SASL_SSL``: SCRAM-SHA-512 over TLS with certificates from a CA made here, for the job's clients.

``StandardAuthorizer`` with ACLs (:data:`JOB_TOPICS_READ` and friends): the job's principal reads
``transactions``/``labels``, writes ``alerts``, the DLQ and the terminal topics (which its terminal stage
also reads), uses consumer groups and transactional ids named ``fraudstream*``, and nothing else; the
reader principal only reads ``alerts``. ``admin`` is a super user on SASL_SSL.

Where the jars come from: ``FRAUDSTREAM_KAFKA_HOME`` (a Kafka distribution, or its ``libs/``), else
``mvn dependency:copy-dependencies`` over ``tests/kafka/pom.xml`` into
``~/.cache/fraudstream/kafka-<version>/libs`` (Maven's local repository beside it, in ``m2/``), reused
on the next run. :func:`missing_tools` says in one line what to install when Java, Maven or openssl is
missing.

Each broker runs as ``java -cp 'libs/*' kafka.Kafka server.properties`` in a process group of its own;
a watchdog process kills every broker when the Python process that started them dies, however it dies.
Clients outside the brokers can be made to go through a loopback proxy (``tests/integration/faultproxy``):
pass ``advertise=`` to choose the port each broker advertises for the PLAINTEXT and SASL_SSL listeners.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

LOOPBACK = "127.0.0.1"
POM = Path(__file__).with_name("pom.xml")
DEFAULT_VERSION = "4.4.0"
MECHANISM = "SCRAM-SHA-512"
LISTENERS = ("PLAINTEXT", "SASL_SSL", "INTERNAL", "CONTROLLER")
#: The listeners clients use: the ones ``advertise=`` may put behind a proxy.
CLIENT_LISTENERS = ("PLAINTEXT", "SASL_SSL")

#: The topics of configs/cluster.yaml, and what the job's principal may do on each.
JOB_TOPICS_READ = ("transactions", "labels", "terminal.deltas", "terminal.risk")
JOB_TOPICS_WRITE = ("alerts", "transactions.dlq", "terminal.deltas", "terminal.risk")
#: Consumer groups and transactional ids of the job start with its client id (PREFIXED ACLs).
JOB_PREFIX = "fraudstream"
READER_TOPICS_READ = ("alerts",)

T = TypeVar("T")


class KafkaClusterError(RuntimeError):
    """The test cluster could not be fetched, started or made ready (the message says why)."""


@dataclass(frozen=True)
class User:
    name: str
    password: str

    @property
    def principal(self) -> str:
        return f"User:{self.name}"


@dataclass
class Broker:
    """One combined broker+controller node; ``ports`` are where it listens, ``advertised`` what it tells clients."""

    node_id: int
    directory: Path
    ports: dict[str, int]
    advertised: dict[str, int]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: Killed or stopped by the test (not expected by :meth:`KafkaCluster.wait_ready` until started again).
    down: bool = False

    @property
    def config_file(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.directory / "logs" / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.directory / "logs" / "stdout.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.alive and self.process is not None else None


# -- tools and jars -------------------------------------------------------------------------------------


def kafka_version() -> str:
    return os.environ.get("FRAUDSTREAM_KAFKA_VERSION", DEFAULT_VERSION)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fraudstream"


def _kafka_home_libs() -> Path | None:
    """``libs/`` of the distribution in FRAUDSTREAM_KAFKA_HOME (the variable may name the folder or its libs/)."""
    home = os.environ.get("FRAUDSTREAM_KAFKA_HOME")
    if not home:
        return None
    path = Path(home).expanduser()
    return path / "libs" if (path / "libs").is_dir() else path


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java_binary() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def missing_tools() -> str | None:
    """None when the cluster can start here, else one line naming what to install (or set)."""
    needs: list[str] = []
    java = java_binary()
    if java is None:
        needs.append("a Java 17+ runtime (apt-get install openjdk-17-jre-headless)")
    elif (major := _java_major(java)) is None or major < 17:
        needs.append(f"Java 17+ (found {java}: version {major}; apt-get install openjdk-17-jre-headless or set JAVA_HOME)")
    libs = _kafka_home_libs()
    if libs is not None:
        if not any(libs.glob("kafka_2.13-*.jar")):
            needs.append(f"a Kafka 4.x distribution at FRAUDSTREAM_KAFKA_HOME={os.environ['FRAUDSTREAM_KAFKA_HOME']} "
                         "(no libs/kafka_2.13-*.jar there)")
    elif shutil.which("mvn") is None and not _cached_libs_ok(kafka_version()):
        needs.append("Maven (apt-get install maven), or FRAUDSTREAM_KAFKA_HOME set to a Kafka 4.x distribution")
    if shutil.which("openssl") is None:
        needs.append("openssl (apt-get install openssl)")
    if not needs:
        return None
    return "Kafka test cluster needs " + "; ".join(needs)


def _pom_stamp(version: str) -> str:
    return hashlib.sha256(POM.read_bytes() + version.encode()).hexdigest()


def _cached_libs_ok(version: str) -> bool:
    marker = cache_root() / f"kafka-{version}" / "libs" / ".complete"
    return marker.is_file() and marker.read_text().strip() == _pom_stamp(version)


@dataclass
class FetchReport:
    libs: Path
    fetched: bool  # False: reused from the cache (or FRAUDSTREAM_KAFKA_HOME)
    seconds: float
    jar_bytes: int


def fetch_kafka(version: str | None = None, timeout_s: float = 900) -> FetchReport:
    """The broker's classpath folder: FRAUDSTREAM_KAFKA_HOME's libs, or the Maven-fetched cache (made once)."""
    started = time.monotonic()
    home_libs = _kafka_home_libs()
    if home_libs is not None:
        return FetchReport(home_libs, False, 0.0, _size(home_libs))
    version = version or kafka_version()
    target = cache_root() / f"kafka-{version}"
    libs = target / "libs"
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:  # two test runs at once: one fetches, the other waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _cached_libs_ok(version):
            return FetchReport(libs, False, time.monotonic() - started, _size(libs))
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaClusterError("Maven (mvn) is not installed: apt-get install maven, or set FRAUDSTREAM_KAFKA_HOME")
        staging = target / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        command = [mvn, "-B", "-q", "-f", str(POM), f"-Dmaven.repo.local={cache_root() / 'm2'}",
                   f"-Dkafka.version={version}", "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=target)
        except subprocess.TimeoutExpired as exc:
            raise KafkaClusterError(f"mvn did not fetch Kafka {version} within {timeout_s:.0f}s") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise KafkaClusterError(f"mvn could not fetch Kafka {version} (exit {done.returncode}):\n{tail}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (libs / ".complete").write_text(_pom_stamp(version) + "\n")
        return FetchReport(libs, True, time.monotonic() - started, _size(libs))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.jar"))


# -- certificates ---------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise KafkaClusterError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA (EC P-256, valid 7 days): (certificate PEM, key PEM)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key.name, "-out", cert.name, "-days", "7", "-subj", f"/CN=fraudstream test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return cert, key


def make_broker_keystore(directory: Path, name: str, ca: tuple[Path, Path], password: str) -> Path:
    """A PKCS12 keystore with the broker's key and its certificate (SAN: 127.0.0.1, localhost), signed by ``ca``."""
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-set_serial",
             str(uuid.uuid4().int >> 65), "-days", "7", "-extfile", ext.name, "-out", f"{name}.pem", cwd=directory)
    keystore = directory / f"{name}.p12"
    _openssl("pkcs12", "-export", "-in", f"{name}.pem", "-inkey", f"{name}.key", "-certfile", str(ca[0]),
             "-name", name, "-out", keystore.name, "-passout", f"pass:{password}", cwd=directory)
    return keystore


# -- the cluster ----------------------------------------------------------------------------------------


def _listen_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports, free now and outside the kernel's ephemeral range: a port from bind(0)
    can be taken as the local end of some process's outgoing connection before the broker binds it (or while
    it is down between a kill and a restart); ports outside that range are only ever taken by an explicit bind."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    pool = list(range(10000, low)) if low > 12000 else list(range(high + 1, 65536))
    held: list[socket.socket] = []
    try:
        for port in random.sample(pool, len(pool)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            if len(held) == count:
                return [int(s.getsockname()[1]) for s in held]
    finally:
        for sock in held:
            sock.close()
    raise KafkaClusterError(f"not {count} free loopback ports in {pool[0]}-{pool[-1]}")


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding, not starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _run_coro(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="kafka-cluster-sync")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class _NoConnectErrors(logging.Filter):
    """Drops aiokafka's "Unable connect" lines while brokers are still starting (as connectors/kafka.py does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect")


_WATCHDOG = r"""
import os, signal, sys
sys.stdin.read()  # EOF: the process that started the brokers is gone
try:
    pgids = [int(x) for x in open(sys.argv[1]).read().split()]
except OSError:
    pgids = []
for pgid in pgids:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c{{1}})%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = INFO
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""


@dataclass
class KafkaCluster:
    """N combined KRaft nodes in ``workdir`` (see the module docstring). Use as a context manager, or
    ``start()`` / ``stop()``; every method that waits has a timeout and says what it waited for."""

    workdir: Path
    size: int = 3
    heap: str = "256m"
    #: (node_id, listener, port) -> the port that broker advertises on that client listener (a proxy's).
    advertise: Callable[[int, str, int], int] | None = None
    #: Extra broker settings (``server.properties`` keys), applied to every node after the defaults.
    overrides: dict[str, str] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=lambda: {
        "admin": User("admin", "admin-secret"),
        "job": User(JOB_PREFIX, "job-secret"),
        "reader": User("alerts-reader", "reader-secret"),
    })
    libs: Path | None = None
    brokers: list[Broker] = field(default_factory=list)
    cluster_id: str = field(default_factory=_kafka_uuid)
    timings: dict[str, float] = field(default_factory=dict)

    # -- addresses and credentials ------------------------------------------------------------------
    @property
    def job(self) -> User:
        return self.users["job"]

    @property
    def reader(self) -> User:
        return self.users["reader"]

    @property
    def admin(self) -> User:
        return self.users["admin"]

    @property
    def ca_file(self) -> Path:
        """The CA that signed every broker certificate (PEM), for the clients' ``ssl_ca_file``."""
        return self.workdir / "tls" / "ca.pem"

    @property
    def other_ca_file(self) -> Path:
        """A CA that signed nothing here: a client trusting only it must fail the TLS handshake."""
        return self.workdir / "tls" / "other-ca.pem"

    def bootstrap(self, listener: str = "SASL_SSL", advertised: bool = True) -> str:
        """``host:port,…`` of every broker on ``listener`` (the advertised ports: through proxies if any)."""
        ports = [(b.advertised if advertised else b.ports)[listener] for b in self.brokers]
        return ",".join(f"{LOOPBACK}:{p}" for p in ports)

    @property
    def plaintext_bootstrap(self) -> str:
        return self.bootstrap("PLAINTEXT")

    @property
    def sasl_ssl_bootstrap(self) -> str:
        return self.bootstrap("SASL_SSL")

    def broker(self, node_id: int) -> Broker:
        for broker in self.brokers:
            if broker.node_id == node_id:
                return broker
        raise KeyError(f"no broker {node_id} (nodes: {[b.node_id for b in self.brokers]})")

    def client_kwargs(self, user: User | str | None = "job", *, password: str | None = None,
                      ca_file: Path | str | None = None, **extra: Any) -> dict[str, Any]:
        """aiokafka keyword arguments: SASL_SSL/SCRAM-SHA-512 as ``user`` (a User or a key of ``users``),
        or PLAINTEXT (super user ANONYMOUS) when ``user`` is None. ``password``/``ca_file`` override
        the right ones (to test failures)."""
        if user is None:
            return {"bootstrap_servers": self.plaintext_bootstrap, "security_protocol": "PLAINTEXT", **extra}
        from aiokafka.helpers import create_ssl_context

        who = self.users[user] if isinstance(user, str) else user
        context = create_ssl_context(cafile=str(ca_file or self.ca_file))
        return {
            "bootstrap_servers": self.sasl_ssl_bootstrap,
            "security_protocol": "SASL_SSL",
            "ssl_context": context,
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": who.name,
            "sasl_plain_password": who.password if password is None else password,
            **extra,
        }

    def password_env(self, user: User | str) -> str:
        """The environment variable that :meth:`kafka_settings` names for ``user``'s password."""
        who = self.users[user] if isinstance(user, str) else user
        return "FRAUDSTREAM_TEST_KAFKA_PASSWORD_" + re.sub(r"\W", "_", who.name).upper()

    def kafka_settings(self, base: Any, user: User | str = "job") -> Any:
        """``base`` (a configs.KafkaSettings) pointed at this cluster's SASL_SSL listener as ``user``; the
        password is read from :meth:`password_env` (the fixture exports it)."""
        import msgspec

        who = self.users[user] if isinstance(user, str) else user
        return msgspec.structs.replace(
            base, embedded=False, bootstrap_servers=tuple(self.sasl_ssl_bootstrap.split(",")),
            security_protocol="SASL_SSL", ssl_ca_file=str(self.ca_file), ssl_check_hostname=True,
            sasl_mechanism=MECHANISM, sasl_username=who.name, sasl_password_env=self.password_env(who))

    # -- life cycle ---------------------------------------------------------------------------------
    def __enter__(self) -> KafkaCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 180) -> KafkaCluster:
        """Fetch the jars (once), make certificates, format storage with the SCRAM users, start every node,
        wait until all are registered, then add the ACLs."""
        clock = time.monotonic()
        if self.libs is None:
            report = fetch_kafka()
            self.libs = report.libs
            self.timings["fetch_s"] = report.seconds
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_watchdog()
        self._make_tls()
        self._lay_out()
        step = time.monotonic()
        self._format_all()
        self.timings["format_s"] = time.monotonic() - step
        step = time.monotonic()
        for broker in self.brokers:
            self.start_broker(broker.node_id)
        self.wait_ready(timeout_s)
        self.timings["brokers_ready_s"] = time.monotonic() - step
        step = time.monotonic()
        self.add_acls(self.standard_acls())
        self.timings["acls_s"] = time.monotonic() - step
        self.timings["start_s"] = time.monotonic() - clock
        return self

    def stop(self) -> None:
        """Kill every broker (the data is thrown away with ``workdir``) and the watchdog."""
        for broker in self.brokers:
            self.kill_broker(broker.node_id)
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=5)
            self._watchdog = None

    def start_broker(self, node_id: int) -> Broker:
        """Start (or restart) one node on its ports and data; returns at once (see :meth:`wait_ready`)."""
        broker = self.broker(node_id)
        if broker.alive:
            raise KafkaClusterError(f"broker {node_id} is already running (pid {broker.pid})")
        assert self.libs is not None
        broker.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(broker.stdout_file, "ab") as out:
            out.write(f"--- start {broker.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            broker.process = subprocess.Popen(
                self._java_command(broker, "kafka.Kafka", str(broker.config_file)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=broker.directory,
                start_new_session=True,  # a process group of its own: kill -9 reaches every thread and child
            )
        broker.starts += 1
        broker.down = False
        self._write_pids()
        return broker

    def kill_broker(self, node_id: int, sig: int = signal.SIGKILL, timeout_s: float = 30) -> None:
        """Send ``sig`` (kill -9 by default) to the node's process group and wait for it to end."""
        broker = self.broker(node_id)
        broker.down = True
        process = broker.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self._write_pids()

    def stop_broker(self, node_id: int, timeout_s: float = 60) -> None:
        """A clean shutdown (SIGTERM: controlled shutdown, leadership moved away); kill -9 after ``timeout_s``."""
        self.kill_broker(node_id, signal.SIGTERM, timeout_s)

    def restart_broker(self, node_id: int, *, kill: bool = True, timeout_s: float = 120) -> None:
        """Kill -9 (or stop) one node, start it again and wait until the whole cluster is ready."""
        (self.kill_broker if kill else self.stop_broker)(node_id)
        self.start_broker(node_id)
        self.wait_ready(timeout_s)

    # -- readiness ----------------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float = 120, nodes: Iterable[int] | None = None) -> None:
        """Until every started node (not killed or stopped since; or ``nodes``) is registered and unfenced in
        the metadata each of them serves on its own PLAINTEXT port, and accepts TCP on its SASL_SSL port.
        A node that exits meanwhile, or the timeout, raises KafkaClusterError with the logs' tails."""
        _run_coro(self.wait_ready_async(timeout_s, nodes))

    async def wait_ready_async(self, timeout_s: float = 120, nodes: Iterable[int] | None = None) -> None:
        quiet = _NoConnectErrors()
        logger = logging.getLogger("aiokafka")
        logger.addFilter(quiet)
        try:
            await self._wait_ready(timeout_s, nodes)
        finally:
            logger.removeFilter(quiet)

    async def _wait_ready(self, timeout_s: float, nodes: Iterable[int] | None) -> None:
        wanted = set(nodes) if nodes is not None else {b.node_id for b in self.brokers
                                                       if b.process is not None and not b.down}
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            dead = [b for b in self.brokers if b.node_id in wanted and not b.alive]
            if dead:
                broker = dead[0]
                code = broker.process.returncode if broker.process is not None else None
                raise KafkaClusterError(f"broker {broker.node_id} exited (code {code}) while starting\n"
                                        + self.log_tail(broker.node_id))
            try:
                seen = await self._registered_brokers(wanted)
                missing = wanted - seen
                if not missing:
                    for broker in self.brokers:
                        if broker.node_id in wanted:
                            self._tcp_check(broker.ports["SASL_SSL"])
                    return
                last = f"registered and unfenced: {sorted(seen)}, still missing {sorted(missing)}"
            except (TimeoutError, KafkaError, OSError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.5)
        tails = "\n".join(self.log_tail(n) for n in sorted(wanted))
        raise KafkaClusterError(f"Kafka cluster not ready within {timeout_s:.0f}s ({last})\n{tails}")

    async def _registered_brokers(self, wanted: set[int]) -> set[int]:
        """Node ids in the metadata of each wanted node, asked on its own PLAINTEXT port (a bootstrap request
        only: nothing goes to the advertised addresses, which may be proxies that are down): the common part."""
        common: set[int] | None = None
        for broker in self.brokers:
            if broker.node_id not in wanted:
                continue
            client = AIOKafkaClient(bootstrap_servers=f"{LOOPBACK}:{broker.ports['PLAINTEXT']}",
                                    request_timeout_ms=5000)
            try:
                await asyncio.wait_for(client.bootstrap(), 10)
                ids = {b.nodeId for b in client.cluster.brokers()}
            finally:
                await client.close()
            common = ids if common is None else common & ids
        return common or set()

    @staticmethod
    def _tcp_check(port: int) -> None:
        with socket.create_connection((LOOPBACK, port), timeout=5):
            pass

    def log_tail(self, node_id: int, lines: int = 25) -> str:
        """One node's first ERROR lines and last causes, then the tails of its server.log and stdout."""
        broker = self.broker(node_id)
        parts = [f"--- broker {node_id} ({broker.directory})"]
        for path in (broker.log_file, broker.stdout_file):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                text = ["(none)"]
            errors = [line for line in text if " ERROR " in line or " FATAL " in line][:5]
            causes = [line for line in text if line.startswith("Caused by:")][-3:]
            if errors or causes:
                parts.append(f"{path.name}, errors:\n" + "\n".join(errors + causes))
            parts.append(f"{path.name}, last lines:\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    # -- topics, ISR, ACLs ----------------------------------------------------------------------------
    async def create_topics(self, names: Iterable[str], partitions: int = 3, replication_factor: int = 3,
                            configs: dict[str, str] | None = None) -> None:
        """Create topics over the PLAINTEXT (admin) listener and wait until every replica is in sync."""
        names = list(names)
        admin = AIOKafkaAdminClient(**self.client_kwargs(None))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=replication_factor,
                                                topic_configs=configs or {}) for n in names])
        finally:
            await admin.close()
        for name in names:
            await self.wait_isr(name, replication_factor)

    async def describe_partitions(self, topic: str) -> dict[int, dict[str, Any]]:
        """partition -> {"leader": id, "replicas": [...], "isr": [...]} from the admin listener."""
        admin = AIOKafkaAdminClient(**self.client_kwargs(None))
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        found = described[0]
        if found["error_code"]:
            raise KafkaClusterError(f"describe {topic}: error code {found['error_code']}")
        return {p["partition"]: {"leader": p["leader"], "replicas": list(p["replicas"]), "isr": list(p["isr"])}
                for p in found["partitions"]}

    async def wait_isr(self, topic: str, size: int, timeout_s: float = 60) -> dict[int, dict[str, Any]]:
        """Until every partition of ``topic`` has ``size`` replicas in sync (and a leader)."""
        deadline = time.monotonic() + timeout_s
        state: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(KafkaError, KafkaClusterError):
                state = await self.describe_partitions(topic)
                if state and all(len(p["isr"]) == size and p["leader"] >= 0 for p in state.values()):
                    return state
            await asyncio.sleep(0.5)
        raise KafkaClusterError(f"{topic}: ISR not {size} within {timeout_s:.0f}s: {state}")

    def standard_acls(self) -> list[list[str]]:
        """The ACLs of the issue, as ``AclCommand`` argument lists (one JVM each, run concurrently)."""
        job, reader = self.job.principal, self.reader.principal

        def topics(names: Sequence[str]) -> list[str]:
            return [arg for name in names for arg in ("--topic", name)]

        return [
            # Read and Write imply Describe; the job may not create, delete or alter anything
            ["--allow-principal", job, "--operation", "Read", *topics(JOB_TOPICS_READ)],
            ["--allow-principal", job, "--operation", "Write", *topics(JOB_TOPICS_WRITE)],
            ["--allow-principal", job, "--operation", "Read", "--group", JOB_PREFIX,
             "--resource-pattern-type", "prefixed"],
            # exactly-once: InitProducerId/AddPartitionsToTxn/EndTxn need Write on the transactional id (implies
            # Describe); TxnOffsetCommit needs Read on the group above. An idempotent producer without a
            # transactional id needs no IdempotentWrite on the cluster: Write on a topic is enough (KIP-679)
            ["--allow-principal", job, "--operation", "Write", "--transactional-id", JOB_PREFIX,
             "--resource-pattern-type", "prefixed"],
            ["--allow-principal", reader, "--operation", "Read", *topics(READER_TOPICS_READ)],
        ]

    def add_acls(self, acl_args: Sequence[Sequence[str]], timeout_s: float = 120) -> None:
        """``kafka-acls --add`` for each argument list, over the PLAINTEXT listener of broker 1."""
        server = f"{LOOPBACK}:{self.brokers[0].ports['PLAINTEXT']}"
        _run_all([
            (f"kafka-acls {' '.join(args)}",
             self._java_command(None, "org.apache.kafka.tools.AclCommand", "--bootstrap-server", server,
                                "--add", "--force", *args))
            for args in acl_args
        ], timeout_s)  # fmt: skip

    # -- internals ----------------------------------------------------------------------------------
    def _java_command(self, broker: Broker | None, main: str, *args: str) -> list[str]:
        java = java_binary()
        if java is None:
            raise KafkaClusterError(missing_tools() or "java not found")
        assert self.libs is not None
        if broker is None:  # a short-lived tool: small heap, quick start
            jvm = ["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
                   f"-Dlog4j2.configurationFile={self.workdir / 'tools-log4j2.properties'}"]
        else:
            jvm = [f"-Xmx{self.heap}", "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                   "-XX:MaxMetaspaceSize=128m", "-XX:ReservedCodeCacheSize=48m", "-XX:MaxDirectMemorySize=128m",
                   "-Xss512k", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                   f"-Dlog4j2.configurationFile={broker.directory / 'log4j2.properties'}",
                   f"-Dkafka.logs.dir={broker.log_file.parent}", f"-Dfraudstream.kafka.node={broker.node_id}"]
        return [java, *jvm, "-cp", f"{self.libs}/*", main, *args]

    def _start_watchdog(self) -> None:
        self._pid_file = self.workdir / "broker-pgids"
        self._pid_file.write_text("")
        self._watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self._pid_file)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def _write_pids(self) -> None:
        pid_file = getattr(self, "_pid_file", None)
        if pid_file is not None:
            pid_file.write_text(" ".join(str(b.process.pid) for b in self.brokers if b.alive and b.process))

    def _make_tls(self) -> None:
        tls = self.workdir / "tls"
        tls.mkdir(exist_ok=True)
        self._ca = make_ca(tls, "ca")
        make_ca(tls, "other-ca")
        self._store_password = "test-" + uuid.uuid4().hex[:12]

    def _lay_out(self) -> None:
        if self.brokers:
            return
        all_ports = _listen_ports(len(LISTENERS) * self.size)
        for node_id in range(1, self.size + 1):
            directory = self.workdir / f"broker-{node_id}"
            directory.mkdir(exist_ok=True)
            ports = dict(zip(LISTENERS, all_ports[len(LISTENERS) * (node_id - 1):len(LISTENERS) * node_id]))
            advertised = {listener: ports[listener] for listener in LISTENERS}
            if self.advertise is not None:
                for listener in CLIENT_LISTENERS:
                    advertised[listener] = self.advertise(node_id, listener, ports[listener])
            self.brokers.append(Broker(node_id, directory, ports, advertised))
        (self.workdir / "tools-log4j2.properties").write_text(
            "status = warn\nappender.err.type = Console\nappender.err.name = ERR\nappender.err.target = SYSTEM_ERR\n"
            "appender.err.layout.type = PatternLayout\nappender.err.layout.pattern = %p %m%n\n"
            "rootLogger.level = WARN\nrootLogger.appenderRef.err.ref = ERR\n")
        voters = ",".join(f"{b.node_id}@{LOOPBACK}:{b.ports['CONTROLLER']}" for b in self.brokers)
        for broker in self.brokers:
            keystore = make_broker_keystore(self.workdir / "tls", f"kafka-{broker.node_id}", self._ca,
                                            self._store_password)
            (broker.directory / "log4j2.properties").write_text(_LOG4J2.format(log_file=broker.log_file))
            config = self._server_properties(broker, voters, keystore)
            broker.config_file.write_text("".join(f"{k}={v}\n" for k, v in config.items()))

    def _server_properties(self, broker: Broker, voters: str, keystore: Path) -> dict[str, str]:
        p, a = broker.ports, broker.advertised
        config = {
            "process.roles": "broker,controller",
            "node.id": str(broker.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listeners": ",".join(f"{name}://{LOOPBACK}:{p[name]}" for name in LISTENERS),
            "advertised.listeners": ",".join(f"{name}://{LOOPBACK}:{a[name]}" for name in LISTENERS
                                             if name != "CONTROLLER"),
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,"
                                              "CONTROLLER:PLAINTEXT",
            "log.dirs": str(broker.directory / "data"),
            # SASL_SSL: SCRAM-SHA-512 (credentials in the cluster metadata, added at format time) over TLS
            "sasl.enabled.mechanisms": MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
            "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
            "listener.name.sasl_ssl.ssl.keystore.password": self._store_password,
            "listener.name.sasl_ssl.ssl.key.password": self._store_password,
            "listener.name.sasl_ssl.ssl.client.auth": "none",
            # authorization: ANONYMOUS is whoever uses a PLAINTEXT listener (admin, replication, the quorum)
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:ANONYMOUS;{self.admin.principal}",
            "allow.everyone.if.no.acl.found": "false",
            # durability of the issue
            "default.replication.factor": str(min(3, self.size)),
            "min.insync.replicas": str(min(2, self.size)),
            "offsets.topic.replication.factor": str(min(3, self.size)),
            "transaction.state.log.replication.factor": str(min(3, self.size)),
            "transaction.state.log.min.isr": str(min(2, self.size)),
            "auto.create.topics.enable": "false",
            # small and quick: few internal partitions, few threads, prompt failure detection and retention
            "num.partitions": "3",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.num.partitions": "6",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "2",
            "num.replica.fetchers": "1",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "log.retention.check.interval.ms": "2000",
            "replica.lag.time.max.ms": "10000",
            "broker.session.timeout.ms": "6000",  # also how long a restarted node waits to re-register
            "broker.heartbeat.interval.ms": "1000",
            "share.coordinator.state.topic.replication.factor": str(min(3, self.size)),
            "share.coordinator.state.topic.min.isr": str(min(2, self.size)),
        }
        config.update(self.overrides)
        return config

    def _format_all(self, timeout_s: float = 180) -> None:
        """``kafka-storage format`` of every node (concurrently), with the SCRAM users in the first metadata."""
        scram = [arg for user in self.users.values()
                 for arg in ("--add-scram", f"{MECHANISM}=[name={user.name},password={user.password}]")]
        _run_all([
            (f"format of broker {broker.node_id}",
             self._java_command(None, "kafka.tools.StorageTool", "format", "--cluster-id", self.cluster_id,
                                "--config", str(broker.config_file), "--ignore-formatted", *scram))
            for broker in self.brokers
        ], timeout_s)  # fmt: skip


def _run_all(commands: list[tuple[str, list[str]]], timeout_s: float) -> None:
    """Run the (what, command) pairs at once; KafkaClusterError with each failure's output tail."""
    procs = [(what, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True))
             for what, command in commands]  # fmt: skip
    errors = []
    for what, proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            errors.append(f"{what} failed (exit {proc.returncode}):\n{out[-1500:]}")
    if errors:
        raise KafkaClusterError("\n".join(errors))


def java_processes_of(workdir: Path) -> list[int]:
    """PIDs of Java processes whose command line mentions ``workdir`` (to check that none is left)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"java" in cmdline and str(workdir).encode() in cmdline:
                found.append(int(entry.name))
    return found


# -- the pytest fixture ------------------------------------------------------------------------------------


def skip_or_fail_without_tools() -> None:
    """Skip (one line naming what to install) when the cluster cannot start here; with CI=true, fail instead."""
    missing = missing_tools()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing} (CI=true: these tests must run)", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A started 3-broker cluster for the session (see :class:`KafkaCluster`), its users' passwords exported
    in :meth:`KafkaCluster.password_env`; every broker is killed at the end, also when a test fails."""
    skip_or_fail_without_tools()
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster"))
    with pytest.MonkeyPatch.context() as env:
        for user in cluster.users.values():
            env.setenv(cluster.password_env(user), user.password)
        with cluster:
            yield cluster
