"""`tools/list` of a large catalogue: the gateway's own CPU per list, against the backend's.

A backend with 1,000 generated tools (tests/servers/many_tools.py). Through the gateway, each list
is served from the endpoint's view (the backend is not asked), so the gateway process's CPU per
list is the whole cost; it is measured for a 2026-07-28 client, a 2025-11-25 session, a virtual
endpoint exposing half the tools, and with `auth` rules filtering the list per identity. Directly,
the backend's own CPU per `tools/list` over its stdio is the reference.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests._support import LEGACY, envelope, initialize, rpc
from tests.bench.processes import BenchContext
from tests.bench.results import MetricValue

MANY_TOOLS = str(Path(__file__).resolve().parents[1] / "servers" / "many_tools.py")
COUNT = 1000
KEY, READER_KEY = "bench-catalogue-key", "bench-catalogue-reader-key"
_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def gateway_config() -> dict[str, Any]:
    server = {"command": sys.executable, "args": [MANY_TOOLS, str(COUNT)], "prefix": ""}
    auth = {
        "api_keys": [
            {"name": "bench", "key": _digest(KEY), "roles": ["admin"]},
            {"name": "reader", "key": _digest(READER_KEY), "roles": ["reader"]},
        ],
        # The reader's list is filtered (about half of it), the admin's is not.
        "rules": [{"roles": ["admin"]}, {"roles": ["reader"], "tools": ["[a-m]*"]}],
    }
    return {
        "servers": {"many": server},
        "middleware": [{"use": "auth", "options": auth}],
        "endpoints": [{"path": "/mcp/half", "servers": {"many": {"tools": ["[n-z]*"]}}}],
        "listen": {"max_body_bytes": 4 * 1024 * 1024},
    }


async def _lists(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any], calls: int
) -> tuple[int, float]:
    """(tools in the list, wall ms per list) over `calls` lists; the first one is checked."""
    first = await http.post(url, headers=headers, json=body)
    first.raise_for_status()
    count = len(first.json()["result"]["tools"])
    started = time.perf_counter()
    for _ in range(calls):
        (await http.post(url, headers=headers, json=body)).raise_for_status()
    return count, (time.perf_counter() - started) * 1000 / calls


async def through_gateway(ctx: BenchContext, calls: int) -> dict[str, MetricValue]:
    metrics: dict[str, MetricValue] = {}
    async with (
        ctx.gateway_server("catalogue", gateway_config()) as srv,
        httpx.AsyncClient(timeout=ctx.settings.call_timeout, headers={"x-api-key": KEY}) as http,
    ):
        pid = srv.process.pid
        modern = {**_HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
        listing = rpc("tools/list", {"_meta": envelope("bench")})
        hello = await http.post(srv.mcp_url, headers=_HEADERS, json=initialize())
        legacy = {
            **_HEADERS,
            "mcp-session-id": hello.headers["mcp-session-id"],
            "mcp-protocol-version": LEGACY,
        }
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        (await http.post(srv.mcp_url, headers=legacy, json=note)).raise_for_status()
        cases = {
            "modern": (srv.mcp_url, modern, listing),
            "legacy": (srv.mcp_url, legacy, rpc("tools/list")),
            "filtered": (srv.mcp_url, {**modern, "x-api-key": READER_KEY}, listing),
            "endpoint": (srv.base_url + "/mcp/half", modern, listing),
        }
        for label, (url, headers, body) in cases.items():
            ctx.log(f"  catalogue: {calls} tools/list ({label})")
            await _lists(http, url, headers, body, 10)  # warm-up
            before = _cpu(pid)
            count, wall = await _lists(http, url, headers, body, calls)
            metrics[f"gateway_{label}_tools"] = count
            metrics[f"gateway_{label}_cpu_ms_per_list"] = round((_cpu(pid) - before) * 1000 / calls, 3)
            metrics[f"gateway_{label}_wall_ms_per_list"] = round(wall, 3)
    return metrics


def directly(calls: int) -> dict[str, MetricValue]:
    """The backend's own CPU per `tools/list` over its stdio (no gateway)."""
    with subprocess.Popen(
        [sys.executable, MANY_TOOLS, str(COUNT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:

            def ask(message: dict[str, Any]) -> dict[str, Any]:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps(message).encode() + b"\n")
                proc.stdin.flush()
                answer: dict[str, Any] = json.loads(proc.stdout.readline())
                return answer

            ask(initialize())
            count = len(ask(rpc("tools/list"))["result"]["tools"])
            before, started = _cpu(proc.pid), time.perf_counter()
            for i in range(calls):
                ask(rpc("tools/list", rid=i + 2))
            return {
                "direct_tools": count,
                "direct_backend_cpu_ms_per_list": round((_cpu(proc.pid) - before) * 1000 / calls, 3),
                "direct_wall_ms_per_list": round((time.perf_counter() - started) * 1000 / calls, 3),
            }
        finally:
            proc.kill()
