"""The hot path: 2026-07-28 POSTs for the methods the gateway only relays, served directly.

A 2026-07-28 request is one self-contained POST. The SDK's entry for it is general: each request
gets a task group, a sibling task watching for disconnects, a memory stream and a per-request
runner. For a relayed `tools/call` that machinery cost more than the gateway's own work (see
`python -m tests.bench`), so `FastPath` serves the relayed methods itself and hands everything
else to the SDK, body intact:

- the SDK's own checks run first, in its order and with its functions: Host/Origin/Content-Type,
  Accept, body size, the JSON-RPC envelope, the routing headers, `Mcp-Param-*` headers and the
  method's params. Whatever one of them would refuse is replayed to the SDK, so every refusal is
  the SDK's, byte for byte;
- a call (`tools/call`, `prompts/get`, `resources/read`) from a client that declared sampling,
  elicitation or roots goes to the SDK too: answering a backend's question needs the input-round
  bridge, which lives there;
- the result is shaped by the SDK's runner (cache hints, per-version sieve, `resultType`,
  `serverInfo` stamp) and sent as JSON, unless a notification for the request (progress, a log
  line) comes first, which commits the response to SSE, or the call outlasts the keep-alive
  interval, which commits it to SSE pings;
- the client closing the connection cancels the call, as on the SDK's path (noticed from 50 ms
  into a call: shorter calls never pay for a task watching the connection).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping
from typing import Any

from mcp.server.lowlevel import Server
from mcp.server.runner import modern_error_data
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import (
    X_MCP_HEADER_KEY,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import JSONRPCError, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import _sdk
from gateway._rewrite import Result
from gateway.errors import GatewayError, as_mcp_error
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
# A backend may ask the client something while serving these; a client able to answer needs the
# SDK's path, where the input-round bridge lives.
_ASKING_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
_ANSWERING_CAPABILITIES = ("sampling", "elicitation", "roots")
_PROTOCOL_HEADER = b"mcp-protocol-version"
# A call still running after this long gets a task watching for the client hanging up (which
# cancels it); a hang-up earlier than that is noticed then, at the latest.
_WATCH_AFTER = 0.05


class Exchange:
    """One 2026-07-28 request served by the hot path, as a `_front.Front`."""

    def __init__(self, request: Request, req: JSONRPCRequest, protocol_version: str, send: Send) -> None:
        self.request = request
        self.method = req.method
        self.params: Mapping[str, Any] | None = req.params
        self.request_id: str | int | None = req.id
        self._id = req.id
        self.protocol_version = protocol_version
        meta = (req.params or {}).get("_meta")
        self.meta: Mapping[str, Any] | None = meta if isinstance(meta, Mapping) else None
        self.gone = False  # the client closed the connection
        self._send = send
        self._streaming = False
        self._closed = False
        self._lock: asyncio.Lock | None = None  # made on the first notification: most calls have none

    @property
    def connection(self) -> None:
        return None  # a 2026-07-28 client has no session

    def can_answer(self) -> bool:
        return False  # such clients' calls are served by the SDK's path

    def wants_progress(self) -> bool:
        return self.meta is not None and self.meta.get("progressToken") is not None

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None:
        assert self.meta is not None
        params: dict[str, Any] = {"progressToken": self.meta["progressToken"], "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                return  # the reply went out already; nothing may follow it
            await self._commit_sse()
            event = _sdk.sse_event(JSONRPCNotification(jsonrpc="2.0", method=method, params=params))
            await self._send({"type": "http.response.body", "body": event, "more_body": True})

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the hot path never serves a client that can answer")  # pragma: no cover

    async def keepalive(self) -> None:
        """SSE comment pings while a silent call runs long, so no proxy times the stream out."""
        while True:
            assert self._lock is not None
            async with self._lock:
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
                message = reply if isinstance(reply, JSONRPCError) else self._response(reply)
                last = {"type": "http.response.body", "body": _sdk.sse_event(message), "more_body": False}
                await self._send(last)
            else:
                await self._write_json(reply)

    def _response(self, result: Result) -> JSONRPCResponse:
        return JSONRPCResponse(jsonrpc="2.0", id=self._id, result=result)

    async def _commit_sse(self) -> None:
        if not self._streaming:
            self._streaming = True
            await self._send({"type": "http.response.start", "status": 200, "headers": _sdk.SSE_HEADERS})

    async def _write_json(self, reply: Result | JSONRPCError) -> None:
        if isinstance(reply, JSONRPCError):
            status, body = _sdk.error_json(reply)
        else:
            status, body = 200, _sdk.result_json(self._id, reply)
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


class FastPath:
    """ASGI app in front of the SDK's streamable-HTTP app (see the module docstring)."""

    def __init__(
        self,
        sdk: ASGIApp,
        relay: Relay,
        server: Server[Any],
        security: TransportSecuritySettings,
        max_body: int,
    ) -> None:
        self.sdk = sdk
        self.relay = relay
        self.server = server
        self.security = TransportSecurityMiddleware(security)
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _modern(scope):
            await self.sdk(scope, receive, send)
            return
        items = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(reversed(items))  # the first of repeated headers wins, as in Starlette
        request = Request(scope, receive)
        if await self.security.validate_request(_Headed(headers), is_post=True) is not None:  # type: ignore[arg-type]
            await self.sdk(scope, receive, send)  # refused there, in the SDK's words
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self.sdk(scope, receive, send)
            return
        body = await _read_body(receive, self.max_body)
        if body is None:
            await Response("Request body too large", status_code=413)(scope, receive, send)
            return
        if body is _GONE:
            return  # the client left before it finished sending
        admitted = self._admit(items, headers, body)
        if admitted is None:
            await self.sdk(scope, _replay(body, receive), send)
            return
        req, version = admitted
        await self._serve(Exchange(request, req, version, send), receive)

    def _admit(
        self, items: list[tuple[str, str]], headers: dict[str, str], body: bytes
    ) -> tuple[JSONRPCRequest, str] | None:
        """The request and its protocol version, if the hot path may serve it (else None)."""
        has_json, has_sse = _accepts(headers.get("accept", ""))
        if not (has_json and has_sse):
            return None
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(decoded, dict) or "id" not in decoded or decoded.get("method") not in FAST_METHODS:
            return None
        try:
            req = JSONRPCRequest.model_validate(decoded)
        except ValidationError:
            return None
        if find_duplicated_routing_header(items) is not None:
            return None
        verdict = classify_inbound_request(decoded, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            return None
        if req.method in _ASKING_METHODS and _can_answer(verdict.client_capabilities):
            return None
        version: str = verdict.protocol_version
        params = req.params or {}
        try:
            _methods.validate_client_request(req.method, version, params)
        except (ValidationError, KeyError):
            return None
        if req.method == "tools/call" and self._param_headers_refused(headers, params):
            return None
        return req, version

    def _param_headers_refused(self, headers: Mapping[str, str], params: Mapping[str, Any]) -> bool:
        """Whether the SDK would refuse the `Mcp-Param-*` headers against the tool's schema."""
        lookup = self.server.get_tool_input_schema
        name = params.get("name")
        schema = lookup(name) if lookup is not None and isinstance(name, str) else None
        if schema is None or not _declares_headers(schema):
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
            # Most calls are over before this fires: they never pay for a watching task.
            nonlocal watcher, timer
            watcher = loop.create_task(_watch_disconnect(receive, exchange, task))
            timer = loop.call_later(_sdk.SSE_PING_INTERVAL - _WATCH_AFTER, ping)

        def ping() -> None:
            nonlocal pings
            if exchange._lock is None:
                exchange._lock = asyncio.Lock()
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
            task.uncancel()  # our own cancellation: the client left, there is nobody to answer
        finally:
            timer.cancel()
            for helper in (watcher, pings):
                if helper is not None:
                    helper.cancel()

    async def _answer(self, exchange: Exchange) -> Result | JSONRPCError:
        try:
            result = await self.relay.dispatch(exchange)
            shaped = _sdk.shape_result(self.server, exchange.method, exchange.protocol_version, result)
        except Exception as exc:
            error = as_mcp_error(exc) if isinstance(exc, GatewayError) else exc
            return JSONRPCError(jsonrpc="2.0", id=exchange._id, error=modern_error_data(error))
        return shaped


def _can_answer(capabilities: Any) -> bool:
    return isinstance(capabilities, dict) and any(
        capabilities.get(k) is not None for k in _ANSWERING_CAPABILITIES
    )


class _Headed:
    """What the SDK's Host/Origin check reads of a request: its headers (already decoded here)."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers


@functools.lru_cache(maxsize=64)
def _accepts(accept: str) -> tuple[bool, bool]:
    """(JSON, SSE) acceptable, by the SDK's reading of an Accept header (clients send a few)."""
    return check_accept_headers(_Headed({"accept": accept}))  # type: ignore[arg-type]


_DECLARES: dict[int, tuple[Any, bool]] = {}


def _declares_headers(schema: Any) -> bool:
    """Whether an input schema marks any property `x-mcp-header` (cached per schema object)."""
    cached = _DECLARES.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    declares = X_MCP_HEADER_KEY in json.dumps(schema)
    if len(_DECLARES) > 4096:  # schemas are replaced when the catalogue changes
        _DECLARES.clear()
    _DECLARES[id(schema)] = (schema, declares)
    return declares


def _modern(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == _PROTOCOL_HEADER:
            return value.decode("latin-1") in MODERN_PROTOCOL_VERSIONS
    return False


_GONE = b"<disconnected>"


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body; None if it exceeds `limit`, `_GONE` if the client left mid-body."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body once, then the connection's own messages."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _watch_disconnect(receive: Receive, exchange: Exchange, task: asyncio.Task[Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    exchange.gone = True
    task.cancel()
