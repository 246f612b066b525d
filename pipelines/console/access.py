"""Who a request is and what it may do: the session cookie, the CSRF header, the role; and the guard every
answer passes (security headers; without users, loopback host names only).

With ``console.users`` every API call but sign-in needs the session cookie
(signed, HttpOnly, SameSite=Strict, expiring after ``session_ttl_s``); each
write also needs the session's CSRF token in ``X-CSRF-Token``, and is checked
against the user's role from the configuration. Without users the console is
open to this machine only: requests must name a loopback host (no DNS rebinding).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from configs import Settings
from pipelines.console.auth import Directory, Principal, Session, Sessions, SignInThrottle, csrf_matches
from pipelines.console.service import Refusal
from pipelines.console.views import SessionView

COOKIE = "fraudstream_console"
CSRF_HEADER = "X-CSRF-Token"
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Guard:
    """Middleware: security headers on every answer; without users, only requests naming a loopback host."""

    def __init__(self, app: ASGIApp, open_console: bool) -> None:
        self.app, self.open_console = app, open_console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.open_console and not _loopback_host(dict(scope["headers"]).get(b"host", b"").decode("latin-1")):
            answer = error_response(421, "this console has no sign-in (console.users is empty) and answers only "
                                         "to localhost, 127.0.0.1 or [::1]; open it by one of those names")  # fmt: skip
            await answer(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _loopback_host(host: str) -> bool:
    """True when a Host header names this machine (``localhost:8765``, ``127.0.0.1``, ``[::1]:80``)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Access:
    """Sessions and roles of one app: which principal a request is, and whether it may write."""

    def __init__(self, settings: Settings, secret: bytes, clock: Callable[[], float]) -> None:
        self.directory = Directory(settings.console.users)
        self.sessions = Sessions(secret, settings.console.session_ttl_s, clock)
        self.throttle = SignInThrottle(clock=clock)

    def session(self, request: Request) -> tuple[Session, Principal]:
        """The request's session and principal; Refusal 401 when it has none that is valid."""
        session = self.sessions.read(request.cookies.get(COOKIE))
        principal = None if session is None else self.directory.principal(session.user)
        if session is None or principal is None:
            raise Refusal(401, "not signed in, or the session expired: sign in again")
        return session, principal

    def writer(self, request: Request) -> tuple[Session, Principal]:
        """As :meth:`session`, for a write: the CSRF token must be echoed (403 otherwise)."""
        session, principal = self.session(request)
        if not csrf_matches(session, request.headers.get(CSRF_HEADER)):
            raise Refusal(403, f"missing or wrong {CSRF_HEADER} header: send the csrf token /api/session gives")
        return session, principal

    def view(self, session: Session, principal: Principal) -> SessionView:
        return SessionView(user=principal.name, role=principal.role, may_give_verdicts=principal.may_give_verdicts,
                           csrf=session.csrf, expires_at=self.sessions.expires_at(session),
                           open=self.directory.open)  # fmt: skip


def set_cookie(response: Response, request: Request, token: str, ttl_s: float) -> None:
    response.set_cookie(COOKIE, token, max_age=int(ttl_s), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")  # fmt: skip
