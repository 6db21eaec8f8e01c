"""One live MCP session to a backend, over any transport, kept open and multiplexed.

The session speaks the raw JSON-RPC layer of the `mcp` SDK: params go out as the client sent them
and results come back as dicts, so nothing a backend says is lost to a model round trip, and no
per-call validation or `tools/list` is added on the hot path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import anyio
import anyio.abc
import mcp_types as types
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.client.subscriptions import SubscriptionLost
from mcp.server.caching import CacheHint
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import find_invalid_x_mcp_header, mcp_param_headers, x_mcp_header_map
from mcp.shared.message import SessionMessage
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    INVALID_PARAMS,
    LOG_LEVEL_META_KEY,
    SERVER_INFO_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway import __version__
from gateway._sdk import ReadStream, Stamp, listen_filtered, raw_notify, raw_request, stamper
from gateway.backends._direct import DirectCalls
from gateway.backends._logbuffer import RepeatedWarning
from gateway.backends.transport import Streams, Transport
from gateway.catalogue import LIST_METHODS, BackendListing, ListKind, cache_hint_of
from gateway.errors import BackendStartError, BackendTimeout, BackendUnavailable, GatewayError
from gateway.tasks import STATUS as TASK_STATUS
from gateway.tasks import TERMINAL as TASK_TERMINAL

logger = logging.getLogger(__name__)

__all__ = ["MAX_FOLLOWED_TASKS", "BackendSession", "Forwarded", "Revision", "SessionHooks", "Streams"]

# What `protocol:` in a server's config asks for: probe for the newest shared revision, or pin one.
Revision = Literal["auto", "2026-07-28", "2025-11-25"]

# How a transport says it failed under a call (the pipe's own, anyio's streams, the OS's).
# TimeoutError is an OSError too, and is caught before these.
_TRANSPORT_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)

# Listing pages are followed to the end, but a backend that hands out cursors forever must not
# hang a refresh.
_MAX_LIST_PAGES = 100

_LOG_LEVELS = get_args(types.LoggingLevel)

# Requests of the handshake era that 2026-07-28 replaced with a listen stream's filter.
_SUBSCRIPTIONS = frozenset({"resources/subscribe", "resources/unsubscribe"})

# A lost `subscriptions/listen` stream is re-opened after this long, doubling up to the maximum.
_RELISTEN_FIRST, _RELISTEN_MAX = 1.0, 30.0

# The most task ids one backend's status stream names (the newest ones): a client hears of the
# others' status by polling (`tasks/get`), as from a backend that sends none.
MAX_FOLLOWED_TASKS = 256


@dataclass(frozen=True)
class _Listen:
    """What one `subscriptions/listen` stream asks a 2026-07-28 backend for."""

    tools: bool = False
    prompts: bool = False
    resources: bool = False
    uris: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()  # the tasks extension's `taskIds`: these tasks' status

    def notifications(self) -> dict[str, Any]:
        """The request's filter (`taskIds` is an extension's key, which the filter keeps)."""
        notifications = types.SubscriptionFilter.model_validate(
            {
                "toolsListChanged": self.tools or None,
                "promptsListChanged": self.prompts or None,
                "resourcesListChanged": self.resources or None,
                "resourceSubscriptions": list(self.uris) or None,
                "taskIds": list(self.tasks) or None,
            }
        )
        return notifications.model_dump(by_alias=True, mode="json", exclude_none=True)


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
        protocol: Revision = "auto",
    ) -> None:
        self.server = server
        self._transport = transport
        self._hooks = hooks
        self._startup_timeout = startup_timeout
        self._forwarded = forwarded
        self.owner: Hashable | None = None  # the client a per-client session belongs to
        self._protocol = protocol
        self._stack = AsyncExitStack()
        self._tasks: anyio.abc.TaskGroup | None = None
        self._modern = False  # `modern`, read once per call
        # A 2026-07-28 backend's tools whose calls carry `Mcp-Param-*` headers (see `fetch_listing`).
        # The resources a 2026-07-28 backend is subscribed to, and the listen stream for them.
        self._uris: frozenset[str] = frozenset()
        self._uri_stream: anyio.CancelScope | None = None
        self._subscribing = anyio.Lock()
        # The tasks whose status a 2026-07-28 backend reports to us (oldest first), and the stream.
        self._task_ids: tuple[str, ...] = ()
        self._task_stream: anyio.CancelScope | None = None
        self._following = anyio.Lock()
        # The level a client set for a 2026-07-28 backend, which has no `logging/setLevel`: its logs
        # are asked for at this level on every request (None: every level, the session's default).
        self._log_level: str | None = None
        self._param_headers: dict[str, dict[tuple[str, ...], str]] = {}
        self._client: ClientSession | None = None
        self._direct: DirectCalls | None = None
        self._stamp: Stamp = _before_handshake
        self.closed = anyio.Event()
        # What the backend told at its handshake or discovery (`server/discover`), and the revision
        # both sides share; set once the session is open.
        self.protocol_version: str | None = None
        self.capabilities = types.ServerCapabilities()
        self.server_info: types.Implementation | None = None
        self.instructions: str | None = None
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
                # 2026-07-28 delivers logs only to requests that opt in: ask for every level, and
                # the relay sends each client what its own request (or revision) allows.
                log_level="debug",
                # The tasks extension's status news is no core notification: bound, or dropped.
                notification_bindings=[
                    NotificationBinding(method=TASK_STATUS, params_type=_Open, handler=self._on_task_status)
                ],
                **self._callbacks(),
            )
            await self._stack.enter_async_context(self._client)
            # Where a 2026-07-28 backend's listen stream lives (opened here: a task group must not
            # be entered inside the deadline's scope and left outside it).
            self._tasks = await self._stack.enter_async_context(anyio.create_task_group())
            self._stack.callback(self._tasks.cancel_scope.cancel)
            with anyio.fail_after(self._startup_timeout):
                await _negotiate(self.server, self._client, self._protocol)
                self._adopted(self._client)
                self._direct = direct
                # Listening before listing: a change in between is announced, not missed.
                changes = self._changes_to_listen_for()
                if changes != _Listen() and self._tasks is not None:
                    await self._tasks.start(self._listen, changes)
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

    def _adopted(self, client: ClientSession) -> None:
        self.protocol_version = client.protocol_version
        self._modern = self.modern
        self.capabilities = client.server_capabilities or types.ServerCapabilities()
        self.server_info = client.server_info
        self.instructions = client.instructions
        self._stamp = stamper(client)

    @property
    def modern(self) -> bool:
        """Whether the backend is spoken to in a sessionless revision (2026-07-28 on)."""
        return self.protocol_version in MODERN_PROTOCOL_VERSIONS

    async def ping(self, timeout: float) -> None:
        """A liveness check in the session's revision: 2026-07-28 has no `ping`, but every server
        answers `server/discover`."""
        await self.request("server/discover" if self.modern else "ping", None, timeout=timeout)

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        timeout: float,
        on_progress: ProgressFnT | None = None,
        capabilities: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the backend's raw result. `capabilities`: the client's, for a
        2026-07-28 backend, which reads them per request (it asks only what the client can answer).

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
        if self._log_level is not None:
            # Ours is kept: the stamp only sets its own level where none is.
            out = data["params"]
            out["_meta"] = {**(out.get("_meta") or {}), LOG_LEVEL_META_KEY: self._log_level}
        if capabilities is None and self._modern:
            # One the relay set on the request itself (an extension it opts in to) outlives the stamp.
            capabilities = (data["params"].get("_meta") or {}).get(CLIENT_CAPABILITIES_META_KEY)
        self._stamp(data, opts)  # era headers / _meta envelope, exactly as the SDK's typed calls do
        if capabilities is not None and self._modern:
            data["params"]["_meta"][CLIENT_CAPABILITIES_META_KEY] = capabilities
        if self._param_headers and method == "tools/call":
            self._mirror_params(data["params"], opts)
        try:
            direct = self._direct
            if self._modern and method in _SUBSCRIPTIONS:
                result = await self._subscribe(method, data["params"], timeout)
            elif self._modern and method == "logging/setLevel":
                result = self._set_log_level(data["params"])
            elif direct is not None:
                out = data["params"]
                result = await direct.request(method, out, timeout=timeout, on_progress=on_progress)
            else:
                result = await raw_request(client, method, data["params"] or None, opts)
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
        if self._modern:
            _unstamp(result)
        return result

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
        if self._modern:
            tools = self._learn_param_headers(tools)
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

    def _learn_param_headers(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The tools a 2026-07-28 client may call, and which of their arguments each call mirrors
        into `Mcp-Param-*` headers (`x-mcp-header`), learned once per listing as the SDK's typed
        `list_tools` does; a tool whose annotation is invalid must be dropped."""
        kept: list[dict[str, Any]] = []
        maps: dict[str, dict[tuple[str, ...], str]] = {}
        for tool in tools:
            schema = tool.get("inputSchema")
            if (reason := find_invalid_x_mcp_header(schema)) is not None:
                logger.warning(
                    "server %s: dropping tool %r: invalid x-mcp-header (%s)",
                    self.server,
                    tool.get("name"),
                    reason,
                )
                continue
            if isinstance(name := tool.get("name"), str) and (header_map := x_mcp_header_map(schema)):
                maps[name] = header_map
            kept.append(tool)
        self._param_headers = maps
        return kept

    def _mirror_params(self, params: dict[str, Any], opts: CallOptions) -> None:
        name = params.get("name")
        header_map = self._param_headers.get(name) if isinstance(name, str) else None
        if header_map is not None:
            arguments = params.get("arguments")
            if isinstance(arguments, dict):
                opts.setdefault("headers", {}).update(mcp_param_headers(header_map, arguments))

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

    def _changes_to_listen_for(self) -> _Listen:
        """The list changes a 2026-07-28 backend announces: it has no GET stream, so they come on
        a `subscriptions/listen` stream the session opens."""
        caps = self.capabilities
        if not self.modern:
            return _Listen()
        return _Listen(
            tools=bool(caps.tools and caps.tools.list_changed),
            prompts=bool(caps.prompts and caps.prompts.list_changed),
            resources=bool(caps.resources and caps.resources.list_changed),
        )

    def _set_log_level(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """`logging/setLevel`, which 2026-07-28 replaced with a level on each request."""
        level = params.get("level")
        if level not in _LOG_LEVELS:
            raise MCPError(code=INVALID_PARAMS, message=f"unknown log level {level!r}")
        self._log_level = None if level == "debug" else level
        return {}

    async def _subscribe(self, method: str, params: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """`resources/(un)subscribe`, which 2026-07-28 replaced with a listen stream's filter: the
        session keeps one stream for the resources it is subscribed to, and replaces it when the set
        changes (the new one is acknowledged before the old one closes, so no update falls between)."""
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise MCPError(code=INVALID_PARAMS, message=f"{method} needs a string uri")
        async with self._subscribing:
            uris = self._uris | {uri} if method == "resources/subscribe" else self._uris - {uri}
            if uris == self._uris:
                return {}
            wanted = _Listen(uris=tuple(sorted(uris))) if uris else None
            self._uri_stream = await self._restream(self._uri_stream, wanted, timeout)
            self._uris = uris
        return {}

    async def follow_tasks(self, task_ids: Sequence[str], timeout: float) -> None:
        """Have a 2026-07-28 backend report these tasks' status (oldest first), which the tasks
        extension sends only on a listen stream naming them under `taskIds`: the session keeps one
        stream for the tasks it follows and replaces it when the set changes, as for resources.
        Past `MAX_FOLLOWED_TASKS` the newest are followed. A handshake-era backend needs none of
        this: it reports on its session. Raises the backend's refusal (`MCPError`), or
        `BackendTimeout` / `BackendUnavailable` for what the gateway saw itself."""
        await self._refollow(lambda followed: task_ids, timeout)

    async def _refollow(self, pick: Callable[[tuple[str, ...]], Sequence[str]], timeout: float) -> None:
        """`follow_tasks` with what `pick` makes of the tasks followed now, read under the lock (a
        finished task's removal must not undo a change made meanwhile)."""
        if not self._modern:
            return
        async with self._following:
            task_ids = tuple(dict.fromkeys(pick(self._task_ids)))
            if len(task_ids) > MAX_FOLLOWED_TASKS:
                logger.warning(
                    "server %s: following the status of the newest %d of %d tasks; the others are polled",
                    self.server,
                    MAX_FOLLOWED_TASKS,
                    len(task_ids),
                )
            followed = task_ids[-MAX_FOLLOWED_TASKS:]
            if frozenset(followed) == frozenset(self._task_ids):
                return
            wanted = _Listen(tasks=followed) if followed else None
            try:
                self._task_stream = await self._restream(self._task_stream, wanted, timeout)
            except TimeoutError:
                raise BackendTimeout(
                    self.server,
                    f"server {self.server!r} did not acknowledge a listen stream within {timeout:g}s",
                ) from None
            except (SubscriptionLost, *_TRANSPORT_ERRORS):
                raise BackendUnavailable(
                    self.server, f"server {self.server!r} closed a listen stream before acknowledging it"
                ) from None
            self._task_ids = followed

    async def _restream(
        self, replaced: anyio.CancelScope | None, wanted: _Listen | None, timeout: float
    ) -> anyio.CancelScope | None:
        """A listen stream for `wanted` (None: none) in place of `replaced`: the new one is
        acknowledged before the old one closes, so nothing announced falls between them."""
        stream = None
        if wanted is not None and self._tasks is not None:
            with anyio.fail_after(timeout):
                stream = await self._tasks.start(self._listen, wanted)
        if replaced is not None:
            replaced.cancel()
        return stream

    async def _listen(
        self,
        wanted: _Listen,
        *,
        task_status: anyio.abc.TaskStatus[anyio.CancelScope | None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hold one listen stream open; re-open it when it is lost (a dropped HTTP stream).

        What it announces reaches `_on_message` (or a task's status, `_on_task_status`) like any
        notification, and is acted on there. Started (with the scope that ends it) once
        acknowledged; a refusal is raised to the starter for resource subscriptions and tasks, and
        only logged for list changes (a backend that cannot stream them still serves calls)."""
        client = self._client
        assert client is not None
        delay = _RELISTEN_FIRST
        started = False
        with anyio.CancelScope() as scope:
            while not self.closed.is_set():
                try:
                    async with listen_filtered(client, wanted.notifications()) as subscription:
                        if not started:
                            started = True
                            task_status.started(scope)
                        elif wanted.tools or wanted.prompts or wanted.resources:
                            # Nothing is replayed after a loss: what changed meanwhile is fetched now.
                            await self._hooks.on_notification(self, "notifications/tools/list_changed", {})
                        delay = _RELISTEN_FIRST
                        async for _ in subscription:
                            pass
                except (MCPError, SubscriptionLost, *_TRANSPORT_ERRORS) as exc:
                    if not started:
                        if wanted.uris or wanted.tasks:
                            raise
                        logger.warning("server %s: its list changes will not be seen: %s", self.server, exc)
                        task_status.started(None)
                        return
                    logger.info(
                        "server %s: listen stream lost (%s); re-opening in %gs", self.server, exc, delay
                    )
                await anyio.sleep(delay)
                delay = min(delay * 2, _RELISTEN_MAX)
        if not started:  # the session ended before a stream could open
            raise anyio.BrokenResourceError

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

    async def _on_task_status(self, params: BaseModel) -> None:
        status = params.model_dump(by_alias=True, mode="json")
        await self._hooks.on_notification(self, TASK_STATUS, status)
        task_id = status.get("taskId")
        if status.get("status") in TASK_TERMINAL and task_id in self._task_ids and self._tasks is not None:
            # A finished task has no more news: its id leaves the stream (off this delivery path).
            self._tasks.start_soon(self._unfollow, task_id)

    async def _unfollow(self, task_id: str) -> None:
        try:
            await self._refollow(
                lambda followed: [t for t in followed if t != task_id], self._startup_timeout
            )
        except (MCPError, GatewayError) as exc:
            logger.info("server %s: could not stop following task %s: %s", self.server, task_id, exc)

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


async def _negotiate(server: str, client: ClientSession, protocol: Revision) -> None:
    """Open the session in the newest revision both sides know, or in the pinned one.

    `auto` follows the SDK's own connect-time policy (`mcp.client._probe.negotiate_auto`): probe
    `server/discover`; any JSON-RPC error, an answer that is no discovery result, or one naming no
    revision we share means a server of the handshake era, and `initialize` follows, except for a
    -32022 that names only revisions newer than the handshake ones (a real incompatibility).
    A transport failure is no verdict and ends the start."""
    try:
        if protocol == LATEST_HANDSHAKE_VERSION:
            await client.initialize()
            return
        try:
            await client.discover()
            return
        except MCPError as exc:
            if protocol != "auto" or (
                exc.code == UNSUPPORTED_PROTOCOL_VERSION and _only_modern(exc.error.data)
            ):
                raise
        except (ValidationError, RuntimeError):
            if protocol != "auto":
                raise
        try:
            await client.initialize()
        except MCPError as exc:
            # The probe may have timed out here yet reached a slow server, which then took the
            # connection as 2026-07-28 and names its revisions: ask once more, in one of them.
            if exc.code != UNSUPPORTED_PROTOCOL_VERSION:
                raise
            await client.discover()
    except ValidationError:
        raise BackendStartError(
            server, f"{server}: failed to start: its server/discover answer is no discovery result"
        ) from None
    except RuntimeError as exc:  # the SDK's word for "no revision in common"
        raise BackendStartError(server, f"{server}: failed to start: {exc}") from None


def _unstamp(result: dict[str, Any]) -> None:
    """Drop a 2026-07-28 backend's own identity stamp from its result: the client's server is the
    gateway, which stamps its own (for clients of that revision) on the way out."""
    meta = result.get("_meta")
    if meta and SERVER_INFO_META_KEY in meta:
        del meta[SERVER_INFO_META_KEY]
        if not meta:
            del result["_meta"]


def _only_modern(data: Any) -> bool:
    try:
        supported = types.UnsupportedProtocolVersionErrorData.model_validate(data).supported
    except ValidationError:
        return False
    return not any(v in HANDSHAKE_PROTOCOL_VERSIONS for v in supported)


class _Open(BaseModel):
    """A notification's params as sent (the session passes them on as JSON)."""

    model_config = ConfigDict(extra="allow")


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
