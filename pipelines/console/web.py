"""The console's web application (FastAPI): the page, its JSON API and its live event stream.

:func:`create_app` takes the settings, a :class:`~pipelines.console.service.ConsoleService`
(whose label sink is Kafka in `fraudstream console`, a list in tests) and,
optionally, the feed that fills its queue (the Kafka alerts reader), run for
the app's lifetime. Every error is a 4xx JSON ``{"error": "..."}`` saying what
to do (5xx only when Kafka refuses a label or a bug; the page never sees a traceback).

Who may do what is :mod:`~pipelines.console.access`; what a request carries is
checked in :mod:`~pipelines.console.inputs`. Writes take JSON only, which no
cross-site form can send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from configs import Settings
from pipelines.alerts import AlertFilter
from pipelines.console.access import COOKIE, Access, Guard, error_response, set_cookie
from pipelines.console.auth import LOCAL_USER, Principal, Session
from pipelines.console.events import sse
from pipelines.console.inputs import (
    LoginRequest,
    VerdictRequest,
    alert_filter,
    checked_alert_id,
    json_body,
    limit_of,
)
from pipelines.console.jobstatus import JobSummary, StatusWatch
from pipelines.console.registry import RegistryWatch
from pipelines.console.service import ConsoleService, Refusal

log = logging.getLogger("fraudstream.console")

#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE_S = 15.0
_ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
Feed = Callable[[ConsoleService, asyncio.Event], Awaitable[None]]


def _asset(name: str) -> bytes:
    return resources.files("pipelines.console").joinpath("static", name).read_bytes()


def create_app(settings: Settings, service: ConsoleService, *, secret: bytes, status: StatusWatch,
               registry: RegistryWatch | None = None, feed: Feed | None = None,
               on_shutdown: Callable[[], Awaitable[None]] | None = None,
               clock: Callable[[], float] | None = None) -> FastAPI:  # fmt: skip
    """The console's app; ``feed`` (the alerts reader) runs from start-up to shutdown, then ``on_shutdown``
    (e.g. stopping the labels producer) is awaited. With ``registry``, the job's status carries the versions
    the registry's aliases name beside those served."""
    access = Access(settings, secret, clock or service.clock)
    stopping = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stopping.clear()
        tasks = [asyncio.create_task(_tick_status(service, status, registry, settings.console.status_interval_s,
                                                  stopping))]  # fmt: skip
        if feed is not None:
            tasks.append(asyncio.create_task(_run_feed(feed, service, stopping)))
        try:
            yield
        finally:
            stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if on_shutdown is not None:
                await on_shutdown()

    app = FastAPI(title="fraudstream console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, open_console=access.directory.open)
    app.state.service, app.state.access = service, access
    _install_error_handlers(app)

    @app.get("/")
    async def page() -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8")

    @app.get("/static/{name}")
    async def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise Refusal(404, f"no asset {name!r}")
        return Response(_asset(name), media_type=f"{_ASSETS[name]}; charset=utf-8")

    @app.get("/api/session")
    async def session(request: Request) -> Response:
        if access.directory.open and access.sessions.read(request.cookies.get(COOKIE)) is None:
            local = Principal(LOCAL_USER, "analyst")
            token, new = access.sessions.issue(local)
            response = _json(access.view(new, local))
            set_cookie(response, request, token, access.sessions.ttl_s)
            return response
        current, principal = access.session(request)
        return _json(access.view(current, principal))

    @app.post("/api/login")
    async def login(request: Request) -> Response:
        if access.directory.open:
            raise Refusal(400, "sign-in is off: console.users is empty (this console is open on loopback only)")
        body: LoginRequest = await json_body(request, LoginRequest)
        wait_s = access.throttle.wait_s(body.username)
        if wait_s:
            raise Refusal(429, f"too many wrong passwords for this user: try again in {wait_s:.0f} s")
        principal = await asyncio.to_thread(access.directory.authenticate, body.username, body.password)
        if principal is None:
            access.throttle.failed(body.username)
            log.warning("failed sign-in for user %r", body.username[:64])
            raise Refusal(401, "wrong user name or password")
        access.throttle.succeeded(body.username)
        token, new = access.sessions.issue(principal)
        response = _json(access.view(new, principal))
        set_cookie(response, request, token, access.sessions.ttl_s)
        return response

    @app.post("/api/logout")
    async def logout(request: Request) -> Response:
        current, _ = access.writer(request)
        access.sessions.revoke(current)
        response = _json({"signed_out": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/api/alerts")
    async def alerts(request: Request) -> Response:
        access.session(request)
        chosen, limit = alert_filter(request, extra=("limit",)), limit_of(request)
        return _json({"alerts": service.alerts(chosen, limit), "kept": len(service.queue)})

    @app.get("/api/alerts/{alert_id}")
    async def alert(alert_id: str, request: Request) -> Response:
        access.session(request)
        return _json(service.detail(checked_alert_id(alert_id)))

    @app.post("/api/alerts/{alert_id}/verdict")
    async def verdict(alert_id: str, request: Request) -> Response:
        _, principal = access.writer(request)
        if not principal.may_give_verdicts:
            raise Refusal(403, f"user {principal.name!r} is a {principal.role}: only an analyst gives verdicts")
        body: VerdictRequest = await json_body(request, VerdictRequest)
        record = await service.give_verdict(checked_alert_id(alert_id), body.verdict, body.replace, principal)
        return _json(record)

    @app.get("/api/status")
    async def job_status(request: Request) -> Response:
        access.session(request)
        return _json(await _status_now(status, registry))

    @app.get("/api/events")
    async def events(request: Request) -> Response:
        current, _ = access.session(request)
        chosen = alert_filter(request)
        return StreamingResponse(_event_stream(service, status, registry, access, current, chosen, stopping),
                                 media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})  # fmt: skip

    return app


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refusal)
    async def refused(request: Request, exc: Refusal) -> Response:
        return error_response(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"no such page or endpoint: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))  # fmt: skip
        return error_response(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, f"bad request: {exc.errors()[0].get('msg', 'invalid input') if exc.errors() else exc}")

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        log.exception("console error on %s %s", request.method, request.url.path)
        return error_response(500, "the console failed on this request (its log has the details)")


async def _status_now(status: StatusWatch, registry: RegistryWatch | None) -> JobSummary:
    """The job's summary, with the registry's versions when the console looks at them (asked in a thread:
    MLflow blocks)."""
    summary = status.read()
    if registry is None:
        return summary
    return msgspec.structs.replace(summary, registry=await asyncio.to_thread(registry.read))


async def _event_stream(service: ConsoleService, status: StatusWatch, registry: RegistryWatch | None,
                        access: Access, session: Session, chosen: AlertFilter,
                        stopping: asyncio.Event) -> AsyncIterator[str]:  # fmt: skip
    """The page's live feed: the status now, then new alerts, verdicts and status ticks; ends when the session does."""
    with service.hub.subscription(chosen) as inbox:
        yield sse("status", await _status_now(status, registry))
        while not stopping.is_set():
            try:
                message = await asyncio.wait_for(inbox.next(), timeout=KEEPALIVE_S)
            except TimeoutError:
                message = ": keep-alive\n\n"
            if not access.sessions.valid(session):  # nothing more once it expired or was signed out
                yield sse("expired", {"error": "the session expired: sign in again"})
                return
            yield message


async def _tick_status(service: ConsoleService, status: StatusWatch, registry: RegistryWatch | None,
                       interval_s: float, stopping: asyncio.Event) -> None:  # fmt: skip
    """Send the job's status to the open pages every ``interval_s``."""
    while not stopping.is_set():
        await asyncio.sleep(interval_s)
        if service.hub.inboxes:
            service.hub.publish("status", await _status_now(status, registry))


async def _run_feed(feed: Feed, service: ConsoleService, stopping: asyncio.Event) -> None:
    try:
        await feed(service, stopping)
    except asyncio.CancelledError:
        raise
    except Exception:  # the page shows an empty queue; the log says why
        log.exception("the alerts reader stopped")
        service.hub.publish("feed", {"error": "the alerts reader stopped: see the console's log"})
