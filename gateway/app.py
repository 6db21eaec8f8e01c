"""The gateway over HTTP, wired: the MCP endpoint, health probes, the admin API and dashboard.

`build_app` is where the parts meet (the fleet, the relay, the SDK's session manager, the
exchange, the admin API); the parts themselves live in `gateway.front` (how a request enters),
`gateway.relay` (what answers it) and `gateway.fleet` / `gateway.backends` (who it goes to).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway import _sdk
from gateway._gateway import Gateway, listening
from gateway.admin import admin_api
from gateway.admin._auth import AdminAuth, AuthMiddleware
from gateway.admin.ui import ui_routes
from gateway.config.models import GatewayConfig
from gateway.config.secrets import Secrets
from gateway.control import ControlPlane
from gateway.endpoints import DEFAULT, Endpoint
from gateway.fleet import Fleet
from gateway.front.envelope import EnvelopeCheck
from gateway.front.events import Events
from gateway.front.exchange import StreamableHttp
from gateway.front.http import Authenticated, GatewayApp, Refusing, authenticate, transport_security
from gateway.front.mounts import Admitting, Mounted, Mounts
from gateway.front.sdk import build_server
from gateway.front.sessions import SessionIds, Sessions, SessionsByEndpoint
from gateway.logs import masking_secrets
from gateway.middleware import Middleware, extras, instantiate
from gateway.middleware._keys import presented_credential
from gateway.middleware.pinning import Pinning
from gateway.questions import state_seal

logger = logging.getLogger("gateway")


def _guarded(route: BaseRoute, auth: AdminAuth) -> BaseRoute:
    """`route`, admitting only what `auth` admits (401/403 otherwise)."""
    if not isinstance(route, Route):
        raise TypeError(f"a middleware route that needs credentials must be a Route, not {route!r}")
    return Route(route.path, AuthMiddleware(route.app, auth), methods=route.methods, name=route.name)


async def _announce(fleet: Fleet) -> None:
    """One line when the whole fleet has made its first start attempt: what runs, what does not."""
    began = anyio.current_time()
    await fleet.wait_started()
    running = [n for n, b in fleet.backends.items() if b.available or b.dormant]
    failed = {n: b.last_error for n, b in fleet.backends.items() if n not in running}
    logger.info(
        "fleet started in %.1fs: %d/%d servers up, %d tools%s",
        anyio.current_time() - began,
        len(running),
        len(fleet.backends),
        len(fleet.catalogue.tools),
        "".join(f"; {name} failed: {error}" for name, error in failed.items()),
    )


def build_app(
    config: GatewayConfig,
    fleet: Fleet | None = None,
    *,
    config_path: str | Path | None = None,
    watch: bool = False,
    middlewares: Sequence[Middleware] | None = None,
) -> Starlette:
    """The whole gateway as an ASGI app. With `config_path`, the admin API can reload it; with
    `watch`, file changes and SIGHUP reload it too. `middlewares`: the chain
    `gateway.config.validation` created while checking the config (else created here)."""
    # One `Secrets` per gateway (the fleet's, which every part reaches): where `secret_ref:`
    # values come from, and every value resolved, masked wherever it would leave.
    known = fleet.secrets if fleet is not None else Secrets(config.secrets)
    if middlewares is None:
        # Config errors surface here, before anything runs.
        middlewares = instantiate(config.middleware, secrets=known)
    parts = Gateway.assemble(config, middlewares, known, fleet=fleet, config_path=config_path)
    fleet, relay, reloader = parts.fleet, parts.relay, parts.reloader
    who = functools.partial(authenticate, relay)
    if fleet.cluster.shared and fleet.control is None:
        # One control plane for the replicas: registrations, actions, reloads and pins made
        # through any of them apply to all (its handlers are on the bus before it runs).
        fleet.control = ControlPlane(fleet, fleet.cluster.bus())

    admin = admin_api(
        fleet,
        config.admin,
        reload=reloader.reload if config_path is not None else None,
        # The admin API also admits an identity with the admin role, looked up per request like /mcp.
        authenticate=who,
        config_path=config_path,
        pins=lambda: next((m for m in relay.middlewares if isinstance(m, Pinning)), None),
    )
    security = transport_security()
    listen = config.listen
    # 2025-11-25 event streams are resumable, the SDK's (each session its own view) and the
    # exchange's alike, from one bounded store.
    events = Events(listen.event_store)
    cluster = fleet.cluster
    if cluster.shared:
        relay.inputs.attach(cluster.bus())  # a retry reaching another replica continues the call
    # Session ids any replica with the same `state.keys` restores (README "Running several
    # replicas"); what must reach another replica goes on the cluster's bus.
    sealed = state_seal(config.state, known, ttl=listen.session_max_age)
    # News for one 2025-11-25 session goes through the sessions of its endpoint.
    by_endpoint = SessionsByEndpoint()
    fleet.clients.notify = by_endpoint.notify
    fleet.clients.unsubscribed = by_endpoint.unsubscribed

    def stack(endpoint: Endpoint) -> Mounted:
        """One endpoint's HTTP stack (`front.mounts`): its own SDK server and sessions."""
        # The exchange (below) learns 2025-11-25 sessions from the requests the SDK dispatches.
        # What ends its clients' idle streams when the gateway drains (run by `mounts.close`).
        closing: list[Callable[[], None]] = []
        server = build_server(
            relay, on_front=lambda front: sessions.learn(front), endpoint=endpoint, closing=closing
        )
        # The SDK's defaults (10,000 sessions idle for up to 30 minutes, ~39 KB each) let one client
        # hold a lot of memory; at the cap a new session is refused with a 503, none is evicted.
        manager = _sdk.SessionManager(
            app=server,
            security_settings=security,
            max_sessions=listen.max_sessions,
            session_idle_timeout=listen.session_idle_timeout,
            max_request_body_size=listen.max_body_bytes,
            retry_interval=listen.event_store.retry,
            session_events=events.view,
            # A session is its endpoint's: its id names the endpoint, restored there only.
            session_ids=SessionIds(sealed, cluster, endpoint=endpoint.key),
        )
        sessions = by_endpoint.add(endpoint.key, Sessions(manager, cluster, fleet.clients))
        # What the exchange does not serve goes to the SDK's transport; a body that is not one
        # JSON-RPC message is answered before that reads it.
        sdk_app = EnvelopeCheck(StreamableHTTPASGIApp(manager), listen.max_body_bytes)
        exchange = StreamableHttp(
            sdk_app, relay, server, manager, security, events, sessions, endpoint=endpoint.key
        )
        admitted = Admitting(exchange, relay, endpoint.key)
        app = Refusing(Authenticated(admitted, relay), relay.drain, manager.max_request_body_size)
        # Draining ends the SDK's standalone GET streams, so no client waits on one past shutdown.
        closing.append(lambda: _sdk.close_get_streams(manager))
        if endpoint.key == DEFAULT:
            stacks.update(sessions=manager, exchange=exchange)

        @asynccontextmanager
        async def running() -> AsyncIterator[None]:
            try:
                async with manager.run():
                    yield
            finally:
                by_endpoint.remove(endpoint.key, sessions)  # unmounted by a reload, or shut down

        return Mounted(endpoint, app, running, closing)

    stacks: dict[str, object] = {}
    mounts = Mounts(stack)
    mounts.mount_all(fleet.endpoints)
    relay.drain.on_close.append(mounts.close)
    reloader.on_apply.append(lambda: mounts.sync(fleet.endpoints))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    # Open for probes; but a backend's error text is the operator's business once callers are
    # authenticated: only an admin (key or role) is shown it then.
    operator = AdminAuth(config.admin, who, what="/readyz's error details")

    async def readyz(request: Request) -> JSONResponse:
        # A probe carries no credentials: it is not authenticated (nor logged as refused).
        shown = not relay.authenticators or (
            presented_credential(request, skip_empty=True)[0] is not None
            and (await operator.admit(request))[0] is not None
        )
        servers = {
            name: {
                "state": b.state.value,
                "required": b.spec.required,
                "error": b.last_error if shown else None,
            }
            for name, b in fleet.backends.items()
        }
        ready = fleet.ready and not relay.drain.closing
        return JSONResponse({"ready": ready, "servers": servers}, status_code=200 if ready else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.enter_context(masking_secrets(known))  # first in, last out: every line masked
            await stack.enter_async_context(admin.running())  # first in, last out: every event recorded
            stack.enter_context(listening(fleet.event_listeners, admin.store.record_event))
            stack.enter_context(listening(fleet.call_listeners, admin.stats.record))
            await stack.enter_async_context(reloader.running(watch=watch))
            await stack.enter_async_context(fleet.running())
            await stack.enter_async_context(relay.inputs.running())
            await stack.enter_async_context(mounts.running())
            if cluster.shared:
                await stack.enter_async_context(cluster.bus().running())
            app.state.fleet = fleet
            app.state.relay = relay
            app.state.reloader = reloader
            async with anyio.create_task_group() as tg:
                tg.start_soon(_announce, fleet)
                yield
                tg.cancel_scope.cancel()

    path = fleet.endpoints[DEFAULT].path
    routes: list[BaseRoute] = [
        Route(path, endpoint=mounts),
        Route(path + "/", endpoint=mounts),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *ui_routes(),  # before the admin API's mount, which would claim /admin/ui
        *admin.routes,
    ]
    # The routes to the endpoint stay for the router's table (and a root path the shortcut misses).
    app = GatewayApp(mounts, mounts.paths, listen, routes=routes, lifespan=lifespan)
    app.state.admin = admin
    # The default endpoint's SDK sessions (2025-11-25; tests watch them expire) and exchange.
    app.state.sessions = stacks["sessions"]
    app.state.exchange = stacks["exchange"]
    app.state.mounts = mounts

    async def drain(hurry: anyio.Event | None = None) -> None:
        # Read at shutdown: a reload may have changed it.
        await relay.drain.run(fleet.config.listen.drain_timeout, hurry)

    app.state.drain = drain
    fixed = len(routes)

    def mount_middleware_routes(current: Sequence[Middleware]) -> None:
        # Routes a middleware serves (/metrics, /.well-known/...) follow the chain across reloads.
        del app.router.routes[fixed:]
        authenticates = bool(extras(current, "authenticate"))
        for middleware in current:
            extra_routes: list[BaseRoute] = getattr(middleware, "routes", [])
            needed = getattr(middleware, "routes_need_credentials", False)
            if needed or (needed is None and authenticates):
                what = f"the {type(middleware).__name__.lower()} routes"
                role = getattr(middleware, "routes_role", None)
                guard = AdminAuth(config.admin, who, role=role, what=what)
                extra_routes = [_guarded(route, guard) for route in extra_routes]
            app.router.routes.extend(extra_routes)

    mount_middleware_routes(middlewares)
    reloader.on_swap.append(mount_middleware_routes)  # a reload's new chain brings its own routes
    return app
