"""Every place the gateway reaches below a third-party library's public surface, in one file.

Mostly the `mcp` SDK: the gateway relays raw JSON-RPC and needs the client connection behind a
request; the SDK has no public accessor for either yet. `pyproject.toml` pins the SDK's minor
series these were read from. Also one private each of `limits`, `uvicorn` and `docker` (sections at the end).
Nothing else in the gateway touches a third-party private; `tests/test_sdk.py` checks each one
below against the installed libraries and names the one that changed.

The accesses, by library (why each, at its use):

- mcp: `mcp.server._streamable_http_modern` (`_sse_event`, `_SSE_HEADERS`, `_SSE_PING_INTERVAL`),
  `mcp.shared._stream_protocols` (`ReadStream`, `WriteStream`), `mcp.server.stdio` (`_claim_fd`,
  `_open_stdin_diversion`, `_open_stdout_diversion`), `ServerSession._connection`,
  `ServerSession._request_outbound`, `ServerRunner._serialize`,
  `StreamableHTTPSessionManager._admit_session`, `._handle_stateful_request` (overridden),
  `._serve_opening_request`, `._discard_session`, `._session_creation_lock`,
  `._server_instances`, `._session_owners`,
  `StreamableHTTPServerTransport._terminate_unanswered_request` (replaced),
  `._event_store` (set), `._requests_in_flight`, `._idle_timeout`, `ClientSession._stamp`,
  `ClientSession._dispatcher`, `._task_group`, `._register_listen_route`,
  `._unregister_listen_route`, `JSONRPCDispatcher._closed`;
- limits: `MemoryStorage.__schedule_expiry` (name-mangled), and the undocumented
  `RedisStorage.bridge.storage` (the redis client, to close it and to run the cluster-wide
  concurrency scripts on the connections limits already has);
- uvicorn: the module global `uvicorn.supervisors.multiprocess.Process` (replaced while the
  supervisor of `serve --workers` runs);
- docker (and the stdlib under it): the attach response's `socket.SocketIO._sock`, and the
  `_response` docker-py hangs on it.
"""

from __future__ import annotations

import json
import math
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from typing import Any, BinaryIO, Protocol

import anyio
import mcp.server._streamable_http_modern as _modern
import mcp.server.stdio as _stdio
import uvicorn.supervisors.multiprocess as _multiprocess
from mcp.client.session import ClientSession
from mcp.client.subscriptions import ListenNotSupportedError, Subscription, SubscriptionLost
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.runner import ServerRunner
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, EventStore, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared._stream_protocols import ReadStream as ReadStream
from mcp.shared._stream_protocols import WriteStream as WriteStream
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    REQUEST_TIMEOUT,
    ClientCapabilities,
    JSONRPCError,
    RequestId,
    SubscriptionFilter,
)
from mcp_types.version import LATEST_MODERN_VERSION, MODERN_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from gateway.front import can_answer, scope_identity
from gateway.front.envelope import replay, whole_body
from gateway.front.lists import Encoded
from gateway.middleware import Identity

Ctx = ServerRequestContext[Any, Any]

# `ReadStream`, `WriteStream` (re-exported above): the SDK's protocols for a session's message
# streams, which every transport yields and `ClientSession` takes; the SDK has them only in
# private modules (`mcp.client._transport` re-exports them too).


class SdkFront:
    """A request the SDK's server dispatched, as a `front.Front`."""

    __slots__ = ("ctx", "endpoint", "meta", "method", "params", "protocol_version", "request_id")

    def __init__(self, ctx: Ctx, endpoint: str = "") -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.method: str = ctx.method
        self.params: Mapping[str, Any] | None = ctx.params
        self.request_id = ctx.request_id
        self.protocol_version: str = ctx.protocol_version
        self.meta: Mapping[str, Any] | None = ctx.meta

    @property
    def request(self) -> Request | None:
        request = self.ctx.request
        return request if isinstance(request, Request) else None

    @property
    def identity(self) -> Identity | None:
        request = self.request
        return scope_identity(request.scope) if request is not None else None

    @property
    def connection(self) -> Connection:
        connection: Connection = self.ctx.session._connection
        return connection

    def can_answer(self) -> bool:
        return can_answer(self.ctx.session.client_capabilities)

    @property
    def client_capabilities(self) -> ClientCapabilities | None:
        return self.ctx.session.client_capabilities

    def wants_progress(self) -> bool:
        return progress_token_from_params(self.params) is not None

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self.ctx.session.report_progress(progress, total, message)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self.ctx.session._request_outbound.notify(method, params)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.ctx.session._request_outbound.send_raw_request(method, params)
        return result


