"""The HTTP surface: probes and DNS-rebinding protection, over real HTTP."""

from __future__ import annotations

import hashlib

import anyio
import httpx
import pytest

from tests._support import config, initialize, misbehave, serve, time_server

pytestmark = pytest.mark.anyio

INIT = initialize(client="rebinding-probe")
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def test_readyz_is_503_until_required_backends_run_and_names_the_failure() -> None:
    cfg = config({"time": time_server(), "dead": misbehave("--crash-at-start", restart="never")})
    async with serve(cfg) as gw, httpx.AsyncClient() as http:
        ready = await http.get(f"{gw.base}/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["servers"]["time"]["state"] == "running"
        assert body["servers"]["dead"]["state"] == "failed"
        assert (await http.get(f"{gw.base}/healthz")).status_code == 200


async def test_optional_backend_does_not_block_readiness() -> None:
    cfg = config(
        {"time": time_server(), "dead": misbehave("--crash-at-start", restart="never", required=False)}
    )
    async with serve(cfg) as gw, httpx.AsyncClient() as http:
        assert (await http.get(f"{gw.base}/readyz")).status_code == 200


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({}, True),
        ({"Origin": "http://127.0.0.1:1234"}, True),
        ({"Origin": "http://localhost"}, True),
        ({"Host": "evil.example"}, False),
        ({"Host": "evil.example:80"}, False),
        ({"Host": "evil.example:8765"}, False),
        ({"Origin": "http://evil.example"}, False),
        ({"Host": "evil.example", "Origin": "http://evil.example"}, False),
    ],
    ids=[
        "loopback",
        "loopback-origin-port",
        "loopback-origin",
        "foreign-host",
        "foreign-host-port-80",
        "foreign-host-port",
        "foreign-origin",
        "both",
    ],
)
async def test_dns_rebinding_protection(headers: dict[str, str], allowed: bool) -> None:
    # Host and Origin are checked before any MCP processing: no backend is needed.
    async with serve(config({})) as gw, httpx.AsyncClient() as http:
        response = await http.post(gw.url, json=INIT, headers={**HEADERS, **headers})
        if allowed:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code in (403, 421), response.text
            assert 400 <= response.status_code < 500, (response.status_code, response.text)
            # Refused before any MCP processing: nothing of the request or the server comes back.
            assert "rebinding-probe" not in response.text and "serverInfo" not in response.text


async def test_configured_host_is_allowed() -> None:
    cfg = config({}, listen={"allowed_hosts": ["gateway.internal"]})
    async with serve(cfg) as gw, httpx.AsyncClient() as http:
        response = await http.post(gw.url, json=INIT, headers={**HEADERS, "Host": "gateway.internal"})
        assert response.status_code == 200


async def test_malformed_json_rpc_gets_a_parse_error() -> None:
    async with serve(config({})) as gw, httpx.AsyncClient() as http:
        response = await http.post(gw.url, content=b"{not json", headers=HEADERS)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == -32700


async def test_the_session_table_is_capped_and_idle_sessions_expire() -> None:
    """With `max_sessions: 5` the 6th `initialize` is refused, clearly, and no open session is
    evicted for it; once the idle ones expire, new clients get in again."""
    idle = 2.0
    cfg = config({}, listen={"max_sessions": 5, "session_idle_timeout": idle})
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=30) as http:
        opened = []
        for _ in range(5):
            response = await http.post(gw.url, json=INIT, headers=HEADERS)
            assert response.status_code == 200
            opened.append(response.headers["mcp-session-id"])
        refused = await http.post(gw.url, json=INIT, headers=HEADERS)
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == -32603 and "Too many open sessions" in error["message"]
        assert "mcp-session-id" not in refused.headers
        # Idle sessions end (bounded wait: no request keeps them alive), and room frees up.
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        with anyio.fail_after(60):
            while True:
                response = await http.post(gw.url, json=INIT, headers=HEADERS)
                if response.status_code == 200:
                    break
                assert response.status_code == 503
                await anyio.sleep(0.2)
        # It was an expiry that made room (one at least is gone; a ping keeps a live one alive).
        statuses = []
        for session_id in opened:
            old = {**HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
            statuses.append((await http.post(gw.url, json=ping, headers=old)).status_code)
        assert 404 in statuses, statuses


async def test_readyz_keeps_backend_errors_from_anonymous_callers_when_auth_is_on() -> None:
    key = "rk_readyz_2f1e0d9c8b7a6f5e4d3c2b1a09f8e7d6"
    digest = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    cfg = config(
        {"dead": misbehave("--crash-at-start", restart="never")},
        middleware=[
            {"use": "auth", "options": {"api_keys": [{"name": "ops", "key": digest, "roles": ["admin"]}]}}
        ],
    )
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=30) as http:
        anonymous = await http.get(f"{gw.base}/readyz")
        assert anonymous.status_code == 503  # still a probe
        assert anonymous.json()["servers"]["dead"]["state"] == "failed"
        assert anonymous.json()["servers"]["dead"]["error"] is None
        admin = await http.get(f"{gw.base}/readyz", headers={"Authorization": f"Bearer {key}"})
        assert admin.json()["servers"]["dead"]["error"]
