"""What the console tests share: alerts, settings with users, the app served by a real uvicorn, an HTTP client.

The app runs on a real server in a thread (no test client: what the browser
talks to is what is tested). Its two adapters are the in-memory ones below:
:class:`ListSink` stands in for the labels topic, :class:`QueueFeed` for the
alerts topic (the real ones are tested against the broker in
tests/integration/test_console.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from configs import ConsoleSettings, ConsoleUser, Settings, StreamSettings
from contracts import Alert, FeatureContribution, Reasons
from pipelines.console.auth import hash_password
from pipelines.console.jobstatus import StatusWatch
from pipelines.console.registry import RegistryWatch
from pipelines.console.service import ConsoleService
from pipelines.console.web import create_app

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PASSWORDS = {"ana": "ana-secret-1", "vic": "vic-secret-1"}


def alert(n: int, account: str = "acc-1", *, decision: str = "review", score: float = 0.996,
          rules: tuple[str, ...] = (), challenger: float | None = None) -> Alert:  # fmt: skip
    return Alert(
        alert_id=f"alert-{n}", transaction_id=f"tx-{n}", account_id=account, event_time=T0 + n * 1000,
        score=score, decision=decision,  # type: ignore[arg-type]
        reasons=Reasons(rules=list(rules), top_features=[FeatureContribution(name="amount_ratio", value=4.5,
                                                                            contribution=3.4)]),
        model_versions={"anomaly": "hst-1", "classifier": "fraud-classifier/3"}, feature_version="fs1-test",
        ingest_time=T0 + n * 1000 + 5, alert_time=T0 + n * 1000 + 17, challenger_score=challenger,
    )  # fmt: skip


def console_settings(tmp_path: Path, *, users: bool = True, **console: Any) -> Settings:
    """Settings with an analyst ``ana`` and a viewer ``vic`` (cheap hashes), files under ``tmp_path``."""
    accounts = {
        "ana": ConsoleUser(password_hash=hash_password(PASSWORDS["ana"], n=2**10), role="analyst"),
        "vic": ConsoleUser(password_hash=hash_password(PASSWORDS["vic"], n=2**10), role="viewer"),
    } if users else {}  # fmt: skip
    options = {"users": accounts, "audit_path": str(tmp_path / "verdicts.jsonl"), "status_interval_s": 0.2, **console}
    return Settings(console=ConsoleSettings(**options),
                    stream=StreamSettings(status_path=str(tmp_path / "status.json")))  # fmt: skip


@dataclass
class ListSink:
    """The labels topic in memory: every record sent, in order; ``failing`` makes sends raise as a broker would."""

    sent: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    failing: bool = False

    async def send(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self.failing:
            raise ConnectionError("broker away")
        self.sent.append((key, value, headers))


class QueueFeed:
    """The alerts topic in memory: alerts put here from the test's thread reach the app's queue."""

    def __init__(self) -> None:
        self.pending: queue.Queue[Alert] = queue.Queue()

    def put(self, *alerts: Alert) -> None:
        for item in alerts:
            self.pending.put(item)

    async def __call__(self, service: ConsoleService, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                service.ingest(self.pending.get_nowait())
            except queue.Empty:
                await asyncio.sleep(0.01)


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Console:
    """A console being served: its address, adapters and service."""

    port: int
    sink: Any
    feed: Any
    service: ConsoleService
    clock: Clock

    def client(self) -> Client:
        return Client(self.port)

    def wait_kept(self, count: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.service.queue) < count:
            assert time.monotonic() < deadline, f"the queue has {len(self.service.queue)} alerts, not {count}"
            time.sleep(0.01)


@contextlib.contextmanager
def serving(settings: Settings, *, sink: Any = None, feed: Any = None, clock: Clock | None = None,
            on_shutdown: Any = None, registry: RegistryWatch | None = None) -> Iterator[Console]:  # fmt: skip
    """The console app on a real uvicorn server on a free loopback port, stopped at the end (by default with the
    in-memory adapters; the Kafka ones in tests/integration/test_console.py; no registry versions without
    ``registry``)."""
    sink, clock, feed = sink if sink is not None else ListSink(), clock or Clock(), feed or QueueFeed()
    service = ConsoleService(settings, sink, clock=clock)
    app = create_app(settings, service, secret=b"s" * 32, status=StatusWatch(settings.stream.status_path), feed=feed,
                     registry=registry, on_shutdown=on_shutdown, clock=clock)  # fmt: skip
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the console did not start"
        time.sleep(0.01)
    try:
        yield Console(sock.getsockname()[1], sink, feed, service, clock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> str:
        assert isinstance(self.body, dict) and set(self.body) == {"error"}, self.body
        return str(self.body["error"])


class Client:
    """A browser's requests: JSON in and out, the session cookie kept, the CSRF token sent when asked."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: str | None = None
        self.csrf: str | None = None

    def request(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                raw: bytes | None = None, csrf: bool = True) -> Answer:  # fmt: skip
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = {"Accept": "application/json", **(headers or {})}
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        if self.cookie:
            sent["Cookie"] = self.cookie
        if csrf and self.csrf and method != "GET":
            sent["X-CSRF-Token"] = self.csrf
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        content = response.read()
        connection.close()
        cookie = response.getheader("set-cookie")
        if cookie:
            value = cookie.split(";")[0]
            self.cookie = None if value.endswith(('=""', "=")) else value
        kind = response.getheader("content-type", "")
        parsed = json.loads(content) if kind.startswith("application/json") else content.decode()
        return Answer(response.status, parsed, {k.lower(): v for k, v in response.getheaders()})

    def get(self, path: str, **options: Any) -> Answer:
        return self.request("GET", path, **options)

    def post(self, path: str, body: Any = None, **options: Any) -> Answer:
        return self.request("POST", path, body, **options)

    def open_session(self) -> Answer:
        """An open console's session (no users): the cookie and CSRF token /api/session hands out."""
        answer = self.get("/api/session")
        assert answer.status == 200, answer.body
        self.csrf = answer.body["csrf"]
        return answer

    def login(self, user: str) -> Answer:
        answer = self.post("/api/login", {"username": user, "password": PASSWORDS[user]})
        assert answer.status == 200, answer.body
        self.csrf = answer.body["csrf"]
        return answer

    @contextlib.contextmanager
    def events(self, path: str = "/api/events", timeout_s: float = 5.0) -> Iterator[EventStream]:
        """The page's event stream, open for the block."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        connection.request("GET", path, headers={"Cookie": self.cookie or "", "Accept": "text/event-stream"})
        response = connection.getresponse()
        try:
            yield EventStream(response)
        finally:
            connection.close()


class EventStream:
    """Server-sent events as they come: (name, data); keep-alive comments left out."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response
        self.status = response.status
        self.content_type = response.getheader("content-type", "")

    def next(self) -> tuple[str, Any]:
        name = None
        while True:
            line = self.response.readline().decode()
            if not line:
                raise EOFError("the event stream ended")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: ") and name is not None:
                return name, json.loads(line[len("data: "):])