# -- the single-exchange HTTP entry's wire shaping, reused by the gateway's exchange (front.exchange) ---


Shaper = Callable[[str, str, dict[str, Any]], dict[str, Any]]


def result_shaper(server: Server[Any]) -> Shaper:
    """`shape(method, version, result)`: a handler's result in its wire form, exactly as the SDK's
    runner shapes it (cache hints, the per-version sieve, `resultType`, the `serverInfo` stamp)."""
    # `_serialize` reads only the server; the connection is unused.
    runner = ServerRunner(server, Connection.from_envelope(LATEST_MODERN_VERSION, None, {}), None)
    shape: Shaper = runner._serialize
    return shape


def error_json(error: JSONRPCError) -> tuple[int, bytes]:
    """The HTTP status and JSON body the SDK's modern entry sends for `error`."""
    body = error.model_dump(mode="json", by_alias=True, exclude_none=True)
    return ERROR_CODE_HTTP_STATUS.get(error.error.code, 200), json.dumps(body, separators=_COMPACT).encode()


def result_json(request_id: str | int, result: dict[str, Any]) -> bytes:
    """The JSON body the SDK's modern entry sends for a result (its model dump would copy the
    result unchanged: it is JSON already, the backend's, reshaped).

    A list result's items that carry their own JSON (`front.lists.Encoded`) are written as they
    are: encoded in place of a marker that no JSON string can hold unescaped."""
    body = {"jsonrpc": "2.0", "id": request_id, "result": result}
    for key, value in result.items():
        if type(value) is Encoded:
            body["result"] = {**result, key: _ITEMS_MARKER}
            text = json.dumps(body, separators=_COMPACT, check_circular=False).encode()
            before, _, after = text.partition(_ENCODED_MARKER)
            return before + value.json + after
    return json.dumps(body, separators=_COMPACT, check_circular=False).encode()


def items_json(items: list[Any]) -> bytes:
    """A list of items encoded as `result_json` encodes it inside a result."""
    return json.dumps(items, separators=_COMPACT, check_circular=False).encode()


_COMPACT = (",", ":")
# Where a list's own JSON goes: NUL characters, which no field of a list result besides the items
# holds (the rest is the gateway's: hints, `resultType`, its `serverInfo` stamp).
_ITEMS_MARKER = "\x00gateway:items\x00"
_ENCODED_MARKER = json.dumps(_ITEMS_MARKER).encode()


sse_event = _modern._sse_event


def sse_frame(data: bytes) -> bytes:
    """A JSON-RPC message already encoded, as `sse_event` frames one."""
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"


SSE_HEADERS = _modern._SSE_HEADERS
SSE_PING_INTERVAL = _modern._SSE_PING_INTERVAL


class SessionIds(Protocol):
    """How a 2025-11-25 session's id is made and trusted (`front.sessions.SessionIds`)."""

    def mint(self, opening: Mapping[str, Any], owner: AuthorizationContext | None) -> str:
        """The id of a session opened with `initialize` params `opening` by `owner`."""
        ...

    async def restorable(self, session_id: str, owner: AuthorizationContext | None) -> dict[str, Any] | None:
        """The `initialize` params of a session this process does not hold, if `owner` may
        resume it (it was minted by a replica of this gateway, for `owner`, and not ended)."""
        ...

    async def ended(self, session_id: str) -> None:
        """The client ended the session (DELETE): no replica may resume it."""
        ...


class SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, whose sessions leave a cancelled request unanswered, each have an
    event store of their own, and (with `session_ids`) live on any replica.

    The SDK's 2025-11-25 transport ends a request that settled without a response (the client
    cancelled it) with a `REQUEST_CANCELLED` error on its stream; the spec says the receiver of a
    `notifications/cancelled` should not answer the request. Its stream is ended instead, with no
    message, as the exchange (`front.exchange`) does. The transport is built inside the private
    `_admit_session`, and the error is written by its private `_terminate_unanswered_request`
    (looked up per request, so an instance attribute replaces it).

    `session_events(session_id)`: the session's event store (resumable streams). The SDK hands
    every session's transport the one store it was given, with stream ids that are request ids,
    unique only within a session: one session's `Last-Event-ID` could replay another's events. So
    each transport's private `_event_store` is set to its session's own (read per use, so setting
    it after construction is enough).

    `session_ids`: the SDK names a session `uuid4().hex` and knows it only in the process that
    opened it. Here the id is minted from the opening request (`SessionIds.mint`, set through the
    private `_admit_session`), and a request naming a session this process does not hold is
    preceded by that session's restoration: its opening `initialize` and `notifications/initialized`
    replayed through the SDK's own private `_serve_opening_request`, under the same id, as the
    client sent them. So every check and every negotiation stays the SDK's, in every process.
    """

    def __init__(
        self,
        *args: Any,
        session_events: Callable[[str], EventStore] | None = None,
        session_ids: SessionIds | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.session_events = session_events
        self.session_ids = session_ids
        # The id `_admit_session` gives the session it admits (set around it, per request).
        self._next_id: ContextVar[str | None] = ContextVar("next_session_id", default=None)
        self._restoring: dict[str, anyio.Event] = {}

    def held(self, session_id: str) -> bool:
        """Whether this process holds the session (open, or restored)."""
        return session_id in self._server_instances

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is None:
            return None
        chosen = self._next_id.get()
        if chosen is not None and transport.mcp_session_id is not None:
            # Re-keyed before any await: nothing has seen the SDK's own id yet.
            self._server_instances[chosen] = self._server_instances.pop(transport.mcp_session_id)
            if transport.mcp_session_id in self._session_owners:
                self._session_owners[chosen] = self._session_owners.pop(transport.mcp_session_id)
            transport.mcp_session_id = chosen
        bound = transport
        if self.session_events is not None and transport.mcp_session_id is not None:
            transport._event_store = self.session_events(transport.mcp_session_id)

        async def end_unanswered(request_id: RequestId) -> None:
            bound.close_sse_stream(str(request_id))  # streams are keyed by the id's text

        transport._terminate_unanswered_request = end_unanswered  # type: ignore[method-assign]
        return transport

    async def _handle_stateful_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        ids = self.session_ids
        if ids is None:
            await super()._handle_stateful_request(scope, receive, send)
            return
        session_id = Headers(scope=scope).get(MCP_SESSION_ID_HEADER)
        if session_id is None:
            minted, opening = None, None
            if scope["method"] == "POST":
                # Bodies reach here whole and within bounds (`front.envelope.EnvelopeCheck`).
                body = await whole_body(scope, receive, send, self.max_request_body_size)
                if body is None:
                    return
                receive = replay(body, receive)
                opening = _opening(body)
                minted = None if opening is None else ids.mint(opening, _owner(scope))
            token = self._next_id.set(minted)
            try:
                await super()._handle_stateful_request(scope, receive, send)
            finally:
                self._next_id.reset(token)
            if minted is not None and opening is not None and self.held(minted):
                # The client's `notifications/initialized` may reach another replica: this one
                # counts the session initialized now, as a restoring one does, so that it serves
                # the session's calls itself (questions and cancellations then cross replicas).
                # Bounded: the session's loop takes it as it takes the client's own.
                with anyio.move_on_after(RESTORE_TIMEOUT):
                    await self._initialized(minted, opening, scope)
            return
        held = await self.restore(session_id, scope)
        if not held or scope["method"] != "DELETE":
            await super()._handle_stateful_request(scope, receive, send)
            return
        # Ended by its answer, not by what is held after it: a request racing the DELETE may
        # have restored the session meanwhile.
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await super()._handle_stateful_request(scope, receive, sending)
        if status and 200 <= status[0] < 300:
            await ids.ended(session_id)
            await end_session(self, session_id)  # restored by a racing request: ended too

    async def restore(self, session_id: str, scope: Scope) -> bool:
        """Hold the session `session_id` (restoring it if this process does not); False when it
        cannot be (not one of ours, another owner's, ended, expired, or at `max_sessions`)."""
        if self.held(session_id):
            return True
        ids = self.session_ids
        if ids is None:
            return False
        pending = self._restoring.get(session_id)
        if pending is not None:  # another request of the session is restoring it
            with anyio.move_on_after(RESTORE_TIMEOUT):
                await pending.wait()
            return self.held(session_id)
        done = self._restoring[session_id] = anyio.Event()
        try:
            owner = _owner(scope)
            opening = await ids.restorable(session_id, owner)
            if opening is not None:
                with anyio.move_on_after(RESTORE_TIMEOUT):
                    await self._replay_opening(session_id, owner, opening, scope)
            return self.held(session_id)
        finally:
            del self._restoring[session_id]
            done.set()

    async def _replay_opening(
        self, session_id: str, owner: AuthorizationContext | None, opening: dict[str, Any], scope: Scope
    ) -> None:
        async with self._session_creation_lock:
            token = self._next_id.set(session_id)
            try:
                transport = self._admit_session(owner)
            finally:
                self._next_id.reset(token)
        if transport is None:
            return
        initialize = {"jsonrpc": "2.0", "id": RESTORE_ID, "method": "initialize", "params": opening}
        await self._serve_opening_request(transport, _replayed(scope), _body(initialize), _discard)
        if self.held(session_id):
            await self._initialized(session_id, opening, scope)

    async def _initialized(self, session_id: str, opening: Mapping[str, Any], scope: Scope) -> None:
        """The session's `notifications/initialized`, sent to it as its client sends it."""
        transport = self._server_instances.get(session_id)
        if transport is None:
            return
        version = str(opening.get("protocolVersion", "")).encode()
        note = _replayed(
            scope, (MCP_SESSION_ID_HEADER.encode(), session_id.encode()), (b"mcp-protocol-version", version)
        )
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await transport.handle_request(note, _body(initialized), _discard)


def _replayed(scope: Scope, *extra: tuple[bytes, bytes]) -> Scope:
    """A POST of the session's, replayed as its client sent it: its Host and Origin (checked
    again) and its principal (`scope["user"]`), with `extra` headers."""
    kept = [(k, v) for k, v in scope["headers"] if k in (b"host", b"origin")]
    headers = [*kept, (b"content-type", b"application/json"), (b"accept", _ACCEPT), *extra]
    return {**scope, "method": "POST", "headers": headers}


_ACCEPT = b"application/json, text/event-stream"
# The id of the replayed `initialize` (its answer goes nowhere), and how long a restoration may take.
RESTORE_ID = "gateway-restore"
RESTORE_TIMEOUT = 10.0


def _owner(scope: Scope) -> AuthorizationContext | None:
    user = scope.get("user")
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


def _opening(body: bytes) -> dict[str, Any] | None:
    """The params of the `initialize` request `body` is, if it is one."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict) or decoded.get("method") != "initialize":
        return None
    params = decoded.get("params")
    return params if isinstance(params, dict) else None


def _body(message: Mapping[str, Any]) -> Receive:
    body = json.dumps(message, separators=(",", ":")).encode()

    async def receive() -> Message:
        nonlocal body
        if body is not None:
            chunk, body = body, None  # type: ignore[assignment]
            return {"type": "http.request", "body": chunk, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError  # unreachable

    return receive


async def _discard(message: Message) -> None:
    pass


@contextmanager
def session_busy(manager: StreamableHTTPSessionManager, session_id: str) -> Iterator[None]:
    """While the exchange serves a request of the session: the SDK's idle countdown for it is
    suspended, and restarts when the last request ends, exactly as its transport's
    `handle_request` does for the requests it serves (from the same private counters). Without
    this a session busy only with exchange calls would expire as idle."""
    transport = manager._server_instances.get(session_id)
    scope = transport.idle_scope if transport is not None else None
    if transport is None or scope is None or transport._idle_timeout is None:
        yield
        return
    transport._requests_in_flight += 1
    scope.deadline = math.inf
    try:
        yield
    finally:
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            scope.deadline = anyio.current_time() + transport._idle_timeout


def session_open(manager: StreamableHTTPSessionManager, session_id: str) -> bool:
    """Whether the SDK's transport still holds the 2025-11-25 session `session_id`."""
    transport = manager._server_instances.get(session_id)
    return transport is not None and not transport.is_terminated


async def end_session(manager: StreamableHTTPSessionManager, session_id: str) -> None:
    """End this process's copy of a session the client ended through another replica, as the
    SDK ends one after a DELETE (its private `_discard_session`: forget, then terminate)."""
    transport = manager._server_instances.get(session_id)
    if transport is not None:
        await manager._discard_session(session_id, transport)


def close_get_streams(manager: StreamableHTTPSessionManager) -> None:
    """End the standalone GET stream of every open 2025-11-25 session (the transport's public
    `close_standalone_sse_stream`; the table of sessions is the manager's private one). Closed so
    that a shutting-down gateway is not kept waiting by clients that merely listen."""
    for transport in list(manager._server_instances.values()):
        transport.close_standalone_sse_stream()


def session_owned(manager: StreamableHTTPSessionManager, session_id: str, scope: Scope) -> bool:
    """Whether the request in `scope` comes from the principal that opened the session, by the
    SDK's own rule (another gets 404, as if the session did not exist)."""
    user = scope.get("user")
    requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
    return requestor == manager._session_owners.get(session_id)


def claim_stdio() -> tuple[tuple[BinaryIO, BinaryIO], Callable[[], None]]:
    """The wire's stdin and stdout, claimed as the SDK's `stdio_server` claims them: fd 0 then
    reads the null device and fd 1 writes to stderr (stray output misses the wire) until the
    returned function restores them (once; later calls do nothing)."""
    stdin, restore_stdin = _stdio._claim_fd(0, sys.stdin, "rb", _stdio._open_stdin_diversion)
    try:
        stdout, restore_stdout = _stdio._claim_fd(1, sys.stdout, "wb", _stdio._open_stdout_diversion)
    except BaseException:
        if restore_stdin is not None:
            restore_stdin()
        raise

    undone: list[bool] = []

    def restore() -> None:  # idempotent
        if not undone:
            undone.append(True)
            for undo in (restore_stdout, restore_stdin):
                if undo is not None:
                    undo()

    return (stdin, stdout), restore


# -- a backend session's raw requests through the SDK's dispatcher ------------------------------


Stamp = Callable[[dict[str, Any], CallOptions], None]


def stamper(client: ClientSession) -> Stamp:
    """What puts the era headers / `_meta` envelope on a request, as the SDK's typed calls do.

    The client's `_stamp`, which its handshake (`initialize`, `adopt`) installs for the
    negotiated version: read it after the handshake, and keep it (the exchange then calls it
    with no lookup of ours in between)."""
    return client._stamp


async def raw_notify(
    client: ClientSession, method: str, params: dict[str, Any] | None, opts: CallOptions
) -> None:
    """Send a raw notification through the client session's dispatcher (no public raw notify)."""
    await client._dispatcher.notify(method, params, opts)


async def raw_request(
    client: ClientSession, method: str, params: dict[str, Any] | None, opts: CallOptions
) -> dict[str, Any]:
    """Send a raw request through the client session's dispatcher (the SDK has no public raw call).

    An `MCPError` raised is always the peer's own answer. The dispatcher reports its own timeout
    and a connection it saw close with the same codes a peer may send (REQUEST_TIMEOUT,
    CONNECTION_CLOSED) and no marker, so those are told apart by how mcp 2.3's
    `JSONRPCDispatcher.send_raw_request` raises them, and raised as what the gateway's backends
    raise for what they observe themselves: `TimeoutError`, `anyio.BrokenResourceError`.
    - its timeout is raised inside its `except TimeoutError` (the clock's), so that is its context;
    - a failed write is raised inside the stream error's handler, likewise;
    - a connection that ended is fanned out to the waiters once the dispatcher is `_closed`, as
      the bare "Connection closed" (a peer's error answer arriving just before the end and
      worded exactly so, with no data, is the one case this cannot tell apart).
    """
    dispatcher = client._dispatcher
    try:
        result: dict[str, Any] = await dispatcher.send_raw_request(method, params, opts)
    except MCPError as exc:
        cause = exc.__context__
        if exc.code == REQUEST_TIMEOUT and isinstance(cause, TimeoutError):
            raise TimeoutError from None
        if exc.code == CONNECTION_CLOSED and (
            isinstance(cause, anyio.BrokenResourceError | anyio.ClosedResourceError)
            or (
                getattr(dispatcher, "_closed", False)
                and exc.data is None
                and exc.message == "Connection closed"
            )
        ):
            raise anyio.BrokenResourceError from None
        raise
    return result


@asynccontextmanager
async def listen_filtered(
    client: ClientSession, notifications: Mapping[str, Any]
) -> AsyncIterator[Subscription]:
    """`mcp.client.subscriptions.listen` for any filter, extensions' keys included.

    The SDK's helper builds its filter from the core kinds alone, so the tasks extension's
    `taskIds` cannot be asked for with it. These are its steps, on the privates it uses: a demux
    route is registered for an id of ours (`_register_listen_route`) before the request is stamped
    (`_stamp`) and sent raw through the dispatcher (`_dispatcher`) from the session's task group
    (`_task_group`); the session's receive path feeds that route the acknowledgment and the
    stream's end, and `Subscription` reads them. The filter's unknown keys round-trip
    (`SubscriptionFilter` keeps extras), so `subscription.honored.model_extra` is what the server
    agreed to of them. No read timeout of its own: the caller bounds the wait for the ack."""
    if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        raise ListenNotSupportedError(client.protocol_version)
    task_group = client._task_group
    if task_group is None:
        raise RuntimeError("listen_filtered() requires an entered session")
    # Not the SDK's `listen-N` sequence, which its own `listen` may be using on this session.
    request_id: RequestId = f"gateway-listen-{uuid.uuid4().hex}"
    data: dict[str, Any] = {
        "method": "subscriptions/listen",
        "params": {"notifications": dict(notifications)},
    }
    opts: CallOptions = {"request_id": request_id}
    client._stamp(data, opts)
    driver_scope = anyio.CancelScope()

    async def drive() -> None:
        # No result timeout: the result is the stream's graceful end.
        with driver_scope:
            try:
                await client._dispatcher.send_raw_request(data["method"], data["params"], opts)
            except MCPError as error:
                route.settle("lost", error=error)
                return
            except ValueError as error:  # our id collided with a raw request's
                client._unregister_listen_route(request_id)
                route.settle("lost", error=MCPError(INTERNAL_ERROR, str(error)))
                return
            route.set_acked(SubscriptionFilter())
            route.settle("graceful")

    route = client._register_listen_route(request_id)
    try:
        task_group.start_soon(drive)
        await route.acked.wait()
        if route.honored is None:
            if route.error is not None:
                raise route.error
            raise SubscriptionLost(f"subscription {request_id!r} ended before it was acknowledged")
        yield Subscription(route, request_id, route.honored)
    finally:
        route.settle("local")
        driver_scope.cancel()
        client._unregister_listen_route(request_id)


# -- limits ---------------------------------------------------------------------------------------

# limits' in-memory store starts its clean-up from this name-mangled coroutine method after a hit
# (`MemoryStorage.__schedule_expiry`); `_ratelimit_store` swaps it per instance for a cheaper sweep.
MEMORY_EXPIRY_HOOK = "_MemoryStorage__schedule_expiry"


def replace_memory_expiry(storage: Any, hook: Callable[[], Any]) -> bool:
    """Make `storage` (a limits `MemoryStorage`) call `hook` where it would schedule its clean-up.

    False, changing nothing, when the installed limits has no such method any more."""
    if not hasattr(type(storage), MEMORY_EXPIRY_HOOK):
        return False
    vars(storage)[MEMORY_EXPIRY_HOOK] = hook
    return True


def redis_client(storage: Any) -> Any:
    """The redis client under a limits Redis storage (`storage.bridge.storage`, undocumented), or
    None: limits has no public close, and an unclosed client warns at exit. The ratelimit
    middleware also runs its concurrency scripts on it (one pool, one set of timeouts)."""
    return getattr(getattr(storage, "bridge", None), "storage", None)


# -- uvicorn --------------------------------------------------------------------------------------

# uvicorn's supervisor (`uvicorn.supervisors.Multiprocess`) makes each worker as
# `Process(config, sockets)`, a name it looks up in its module at the time, and takes no class to
# use instead: only through that name can a worker run the gateway's server (the drain on
# SIGTERM) rather than a plain uvicorn one. Replaced for as long as the supervisor runs, in the
# supervising process, which does nothing else.


@contextmanager
def uvicorn_worker_class(make: Callable[..., Any]) -> Iterator[None]:
    """While inside, uvicorn's supervisor makes its workers with `make(config, sockets)`."""
    saved = _multiprocess.Process
    _multiprocess.Process = make  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        _multiprocess.Process = saved  # type: ignore[misc]


# -- docker ---------------------------------------------------------------------------------------


def attach_socket(raw: Any) -> socket.socket:
    """A socket of our own for docker-py's `attach_socket` result (closing everything of its own).

    docker-py hands back the response's `socket.SocketIO` (its `_sock` is the socket; over TLS
    the socket itself) and keeps the HTTP response alive in an attribute `_response` of it.
    Closing those returns nothing to its pool that could be reused (the pool reconnects a closed
    connection)."""
    sock = getattr(raw, "_sock", raw)
    try:
        own: socket.socket = sock.dup()
    finally:
        for obj in (getattr(raw, "_response", None), raw, sock):
            close = getattr(obj, "close", None)
            if close is not None:
                with suppress(Exception):
                    close()
    return own
