"""A real gateway with its admin API (`GatewayConfig.admin`, mounted by `build_app`), served on
127.0.0.1, plus helpers for talking to the admin API."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from gateway.admin.api import AdminAPI
from gateway.config import GatewayConfig
from gateway.config.admin import AdminConfig
from tests._support import Running, serve

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
class Gateway(Running):
    @property
    def api(self) -> AdminAPI:
        api: AdminAPI = self.app.state.admin
        return api

    def client(self, key: str | None = ADMIN_KEY, **headers: str) -> httpx.AsyncClient:
        auth = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.AsyncClient(
            base_url=f"{self.base}/admin", headers={**auth, **headers}, timeout=HTTP_TIMEOUT
        )


@asynccontextmanager
async def serve_admin(
    cfg: GatewayConfig,
    admin: AdminConfig | None = None,
    *,
    config_path: Path | None = None,
    wait: bool = True,
) -> AsyncIterator[Gateway]:
    """The gateway with the admin API (`admin`, default `admin_config()`), as `build_app` mounts it."""
    cfg = cfg.model_copy(update={"admin": admin or admin_config()})
    async with serve(cfg, config_path=config_path, wait=wait) as gw:
        yield Gateway(url=gw.url, base=gw.base, fleet=gw.fleet, app=gw.app)


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
