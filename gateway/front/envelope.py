"""What a POST to the MCP endpoint must be before anything acts on it: one JSON-RPC message in
UTF-8 JSON text whose every value a backend can be sent.

Both ways into the endpoint read a body with `decode` (the exchange, and `EnvelopeCheck` in
front of the SDK's transport), so a body is refused the same way whichever path it takes:

- not JSON text: -32700 (parse error). That includes what Python's `json` lets through but JSON
  does not allow (`NaN`, `Infinity`, a number out of a double's range) and a lone UTF-16 surrogate
  escape (`"\\ud800"`): RFC 8259 §8.2 leaves such a string's meaning undefined and I-JSON (RFC
  7493 §2.1) forbids it; it has no UTF-8 form, so it cannot be written to a backend (which drops
  the line: the call would wait for its timeout), and the SDK's own parser refuses it as a parse
  error. It is a defect of the text, not of the method's params, hence -32700 rather than -32602;
- JSON, but not one request, notification or response (a batch, a scalar, an id that is not a
  string or an integer such as `1.5`, `null`, `true` or an object, a missing method): -32600
  (invalid request), in one line. The SDK's 2025-11-25 transport would take a request with such an
  id for a notification (202, never answered) and words the rest as a pydantic dump.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

import pydantic_core
from mcp.server.streamable_http import check_accept_headers
from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
)
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A `\u` escape in the surrogate range; only then is the slower, surrogate-aware parse needed.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_MESSAGE_MODELS: Final = (JSONRPCRequest, JSONRPCResponse, JSONRPCError)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("a number is out of range")
    return number


def decode(body: bytes) -> Any:
    """The JSON value of `body`; ValueError (or RecursionError, nested too deep) if it is not
    JSON text a backend can be sent (see the module docstring)."""
    decoded = json.loads(body.decode("utf-8"), parse_constant=_not_json, parse_float=_finite)
    if _SURROGATE_ESCAPE.search(body) is not None:
        pydantic_core.from_json(body)  # refuses a lone surrogate, which `json` lets through
    return decoded


def _error(code: int, message: str) -> Response:
    # `id` is null: the request's id is unknown or unusable. The SDK's model dump would drop it.
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return Response(json.dumps(body, separators=(",", ":")), status_code=400, media_type="application/json")


def refusal(body: bytes) -> Response | None:
    """The error answering `body`, or None if it is one well-formed JSON-RPC message."""
    try:
        decoded = decode(body)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else "not JSON"
        return _error(PARSE_ERROR, f"Parse error: {reason}")
    return shape_refusal(decoded)


def shape_refusal(decoded: Any) -> Response | None:
    """The -32600 error for a decoded body that is not one JSON-RPC message, else None."""
    if isinstance(decoded, list):
        return _error(INVALID_REQUEST, "Invalid request: a batch; send one message a POST")
    if not isinstance(decoded, dict):
        return _error(INVALID_REQUEST, "Invalid request: the body must be one JSON-RPC message object")
    if "id" not in decoded:  # JSON-RPC 2.0 §4.1: a notification is an object without an id member
        models: tuple[type[Any], ...] = (JSONRPCNotification,)
    else:
        if not _valid_id(decoded["id"]) and not ("error" in decoded and decoded["id"] is None):
            return _error(INVALID_REQUEST, "Invalid request: id must be a string or an integer")
        models = _MESSAGE_MODELS
    for model in models:
        try:
            model.model_validate(decoded)
        except ValidationError:
            continue
        return None
    return _error(INVALID_REQUEST, "Invalid request: not a JSON-RPC 2.0 request, notification or response")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class EnvelopeCheck:
    """ASGI middleware in front of the SDK's transport: a POST whose body is not one JSON-RPC
    message gets its JSON-RPC error here, at once; anything else reaches the transport intact.

    Only a body the transport would read is checked: a POST it would refuse for its headers
    (Content-Type, Accept) or its size is left to it, to answer in its own words."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        content_type = request.headers.get("content-type", "")
        declared = request.headers.get("content-length", "")
        if (
            not content_type.lower().startswith("application/json")
            or not all(check_accept_headers(request))
            or (declared.isdigit() and int(declared) > self.max_body)
        ):
            await self.app(scope, receive, send)
            return
        body = await whole_body(scope, receive, send, self.max_body)
        if body is None:
            return
        refused = refusal(body)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


GONE = b"<disconnected>"


async def whole_body(scope: Scope, receive: Receive, send: Send, limit: int) -> bytes | None:
    """The whole body; None once it is dealt with here: past `limit` answered 413 (as the SDK's
    transport does), or the client left before it finished sending."""
    body = await read_body(receive, limit)
    if body is None:
        await Response("Request body too large", status_code=413)(scope, receive, send)
        return None
    return None if body is GONE else body


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body; None if it exceeds `limit`, `GONE` if the client left mid-body."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body once, then the connection's own messages."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
