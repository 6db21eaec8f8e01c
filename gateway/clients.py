"""The client connections the gateway serves, so fleet-wide news can reach them.

Handshake-era (2025-11-25) clients keep a session with a standalone stream: list changes, resource
updates and backend logs are pushed there. Each connection is registered on its first request and
forgotten when the SDK tears it down. 2026-07-28 clients have no session; they hold a
`subscriptions/listen` stream instead, fed from `bus`.

What a client's own backend session (`session: per-client`) announces is that client's alone: its
resource updates reach the connection that owns the session, or the listen streams that `watch`
the client's key, never the fleet-wide `bus`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container, Hashable
from typing import Any

from mcp.server.connection import Connection
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

logger = logging.getLogger(__name__)


Notify = Callable[[Connection, str, "dict[str, Any] | None"], Awaitable[None]]
Unsubscribed = Callable[[Hashable, str], Awaitable[None]]


async def _notify(connection: Connection, method: str, params: dict[str, Any] | None) -> None:
    await connection.notify(method, params)


async def _unsubscribed(key: Hashable, uri: str) -> None:
    pass


class Clients:
    def __init__(self) -> None:
        # How a news item reaches one client's session; the HTTP front replaces it so that news
        # for a session whose GET stream is open on another replica reaches it there.
        self.notify: Notify = _notify
        # Told when a client unsubscribes (the HTTP front tells the replicas holding its session).
        self.unsubscribed: Unsubscribed = _unsubscribed
        self._connections: dict[Hashable, Connection] = {}
        self._endpoints: dict[Hashable, str] = {}  # connection key -> the endpoint it came in on
        self.subscriptions: dict[str, set[Hashable]] = {}  # public resource URI -> connection keys
        self.on_disconnect: list[Callable[[Hashable], Awaitable[None]]] = []
        # Listen streams (2026-07-28) of the default endpoint; each other endpoint has its own bus,
        # since list changes are per endpoint (resource updates go to every bus).
        self.bus = InMemorySubscriptionBus()
        self._buses: dict[str, InMemorySubscriptionBus] = {"": self.bus}
        self._watchers: dict[Hashable, dict[object, Callable[[ServerEvent], None]]] = {}

    def __len__(self) -> int:
        return len(self._connections)

    def bus_for(self, endpoint: str) -> InMemorySubscriptionBus:
        """The bus the listen streams of `endpoint` hear (`endpoints.DEFAULT`: `bus`)."""
        bus = self._buses.get(endpoint)
        if bus is None:
            bus = self._buses[endpoint] = InMemorySubscriptionBus()
        return bus

    def track(self, connection: Connection, endpoint: str = "") -> Hashable:
        key = id(connection)
        if key not in self._connections:
            self._connections[key] = connection
            self._endpoints[key] = endpoint
            connection.exit_stack.push_async_callback(self._forget, key)
        return key

    async def _forget(self, key: Hashable) -> None:
        self._connections.pop(key, None)
        self._endpoints.pop(key, None)
        for subscribers in self.subscriptions.values():
            subscribers.discard(key)
        for callback in self.on_disconnect:
            try:
                await callback(key)
            except Exception:
                logger.exception("disconnect hook failed")

    def subscribe(self, key: Hashable, uri: str) -> None:
        self.subscriptions.setdefault(uri, set()).add(key)

    async def unsubscribe(self, key: Hashable, uri: str) -> None:
        self.forget_subscription(key, uri)
        await self.unsubscribed(key, uri)

    def forget_subscription(self, key: Hashable, uri: str) -> None:
        self.subscriptions.get(uri, set()).discard(key)

    async def broadcast(
        self, method: str, params: dict[str, Any] | None = None, endpoint: str | None = None
    ) -> None:
        """Tell every client (`endpoint` None), or those of one endpoint, of a list change."""
        for key, connection in list(self._connections.items()):
            if endpoint is None or self._endpoints.get(key, "") == endpoint:
                await connection.notify(method, params)
        event = _LIST_EVENTS.get(method)
        if event is not None:
            for name, bus in list(self._buses.items()):
                if endpoint is None or name == endpoint:
                    await bus.publish(event)

    async def tell(self, key: Hashable, method: str, params: dict[str, Any] | None = None) -> None:
        """Notify one 2025-11-25 session (on its standalone stream), if it is still connected."""
        connection = self._connections.get(key)
        if connection is not None:
            await connection.notify(method, params)

    def watch(self, owner: Hashable, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Hand `listener` the events of client `owner`'s own backend sessions (a listen stream of
        that client's); returns the idempotent way to stop."""
        token = object()
        self._watchers.setdefault(owner, {})[token] = listener

        def unwatch() -> None:
            listeners = self._watchers.get(owner)
            if listeners is not None:
                listeners.pop(token, None)
                if not listeners:
                    del self._watchers[owner]

        return unwatch

    async def resource_updated(
        self, uri: str, owner: Hashable | None = None, endpoints: Container[str] | None = None
    ) -> None:
        """`uri` changed, at a shared session (`owner` None: every subscriber hears it) or at the
        per-client session of client `owner` (only that client does). `endpoints`: those whose
        view has `uri` (None: all); a client of another endpoint is not told, whatever it asked."""
        keys = self.subscriptions.get(uri, ())
        for key in [owner] if owner is not None else list(keys):
            connection = self._connections.get(key)
            if connection is None or key not in keys:
                continue
            if endpoints is None or self._endpoints.get(key, "") in endpoints:
                await self.notify(connection, "notifications/resources/updated", {"uri": uri})
        event = ResourceUpdated(uri=uri)
        if owner is None:
            for name, bus in list(self._buses.items()):
                if endpoints is None or name in endpoints:
                    await bus.publish(event)  # listen streams filter by URI themselves
            return
        for listener in list(self._watchers.get(owner, {}).values()):
            try:
                listener(event)
            except Exception:  # as the bus does: one bad listener must not starve the others
                logger.exception("listen stream watcher raised; continuing")


_LIST_EVENTS: dict[str, ServerEvent] = {
    "notifications/tools/list_changed": ToolsListChanged(),
    "notifications/prompts/list_changed": PromptsListChanged(),
    "notifications/resources/list_changed": ResourcesListChanged(),
}
