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
  client sends `notifications/cancelled`, and its hang-up cancels nothing;
- a 2025-11-25 session's event stream is resumable, as the SDK's transport makes it with an event
  store (`front.events`): it opens with a priming event (an id, no data, `retry:`), every event
  has an id and is kept. A client whose connection dropped resumes with a GET naming the last
  event it got (`Last-Event-ID`): the exchange serves that GET when the event is one of its own
  streams', with the events missed, then the rest of the call's stream as it comes, ending with
  the answer. An answer sent as JSON keeps nothing (there is nothing to resume).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping
from typing import Any

from mcp.server.lowlevel import Server
from mcp.server.runner import modern_error_data
from mcp.server.streamable_http import LAST_EVENT_ID_HEADER, MCP_SESSION_ID_HEADER, check_accept_headers
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
from mcp_types import (
    INVALID_REQUEST,
    ClientCapabilities,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
)
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
from gateway.front.envelope import decode, replay, whole_body
from gateway.front.events import Event, Events, Sender, StreamKey
from gateway.front.lists import ListShaper
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
        events: Events | None,
        sessions: Sessions,
        endpoint: str = "",
    ) -> None:
        self.sdk = sdk
        self.endpoint = endpoint  # the key of the endpoint this app serves (`gateway.endpoints`)
        self.events = events  # where a 2025-11-25 session's SSE events are kept (None: not kept)
        self.relay = relay
        # List results' items are shaped and encoded once per list (`front.lists`).
        fleet = relay.fleet
        self._shape = ListShaper(_sdk.result_shaper(server), _sdk.items_json, lambda: fleet.generation)
        self.security = TransportSecurityMiddleware(security)
        self.max_body = manager.max_request_body_size
        # Told of every front the relay sees (wired in `build_app`): sessions learned on the way.
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            if scope["type"] != "http" or scope["method"] != "GET":
                await self.sdk(scope, receive, send)
            elif not await self._resume(scope, receive, send):
                # The session's GET stream: news for it is delivered here while it is open.
                with self.sessions.listening(Headers(scope=scope).get(MCP_SESSION_ID_HEADER)):
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
                # Opened on another replica (or forgotten here): restored, then served here.
                session = await self.sessions.restore(session_id, version, scope)
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
        body = await whole_body(scope, receive, send, self.max_body)
        if body is None:
            return
        if session is not None and await _delivered(self.sessions, session, body):
            await Response(status_code=202)(scope, receive, send)
            return
        admitted = self._admit(scope, headers, body, session)
        if admitted is None:
            await self.sdk(scope, replay(body, receive), send)
            return
        req, version, capabilities = admitted
        exchange = Exchange(
            Request(scope, receive), req, version, send, capabilities, session, self.events, self.endpoint
        )
        if session is None:
            await self._serve(exchange, receive)
            return
        with session.calling(req.id, exchange):
            await self._serve(exchange, receive)

    async def _resume(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve a GET resuming one of the exchange's event streams (`Last-Event-ID` names one of
        its events); False leaves the GET to the SDK's transport (its streams, an id no longer
        kept, and whatever it refuses), whose answer it is."""
        if self.events is None:
            return False
        headers = Headers(scope=scope)
        last = headers.get(LAST_EVENT_ID_HEADER)
        if last is None:
            return False
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        session = self.sessions.find(headers.get(MCP_SESSION_ID_HEADER, ""), version, scope)
        if session is None or not _accepts(headers.get("accept", ""))[1]:
            return False
        event = self.events.find(session.id, last)
        if event is None or event.stream[1] != Sender.EXCHANGE:
            return False
        exchange: Exchange | None = session.streaming(event.stream)
        if exchange is not None and await exchange.resume(event, send, receive):
            return True
        # The call is over: what was missed, its answer last.
        await send({"type": "http.response.start", "status": 200, "headers": _sse_headers(session.id)})
        missed = b"".join(_replayed(self.events.after(event)))
        await send({"type": "http.response.body", "body": missed, "more_body": False})
        return True

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


async def _delivered(sessions: Sessions, session: Session, body: bytes) -> bool:
    """Whether `body` is for a call the exchange runs in `session` (here or on another replica),
    and was delivered: a `notifications/cancelled` naming it, or the client's answer to a request
    it sent."""
    if b"notifications/cancelled" not in body and b'"result"' not in body and b'"error"' not in body:
        return False  # most bodies are requests: they are not decoded twice
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and await sessions.deliver(session, message)


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


def _sse_headers(session_id: str) -> list[tuple[bytes, bytes]]:
    return [*_sdk.SSE_HEADERS, (MCP_SESSION_ID_HEADER.encode(), session_id.encode("latin-1"))]


def _framed(event_id: str, payload: bytes) -> bytes:
    """An event with its id, as the SDK's transport frames one (sse-starlette's field order)."""
    return b"id: " + event_id.encode() + b"\r\nevent: message\r\ndata: " + payload + b"\r\n\r\n"


def _replayed(events: list[Event]) -> list[bytes]:
    """Kept events of the exchange, as sent (priming events carry nothing to replay)."""
    return [_framed(e.id, e.message) for e in events if isinstance(e.message, bytes)]


async def _nowhere(message: Any) -> None:
    """Where a stream's events go while no client is connected to it (they are kept)."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


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
        events: Events | None = None,
        endpoint: str = "",
    ) -> None:
        self.request = request
        self.endpoint = endpoint  # the key of the endpoint it came in on (`gateway.endpoints`)
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
        # A 2025-11-25 session's event stream is resumable: its events are kept (under `_stream`,
        # set when the answer turns into a stream: a JSON answer keeps nothing).
        self._events = events if session is not None else None
        self._stream: StreamKey | None = None
        self._finished: asyncio.Event | None = None  # made when a client resumes the stream

    @property
    def stream(self) -> StreamKey | None:
        """Where this call's events are kept, once its answer is a resumable event stream."""
        return self._stream

    @property
    def identity(self) -> Identity | None:
        return scope_identity(self.request.scope)

    def can_answer(self) -> bool:
        return can_answer(self.capabilities)

    @property
    def client_capabilities(self) -> ClientCapabilities | None:
        declared = self.capabilities
        if declared is None or isinstance(declared, ClientCapabilities):
            return declared
        # A 2026-07-28 envelope's raw value: typed only when a backend asks (as the SDK types it).
        try:
            return ClientCapabilities.model_validate(declared, by_name=False)
        except ValidationError:
            return None

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
            notification = JSONRPCNotification(jsonrpc="2.0", method=method, params=params)
            if self._stream is None:
                event = _sdk.sse_event(notification)
            else:  # the same JSON as `sse_event`'s
                dumped = notification.model_dump(mode="json", by_alias=True, exclude_none=True)
                event = self._keep(json.dumps(dumped, separators=(",", ":")).encode())
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
            event = self._event(json.dumps(request, separators=(",", ":")).encode())
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
                if isinstance(reply, JSONRPCError) and self._stream is None:
                    event = _sdk.sse_event(reply)
                elif isinstance(reply, JSONRPCError):
                    event = self._keep(_sdk.error_json(reply)[1])
                else:  # the same bytes as the SDK's event, without a model round trip of the result
                    event = self._event(_sdk.result_json(self._id, reply))
                await self._send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                await self._write_json(reply)
            if self._finished is not None:
                self._finished.set()

    async def abandon(self) -> None:
        """End the response without an answer (the client cancelled the request)."""
        async with self._guard():
            if self._closed:
                return
            self._closed = True
            await self._commit_sse()
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            if self._finished is not None:
                self._finished.set()

    async def resume(self, after: Event, send: Send, receive: Receive) -> bool:
        """Carry on this call's event stream on a GET that resumes it (`send`, `receive`): the
        events kept after `after`, then the rest as they come, until the answer. False: the call
        is over (its events, answer included, are all kept). A resumption takes the stream from
        whichever connection had it; if its client leaves, the events are only kept, for the next."""
        assert self._events is not None and self.session is not None
        async with self._guard():
            if self._closed:
                return False
            await send(
                {"type": "http.response.start", "status": 200, "headers": _sse_headers(self.session.id)}
            )
            missed = b"".join(_replayed(self._events.after(after))) + self._priming()
            await send({"type": "http.response.body", "body": missed, "more_body": True})
            previous, self._send = self._send, send
            await previous({"type": "http.response.body", "body": b"", "more_body": False})
            if self._finished is None:
                self._finished = asyncio.Event()
            finished = self._finished
        ended = asyncio.ensure_future(finished.wait())
        left = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((ended, left), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            left.cancel()
        if not finished.is_set() and self._send is send:
            self._send = _nowhere
        return True

    async def _commit_sse(self) -> None:
        if not self._streaming:
            self._streaming = True
            await self._send({"type": "http.response.start", "status": 200, "headers": _sdk.SSE_HEADERS})
            if self._events is not None and self.session is not None:
                self._stream = self._events.stream(self.session.id, self._id)
                await self._send({"type": "http.response.body", "body": self._priming(), "more_body": True})

    def _priming(self) -> bytes:
        """A priming event: an id to resume from before any message, and how long to wait first
        (as the SDK's transport sends it)."""
        assert self._events is not None and self._stream is not None
        event_id = self._events.add(self._stream, None)
        retry = self._events.retry
        return (
            b"id: "
            + event_id.encode()
            + b"\r\ndata: \r\n"
            + (b"retry: %d\r\n\r\n" % retry if retry is not None else b"\r\n")
        )

    def _event(self, payload: bytes) -> bytes:
        """An SSE event carrying `payload` (a JSON-RPC message), kept if the stream is resumable."""
        return _sdk.sse_frame(payload) if self._stream is None else self._keep(payload)

    def _keep(self, payload: bytes) -> bytes:
        assert self._events is not None and self._stream is not None
        return _framed(self._events.add(self._stream, payload), payload)

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
