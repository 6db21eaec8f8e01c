"""Replicas behind HAProxy: calls/s for 1, 2 and 3 gateway processes behind the load balancer, and
the p50 it adds over one process reached directly (`--only replicas`; needs redis-server and
haproxy).

The backend does no work: `tests/servers/floor.py` (recorded answers of `mcp-server-time`) run once
as every replica's `url:` backend, the deployment README recommends for replicas. The replicas
share a `redis-server` (`cluster.redis`: events and audit) and a state key, as in a deployment.
One HAProxy process serves three ports, round-robin without stickiness over the first 1, 2 and 3
replicas. The client (this process) is `fastmcp.Client` at 2026-07-28; 20 concurrent clients by
default (`--clients`). Everything shares the machine's cores, the client included: calls/s for N
replicas is bounded by the cores, not by the gateway, once N processes outnumber them.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastmcp import Client

from tests._cluster import STATE_KEY, haproxy_config
from tests._infra import Redis
from tests._support import FLOOR, TIME_ARGS, TIME_SERVER, free_port
from tests.bench.clients import GATEWAY_TOOL, TOOL_ARGS, Endpoint
from tests.bench.processes import BenchContext, RunningServer, wait_ready
from tests.bench.results import ScenarioResult, round_or_none
from tests.bench.runners import run_concurrent, run_interleaved

REPLICAS = 3


def _endpoint(label: str, url: str, pid: int | None) -> Endpoint:
    return Endpoint(label, lambda: Client(url), GATEWAY_TOOL, TOOL_ARGS, server_pid=pid)


@contextlib.contextmanager
def _redis() -> Any:
    redis = Redis(free_port())
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@contextlib.asynccontextmanager
async def _haproxy(ctx: BenchContext, replicas: list[RunningServer]) -> AsyncIterator[dict[int, str]]:
    """One HAProxy: for n in 1..len(replicas), a port balancing over the first n; yields n -> URL."""
    ports = {n: free_port() for n in range(1, len(replicas) + 1)}
    pools = {
        port: {f"r{k}": replicas[k - 1].base_url.removeprefix("http://") for k in range(1, n + 1)}
        for n, port in ports.items()
    }
    path = ctx.workdir / "haproxy.cfg"
    path.write_text(haproxy_config(ctx.workdir / "haproxy.sock", pools))
    mp = ctx.procs.spawn("haproxy", ["haproxy", "-db", "-f", str(path)])
    try:
        for port in ports.values():
            await wait_ready(mp, f"http://127.0.0.1:{port}/readyz", ctx.settings.ready_timeout)
        yield {n: f"http://127.0.0.1:{port}/mcp" for n, port in ports.items()}
    finally:
        ctx.procs.stop(mp)


async def scenario_replicas(ctx: BenchContext) -> ScenarioResult:
    res = ScenarioResult("replicas", "1-3 gateway replicas behind HAProxy (round-robin) -> zero-work backend")
    missing = [b for b in ("redis-server", "haproxy") if shutil.which(b) is None]
    if missing:
        res.error = f"not installed: {', '.join(missing)}; run scripts/install-test-deps"
        return res
    with _redis() as redis:
        floor_port = free_port()
        floor_argv = [sys.executable, FLOOR, str(floor_port), "--", TIME_SERVER, *TIME_ARGS]
        async with contextlib.AsyncExitStack() as stack:
            floor = await stack.enter_async_context(ctx.http_server("floor", floor_argv, floor_port))
            prefix = f"bench{uuid.uuid4().hex[:6]}"
            replicas: list[RunningServer] = []
            for k in range(1, REPLICAS + 1):
                config = {
                    "servers": {"time": {"url": floor.mcp_url}},
                    "cluster": {"redis": redis.url, "key_prefix": prefix, "replica_id": f"r{k}"},
                    "state": {"keys": [STATE_KEY]},
                }
                replicas.append(await stack.enter_async_context(ctx.gateway_server(f"replica{k}", config)))
            urls = await stack.enter_async_context(_haproxy(ctx, replicas))
            await _measure(ctx, res, replicas[0], urls)
    return res


async def _measure(ctx: BenchContext, res: ScenarioResult, one: RunningServer, urls: dict[int, str]) -> None:
    s = ctx.settings
    direct = _endpoint("direct", one.mcp_url, one.process.pid)
    behind = {n: _endpoint(f"lb{n}", url, None) for n, url in urls.items()}
    # Latency: calls taking turns between one process reached directly and the balancer over one
    # and over all replicas, so that all three see the same machine.
    ctx.log(f"  replicas: {s.calls} calls taking turns: one process directly, HAProxy over 1 and {REPLICAS}")
    turns = await run_interleaved(ctx, [direct, behind[1], behind[REPLICAS]])
    for ld in turns:
        ld.mode = f"turns {ld.scenario}"
        res.metrics[f"turns_{ld.scenario}_p50_ms"] = round_or_none(ld.pct(50))
        res.metrics[f"turns_{ld.scenario}_errors"] = ld.errors
    res.loads.extend(turns)
    if s.clients <= 0:
        return
    # Throughput: the same concurrent load on each, one after the other.
    for ep in [direct, *behind.values()]:
        ctx.log(f"  replicas: {ep.label}: {s.clients} clients x {s.calls_per_client} calls")
        began = time.perf_counter()
        load = await run_concurrent(ctx, ep, ep.label)
        load.mode = f"{ep.label} x{s.clients}"
        res.loads.append(load)
        res.metrics[f"{ep.label}_calls_per_s"] = round(load.calls_per_s, 1)
        ctx.log(
            f"    {load.calls_per_s:.0f} calls/s, {load.errors} errors ({time.perf_counter() - began:.1f}s)"
        )
        await anyio.sleep(0.5)  # let the last connections close before the next load
    single = res.metrics.get("direct_calls_per_s")
    for n in urls:
        total = res.metrics.get(f"lb{n}_calls_per_s")
        if isinstance(single, float) and isinstance(total, float) and single > 0:
            res.metrics[f"lb{n}_per_replica_vs_single"] = round(total / n / single, 2)
