"""What is measured: one `Scenario` per section of the report, in `SCENARIOS` order."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from tests._support import BUILD_IMAGES, FLOOR, TIME_ARGS, TIME_SERVER, TINY, free_port, time_server
from tests.bench import catalogue, chain, docker_backends, search
from tests.bench.clients import (
    FIXTURE,
    GATEWAY_TOOL,
    PLAIN_TOOL,
    ROUND_TOOL,
    TOOL,
    TOOL_ARGS,
    Endpoint,
    RawStdio,
    TsEndpoint,
    direct_endpoint,
    fixture_endpoint,
    gateway_stdio_endpoint,
    http_endpoint,
    session_endpoint,
    ts_client_problem,
)
from tests.bench.masking import benchmark_masking
from tests.bench.processes import BenchContext, rss_metrics
from tests.bench.replicas import scenario_replicas
from tests.bench.results import ScenarioResult, round_or_none
from tests.bench.runners import run_interleaved, run_sequential, run_standard_loads, run_ts_interleaved


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[BenchContext], Awaitable[ScenarioResult]]
    default: bool = True


def time_server_gateway_config() -> dict[str, Any]:
    return {"servers": {"time": time_server(type="stdio")}}


async def scenario_direct(ctx: BenchContext) -> ScenarioResult:
    res = ScenarioResult("direct", "mcp-server-time over stdio, fastmcp.Client (one backend per client)")

    ep = direct_endpoint(ctx, "direct-stdio.log")
    res.loads = await run_standard_loads(ctx, ep, res.name)
    return res


async def scenario_gateway(ctx: BenchContext) -> ScenarioResult:
    res = ScenarioResult("gateway", "our gateway over streamable HTTP -> mcp-server-time (stdio)")
    async with ctx.gateway_server("gateway", time_server_gateway_config()) as srv:
        res.metrics["ready_s"] = round(srv.ready_s, 3)
        ep = http_endpoint("gateway", srv, GATEWAY_TOOL)
        res.loads = await run_standard_loads(ctx, ep, res.name)
        ctx.log(f"  gateway: sequential, {ctx.settings.calls} calls from a 2025-11-25 session client")
        legacy = await run_sequential(ctx, session_endpoint(srv), res.name)
        legacy.mode = "seq 2025"
        res.loads.append(legacy)
        ctx.log(f"  gateway: sequential, {ctx.settings.calls} calls over stdio (serve --stdio)")
        over_stdio = await run_sequential(ctx, gateway_stdio_endpoint(ctx, srv.config), res.name)
        over_stdio.mode = "seq stdio"
        res.loads.append(over_stdio)
        res.metrics.update(rss_metrics(srv.process.pid, "gateway"))
        floor_argv = [sys.executable, FLOOR, str(port := free_port()), "--", TIME_SERVER, *TIME_ARGS]
        async with ctx.http_server("floor", floor_argv, port) as floor:
            await _interleaved_round(ctx, res, ep, http_endpoint("floor", floor, TOOL), srv.config)
            await _ts_round(ctx, res, floor.mcp_url, srv.mcp_url)
    return res


async def _interleaved_round(
    ctx: BenchContext, res: ScenarioResult, gateway: Endpoint, floor: Endpoint, config: Path | None
) -> None:
    """The gateway taking turns with the bare backend, direct stdio and a zero-work HTTP server."""
    ctx.log(f"  gateway: {ctx.settings.calls} calls taking turns with direct and zero-work servers")
    endpoints = [
        Endpoint("raw", RawStdio, TOOL, TOOL_ARGS),
        direct_endpoint(ctx, "interleaved-stdio.log"),
        floor,
        gateway,
        gateway_stdio_endpoint(ctx, config),
    ]
    loads = await run_interleaved(ctx, endpoints)
    for ld in loads:
        res.metrics[f"interleaved_{ld.scenario}_p50_ms"] = round_or_none(ld.pct(50))
        res.metrics[f"interleaved_{ld.scenario}_errors"] = ld.errors


async def _ts_round(ctx: BenchContext, res: ScenarioResult, floor_url: str, gateway_url: str) -> None:
    """The interleaved round again, from the TypeScript SDK's client (if Node and it are installed)."""
    problem = ts_client_problem()
    if problem is not None:
        ctx.log(
            f"  gateway: NOT measured with the TypeScript SDK client: {problem} (scripts/install-test-deps)"
        )
        res.metrics["ts_client"] = f"not run: {problem}"
        return
    ctx.log(f"  gateway: {ctx.settings.calls} calls taking turns, TypeScript SDK client")
    client, loads = await run_ts_interleaved(
        ctx,
        [
            TsEndpoint("direct", TOOL, "2025-11-25"),
            TsEndpoint("floor", TOOL, "2026-07-28", floor_url),
            TsEndpoint("gateway", GATEWAY_TOOL, "2026-07-28", gateway_url),
            TsEndpoint("gateway_2025", GATEWAY_TOOL, "2025-11-25", gateway_url),
        ],
    )
    res.metrics["ts_client"] = client
    for ld in loads:
        res.metrics[f"ts_{ld.scenario}_p50_ms"] = round_or_none(ld.pct(50))
        res.metrics[f"ts_{ld.scenario}_p95_ms"] = round_or_none(ld.pct(95))
        res.metrics[f"ts_{ld.scenario}_errors"] = ld.errors


