"""The HTTP app around the MCP endpoint: who may reach it, and what it answers while draining.

Requests to the MCP path skip Starlette's router (`GatewayApp`); the rest of the app (probes, the
admin API, a middleware's routes) is plain Starlette. Every route sits behind `guard.HostGuard`.
"""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway._drain import Drain
from gateway.config.models import ListenConfig
from gateway.errors import ShuttingDown, to_jsonrpc_error
from gateway.front.envelope import GONE, read_body, replay
from gateway.front.guard import HostGuard
from gateway.middleware import Identity
from gateway.relay import Relay

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


async def authenticate(relay: Relay, request: Request) -> Identity | Response | None:
    """The chain's HTTP authentication of `request` (None: the chain has none)."""
    authenticators = relay.authenticators
    return await authenticators[0](request) if authenticators else None


class Authenticated:
    """Runs the chain's authenticator before the MCP endpoint; its refusal is the response.

    Looked up per request, so a reload that changes `auth` takes effect for the next request.
    """

    def __init__(self, app: ASGIApp, relay: Relay) -> None:
        self.app = app
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.relay.authenticators:
            outcome = await authenticate(self.relay, Request(scope, receive))
            if isinstance(outcome, Response):
                await outcome(scope, receive, send)
                return
            assert outcome is not None
            scope.setdefault("state", {})["identity"] = outcome
            # The SDK binds a 2025-11-25 session to the principal that opened it: another
            # identity presenting the session's id is answered as if it did not exist.
            scope["user"] = _principal(outcome)
        await self.app(scope, receive, send)


class Refusing:
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


class GatewayApp(Starlette):
    """Starlette, with the MCP endpoint reached first: every call takes this path, and the router,
    error and exception layers cost a measurable share of a relayed call. Errors there are the
    endpoint's own business (it answers JSON-RPC errors); the rest of the app is unchanged."""

    def __init__(self, mcp: ASGIApp, mcp_paths: Container[str], listen: ListenConfig, **kwargs: Any) -> None:
        """`mcp_paths`: the paths of every MCP endpoint (live: a reload may add or remove some)."""
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
