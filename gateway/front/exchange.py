"""The streamable-HTTP exchange: every relayed request over HTTP, from its POST to its answer.

`StreamableHttp` is the MCP endpoint. It serves the methods the relay answers (`SERVED`: calls
and listings) for 2026-07-28 requests and for the requests of the 2025-11-25 sessions it has
learned (`sessions`), each as one `Exchange`: the `front.Front` the relay sees, and the answer.
Everything else is the SDK's streamable-HTTP transport's, body intact: opening, listening to and
ending sessions (`initialize`, GET, DELETE), `server/discover`, `ping`, `logging/setLevel`,
`subscriptions/listen`, completions, subscriptions (`front.sdk` wires them to the relay), and
every refusal. So one request travels one way, and each method has one answer.

Why not the SDK's transport for everything: it is general. A 2026-07-28 request gets a task group,
a sibling task watching for disconnects, a memory stream and a per-request runner; a 2025-11-25
session's request crosses the session's streams and tasks (seven tasks and fourteen stream hops a
call, measured). For a relayed `tools/call` that cost more than the gateway's own work (see
`python -m tests.bench`). What the exchange keeps of the SDK:

- its checks run first, in its order and with its functions (Host and Origin were checked before,
  on every route: `guard`): Content-Type, Accept, body size, the JSON-RPC envelope, the routing
  headers, `Mcp-Param-*` headers and the method's params (for a session: that it is still open,
  the same identity, its protocol version). Whatever one of them would refuse is handed to the
  SDK, so every refusal is the SDK's own;
- the result is shaped by the SDK's runner (cache hints, per-version sieve, `resultType`,
  `serverInfo` stamp) and sent as JSON, unless a notification for the request comes first
  (progress, a log line), which commits the response to SSE;
- a backend's question during a call (sampling, elicitation, roots) reaches the client as the
  relay decides: for a 2025-11-25 session, a request on the call's stream, answered in a POST of
  the session that is delivered here; for a 2026-07-28 client, an input round (`_inputs`);
- cancelling works as the SDK's transport does it: a 2026-07-28 client hangs up (noticed from
  50 ms into a call: shorter calls never pay for a task watching the connection); a 2025-11-25
  client sends `notifications/cancelled`, and its hang-up cancels nothing.
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
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import INVALID_REQUEST, JSONRPCError, JSONRPCNotification, JSONRPCRequest
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import _sdk
from gateway._rewrite import Result
from gateway.front import can_answer, scope_identity
from gateway.front.envelope import GONE, decode, read_body, replay
from gateway.front.sessions import Session, Sessions
from gateway.middleware import Identity
from gateway.relay import Relay

# The methods whose whole job is the relay's: no back channel, no subscription, no session.
SERVED = frozenset(
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


class StreamableHttp:
    """The MCP endpoint's ASGI app, in front of the SDK's streamable-HTTP app (see the module
    docstring)."""

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
        """The request, its protocol version and the client's capabilities, if the exchange may
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
    """Whether `body` is for a call the exchange runs in `session`, and was delivered: a
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
    if not isinstance(method, str) or method not in SERVED:  # a list is not even hashable
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


class Exchange:
    """One relayed request: a 2026-07-28 request, or one of a 2025-11-25 session.

    The answer is JSON unless a notification for the request (progress, a log line) or a question
    to the client comes first, which commits the response to SSE; so does a call that outlasts the
    keep-alive interval (it gets SSE comment pings until it ends)."""

    def __init__(
        self,
        request: Request,
        req: JSONRPCRequest,
        protocol_version: str,
        send: Send,
        capabilities: Any,
        session: Session | None = None,
    ) -> None:
        self.request = request
        self.capabilities = capabilities  # what the client declared (dict or the SDK's model)
        self.session = session
        # The 2025-11-25 session's; a 2026-07-28 client has none.
        self.connection = session.connection if session is not None else None
        self.method = req.method
        self.params: Mapping[str, Any] | None = req.params
        self.request_id: str | int | None = req.id
        self._id = req.id
        self.protocol_version = protocol_version
        meta = (req.params or {}).get("_meta")
        self.meta: Mapping[str, Any] | None = meta if isinstance(meta, Mapping) else None
        self._progress_token = progress_token_from_params(req.params)  # as the SDK reads it
        self.gone = False  # the client hung up (2026-07-28) or cancelled the request (2025-11-25)
        self._send = send
        self._streaming = False
        self._closed = False
        self._lock: asyncio.Lock | None = None  # made on the first notification: most calls have none

    @property
    def identity(self) -> Identity | None:
        return scope_identity(self.request.scope)

    def can_answer(self) -> bool:
        return can_answer(self.capabilities)

    def wants_progress(self) -> bool:
        return self._progress_token is not None

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None:
        params: dict[str, Any] = {"progressToken": self._progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)

    def _guard(self) -> asyncio.Lock:
        """The lock ordering what is sent; made on the first need (most calls send one answer)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        async with self._guard():
            if self._closed:
                return  # the reply went out already; nothing may follow it
            await self._commit_sse()
            event = _sdk.sse_event(JSONRPCNotification(jsonrpc="2.0", method=method, params=params))
            await self._send({"type": "http.response.body", "body": event, "more_body": True})

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request to the client on this request's stream; its answer comes in a POST of the
        session (`Session.answer`). A 2026-07-28 client is never sent one: the relay turns a
        backend's question into an input round for it instead."""
        if self.session is None:
            raise MCPError(code=INVALID_REQUEST, message=f"{method} cannot be sent to this client")
        return await self.session.ask(method, params, self._send_request)

    async def _send_request(self, request_id: str, method: str, params: dict[str, Any]) -> None:
        async with self._guard():
            if self._closed:
                raise MCPError(code=INVALID_REQUEST, message="the client's request has ended")
            await self._commit_sse()
            request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            event = _sdk.sse_frame(json.dumps(request, separators=(",", ":")).encode())
            await self._send({"type": "http.response.body", "body": event, "more_body": True})

    async def keepalive(self) -> None:
        """SSE comment pings while a silent call runs long, so no proxy times the stream out."""
        while True:
            async with self._guard():
                if self._closed:
                    return
                await self._commit_sse()
                ping = {"type": "http.response.body", "body": b": ping\r\n\r\n", "more_body": True}
                await self._send(ping)
            await asyncio.sleep(_sdk.SSE_PING_INTERVAL)

    async def reply(self, reply: Result | JSONRPCError) -> None:
        """The answer: a result (the dict) or the error; JSON, or the last event of an SSE stream."""
        if self._lock is None:
            self._closed = True
            await self._write_json(reply)
            return
        async with self._lock:
            self._closed = True
            if self._streaming:
                if isinstance(reply, JSONRPCError):
                    event = _sdk.sse_event(reply)
                else:  # the same bytes as the SDK's event, without a model round trip of the result
                    event = _sdk.sse_frame(_sdk.result_json(self._id, reply))
                await self._send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                await self._write_json(reply)

    async def abandon(self) -> None:
        """End the response without an answer (the client cancelled the request)."""
        async with self._guard():
            if self._closed:
                return
            self._closed = True
            await self._commit_sse()
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _commit_sse(self) -> None:
        if not self._streaming:
            self._streaming = True
            await self._send({"type": "http.response.start", "status": 200, "headers": _sdk.SSE_HEADERS})

    async def _write_json(self, reply: Result | JSONRPCError) -> None:
        if isinstance(reply, JSONRPCError):
            status, body = _sdk.error_json(reply)
            if self.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                status = 200  # the handshake era's transport answers errors with 200 too
        else:
            status, body = 200, _sdk.result_json(self._id, reply)
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})
