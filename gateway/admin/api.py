"""The admin REST API under `/admin`: servers, their logs, the event log, and the configuration.

`AdminAPI(fleet, config)` builds the routes (`.routes`, one Mount) and `.running()` is the context
that must be entered while the gateway runs (the event log writer, the Redis publisher); whoever
assembles the gateway subscribes `store.record_event` and `stats.record` to the fleet. The full
reference is the OpenAPI document at `/admin/openapi.json`.

Runtime changes (`POST /admin/servers`, `DELETE /admin/servers/{name}`) change the running fleet
only: they are not written to gateway.yaml, are lost on restart, and a reload makes the fleet
match the file again. With `cluster.redis` they go through the cluster's control plane
(`gateway.control`): registrations, removals, actions, reloads and pin approvals made here apply
to every replica, registrations outlive a reload and reach replicas started later.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from gateway.admin import _params as params
from gateway.admin import _servers as views
from gateway.admin._auth import AdminAuth, Authenticator, AuthMiddleware
from gateway.admin._errors import (
    EXCEPTION_HANDLERS,
    ApiError,
    RequestIdMiddleware,
    not_found,
    request_id,
    timeout,
)
from gateway.admin._probe import probe
from gateway.admin._redact import MaskSecrets, redact
from gateway.admin._redis import RedisPublisher
from gateway.admin._schemas import ACTIONS
from gateway.admin._sse import event_stream, log_line, log_stream
from gateway.admin.openapi import document
from gateway.admin.stats import CallStats
from gateway.admin.store import EventFilter, EventLog, EventStore, SharedEvents
from gateway.backends import Backend
from gateway.config.admin import AdminConfig
from gateway.control import ControlPlane, local_view
from gateway.endpoints import DEFAULT, LISTS
from gateway.errors import ClusterUnavailable, ConfigError
from gateway.fleet import Fleet
from gateway.middleware.pinning import Pinning

Reload = Callable[[str], Awaitable[Mapping[str, Any]]]
# The pinning middleware in the current chain, if any (the chain may change with a reload).
Pins = Callable[[], Pinning | None]
RUNTIME_NOTE = (
    "runtime change: not written to gateway.yaml; lost on restart, "
    "and a reload makes the fleet match the file"
)
CLUSTER_NOTE = (
    "cluster change: applied on every replica and kept in the cluster's Redis (replicas started "
    "later load it; a reload keeps it); not written to gateway.yaml"
)
_MAX_PROBES = 4
# How long an action or a reload waits for the other replicas to acknowledge it.
_ACK_WAIT = 60.0


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


def _who(request: Request) -> str:
    who: str = request.scope.get("state", {}).get("admin", "?")
    return who


class AdminAPI:
    def __init__(
        self,
        fleet: Fleet,
        config: AdminConfig | None = None,
        *,
        reload: Reload | None = None,
        authenticate: Authenticator | None = None,
        config_path: str | Path | None = None,
        pins: Pins | None = None,
    ) -> None:
        self.fleet = fleet
        self.pins = pins
        # With `cluster.redis`: what is changed here is changed on every replica.
        self.control: ControlPlane | None = fleet.control
        self.config = config = config or AdminConfig()
        self.reload = reload
        self.config_path = None if config_path is None else str(config_path)
        self.stats = CallStats()
        self.cluster = fleet.cluster
        self.store = EventStore(config.events, replica=fleet.cluster.replica)
        # With `cluster.redis`, the event log read here is the whole cluster's.
        self.shared = SharedEvents(fleet.cluster, self.store) if fleet.cluster.shared else None
        self.log: EventLog = self.shared if self.shared is not None else self.store
        events = config.events
        self.publisher = (
            RedisPublisher(events.redis, events.channel, events.queue_size, secrets=fleet.secrets)
            if events.redis
            else None
        )
        self._tests: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, anyio.Lock] = {}
        # Each connection test launches a process or connection of its own: a few at a time.
        self._probes = anyio.Semaphore(_MAX_PROBES)
        app = Starlette(
            routes=self._routes(),
            exception_handlers=EXCEPTION_HANDLERS,
            middleware=[
                Middleware(MaskSecrets, known=fleet.secrets),  # outermost: sees every response
                Middleware(RequestIdMiddleware),
                Middleware(AuthMiddleware, auth=AdminAuth(config, authenticate)),
            ],
        )
        self.mount = Mount("/admin", app=app)
        self.routes: list[BaseRoute] = [self.mount]

    def _routes(self) -> list[BaseRoute]:
        bulk = [Route(f"/servers/bulk/{a}", self.bulk, methods=["POST"]) for a in ACTIONS]
        return [
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/servers", self.list_servers, methods=["GET"]),
            Route("/servers", self.register, methods=["POST"]),
            *bulk,
            Route("/servers/{name}", self.server, methods=["GET"]),
            Route("/servers/{name}", self.delete, methods=["DELETE"]),
            Route("/servers/{name}/logs", self.logs, methods=["GET"]),
            Route("/servers/{name}/test", self.test, methods=["POST"]),
            *[Route(f"/servers/{{name}}/{a}", self.action, methods=["POST"]) for a in ACTIONS],
            Route("/events", self.events, methods=["GET"]),
            Route("/events/stream", self.events_stream, methods=["GET"]),
            Route("/cluster", self.cluster_view, methods=["GET"]),
            Route("/endpoints", self.endpoints, methods=["GET"]),
            Route("/pins", self.list_pins, methods=["GET"]),
            Route("/pins/accept", self.accept_pin, methods=["POST"]),
            Route("/config", self.effective_config, methods=["GET"]),
            Route("/config/reload", self.reload_config, methods=["POST"]),
        ]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[AdminAPI]:
        """Enter before `fleet.running()` so that the fleet's first and last events are recorded.

        What it records is subscribed where the gateway is assembled (`build_app`): the fleet's
        events to `store.record_event`, its clients' calls to `stats.record`."""
        async with AsyncExitStack() as stack:
            if self.publisher is not None:
                # Entered first, left last: the store's final drain still reaches Redis.
                await stack.enter_async_context(self.publisher.running())
                self.store.listeners.append(self.publisher.publish)
            if self.shared is not None:
                await stack.enter_async_context(self.shared.running())  # outlives the store's drain
            await stack.enter_async_context(self.store.running())
            if self.control is not None:
                self.control.perform = self._perform
                self.control.membership_listeners.append(self._membership)
                # Loads the cluster's registrations into the fleet before it starts.
                await stack.enter_async_context(self.control.running())
            yield self

    # -- helpers ---------------------------------------------------------------------------------

    def _backend(self, name: str) -> Backend:
        backend = self.fleet.backends.get(name)
        if backend is None:
            raise not_found("server", name)
        return backend

    def _audit(self, request: Request, action: str, target: str | None, ok: bool, reason: str = "") -> None:
        self.store.record_admin(
            _who(request),
            action,
            target,
            "ok" if ok else "failed",
            reason=reason,
            request_id=request_id(request),
        )

    def _unavailable(
        self, request: Request, action: str, target: str | None, exc: ClusterUnavailable
    ) -> ApiError:
        self._audit(request, action, target, False, "cluster store unreachable")
        return ApiError(503, "unavailable", exc.message, {"retry": True})

    async def _announce(self, request: Mapping[str, Any], wait: float) -> dict[str, Any] | None:
        """Have the other replicas do it too (None without a cluster)."""
        if self.control is None:
            return None
        return await self.control.announce(request, min(wait, _ACK_WAIT))

    async def _perform(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """An action or a reload announced by another replica, done here to this replica's copy."""
        who = f"replica {request.get('from')}"
        if request.get("op") == "reload":
            if self.reload is None:
                return {"ok": False, "error": "this replica was started without a reloadable config file"}
            try:
                report = await self.reload(f"admin API through {who}")
            except ConfigError as exc:
                self.store.record_admin(
                    who, "reload", None, "failed", reason=f"{len(exc.problems)} problem(s)"
                )
                return {"ok": False, "error": "the config file is invalid; the running configuration stays"}
            self.store.record_admin(who, "reload", None, "ok", reason="announced")
            return {"ok": True, "report": dict(report)}
        action, names, wait = request.get("action"), request.get("servers"), request.get("wait") is not False
        if names is None:  # a bulk action without a list: every server of this replica
            names = list(self.fleet.backends)
        if action not in ACTIONS or not isinstance(names, list):
            return {"ok": False, "error": "not an action this replica knows"}
        results: dict[str, dict[str, Any]] = {}

        async def one(name: str) -> None:
            backend = self.fleet.backends.get(name) if isinstance(name, str) else None
            if backend is None:
                results[str(name)] = views.failed(str(name), str(action), None, "no such server here")
                return
            try:
                async with self._lock(name):
                    results[name] = await views.act(self.fleet, name, backend, str(action), wait)
            except ApiError as exc:
                results[name] = views.failed(name, str(action), backend.state.value, exc.message)
            result = results[name]
            self.store.record_admin(
                who,
                str(action),
                name,
                "ok" if result["ok"] else "failed",
                reason=result["error"] or "announced",
            )

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        return {"ok": all(r["ok"] for r in results.values()), "results": results}

    def _membership(self, change: str, name: str) -> None:
        """A server registered or removed through another replica (or found so in the store)."""
        action = "register" if change == "added" else "delete"
        self.store.record_admin("cluster", action, name, "ok", reason="through another replica")
        if change == "removed":
            self._forget(name)

    def _forget(self, name: str) -> None:
        self.stats.forget(name)
        self._tests.pop(name, None)
        self._locks.pop(name, None)

    def _lock(self, name: str) -> anyio.Lock:
        return self._locks.setdefault(name, anyio.Lock())

    async def _recent(self, name: str, limit: int) -> list[dict[str, Any]]:
        records = await self.store.query(EventFilter(servers=[name], limit=limit))
        return [r.to_json() for r in records]

    # -- servers ---------------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        params.only(request)
        return _json(document(request.scope.get("root_path", "") or "/admin"))

    async def list_servers(self, request: Request) -> Response:
        params.only(request)
        servers = [
            views.summary(name, b, self.fleet, self.stats, self._tests.get(name))
            for name, b in self.fleet.backends.items()
        ]
        states: dict[str, int] = {}
        for s in servers:
            states[s["state"]] = states.get(s["state"], 0) + 1
        summary = {"total": len(servers), "states": states}
        return _json({"servers": servers, "summary": summary, "collisions": views.collisions(self.fleet)})

    async def server(self, request: Request) -> Response:
        name = request.path_params["name"]
        backend = self._backend(name)
        params.only(request, "events", "logs")
        events = params.integer(request, "events", 50, 0, 1000)
        log_tail = params.integer(request, "logs", 100, 0, 1000)
        recent = await self._recent(name, events) if events else []
        return _json(
            views.detail(name, backend, self.fleet, self.stats, self._tests.get(name), recent, log_tail)
        )

    async def action(self, request: Request) -> Response:
        name = request.path_params["name"]
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        params.only(request, "wait")
        wait = params.flag(request, "wait", True)
        backend = self._backend(name)
        async with self._lock(name):
            result = await views.act(self.fleet, name, backend, action, wait)
        self._audit(request, action, name, result["ok"], result["error"] or "")
        limit = min(backend.spec.startup_timeout + 5, views.MAX_WAIT)
        cluster = await self._announce(
            {"op": "act", "action": action, "servers": [name], "wait": wait}, limit
        )
        return _json(result if cluster is None else {**result, "cluster": cluster})

    async def bulk(self, request: Request) -> Response:
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        params.only(request, "wait")
        wait = params.flag(request, "wait", True)
        data = await params.body(request, required=False)
        names = list(self.fleet.backends)
        listed = False
        if data is not params.EMPTY:
            if not isinstance(data, dict) or set(data) - {"servers"}:
                raise ApiError(422, "validation_failed", 'the body must be {"servers": [names]} or empty')
            if "servers" in data:
                given = data["servers"]
                if not isinstance(given, list) or not all(isinstance(n, str) for n in given):
                    raise ApiError(422, "validation_failed", '"servers" must be a list of server names')
                names, listed = list(dict.fromkeys(given)), True
        results: dict[str, dict[str, Any]] = {}

        async def one(name: str) -> None:
            backend = self.fleet.backends.get(name)
            if backend is None:
                results[name] = views.failed(name, action, None, "no such server")
                return
            try:
                async with self._lock(name):
                    results[name] = await views.act(self.fleet, name, backend, action, wait)
            except ApiError as exc:
                results[name] = views.failed(name, action, backend.state.value, exc.message)
            result = results[name]
            self._audit(request, action, name, result["ok"], f"bulk; {result['error'] or 'ok'}")

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        ordered = {name: results[name] for name in names}
        succeeded = sum(1 for r in ordered.values() if r["ok"])
        summary = {"requested": len(names), "succeeded": succeeded, "failed": len(names) - succeeded}
        body: dict[str, Any] = {"action": action, "results": ordered, "summary": summary}
        # Without a list, each replica acts on all of its own servers.
        announced = {"op": "act", "action": action, "servers": names if listed else None, "wait": wait}
        cluster = await self._announce(announced, _ACK_WAIT)
        return _json(body if cluster is None else {**body, "cluster": cluster})

    async def test(self, request: Request) -> Response:
        params.only(request)
        name = request.path_params["name"]
        backend = self._backend(name)
        async with self._probes:
            report = await probe(backend)
        self._tests[name] = {k: report[k] for k in ("ok", "time", "error")}
        self._audit(request, "test", name, report["ok"], report["error"] or "")
        return _json(report)

    async def register(self, request: Request) -> Response:
        params.only(request, "wait")
        wait = params.flag(request, "wait", True)
        data = await params.body(request, required=True)
        try:
            name, spec = views.validate_registration(data, self.fleet)
        except ApiError as exc:
            target = (
                data.get("name") if isinstance(data, dict) and isinstance(data.get("name"), str) else None
            )
            self._audit(request, "register", target, False, exc.message)
            raise
        if self.control is None:
            backend = self.fleet.add(name, spec)
        else:
            try:
                added = await self.control.register(name, data["spec"], spec)
            except ClusterUnavailable as exc:
                raise self._unavailable(request, "register", name, exc) from None
            if added is None:
                self._audit(request, "register", name, False, "already registered in the cluster")
                raise ApiError(
                    409, "conflict", f"server {name!r} is already registered in the cluster", {"server": name}
                )
            backend = added
        if wait:
            with anyio.move_on_after(min(spec.startup_timeout + 5, views.MAX_WAIT)):
                await backend.first_attempt.wait()
        self._audit(request, "register", name, True, f"type {spec.type}; not persisted")
        body = {
            "server": views.summary(name, backend, self.fleet, self.stats, None),
            "persisted": False,
            "note": RUNTIME_NOTE if self.control is None else CLUSTER_NOTE,
        }
        return _json(body, 201, {"Location": f"{request.scope.get('root_path', '')}/servers/{name}"})

    async def delete(self, request: Request) -> Response:
        params.only(request)
        name = request.path_params["name"]
        self._backend(name)
        async with self._lock(name):
            if name not in self.fleet.backends:  # removed while we waited for the lock
                raise not_found("server", name)
            if self.control is not None:
                try:
                    await self.control.unregister(name)
                except ClusterUnavailable as exc:
                    raise self._unavailable(request, "delete", name, exc) from None
            try:
                await self.fleet.remove(name)
            except TimeoutError:
                self._audit(request, "delete", name, False, "did not stop in time")
                if self.control is not None:  # gone from the store: the others remove theirs
                    await self.control.removed(name)
                raise timeout(name) from None
        self._forget(name)
        self._audit(request, "delete", name, True, "not persisted")
        body: dict[str, Any] = {"removed": name, "persisted": False, "note": RUNTIME_NOTE}
        if self.control is not None:
            body |= {"note": CLUSTER_NOTE, "cluster": {"announced": await self.control.removed(name)}}
        return _json(body)

    async def logs(self, request: Request) -> Response:
        name = request.path_params["name"]
        backend = self._backend(name)
        params.only(request, "tail", "follow")
        tail = params.integer(request, "tail", 100, 0, 1000)
        if params.flag(request, "follow", False):
            return log_stream(backend, tail, lambda: self.fleet.backends.get(name) is backend)
        lines = backend.log.tail(tail)
        return _json(
            {
                "server": name,
                "pid": backend.log.pid,
                "exit_code": backend.log.exit_code,
                "lines": [log_line(line) for line in lines],
            }
        )

    # -- events ----------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        params.only(request, *params.FILTERS, "limit", "cursor")
        where = params.event_filter(request, stream=self.shared is not None)
        page = await self.log.query(where)
        more = len(page) == where.limit and page[-1].id is not None
        return _json(
            {
                "events": [r.to_json() for r in page],
                "next_cursor": str(page[-1].id) if more else None,
            }
        )

    async def events_stream(self, request: Request) -> Response:
        params.only(request, *params.FILTERS, "after")
        stream = self.shared is not None
        where = params.event_filter(request, limit_default=1000, stream=stream)
        resume = request.query_params.get("after") or request.headers.get("last-event-id") or None
        after = params.event_id(resume, "after", stream=stream)
        if after is not None:  # `cursor` (before_id) is refused above: nothing else to clear
            where = replace(where, after_id=after)
        return event_stream(self.log, where)

    # -- cluster ---------------------------------------------------------------------------------

    async def cluster_view(self, request: Request) -> Response:
        params.only(request)
        streams = {
            kind: {"key": w.key, "written": w.written, "buffered": len(w), "dropped": w.dropped}
            for kind, w in self.cluster.writers.items()
        }
        body: dict[str, Any] = {
            "replica": self.cluster.replica,
            "shared": self.cluster.shared,
            "streams": streams,
        }
        if self.control is None:
            return _json({**body, "reachable": None, "replicas": [local_view(self.fleet)]})
        try:
            replicas = await self.control.replicas()
        except ClusterUnavailable:
            # Redis down: this replica is all that can be seen, and the view says so.
            return _json({**body, "reachable": False, "replicas": [self.control.snapshot()]})
        return _json({**body, "reachable": True, "replicas": replicas})

    # -- pins ------------------------------------------------------------------------------------

    def _pinning(self) -> Pinning:
        pinning = self.pins() if self.pins is not None else None
        if pinning is None:
            raise ApiError(409, "not_configured", "the `pinning` middleware is not in the chain")
        return pinning

    async def list_pins(self, request: Request) -> Response:
        params.only(request)
        pinning = self._pinning()
        return _json({"shared": pinning.shared, "mode": pinning.options.mode, "changes": pinning.changes()})

    async def accept_pin(self, request: Request) -> Response:
        params.only(request)
        pinning = self._pinning()
        data = await params.body(request, required=True)
        if (
            not isinstance(data, dict)
            or set(data) != {"server", "tool"}
            or not all(isinstance(v, str) for v in data.values())
        ):
            raise ApiError(422, "validation_failed", 'the body must be {"server": ..., "tool": ...}')
        server, tool = data["server"], data["tool"]
        target = f"{server}/{tool}"
        try:
            accepted = await pinning.approve(server, tool)
        except ClusterUnavailable as exc:
            raise self._unavailable(request, "accept_pin", target, exc) from None
        if not accepted:
            raise ApiError(404, "not_found", f"no pending change of tool {tool!r} of server {server!r}", data)
        self._audit(request, "accept_pin", target, True, "cluster-wide" if pinning.shared else "")
        return _json({"accepted": {"server": server, "tool": tool}, "shared": pinning.shared})

    # -- endpoints -------------------------------------------------------------------------------

    async def endpoints(self, request: Request) -> Response:
        params.only(request)
        found = []
        for key, endpoint in self.fleet.endpoints.items():
            view = self.fleet.views.get(key)
            servers = endpoint.servers
            found.append(
                {
                    "path": endpoint.path,
                    "name": endpoint.name,
                    "default": key == DEFAULT,
                    "instructions": endpoint.instructions,
                    "servers": None
                    if servers is None
                    else {n: None if s is None else s.model_dump(mode="json") for n, s in servers.items()},
                    "auth": endpoint.auth.model_dump(mode="json"),
                    "counts": {kind: len(view.items(kind)) if view is not None else 0 for kind in LISTS},
                }
            )
        return _json({"endpoints": found})

    # -- configuration ---------------------------------------------------------------------------

    async def effective_config(self, request: Request) -> Response:
        params.only(request)
        return _json(
            {
                "source": self.config_path,
                "config": redact(self.fleet.config.model_dump(mode="json")),
                "admin": redact(self.config.model_dump(mode="json")),
            }
        )

    async def reload_config(self, request: Request) -> Response:
        params.only(request)
        if self.reload is None:
            raise ApiError(409, "not_configured", "this gateway was started without a reloadable config file")
        began = time.perf_counter()
        try:
            report = await self.reload(f"admin API ({_who(request)})")
        except ConfigError as exc:
            self._audit(request, "reload", None, False, f"{len(exc.problems)} problem(s)")
            raise ApiError(
                422,
                "invalid_config",
                "the config file is invalid; the running configuration stays",
                {"problems": exc.problems},
            ) from None
        self._audit(request, "reload", None, True, str(dict(report).get("servers", "")))
        body = {"report": dict(report), "duration_ms": round((time.perf_counter() - began) * 1000, 3)}
        cluster = await self._announce({"op": "reload"}, _ACK_WAIT)
        return _json(body if cluster is None else {**body, "cluster": cluster})
