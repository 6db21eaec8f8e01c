"""The gateway's HTTP face: the MCP endpoint plus plain health probes, in one Starlette app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.config.models import GatewayConfig, ListenConfig
from gateway.fleet import Fleet
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


def transport_security(listen: ListenConfig) -> TransportSecuritySettings:
    """DNS-rebinding protection: only loopback and the configured names may reach the endpoint.

    A browser page on another origin (or a rebinding DNS name pointing at 127.0.0.1) carries a
    foreign Host/Origin and is refused before any MCP processing.
    """
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*_LOOPBACK_HOSTS, *listen.allowed_hosts],
        allowed_origins=[*_LOOPBACK_ORIGINS, *listen.allowed_origins],
    )


def build_app(config: GatewayConfig, fleet: Fleet | None = None) -> Starlette:
    fleet = fleet or Fleet(config)
    relay = Relay(fleet)
    server = relay.build_server()
    manager = StreamableHTTPSessionManager(app=server, security_settings=transport_security(config.listen))
    endpoint = StreamableHTTPASGIApp(manager)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        servers = {
            name: {"state": b.state.value, "required": b.spec.required, "error": b.last_error}
            for name, b in fleet.backends.items()
        }
        ready = fleet.ready
        return JSONResponse({"ready": ready, "servers": servers}, status_code=200 if ready else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with fleet.running(), relay.inputs.running(), manager.run():
            app.state.fleet = fleet
            yield

    path = config.listen.path.rstrip("/") or "/mcp"
    return Starlette(
        routes=[
            Route(path, endpoint=endpoint),
            Route(path + "/", endpoint=endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
