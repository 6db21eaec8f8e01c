"""The fleet: every declared backend, supervised together, and the merged catalogue over them.

`Fleet.running()` starts all backends concurrently (start-up takes as long as the slowest, not the
sum) and stops them all, shielded, when it exits. Whenever a backend's listing changes (started,
crashed, announced `list_changed`) the catalogue is rebuilt at once and clients are told which
lists changed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from mcp.server.caching import CacheHint

from gateway.backends import Backend, Event, State
from gateway.catalogue import BackendListing, Catalogue, ListKind, Source
from gateway.clients import Clients
from gateway.cluster import Cluster
from gateway.config.models import GatewayConfig, ServerSpec, namespace_of
from gateway.config.secrets import Secrets
from gateway.endpoints import DEFAULT, Endpoint, View, changed_lists, endpoints_of, views

if TYPE_CHECKING:
    from gateway.control import ControlPlane

logger = logging.getLogger(__name__)

_LISTS: dict[ListKind, str] = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
    "templates": "notifications/resources/list_changed",
}
# A backend in one of these states is about to join or leave the lists.
_SETTLING = frozenset({State.STARTING, State.BACKOFF, State.STOPPING})


class Fleet:
    def __init__(
        self,
        config: GatewayConfig,
        clients: Clients | None = None,
        *,
        secrets: Secrets | None = None,
    ) -> None:
        self.config = config
        # The gateway's secrets: its backends' transports resolve references with it (and so
        # register what they resolve), and everything that shows a string (logs, events, admin,
        # results) masks with it.
        self.secrets = secrets if secrets is not None else Secrets(config.secrets)
        # This process's replica id, and the streams replicas share (restart-only: read once).
        self.cluster = Cluster(config.cluster, self.secrets)
        # With `cluster.redis`: the control plane the replicas share (registrations, pins), set by
        # whoever assembles the gateway.
        self.control: ControlPlane | None = None
        self.clients = clients or Clients()
        self.backends: dict[str, Backend] = {
            name: Backend(name, spec, self) for name, spec in config.servers.items() if spec.enabled
        }
        self.catalogue = Catalogue()
        # Every endpoint (the default one and `endpoints:`), and what each exposes of the catalogue:
        # rebuilt with it, so a call is served from its endpoint's view without deriving anything.
        self.endpoints: dict[str, Endpoint] = endpoints_of(config)
        self.views: dict[str, View] = views(self.endpoints, self.catalogue)
        # Counts catalogue rebuilds: whatever is kept per list (shaped, filtered) is of the
        # current lists only when kept under the current generation.
        self.generation = 0
        # Each backend's last non-empty listing: its names keep routing to it while it is down.
        self._known: dict[str, BackendListing] = {}
        self.events: deque[Event] = deque(maxlen=1000)
        self.event_listeners: list[Callable[[Event], None]] = []
        # (server, seconds, ok) when a client's call to a backend ends: the admin API's call stats.
        self.call_listeners: list[Callable[[str, float, bool], None]] = []
        self.notification_hooks: list[Callable[[Backend, str, Mapping[str, Any]], Awaitable[None]]] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Fleet]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for backend in self.backends.values():
                self._launch(backend)
            try:
                yield self
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    def _launch(self, backend: Backend) -> None:
        assert self._tg is not None, "Fleet.running() must be entered"
        scope = self._scopes[backend.name] = anyio.CancelScope()

        async def run() -> None:
            with scope:
                await backend.run()

        self._tg.start_soon(run, name=f"backend {backend.name}")

    # -- membership: runtime registration and config reload -----------------------------------

    def add(self, name: str, spec: ServerSpec) -> Backend:
        """Start supervising a new backend (runtime registration, reload)."""
        if name in self.backends:
            raise ValueError(f"server {name!r} already exists")
        backend = self.backends[name] = Backend(name, spec, self)
        self.config = self.config.model_copy(update={"servers": {**self.config.servers, name: spec}})
        if self._tg is not None:
            self._launch(backend)
        return backend

    async def remove(self, name: str) -> None:
        """Stop a backend (bounded, shielded teardown) and forget it; clients are told."""
        backend = self.backends[name]
        if backend.state.value not in ("stopped", "failed"):
            await backend.stop("removed")
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        del self.backends[name]
        self._known.pop(name, None)  # gone from the config: its names are unknown now
        self.config = self.config.model_copy(
            update={"servers": {k: v for k, v in self.config.servers.items() if k != name}}
        )
        self.listing_changed(backend)

    async def apply(self, new: GatewayConfig) -> dict[str, list[str]]:
        """Move the running fleet to `new` as a diff; untouched backends and their clients are left alone.

        A server whose `overrides` alone changed is not restarted: it is `reshaped` (its tools are
        shown anew)."""
        wanted = {n: s for n, s in new.servers.items() if s.enabled}
        current = {n: b.spec for n, b in self.backends.items()}
        removed = [n for n in current if n not in wanted]
        added = [n for n in wanted if n not in current]
        changed = [n for n in wanted if n in current and wanted[n] != current[n]]
        # Overrides shape only what clients see of a server: it keeps running, its tools are reshaped.
        reshaped = [n for n in changed if wanted[n] == _with_overrides(current[n], wanted[n])]
        changed = [n for n in changed if n not in reshaped]
        for name in reshaped:
            self.backends[name].spec = wanted[name]
        async with anyio.create_task_group() as tg:
            for name in [*removed, *changed]:
                tg.start_soon(self.remove, name)
        for name in [*changed, *added]:
            self.add(name, wanted[name])
        self.config = new
        self._rebuild()  # the servers' order in the file may have changed
        report = {
            "added": added,
            "removed": removed,
            "changed": changed,
            "unchanged": [n for n in wanted if n in current and n not in changed and n not in reshaped],
        }
        if reshaped:
            report["reshaped"] = reshaped
        return report

    async def wait_started(self, *, required_only: bool = False) -> None:
        """Until every backend (or every `required` one) has made its first start attempt (each
        bounded by its own timeout)."""
        for backend in self.backends.values():
            if backend.spec.required or not required_only:
                await backend.first_attempt.wait()

    def cache_hint(self, kind: ListKind) -> CacheHint:
        """The freshness hint for the merged list of `kind`: the catalogue's (its backends'), but
        stale at once while a backend starts or stops, since its items are about to come or go.

        The scope is the backends'; a front whose lists differ per identity must send "private"."""
        hint = self.catalogue.cache_hint(kind)
        if hint.ttl_ms and any(b.state in _SETTLING for b in self.backends.values()):
            return CacheHint(ttl_ms=0, scope=hint.scope)
        return hint

    @property
    def ready(self) -> bool:
        return all(b.available for b in self.backends.values() if b.spec.required)

    # -- FleetEvents --------------------------------------------------------------------------

    def _in_config_order(self) -> list[Backend]:
        """The backends in gateway.yaml order: the merged lists and who keeps a contested name
        follow it, never the order backends started in or were re-added in by a reload."""
        backends = self.backends
        return [backends[name] for name in self.config.servers if name in backends]

    def listing_changed(self, backend: Backend) -> None:
        listing = backend.listing
        if backend.listed and (listing.tools or listing.prompts or listing.resources or listing.templates):
            self._known[backend.name] = listing
        self._rebuild()

    def _rebuild(self) -> None:
        """A new catalogue from the backends' listings; clients are told which lists changed."""
        old = self.catalogue
        ordered = self._in_config_order()
        known = Catalogue.build(
            Source(b.name, namespace_of(b.name, b.spec), b.spec.tools, self._known[b.name], b.spec.overrides)
            for b in ordered
            if b.name in self._known
        )
        self.catalogue = new = Catalogue.build(
            (
                Source(b.name, namespace_of(b.name, b.spec), b.spec.tools, b.listing, b.spec.overrides)
                for b in ordered
                if b.listed
            ),
            known=known,
        )
        # Once per collision: it lasts as long as both backends are configured, whatever restarts.
        for collision in new.collisions:
            if collision not in old.collisions:
                logger.warning("name collision: %s", collision)
        # Reported when a listing first shows it (over the known listings: not again on a restart).
        for problem in new.override_problems:
            if problem not in old.override_problems and problem.server is not None:
                self.warn(problem.server, str(problem))
        before = self.views
        self.endpoints = endpoints_of(self.config)  # a reload may have changed them
        self.views = views(self.endpoints, new)
        self.generation += 1
        for key, view in self.views.items():
            seen = before[key].problems if key in before else ()
            for problem in view.problems:
                if problem not in seen:
                    logger.warning("endpoint %s: %s", view.endpoint.path, problem)
        # Only the clients of an endpoint whose own lists changed are told.
        if self._tg is not None:
            for key, kinds in changed_lists(before, self.views).items():
                for method in sorted({_LISTS[kind] for kind in kinds}):
                    self._tg.start_soon(self.clients.broadcast, method, None, key)

    def view(self, endpoint: str = DEFAULT) -> View | None:
        """What `endpoint` exposes now (None: no such endpoint, e.g. removed by a reload)."""
        return self.views.get(endpoint)

    async def backend_notification(
        self, backend: Backend, method: str, params: Mapping[str, Any], owner: Hashable | None = None
    ) -> None:
        if method == "notifications/resources/updated" and isinstance(params.get("uri"), str):
            public = self.catalogue.public_uri(backend.name, params["uri"])
            # Only the endpoints that expose the resource hear of it.
            seen_by = {key for key, view in self.views.items() if view.route_uri(public) is not None}
            await self.clients.resource_updated(public, owner, seen_by)
            return
        for hook in self.notification_hooks:
            await hook(backend, method, params)

    def backend_event(self, backend: Backend, event: Event) -> None:
        event = self._note(event)
        if event.old == "running" and not backend.dormant:
            # No longer listed: from now on its names route as a down backend's (see `Catalogue`).
            self.listing_changed(backend)
        for listener in list(self.event_listeners):
            listener(event)

    def warn(self, server: str, reason: str, category: str = "config") -> None:
        """A warning about `server` that is no change of its state (e.g. an override its listing
        does not allow): logged, and an event like its transitions (old and new its state now)."""
        backend = self.backends.get(server)
        state = backend.state.value if backend is not None else "stopped"
        event = self._note(Event(time.time(), server, state, state, reason, "warning", category))
        for listener in list(self.event_listeners):
            listener(event)

    def _note(self, event: Event) -> Event:
        # Reasons quote stderr tails and errors: masked once here, for the log, the event store,
        # the admin API, its streams and Redis alike.
        reason = self.secrets.mask(event.reason)
        if reason is not event.reason:
            event = dataclasses.replace(event, reason=reason)
        self.events.append(event)
        level = {"error": logging.ERROR, "warning": logging.WARNING}.get(event.severity, logging.INFO)
        if event.old == event.new:
            logger.log(level, "server %s: %s", event.server, event.reason)
        else:
            reason = f" ({event.reason})" if event.reason else ""
            logger.log(level, "server %s: %s -> %s%s", event.server, event.old, event.new, reason)
        return event

    async def release_client(self, key: Any) -> None:
        """A client is gone: end the per-client sessions it held (a `Clients.on_disconnect` hook)."""
        for backend in self.backends.values():
            if backend.per_client:
                await backend.release(key)


def _with_overrides(spec: ServerSpec, other: ServerSpec) -> ServerSpec:
    """`spec` with `other`'s overrides: equal to `other` if the overrides are all they differ in."""
    return spec.model_copy(update={"overrides": other.overrides})
