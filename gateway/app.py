"""The gateway's HTTP face: the MCP endpoint plus plain health probes, in one Starlette app."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import _sdk
from gateway._drain import Drain
from gateway._envelope import GONE, EnvelopeCheck, read_body, replay
from gateway._exchange import FastPath
from gateway._gateway import Gateway, listening
from gateway._guard import HostGuard
from gateway.admin import admin_api
from gateway.admin._auth import AdminAuth, AuthMiddleware
from gateway.admin.ui import ui_routes
from gateway.config.models import GatewayConfig, ListenConfig
from gateway.config.secrets import Secrets
from gateway.errors import ShuttingDown, to_jsonrpc_error
from gateway.fleet import Fleet
from gateway.logs import masking_secrets
from gateway.middleware import Identity, Middleware, extras, instantiate
from gateway.middleware._keys import presented_credential
from gateway.relay import Relay

logger = logging.getLogger("gateway")

_LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]
_LOOPBACK_ORIGINS = [
    "http://127.0.0.1",
    "http://127.0.0.1:*",
    "http://localhost",
    "http://localhost:*",
    "http://[::1]",
    "http://[::1]:*",
]


def allowed_hosts(listen: ListenConfig) -> tuple[list[str], list[str]]:
    """The Host and Origin values the gateway answers: loopback's and the configured ones."""
    return [*_LOOPBACK_HOSTS, *listen.allowed_hosts], [*_LOOPBACK_ORIGINS, *listen.allowed_origins]


def transport_security() -> TransportSecuritySettings:
    """What the SDK's transport checks of a request's headers besides its own business.

    Host and Origin are not among them: `_guard.HostGuard` refuses a foreign one on every route,
    matching exactly (host names case-insensitively), where the SDK matches a `:*` port pattern
    as a prefix; two checks that disagree would answer one request two ways.
    """
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class _Authenticated:
    """Runs the chain's authenticator before the MCP endpoint; its refusal is the response.

    Looked up per request, so a reload that changes `auth` takes effect for the next request.
    """

    def __init__(self, app: ASGIApp, relay: Relay) -> None:
        self.app = app
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.relay.authenticators:
            outcome = await self.relay.authenticate(Request(scope, receive))
            if isinstance(outcome, Response):
                await outcome(scope, receive, send)
                return
            assert outcome is not None
            scope.setdefault("state", {})["identity"] = outcome
            # The SDK binds a 2025-11-25 session to the principal that opened it: another
            # identity presenting the session's id is answered as if it did not exist.
            scope["user"] = _principal(outcome)
        await self.app(scope, receive, send)


