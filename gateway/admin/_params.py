"""Query parameters and request bodies, checked strictly: a bad one is a 400 naming it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from gateway.admin._errors import ApiError
from gateway.admin._record import SEVERITIES, TYPES
from gateway.admin.store import EventFilter
from gateway.cluster import is_stream_id

MAX_BODY = 1 << 20
MAX_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z
EMPTY: Any = object()  # no body at all (as opposed to a JSON `null`)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def bad(parameter: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{parameter}: {message}", {"parameter": parameter})


def only(request: Request, *allowed: str) -> None:
    """Refuse unknown query parameters: a typo (`?severty=error`) must not silently match everything."""
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise bad(name, f"unknown query parameter (accepted here: {known})")


def flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise bad(name, "must be one of 1, 0, true, false")


def integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise bad(name, "must be an integer") from None
    if not low <= value <= high:
        raise bad(name, f"must be between {low} and {high}")
    return value


def words(request: Request, name: str, allowed: Sequence[str] | None = None) -> list[str]:
    """A comma-separated list (the parameter may also repeat)."""
    out = [w.strip() for raw in request.query_params.getlist(name) for w in raw.split(",") if w.strip()]
    if allowed is not None:
        unknown = [w for w in out if w not in allowed]
        if unknown:
            raise bad(name, f"unknown value {unknown[0]!r} (use: {', '.join(allowed)})")
    return out


def instant(request: Request, name: str) -> float | None:
    """ISO 8601 (naive means UTC) or epoch seconds."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise bad(name, "must be an ISO 8601 time or epoch seconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value <= MAX_EPOCH:
        raise bad(name, f"must be epoch seconds between 0 and {MAX_EPOCH:.0f}")
    return value


def event_id(raw: str | None, name: str, *, stream: bool = False) -> int | str | None:
    """An event id as the API writes them: a row id, or (`stream`: the cluster's event log) a
    Redis stream entry id "<ms>-<seq>"."""
    if raw is None:
        return None
    raw = raw.strip()
    if stream:
        if not is_stream_id(raw):
            raise bad(name, "must be an event id from this API")
        return raw
    try:
        value = int(raw)
    except ValueError:
        raise bad(name, "must be an event id from this API") from None
    if value < 0 or value >= 1 << 62:
        raise bad(name, "must be an event id from this API")
    return value


FILTERS = ("server", "severity", "category", "type", "since", "until")


def event_filter(request: Request, *, limit_default: int = 100, stream: bool = False) -> EventFilter:
    return EventFilter(
        servers=words(request, "server"),
        severities=words(request, "severity", SEVERITIES),
        categories=words(request, "category"),
        types=words(request, "type", TYPES),
        since=instant(request, "since"),
        until=instant(request, "until"),
        before_id=event_id(request.query_params.get("cursor"), "cursor", stream=stream),
        limit=integer(request, "limit", limit_default, 1, 1000),
    )


async def body(request: Request, *, required: bool) -> Any:
    """The JSON body; `EMPTY` when there is none and none is required."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
    if not raw:
        if required:
            raise ApiError(400, "invalid_request", "a JSON body is required")
        return EMPTY
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_request", "the body is not valid JSON") from None
