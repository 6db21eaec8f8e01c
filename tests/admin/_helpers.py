"""A real gateway with the admin API mounted beside `build_app`'s routes, served on 127.0.0.1.

This is what `gateway.app.build_app` does once the admin API is wired in: the admin routes are
appended to the app's routes, and the admin context is entered before the fleet starts (so the
fleet's first events are recorded) and left after it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin import AdminConfig, admin_api
from gateway.admin.api import AdminAPI
from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.fleet import Fleet
from gateway.middleware import Identity, extras
from tests._support import START_TIMEOUT, free_port

ADMIN_KEY = "admin-test-key-1234"
NAMED_KEY = "ops-bot-key-5678"
HTTP_TIMEOUT = 60.0


def hashed(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def admin_config(path: Path | str = ":memory:", **events: Any) -> AdminConfig:
    return AdminConfig.model_validate(
        {
            "api_keys": [hashed(ADMIN_KEY), {"name": "ops-bot", "key": hashed(NAMED_KEY)}],
            "events": {"path": str(path), **events},
        }
    )


@dataclass
class Gateway:
    base: str  # http://127.0.0.1:PORT
    url: str  # the MCP endpoint
    fleet: Fleet
    api: AdminAPI
    app: Starlette

    def client(self, key: str | None = ADMIN_KEY, **headers: str) -> httpx.AsyncClient:
        auth = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.AsyncClient(
            base_url=f"{self.base}/admin", headers={**auth, **headers}, timeout=HTTP_TIMEOUT
        )


def gateway_authenticator(app: Starlette) -> Callable[[Request], Awaitable[Identity | Response | None]]:
    """The gateway's authenticator (the auth middleware's), looked up per request as build_app does."""

    async def authenticate(request: Request) -> Identity | Response | None:
        authenticators = extras(app.state.relay.middlewares, "authenticate")
        if not authenticators:
            return None
        outcome: Identity | Response = await authenticators[0](request)
        return outcome

    return authenticate


@asynccontextmanager
async def serve_admin(
    cfg: GatewayConfig,
    admin: AdminConfig | None = None,
    *,
    config_path: Path | None = None,
    wait: bool = True,
) -> AsyncIterator[Gateway]:
    """The gateway with the admin API. Once `build_app` mounts it itself (GatewayConfig has `admin`),
    that one is used; until then it is mounted here the same way."""
    admin = admin or admin_config()
    wired = "admin" in GatewayConfig.model_fields
    if wired:
        cfg = cfg.model_copy(update={"admin": admin})
    fleet = Fleet(cfg)
    app = build_app(cfg, fleet, config_path=config_path)
    if wired:
        api: AdminAPI = app.state.admin
    else:

        async def reload(who: str) -> Mapping[str, Any]:
            result: Mapping[str, Any] = await app.state.reloader.reload(who)
            return result

        api = admin_api(
            fleet,
            admin,
            reload=reload if config_path is not None else None,
            authenticate=gateway_authenticator(app),
            config_path=config_path,
        )
        app.router.routes.extend(api.routes)
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(a: Starlette) -> AsyncIterator[None]:
            async with api.running(), inner(a):
                # A middleware swap re-mounts the middleware routes after the fixed ones: come back.
                a.state.reloader.on_swap.append(lambda _: a.router.routes.extend(api.routes))
                yield

        app.router.lifespan_context = lifespan
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # as tests._support
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(START_TIMEOUT):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers only the flag
                await anyio.sleep(0.01)
            if wait:
                await fleet.wait_started()
        base = f"http://127.0.0.1:{port}"
        try:
            yield Gateway(base=base, url=f"{base}/mcp", fleet=fleet, api=api, app=app)
        finally:
            server.should_exit = True


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the common error shape and return its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


class SSEReader:
    """Reads an SSE response event by event (comments, i.e. pings, are skipped)."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, count: int = 1, *, timeout: float = 30.0) -> list[dict[str, str]]:
        """The next `count` events as {event, id, data}."""
        events: list[dict[str, str]] = []
        current: dict[str, str] = {}
        with anyio.fail_after(timeout):
            async for line in self._lines:
                if line == "":
                    if "data" in current:
                        events.append(current)
                        if len(events) == count:
                            return events
                    current = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    current[field] = f"{current[field]}\n{value}" if field in current else value
        raise AssertionError(f"the stream ended after {len(events)} of {count} events")
