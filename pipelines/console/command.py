"""`fraudstream console` (the web server) and `fraudstream console hash-password` (a hash for ``console.users``).

Start-up problems are one line and exit code 2, like every command: a console
open to the network without users, a port taken, an audit log that cannot be
written, no broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from configs import ConfigError, Settings
from connectors.kafka import wait_until_ready
from pipelines.commandline import ConfigOption, settings_for
from pipelines.console.auth import hash_password
from pipelines.console.jobstatus import StatusWatch
from pipelines.console.kafka_io import KafkaLabelSink, alerts_feed
from pipelines.console.registry import RegistryWatch
from pipelines.console.service import ConsoleService
from pipelines.console.web import create_app
from pipelines.session import kafka_for, running_embedded_broker

console = Console(stderr=True)

console_app = typer.Typer(
    help="The analysts' web console: the live alert queue, alert details, verdicts that become labels.",
)


def check_console(settings: Settings) -> bytes:
    """What must hold before the console starts (ConfigError, one line); the key that signs sessions."""
    problem = settings.console.exposure_problem()
    if problem:
        raise ConfigError(problem)
    audit = Path(settings.console.audit_path)
    try:
        audit.parent.mkdir(parents=True, exist_ok=True)
        with audit.open("ab"):
            pass
    except OSError as exc:
        raise ConfigError(f"config error: console.audit_path: cannot write {audit} ({exc.strerror}); "
                          "point console.audit_path at a writable file") from None  # fmt: skip
    secret = os.environ.get(settings.console.secret_key_env, "")
    if secret and len(secret) < 32:
        raise ConfigError(f"config error: console.secret_key_env: {settings.console.secret_key_env} holds fewer than "
                          "32 characters; use a long random key, e.g. python -c 'import secrets; "
                          "print(secrets.token_urlsafe(48))'")  # fmt: skip
    return secret.encode() if secret else secrets.token_bytes(32)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; ConfigError naming console.port / console.host when it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"config error: console.host: cannot listen on {host!r} ({exc}); use an address of this "
                          "machine, e.g. 127.0.0.1") from None  # fmt: skip
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"config error: console.port: cannot listen on {host}:{port} ({exc.strerror}); "
                          "choose another with --port") from None  # fmt: skip
    sock.setblocking(False)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(settings: Settings, bootstrap: str | None, sock: socket.socket, secret: bytes, *,
                announce: bool = True, on_server: Callable[[Any], None] | None = None) -> None:  # fmt: skip
    """Run the console on ``sock`` until Ctrl-C / SIGTERM (uvicorn's handlers; in the main thread) or until
    the uvicorn server handed to ``on_server`` is told to exit."""
    import uvicorn

    await wait_until_ready(settings.kafka, bootstrap)
    labels = KafkaLabelSink(settings, bootstrap)
    await labels.start()
    service = ConsoleService(settings, labels)
    app = create_app(settings, service, secret=secret, status=StatusWatch(settings.stream.status_path),
                     registry=RegistryWatch(settings), feed=alerts_feed(settings, bootstrap),
                     on_shutdown=labels.stop)  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    if on_server is not None:
        on_server(server)
    if announce:
        who = "no sign-in (loopback only)" if not settings.console.users else f"{len(settings.console.users)} users"
        console.print(f"console at {address(sock)} · {who} · Ctrl-C to stop", highlight=False, soft_wrap=True)
    await server.serve(sockets=[sock])


class ConsoleThread:
    """The console served from a thread of this process (``fraudstream demo --console``) until :meth:`stop`.

    The settings are checked (:func:`check_console`) and the socket bound by the caller, so that a start-up
    problem is one line before anything runs.
    """

    def __init__(self, settings: Settings, bootstrap: str | None, sock: socket.socket, secret: bytes) -> None:
        self.settings, self.bootstrap, self.sock, self.secret = settings, bootstrap, sock, secret
        self.url = address(sock)
        self.error: str | None = None
        self._server: Any = None
        self._thread = threading.Thread(target=self._run, name="fraudstream-console", daemon=True)

    def _run(self) -> None:
        def keep(server: Any) -> None:
            self._server = server

        try:
            asyncio.run(serve(self.settings, self.bootstrap, self.sock, self.secret, announce=False, on_server=keep))
        except BaseException as exc:  # uvicorn exits (SystemExit) when its start-up fails: start() says why
            self.error = f"{type(exc).__name__}: {exc}"

    def start(self, timeout_s: float = 60.0) -> str:
        """Serve; returns the console's address once it answers (ConfigError when it cannot start)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not (self._server is not None and self._server.started):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"console: did not start on {self.url} ({self.error or 'no answer in time'})")
            time.sleep(0.05)
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (open pages are told the stream ended) and close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.sock.close()


@console_app.callback(invoke_without_command=True)
def console_command(
    ctx: typer.Context,
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option("--port", "-p", help="Port to listen on (default: console.port).")] = None,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (overrides the config).")
    ] = None,
) -> None:
    """Serve the console: the live alert queue, alert details, the job's status, verdicts that become labels."""
    if ctx.invoked_subcommand is not None:
        return
    from pipelines.alerts import check_bootstrap

    check_bootstrap(bootstrap)
    settings = settings_for(config, {"console.port": port})
    secret = check_console(settings)
    sock = listen(settings.console.host, settings.console.port)
    if bootstrap is None and settings.kafka.embedded and running_embedded_broker() is None:
        console.print("[yellow]no `fraudstream broker` runs in this folder: the console's broker is new and empty; "
                      "start `fraudstream broker` (and the job) here, or pass --bootstrap HOST:PORT[/yellow]",
                      soft_wrap=True)  # fmt: skip
    if not os.environ.get(settings.console.secret_key_env) and settings.console.users:
        console.print(f"[dim]{escape(settings.console.secret_key_env)} is not set: sessions end when the console "
                      "stops[/dim]", soft_wrap=True)  # fmt: skip
    # uvicorn stops on the first Ctrl-C; a second one ends here
    with sock, kafka_for(settings, bootstrap) as servers, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, servers, sock, secret))


@console_app.command("hash-password")
def hash_password_command() -> None:
    """Print a password hash for console.users (the password is read from stdin, or asked for)."""
    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("hash-password: the password is empty; type one, or pipe it on stdin")
    typer.echo(hash_password(password))
