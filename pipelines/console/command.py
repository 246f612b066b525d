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
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from configs import ConfigError, Settings
from connectors.kafka import wait_until_ready
from pipelines.commandline import ConfigOption, settings_for
from pipelines.console.auth import hash_password
from pipelines.console.jobstatus import StatusWatch
from pipelines.console.kafka_io import KafkaLabelSink, alerts_feed
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


async def serve(settings: Settings, bootstrap: str | None, sock: socket.socket, secret: bytes) -> None:
    """Run the console on ``sock`` until Ctrl-C / SIGTERM (uvicorn's handlers)."""
    import uvicorn

    await wait_until_ready(settings.kafka, bootstrap)
    labels = KafkaLabelSink(settings, bootstrap)
    await labels.start()
    service = ConsoleService(settings, labels)
    app = create_app(settings, service, secret=secret, status=StatusWatch(settings.stream.status_path),
                     feed=alerts_feed(settings, bootstrap), on_shutdown=labels.stop)  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    who = "no sign-in (loopback only)" if not settings.console.users else f"{len(settings.console.users)} users"
    console.print(f"console at {address(sock)} · {who} · Ctrl-C to stop", highlight=False, soft_wrap=True)
    await server.serve(sockets=[sock])


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