class _Refusing:
    """While the gateway drains, a new request to the MCP endpoint is answered at once: HTTP 503
    with a JSON-RPC error. Notifications and responses (a client cancelling a call, or answering a
    backend's question) still reach the calls in flight, and DELETE still ends a session."""

    def __init__(self, app: ASGIApp, drain: Drain, max_body: int) -> None:
        self.app = app
        self.drain = drain
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.drain.closing or scope["type"] != "http" or scope["method"] == "DELETE":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _refusal(None)(scope, receive, send)
            return
        body = await read_body(receive, self.max_body)
        if body is GONE:
            return  # the client left before it finished sending
        if body is None:  # too large to be worth reading: refused all the same
            await _refusal(None)(scope, receive, send)
            return
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            message = None
        if isinstance(message, dict) and "method" in message and "id" in message:
            await _refusal(message["id"])(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


def _refusal(request_id: object) -> Response:
    error = to_jsonrpc_error(ShuttingDown()).model_dump(mode="json", exclude_none=True)
    body = {"jsonrpc": "2.0", "id": request_id if isinstance(request_id, str | int) else None, "error": error}
    return JSONResponse(body, status_code=503, headers={"connection": "close"})


def _principal(identity: Identity) -> AuthenticatedUser:
    """The identity as the SDK's principal (client id, issuer, subject), which a session is bound to.

    The credential itself is not kept. A name alone is not a principal: an API key named alice and
    a JWT whose `sub` is alice are different callers, so the authenticator that vouched for the
    name and the token's issuer are part of it."""
    issuer = {"iss": identity.issuer} if identity.issuer is not None else None
    token = AccessToken(
        token="",
        client_id=f"{identity.source}:{identity.authenticator}",
        scopes=sorted(identity.roles),
        subject=identity.name,
        claims=issuer,
    )
    return AuthenticatedUser(token)


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


class _GatewayApp(Starlette):
    """Starlette, with the MCP endpoint reached first: every call takes this path, and the router,
    error and exception layers cost a measurable share of a relayed call. Errors there are the
    endpoint's own business (it answers JSON-RPC errors); the rest of the app is unchanged."""

    def __init__(self, mcp: ASGIApp, mcp_paths: frozenset[str], listen: ListenConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mcp, self._mcp_paths, self._listen = mcp, mcp_paths, listen

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        endpoint, paths = self._mcp, self._mcp_paths

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # `scope["app"]` is set already: Starlette.__call__ does it before calling the stack.
            if scope["type"] == "http" and scope["path"] in paths:
                await endpoint(scope, receive, send)
            else:
                await stack(scope, receive, send)

        # Outermost: no route answers a request with a foreign Host or Origin.
        hosts, origins = allowed_hosts(self._listen)
        return HostGuard(app, hosts=hosts, origins=origins)


def build_app(
    config: GatewayConfig,
    fleet: Fleet | None = None,
    *,
    config_path: str | Path | None = None,
    watch: bool = False,
    fast_path: bool = True,
    middlewares: Sequence[Middleware] | None = None,
) -> Starlette:
    """The whole gateway as an ASGI app. With `config_path`, the admin API can reload it; with
    `watch`, file changes and SIGHUP reload it too. `fast_path=False` serves every request through
    the SDK's transport (`_exchange` explains the difference; tests compare the two). `middlewares`:
    the chain `gateway.config.validation` created while checking the config (else created here)."""
    # One `Secrets` per gateway (the fleet's, which every part reaches): where `secret_ref:`
    # values come from, and every value resolved, masked wherever it would leave.
    known = fleet.secrets if fleet is not None else Secrets(config.secrets)
    if middlewares is None:
        # Config errors surface here, before anything runs.
        middlewares = instantiate(config.middleware, secrets=known)
    parts = Gateway.assemble(config, middlewares, known, fleet=fleet, config_path=config_path)
    fleet, relay, reloader = parts.fleet, parts.relay, parts.reloader

    admin = admin_api(
        fleet,
        config.admin,
        reload=reloader.reload if config_path is not None else None,
        # The admin API also admits an identity with the admin role, looked up per request like /mcp.
        authenticate=relay.authenticate,
        config_path=config_path,
    )
    server = relay.build_server()
    security = transport_security()
    listen = config.listen
    # The SDK's defaults (10,000 sessions idle for up to 30 minutes, ~39 KB each) let one client
    # hold a lot of memory; at the cap a new session is refused with a 503, none is evicted.
    manager = _sdk.SessionManager(
        app=server,
        security_settings=security,
        max_sessions=listen.max_sessions,
        session_idle_timeout=listen.session_idle_timeout,
        max_request_body_size=listen.max_body_bytes,
    )
    # A body that is not one JSON-RPC message is answered before the SDK's transport reads it.
    mcp_app: ASGIApp = EnvelopeCheck(StreamableHTTPASGIApp(manager), listen.max_body_bytes)
    if fast_path:
        fast = FastPath(mcp_app, relay, server, manager, security)
        # The hot path learns 2025-11-25 sessions from the fronts the SDK's dispatch hands the relay.
        relay.front_listeners.append(fast.sessions.learn)
        mcp_app = fast
    endpoint: ASGIApp = _Refusing(_Authenticated(mcp_app, relay), relay.drain, manager.max_request_body_size)
    # Draining ends the SDK's standalone GET streams, so no client waits on one past shutdown.
    relay.drain.on_close.append(lambda: _sdk.close_get_streams(manager))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    # Open for probes; but a backend's error text is the operator's business once callers are
    # authenticated: only an admin (key or role) is shown it then.
    operator = AdminAuth(config.admin, relay.authenticate, what="/readyz's error details")

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
            await stack.enter_async_context(manager.run())
            app.state.fleet = fleet
            app.state.relay = relay
            app.state.reloader = reloader
            async with anyio.create_task_group() as tg:
                tg.start_soon(_announce, fleet)
                yield
                tg.cancel_scope.cancel()

    path = config.listen.path.rstrip("/") or "/mcp"
    routes: list[BaseRoute] = [
        Route(path, endpoint=endpoint),
        Route(path + "/", endpoint=endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *ui_routes(),  # before the admin API's mount, which would claim /admin/ui
        *admin.routes,
    ]
    # The routes to the endpoint stay for the router's table (and a root path the shortcut misses).
    app = _GatewayApp(endpoint, frozenset({path, path + "/"}), listen, routes=routes, lifespan=lifespan)
    app.state.admin = admin
    app.state.sessions = manager  # the SDK's 2025-11-25 sessions (tests watch them expire)

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
                guard = AdminAuth(config.admin, relay.authenticate, role=role, what=what)
                extra_routes = [_guarded(route, guard) for route in extra_routes]
            app.router.routes.extend(extra_routes)

    mount_middleware_routes(middlewares)
    reloader.on_swap.append(mount_middleware_routes)  # a reload's new chain brings its own routes
    return app
