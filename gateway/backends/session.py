"""One live MCP session to a backend, over any transport, kept open and multiplexed.

The session speaks the raw JSON-RPC layer of the `mcp` SDK: params go out as the client sent them
and results come back as dicts, so nothing a backend says is lost to a model round trip, and no
per-call validation or `tools/list` is added on the hot path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import mcp_types as types
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.server.caching import CacheHint
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from gateway import __version__
from gateway._sdk import ReadStream, Stamp, raw_notify, raw_request, stamper
from gateway.backends._direct import DirectCalls
from gateway.backends._logbuffer import RepeatedWarning
from gateway.backends.transport import Streams, Transport
from gateway.catalogue import LIST_METHODS, BackendListing, ListKind, cache_hint_of
from gateway.errors import BackendStartError, BackendTimeout, BackendUnavailable

logger = logging.getLogger(__name__)

__all__ = ["BackendSession", "Forwarded", "SessionHooks", "Streams"]

# How a transport says it failed under a call (the pipe's own, anyio's streams, the OS's).
# TimeoutError is an OSError too, and is caught before these.
_TRANSPORT_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)

# Listing pages are followed to the end, but a backend that hands out cursors forever must not
# hang a refresh.
_MAX_LIST_PAGES = 100


class SessionHooks(Protocol):
    """What a backend session reports upward (implemented by the supervising `Backend`)."""

    async def on_notification(
        self, session: BackendSession, method: str, params: Mapping[str, Any]
    ) -> None: ...

    async def on_request(
        self, session: BackendSession, method: str, params: dict[str, Any]
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Forwarded:
    """Which server-to-client features the gateway declares to this backend."""

    sampling: bool = True
    elicitation: bool = True
    roots: bool = False


class BackendSession:
    """An initialized MCP client session; use as an async context manager.

    `closed` is set when the transport ends (process exit, container death, connection loss),
    which is how the supervisor learns of a crash without polling.
    """

    def __init__(
        self,
        server: str,
        transport: Transport,
        hooks: SessionHooks,
        *,
        startup_timeout: float,
        forwarded: Forwarded = Forwarded(),
    ) -> None:
        self.server = server
        self._transport = transport
        self._hooks = hooks
        self._startup_timeout = startup_timeout
        self._forwarded = forwarded
        self.owner: Hashable | None = None  # the client a per-client session belongs to
        self._stack = AsyncExitStack()
        self._client: ClientSession | None = None
        self._direct: DirectCalls | None = None
        self._stamp: Stamp = _before_handshake
        self.closed = anyio.Event()
        self.initialize_result: types.InitializeResult | None = None
        self.listing = BackendListing()
        self._garbage = RepeatedWarning(
            logger, f"server {server}: %d more unparseable messages in the last %gs"
        )

    async def __aenter__(self) -> BackendSession:
        try:
            # Entering the transport and the SDK session opens task groups that outlive this
            # method, so only the handshake itself sits inside the start-up deadline.
            read, write, direct = await self._stack.enter_async_context(self._transport.connect())
            # The direct path (a pipe's) is used only once the handshake is done.
            if direct is not None:
                direct.on_log = self._on_log
            read = await self._stack.enter_async_context(_watch_end(read, self.closed))
            self._client = ClientSession(
                read,
                write,
                client_info=types.Implementation(name="mcp-gateway", version=__version__),
                message_handler=self._on_message,
                **self._callbacks(),
            )
            await self._stack.enter_async_context(self._client)
            with anyio.fail_after(self._startup_timeout):
                self.initialize_result = await self._client.initialize()
                self._stamp = stamper(self._client)
                self._direct = direct
                self.listing = await self.fetch_listing()
        except BaseException as exc:
            # No shield of our own here: a new cancel scope cannot enclose the exit of task groups
            # opened outside it. The SDK's stdio transport shields its own process teardown.
            await self._stack.aclose()
            self.closed.set()
            self._garbage.flush()
            if isinstance(exc, TimeoutError):
                raise BackendStartError(
                    self.server, f"{self.server}: no MCP handshake within {self._startup_timeout:g}s"
                ) from None
            if isinstance(exc, MCPError | OSError | anyio.BrokenResourceError | anyio.ClosedResourceError):
                raise BackendStartError(
                    self.server, f"{self.server}: failed to start: {_describe(exc)}"
                ) from exc
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._stack.aclose()
        finally:
            self.closed.set()
            self._garbage.flush()

    @property
    def capabilities(self) -> types.ServerCapabilities:
        assert self.initialize_result is not None
        return self.initialize_result.capabilities

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        timeout: float,
        on_progress: ProgressFnT | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the backend's raw result.

        Raises `BackendUnavailable` when the session is gone or its transport fails, `BackendTimeout`
        after `timeout` (the backend is sent `notifications/cancelled`), and the backend's own
        `MCPError` as is, whatever its code: the gateway's errors come only from what the gateway
        itself observed (its timer, its transport), never from the number a backend answered with.
        """
        client = self._client
        if client is None or self.closed.is_set():
            raise BackendUnavailable(self.server, f"server {self.server!r} is not running")
        data: dict[str, Any] = {"method": method, "params": dict(params) if params else {}}
        opts: CallOptions = {"timeout": timeout}
        if on_progress is not None:
            opts["on_progress"] = on_progress
        self._stamp(data, opts)  # era headers / _meta envelope, exactly as the SDK's typed calls do
        try:
            direct = self._direct
            if direct is not None:
                return await direct.request(method, data["params"], timeout=timeout, on_progress=on_progress)
            return await raw_request(client, method, data["params"] or None, opts)
        except MCPError:
            if self._transport.expired:
                # The server forgot our session: end it, so the supervisor re-establishes it now.
                self.closed.set()
                raise BackendUnavailable(
                    self.server, f"server {self.server!r} expired the session; reconnecting, retry the call"
                ) from None
            raise
        except TimeoutError:
            raise BackendTimeout(
                self.server, f"server {self.server!r} did not answer {method} within {timeout:g}s"
            ) from None
        except _TRANSPORT_ERRORS as exc:
            # A dead pipe or connection is the backend's failure: never let it out raw, where
            # it would pass for a failure of whatever sits above (a middleware, the relay).
            # Only the gateway's own words (a pipe it gave up on) are shown; an OS error's text is not.
            own = isinstance(exc, anyio.BrokenResourceError) and exc.args
            reason = str(exc) if own else "closed the connection"
            raise BackendUnavailable(self.server, f"server {self.server!r} {reason}") from None

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        if self._client is not None and not self.closed.is_set():
            opts: CallOptions = {}
            data: dict[str, Any] = {"method": method, "params": dict(params or {})}
            self._stamp(data, opts)
            await raw_notify(self._client, method, data["params"] or None, opts)

    async def fetch_listing(self) -> BackendListing:
        caps = self.capabilities
        timeout = self._startup_timeout
        # TTLs count from the first request: a client never holds a list longer than allowed.
        listed_at = time.monotonic()
        hints: dict[ListKind, CacheHint] = {}
        tools = await self._list_all("tools/list", "tools", timeout, hints) if caps.tools else []
        prompts = await self._list_all("prompts/list", "prompts", timeout, hints) if caps.prompts else []
        resources, templates = [], []
        if caps.resources:
            resources = await self._list_all("resources/list", "resources", timeout, hints)
            templates = await self._list_all("resources/templates/list", "resourceTemplates", timeout, hints)
        return BackendListing(
            tools=tools,
            prompts=prompts,
            resources=resources,
            templates=templates,
            hints=hints,
            listed_at=listed_at,
        )

    async def _list_all(
        self, method: str, key: str, timeout: float, hints: dict[ListKind, CacheHint]
    ) -> list[dict[str, Any]]:
        """All pages of one list; the freshness hint they carried goes into `hints`."""
        items: list[dict[str, Any]] = []
        pages: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            result = await self.request(method, {"cursor": cursor} if cursor else None, timeout=timeout)
            items.extend(result.get(key) or [])
            pages.append(result)
            cursor = result.get("nextCursor")
            if not cursor:
                break
        hints[LIST_METHODS[method]] = cache_hint_of(pages)
        return items

    def _callbacks(self) -> dict[str, Any]:
        # Declaring a capability changes what backends expose (server-everything adds tools for
        # sampling; server-filesystem swaps its directories for the client's roots), so only what
        # the config forwards is declared.
        callbacks: dict[str, Any] = {}
        if self._forwarded.sampling:
            callbacks["sampling_callback"] = self._relay("sampling/createMessage")
        if self._forwarded.elicitation:
            callbacks["elicitation_callback"] = self._relay("elicitation/create")
        if self._forwarded.roots:

            async def roots(context: ClientRequestContext) -> Any:
                return await self._hooks.on_request(self, "roots/list", {})

            callbacks["list_roots_callback"] = roots
        return callbacks

    def _relay(self, method: str) -> Callable[[ClientRequestContext, Any], Awaitable[Any]]:
        async def relay(context: ClientRequestContext, params: Any) -> Any:
            raw = params.model_dump(by_alias=True, mode="json", exclude_none=True)
            try:
                # The SDK validates whatever the callback returns into the result union.
                return await self._hooks.on_request(self, method, raw)
            except MCPError as exc:
                return exc.error

        return relay

    async def _on_log(self, params: dict[str, Any]) -> None:
        await self._hooks.on_notification(self, "notifications/message", params)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            # A garbage line on stdout costs that line only; the session goes on.
            self._garbage.warning(
                "server %s sent an unparseable message: %s", self.server, type(message).__name__
            )
            return
        data = message.model_dump(by_alias=True, mode="json", exclude_none=True)
        await self._hooks.on_notification(self, data["method"], data.get("params") or {})


def _before_handshake(data: dict[str, Any], opts: CallOptions) -> None:
    raise RuntimeError("a backend request before the MCP handshake")  # a gateway bug


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MCPError):
        return exc.message
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename} (is it installed, and on PATH?)"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "the connection closed during the handshake"


class _watch_end:
    """Pass a read stream through unchanged, setting `event` when it ends."""

    def __init__(self, stream: ReadStream[SessionMessage | Exception], event: anyio.Event) -> None:
        self._stream = stream
        self._event = event

    async def __aenter__(self) -> ReadStream[SessionMessage | Exception]:
        return _WatchedStream(self._stream, self._event)

    async def __aexit__(self, *exc_info: object) -> None:
        self._event.set()


class _WatchedStream:
    def __init__(self, stream: ReadStream[SessionMessage | Exception], event: anyio.Event) -> None:
        self._stream = stream
        self._event = event

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._event.set()
            raise

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> _WatchedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
