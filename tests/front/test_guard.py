"""DNS-rebinding protection on every route (`gateway/_guard.py`), over real HTTP: a foreign Host
or Origin is refused by /mcp, the probes, /metrics, the admin API and its dashboard alike, and a
`:*` port pattern matches a port, nothing else."""

from __future__ import annotations

import httpx
import pytest

from tests._support import config, initialize, serve

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ROUTES = ["/mcp", "/healthz", "/readyz", "/metrics", "/admin/ui/", "/admin/openapi.json", "/admin/servers"]
FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:8765",
    "127.0.0.1:1.evil.example",
    "127.0.0.1:",
    "localhost.evil",
]
FOREIGN_ORIGINS = ["http://evil.example", "http://127.0.0.1:1.evil.example", "http://localhost:80x", "null"]


async def get(http: httpx.AsyncClient, base: str, route: str, headers: dict[str, str]) -> httpx.Response:
    if route == "/mcp":
        return await http.post(base + route, json=initialize(), headers={**HEADERS, **headers})
    return await http.get(base + route, headers=headers)


async def test_a_foreign_host_or_origin_is_refused_by_every_route() -> None:
    cfg = config({}, middleware=[{"use": "telemetry"}])
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=30) as http:
        for route in ROUTES:
            for host in FOREIGN_HOSTS:
                refused = await get(http, gw.base, route, {"Host": host})
                assert refused.status_code == 421, (route, host, refused.status_code)
                assert "serverInfo" not in refused.text and "servers" not in refused.text
            for origin in FOREIGN_ORIGINS:
                refused = await get(http, gw.base, route, {"Origin": origin})
                assert refused.status_code == 403, (route, origin, refused.status_code)
        # Loopback, with its port or none, and a loopback page's origin, are ours.
        port = gw.base.rsplit(":", 1)[1]
        for headers in (
            {},
            {"Host": "localhost"},
            {"Host": f"LOCALHOST:{port}"},
            {"Origin": "http://[::1]:5173"},
        ):
            assert (await get(http, gw.base, "/mcp", headers)).status_code == 200, headers
            assert (await get(http, gw.base, "/readyz", headers)).status_code == 200, headers
            assert (await get(http, gw.base, "/metrics", headers)).status_code == 200, headers


async def test_configured_names_are_matched_exactly() -> None:
    cfg = config({}, listen={"allowed_hosts": ["gw.internal:*"], "allowed_origins": ["https://app.example"]})
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=30) as http:
        for host, status in [("gw.internal:443", 200), ("gw.internal", 421), ("gw.internal:4x", 421)]:
            assert (await http.get(f"{gw.base}/healthz", headers={"Host": host})).status_code == status, host
        for origin, status in [("https://app.example", 200), ("https://app.example.evil", 403)]:
            response = await http.get(f"{gw.base}/healthz", headers={"Origin": origin})
            assert response.status_code == status, origin
