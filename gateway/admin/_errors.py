"""The admin API's one error shape, and the request id every response carries.

Every refusal or failure is::

    {"error": {"code": "not_found", "message": "...", "details": {...}, "request_id": "..."}}

The request id comes from the caller's `X-Request-Id` (when it is a sane token) or is minted here;
it is echoed in the `X-Request-Id` response header, also on streams and on errors.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logs import new_request_id

logger = logging.getLogger("gateway.admin")

REQUEST_ID_HEADER = b"x-request-id"  # as ASGI spells header names: lower-case bytes
# Echoed into a response header and logs: only a conservative token, never arbitrary bytes.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """A refusal with an HTTP status, a stable machine code and a message safe to show."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} named {name!r}", {what: name})


def timeout(name: str) -> ApiError:
    return ApiError(504, "timeout", f"server {name!r} did not stop in time", {"server": name})


def request_id(request: Request) -> str:
    rid: str = request.scope.get("state", {}).get("request_id") or new_request_id()
    return rid


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": request_id(request),
        }
    }
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.code, exc.message, exc.details, exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) and exc.status_code != 404 else ""
    if exc.status_code == 404:
        message = f"no admin endpoint at {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(request, exc.status_code, code, message or code, headers=dict(exc.headers or {}))


EXCEPTION_HANDLERS: dict[Any, Any] = {ApiError: on_api_error, HTTPException: on_http_exception}


class RequestIdMiddleware:
    """Assigns the request id before anything else runs and stamps it on the response head.

    It also turns an unforeseen exception into the common 500 shape. Its text may hold paths or
    secrets, so it is logged, not shown; and it is not re-raised, so the outer app does not log it
    a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope.get("headers", []):
            if key == REQUEST_ID_HEADER:
                given = value.decode("latin-1").strip()
        rid = given if given and _SANE_ID.match(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid

        started = False

        async def stamped(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        except Exception:
            request = Request(scope)
            logger.exception("admin API: unexpected error on %s %s", request.method, request.url.path)
            if not started:
                response = error_response(
                    request, 500, "internal_error", "internal error; see the gateway log"
                )
                await response(scope, receive, stamped)
