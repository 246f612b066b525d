"""What a request carries, checked: its JSON body, the alert filter of its query, the limit, an alert id.

Bad input is a :class:`~pipelines.console.service.Refusal` (4xx) whose message
names the parameter and what is allowed; the filter is `alerts tail`'s own
(:func:`pipelines.alerts.make_filter`), its messages naming the query parameter
instead of the option.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import Request

from configs import ConfigError
from pipelines.alerts import AlertFilter, make_filter, parse_limit
from pipelines.console.service import Refusal, query_error

#: Query parameters of /api/alerts and /api/events (``account`` may repeat).
FILTER_PARAMS = ("account", "decision", "min_score", "rule", "since")
MAX_BODY_BYTES = 16_384
DEFAULT_LIMIT, MAX_LIMIT = 200, 5_000


class LoginRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: str
    password: str


class VerdictRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    verdict: str
    replace: bool = False


async def json_body(request: Request, kind: type[Any]) -> Any:
    """The request's JSON body as ``kind``; Refusal 415 (not JSON), 413 (too large) or 400 (not valid)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise Refusal(415, "send the body as JSON (Content-Type: application/json)")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise Refusal(413, f"the body is larger than {MAX_BODY_BYTES:,} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Refusal(413, f"the body is larger than {MAX_BODY_BYTES:,} bytes")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise Refusal(400, f"bad request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Refusal(400, f"the body is not valid JSON ({exc})") from None


def alert_filter(request: Request, extra: tuple[str, ...] = ()) -> AlertFilter:
    """The filter in the query (the parameters of `alerts tail`); Refusal 400 for an unknown or bad one."""
    allowed = (*FILTER_PARAMS, *extra)
    unknown = sorted({key for key in request.query_params if key not in allowed})
    if unknown:
        raise Refusal(400, f"unknown query parameter {unknown[0]!r} (allowed: {', '.join(allowed)})")
    params = request.query_params
    repeated = sorted({key for key in params if key != "account" and len(params.getlist(key)) > 1})
    if repeated:
        raise Refusal(400, f"{repeated[0]}: give it once (only account may repeat)")
    try:
        return make_filter(accounts=params.getlist("account") or None, decision=params.get("decision"),
                           min_score=params.get("min_score"), rule=params.get("rule"),
                           since=params.get("since"))  # fmt: skip
    except ConfigError as exc:
        raise query_error(exc) from None


def limit_of(request: Request) -> int:
    try:
        limit = parse_limit(request.query_params.get("limit")) or DEFAULT_LIMIT
    except ConfigError as exc:
        raise query_error(exc) from None
    if limit > MAX_LIMIT:
        raise Refusal(400, f"limit: at most {MAX_LIMIT:,}, got {limit:,}")
    return limit


def checked_alert_id(alert_id: str) -> str:
    if not 1 <= len(alert_id) <= 128:
        raise Refusal(400, "alert_id: expected 1 to 128 characters")
    return alert_id
