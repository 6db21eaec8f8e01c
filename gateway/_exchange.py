"""The hot path: POSTs for the methods the gateway only relays, served directly.

The SDK's transports are general. A 2026-07-28 request gets a task group, a sibling task watching
for disconnects, a memory stream and a per-request runner; a 2025-11-25 session's request crosses
the session's streams and tasks (seven tasks and fourteen stream hops a call, measured). For a
relayed `tools/call` that machinery cost more than the gateway's own work (see
`python -m tests.bench`), so `FastPath` serves the relayed methods itself, for 2026-07-28 requests
and for the requests of the 2025-11-25 sessions it has learned (`_sessions`), and hands everything
else to the SDK, body intact:

- the SDK's own checks run first, in its order and with its functions (Host and Origin were
  checked before, on every route: `_guard`): Content-Type,
  Accept, body size, the JSON-RPC envelope, the routing headers, `Mcp-Param-*` headers and the
  method's params (for a session: that it is still open, the same identity, its protocol
  version). Whatever one of them would refuse is replayed to the SDK, so every refusal is the
  SDK's own;
- a backend's question during a call (sampling, elicitation, roots) reaches the client as the
  relay decides: for a 2025-11-25 session, a request on the call's stream, answered in a POST
  that is delivered here (`_sessions`); for a 2026-07-28 client, an input round (`_inputs`);
- the result is shaped by the SDK's runner (cache hints, per-version sieve, `resultType`,
  `serverInfo` stamp) and sent as JSON (`_reply`), unless a notification for the request comes
  first (progress, a log line), which commits the response to SSE;
- cancelling works as on the SDK's path: a 2026-07-28 client hangs up (noticed from 50 ms into a
  call: shorter calls never pay for a task watching the connection); a 2025-11-25 client sends
  `notifications/cancelled`, and its hang-up cancels nothing.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping
from typing import Any

from mcp.server.lowlevel import Server
from mcp.server.runner import modern_error_data
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import (
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import JSONRPCError, JSONRPCRequest
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import _sdk
from gateway._envelope import GONE, decode, read_body, replay
from gateway._reply import Exchange
from gateway._rewrite import Result
from gateway._sessions import Session, Sessions
from gateway.relay import Relay

# The methods whose whole job is the relay's: no back channel, no subscription, no session.
FAST_METHODS = frozenset(
    {
        "tools/call",
        "prompts/get",
        "resources/read",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    }
)
# A call still running after this long gets a task watching for the client hanging up (which
# cancels it); a hang-up earlier than that is noticed then, at the latest.
_WATCH_AFTER = 0.05


class FastPath:
    """ASGI app in front of the SDK's streamable-HTTP app (see the module docstring)."""

    def __init__(
        self,
        sdk: ASGIApp,
        relay: Relay,
        server: Server[Any],
        manager: StreamableHTTPSessionManager,
        security: TransportSecuritySettings,
    ) -> None:
        self.sdk = sdk
        self.relay = relay
        self._shape = _sdk.result_shaper(server)
        self.security = TransportSecurityMiddleware(security)
        self.max_body = manager.max_request_body_size
        # Told of every front the relay sees (wired in `build_app`): sessions learned on the way.
        self.sessions = Sessions(manager)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.sdk(scope, receive, send)
            return
        # Decoded once; the first of repeated headers wins, as in Starlette's `Headers`.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        session_id = headers.get(MCP_SESSION_ID_HEADER, "")
        session = None
        if version not in MODERN_PROTOCOL_VERSIONS:
            session = self.sessions.find(session_id, version, scope)
            if session is None:
                await self.sdk(scope, receive, send)
                return
        if await self.security.validate_request(_Headed(headers), is_post=True) is not None:  # type: ignore[arg-type]
            await self.sdk(scope, receive, send)  # refused there, in the SDK's words
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self.sdk(scope, receive, send)
            return
        body = await read_body(receive, self.max_body)
        if body is None:
            await Response("Request body too large", status_code=413)(scope, receive, send)
            return
        if body is GONE:
            return  # the client left before it finished sending
        if session is not None and _delivered(session, body):
            await Response(status_code=202)(scope, receive, send)
            return
        admitted = self._admit(scope, headers, body, session)
        if admitted is None:
            await self.sdk(scope, replay(body, receive), send)
            return
        req, version, capabilities = admitted
        exchange = Exchange(Request(scope, receive), req, version, send, capabilities, session)
        if session is None:
            await self._serve(exchange, receive)
            return
        with session.calling(req.id, exchange):
            await self._serve(exchange, receive)

    def _admit(
        self, scope: Scope, headers: dict[str, str], body: bytes, session: Session | None
    ) -> tuple[JSONRPCRequest, str, Any] | None:
        """The request, its protocol version and the client's capabilities, if the hot path may
        serve it (else None).

        A 2025-11-25 session's request is checked against the session; a 2026-07-28 one carries
        its own envelope, which the SDK's ladder checks against the routing headers."""
        parsed = _request(headers, body)
        if parsed is None:
            return None
        decoded, req = parsed
        if session is not None:
            connection = session.connection
            version, capabilities = connection.protocol_version, connection.client_capabilities
        else:
            raw = Headers(scope=scope)  # with repeats: a repeated routing header is refused, not folded
            if find_duplicated_routing_header(raw.items()) is not None:
                return None
            verdict = classify_inbound_request(decoded, headers=headers)
            if isinstance(verdict, InboundLadderRejection):
                return None
            version, capabilities = verdict.protocol_version, verdict.client_capabilities
            if req.method == "tools/call" and self._param_headers_refused(raw, req.params or {}):
                return None
        try:
            _methods.validate_client_request(req.method, version, req.params or {})
        except (ValidationError, KeyError):
            return None
        return req, version, capabilities

    def _param_headers_refused(self, headers: Headers, params: Mapping[str, Any]) -> bool:
        """Whether the SDK would refuse the `Mcp-Param-*` headers against the tool's schema."""
        schema = self.relay.fleet.catalogue.header_schemas.get(params.get("name"))  # type: ignore[arg-type]
        if schema is None:
            return False  # only the properties a schema marks are compared
        arguments = params.get("arguments")
        if not isinstance(arguments, Mapping):
            arguments = {}
        return validate_mcp_param_headers(schema, arguments, headers) is not None

    async def _serve(self, exchange: Exchange, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None
        pings: asyncio.Task[None] | None = None
        timer: asyncio.TimerHandle

        def watch() -> None:
            # Most calls are over before this fires: they never pay for a watching task. A
            # 2025-11-25 client's hang-up is not a cancellation (it says so with a notification).
            nonlocal watcher, timer
            if exchange.connection is None:
                watcher = loop.create_task(_watch_disconnect(receive, exchange, task))
            timer = loop.call_later(_sdk.SSE_PING_INTERVAL - _WATCH_AFTER, ping)

        def ping() -> None:
            nonlocal pings
            pings = loop.create_task(exchange.keepalive())

        timer = loop.call_later(_WATCH_AFTER, watch)
        try:
            reply = await self._answer(exchange)
            timer.cancel()
            if watcher is not None:
                watcher.cancel()
            await exchange.reply(reply)
        except asyncio.CancelledError:
            if not exchange.gone:
                raise
            # Our own cancellation: the client left, or cancelled the request; no answer is owed.
            task.uncancel()
            if exchange.connection is not None:
                await exchange.abandon()
        finally:
            timer.cancel()
            for helper in (watcher, pings):
                if helper is not None:
                    helper.cancel()

    async def _answer(self, exchange: Exchange) -> Result | JSONRPCError:
        try:
            result = await self.relay.dispatch(exchange)
            shaped = self._shape(exchange.method, exchange.protocol_version, result)
        except Exception as exc:
            return JSONRPCError(jsonrpc="2.0", id=exchange._id, error=modern_error_data(exc))
        return shaped


def _delivered(session: Session, body: bytes) -> bool:
    """Whether `body` is for a call the hot path runs in `session`, and was delivered: a
    `notifications/cancelled` naming it, or the client's answer to a request it sent."""
    if b"notifications/cancelled" not in body and b'"result"' not in body and b'"error"' not in body:
        return False  # most bodies are requests: they are not decoded twice
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not isinstance(message, dict):
        return False
    if message.get("method") == "notifications/cancelled" and "id" not in message:
        params = message.get("params")
        return isinstance(params, dict) and session.cancel(params)
    if "method" not in message and "id" in message:
        return session.answer(message)
    return False


def _request(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, Any], JSONRPCRequest] | None:
    """The body as one JSON-RPC request for a relayed method (else None: not ours to serve)."""
    has_json, has_sse = _accepts(headers.get("accept", ""))
    if not (has_json and has_sse):
        return None
    try:
        decoded = decode(body)
    except (ValueError, RecursionError):
        return None  # the SDK's side answers it (`_envelope.EnvelopeCheck`)
    if not isinstance(decoded, dict) or "id" not in decoded:
        return None
    method = decoded.get("method")
    if not isinstance(method, str) or method not in FAST_METHODS:  # a list is not even hashable
        return None
    try:
        return decoded, JSONRPCRequest.model_validate(decoded)
    except ValidationError:
        return None


class _Headed:
    """What the SDK's Host/Origin check reads of a request: its headers (already decoded here)."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers


@functools.lru_cache(maxsize=64)
def _accepts(accept: str) -> tuple[bool, bool]:
    """(JSON, SSE) acceptable, by the SDK's reading of an Accept header (clients send a few)."""
    return check_accept_headers(_Headed({"accept": accept}))  # type: ignore[arg-type]


async def _watch_disconnect(receive: Receive, exchange: Exchange, task: asyncio.Task[Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    exchange.gone = True
    task.cancel()