async def scenario_rounds(ctx: BenchContext) -> ScenarioResult:
    """A backend speaking 2026-07-28, directly and behind the gateway: a plain call, and a call that
    takes an input round (an elicitation the client answers at once). Endpoints take turns."""
    res = ScenarioResult(
        "rounds", "2026-07-28 backend (conformance fixture), with and without an input round"
    )
    modern = "2026-07-28"
    config = {"servers": {"fixture": {"type": "stdio", "command": sys.executable, "args": [str(FIXTURE)]}}}
    async with ctx.gateway_server("gateway-rounds", config) as srv:
        endpoints = [
            fixture_endpoint("direct", PLAIN_TOOL, mode=modern),
            fixture_endpoint("direct+in", ROUND_TOOL, mode=modern),
            fixture_endpoint("gateway", PLAIN_TOOL, mode=modern, srv=srv),
            fixture_endpoint("gateway+in", ROUND_TOOL, mode=modern, srv=srv),
            # The same round for a client in a 2025-11-25 session: an elicitation/create mid-call.
            fixture_endpoint("gw2025+in", ROUND_TOOL, mode="legacy", srv=srv),
        ]
        # A few hundred calls in all: enough for a stable median of what a round adds.
        calls = max(1, ctx.settings.calls // len(endpoints))
        ctx.log(
            f"  rounds: {calls} calls per endpoint, taking turns: {', '.join(e.label for e in endpoints)}"
        )
        res.loads = await run_interleaved(ctx, endpoints, calls)
    for ld in res.loads:
        ld.mode = ld.scenario
        res.metrics[f"rounds_{ld.scenario}_p50_ms"] = round_or_none(ld.pct(50))
        res.metrics[f"rounds_{ld.scenario}_errors"] = ld.errors
    return res


async def scenario_proxy(ctx: BenchContext) -> ScenarioResult:
    res = ScenarioResult("proxy", "FastMCP create_proxy over streamable HTTP -> mcp-server-time (stdio)")
    port = free_port()
    argv = [
        sys.executable, "-m", "tests.bench.fastmcp_proxy", str(port), "--", TIME_SERVER, *TIME_ARGS,
    ]  # fmt: skip
    async with ctx.http_server("fastmcp-proxy", argv, port) as srv:
        res.metrics["ready_s"] = round(srv.ready_s, 3)
        ep = http_endpoint("proxy", srv, TOOL)
        res.loads = await run_standard_loads(ctx, ep, res.name)
        res.metrics.update(rss_metrics(srv.process.pid, "proxy"))
    return res


async def scenario_fleet(ctx: BenchContext) -> ScenarioResult:
    """Start-up of 20 real stdio backends, and the gateway's own memory with 50 idle ones."""
    res = ScenarioResult("fleet", "fleet start-up and idle memory")
    twenty = {f"time{i}": time_server(startup_timeout=120) for i in range(20)}
    async with ctx.gateway_server("fleet20", {"servers": twenty}) as srv:
        res.metrics["start_20_stdio_s"] = round(srv.ready_s, 2)
    fifty = {f"tiny{i}": {"command": sys.executable, "args": [TINY, f"tiny{i}"]} for i in range(50)}
    async with ctx.gateway_server("fleet50", {"servers": fifty}) as srv:
        res.metrics["start_50_tiny_s"] = round(srv.ready_s, 2)
        await asyncio.sleep(1.0)  # let start-up garbage settle before reading RSS
        res.metrics.update(rss_metrics(srv.process.pid, "gateway_50_idle"))
    return res


async def scenario_chain(ctx: BenchContext) -> ScenarioResult:
    """Per-call cost of the full default chain (telemetry, auth, ratelimit, masking, audit) vs none."""
    res = ScenarioResult("chain", "middleware chain overhead, in process (no I/O)")
    empty, full = await chain.empty_and_full(ctx.workdir / "audit.db", ctx.settings.calls * 4)
    res.metrics.update(
        empty_chain_us=round(empty, 1), full_chain_us=round(full, 1), added_ms=round((full - empty) / 1000, 3)
    )
    masking = benchmark_masking(runs=50, size=100_000)
    res.metrics.update({f"mask_100kb_{k}": round(v, 2) for k, v in masking.items()})
    return res


async def scenario_docker(ctx: BenchContext) -> ScenarioResult:
    """Start 5 containers concurrently; a call through a Docker backend vs the same server over stdio."""
    res = ScenarioResult("docker", "Docker backends (needs an engine and tests/fixtures/docker/build-images)")
    if (
        shutil.which("docker") is None
        or (await anyio.run_process(["docker", "info"], check=False)).returncode != 0
    ):
        res.error = "no Docker engine answers; run scripts/install-test-deps"
        return res
    with anyio.fail_after(900):  # a cold debootstrap base takes a minute or two
        await anyio.run_process([str(BUILD_IMAGES), "time"])
    numbers = await docker_backends.bench(starts=5, calls=ctx.settings.calls // 2, warmup=20)
    res.metrics.update({k: round(v, 3) for k, v in numbers.items()})
    return res


async def scenario_catalogue(ctx: BenchContext) -> ScenarioResult:
    """Gateway CPU per `tools/list` of a 1,000-tool backend, against the backend's own."""
    res = ScenarioResult("catalogue", "tools/list of 1,000 tools: gateway CPU per list vs the backend's")
    calls = max(ctx.settings.calls // 5, 20)
    res.metrics.update(await catalogue.through_gateway(ctx, calls))
    res.metrics.update(await anyio.to_thread.run_sync(catalogue.directly, calls))
    return res


async def scenario_search(ctx: BenchContext) -> ScenarioResult:
    """Tool search mode over >= 1,000 tools: recall@5 and MRR, list tokens, search latency."""
    res = ScenarioResult("search", "tool search over a 1,000-tool fleet (needs the npm reference servers)")
    res.metrics.update(await search.bench(ctx))
    return res


SCENARIOS: list[Scenario] = [
    Scenario("direct", "direct stdio", scenario_direct),
    Scenario("gateway", "through the gateway (HTTP)", scenario_gateway),
    Scenario("proxy", "through FastMCP 4.1 create_proxy (HTTP)", scenario_proxy),
    Scenario("rounds", "2026-07-28 backend: calls with and without an input round", scenario_rounds),
    Scenario("fleet", "start 20 stdio backends; RSS with 50 idle backends", scenario_fleet),
    Scenario("chain", "full default middleware chain vs empty; masking 100 KB", scenario_chain),
    Scenario("catalogue", "tools/list of 1,000 tools: gateway vs directly", scenario_catalogue),
    Scenario("docker", "5 containers' start-up; Docker backend vs stdio", scenario_docker, default=False),
    Scenario("search", "tool search: recall@5, MRR, list tokens, latency", scenario_search, default=False),
    Scenario("replicas", "1-3 replicas behind HAProxy vs one process", scenario_replicas, default=False),
]
