"""How a load is timed, client side (this process, one asyncio loop): sequential, concurrent,
interleaved (endpoints taking turns), and the TypeScript SDK's client in a Node process.

Every call is bounded (`BenchSettings.call_timeout`); CPU time is read around the timed part only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import anyio

from tests._infra import server_node
from tests._support import TIME_ARGS, TIME_SERVER
from tests.bench.clients import TOOL_ARGS, TS_CLIENT, Endpoint, TsEndpoint
from tests.bench.processes import BenchContext, cpu_per_call, cpu_seconds
from tests.bench.results import LoadResult


async def _call(client: Any, ep: Endpoint, limit_s: float) -> str | None:
    """One call, bounded here (not every client honours a timeout); an error description or None."""
    try:
        async with asyncio.timeout(limit_s):
            res = await client.call_tool(ep.tool, ep.arguments, raise_on_error=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if res.is_error:
        return f"tool error: {res.content!r:.200}"
    return None


async def _check_first_call(client: Any, ep: Endpoint, limit_s: float) -> None:
    """Fail loudly if the endpoint does not answer with a real time result (misrouting, etc.)."""
    async with asyncio.timeout(limit_s):
        res = await client.call_tool(ep.tool, ep.arguments, raise_on_error=False)
    if res.is_error:
        raise RuntimeError(f"{ep.label}: {ep.tool} returned an error: {res.content!r:.300}")
    text = json.dumps(res.structured_content) if res.structured_content else repr(res.content)
    if ep.expect not in text:
        raise RuntimeError(f"{ep.label}: unexpected {ep.tool} result: {text:.300}")


async def _timed_calls(
    client: Any, ep: Endpoint, calls: int, limit_s: float, latencies: list[float]
) -> tuple[int, str | None]:
    """`calls` calls in a row; each success's latency (ms) goes to `latencies`. Returns the number
    of errors and the first one."""
    errors, first_error = 0, None
    for _ in range(calls):
        t0 = time.perf_counter()
        err = await _call(client, ep, limit_s)
        if err is None:
            latencies.append((time.perf_counter() - t0) * 1000.0)
        else:
            errors += 1
            first_error = first_error or err
    return errors, first_error


async def run_sequential(ctx: BenchContext, ep: Endpoint, scenario: str) -> LoadResult:
    s = ctx.settings
    lat: list[float] = []
    async with ep.make_client() as client:
        await _check_first_call(client, ep, s.call_timeout)
        for _ in range(s.warmup):
            await _call(client, ep, s.call_timeout)
        cpu0 = cpu_seconds(ep.server_pid)
        t_start = time.perf_counter()
        errors, first_error = await _timed_calls(client, ep, s.calls, s.call_timeout, lat)
        wall = time.perf_counter() - t_start
        cpu = cpu_per_call(cpu0, cpu_seconds(ep.server_pid), s.calls)
    return LoadResult(scenario, "sequential", 1, s.calls, errors, wall, lat, first_error, cpu)


async def run_concurrent(
    ctx: BenchContext, ep: Endpoint, scenario: str, clients: int | None = None
) -> LoadResult:
    """``clients`` sessions connect and warm up first (untimed), then all start together."""
    s = ctx.settings
    n = clients if clients is not None else s.clients
    lat: list[float] = []
    errors = 0
    first_error: str | None = None
    ready = 0
    all_ready = asyncio.Event()
    go = asyncio.Event()
    end_times: list[float] = []

    async def worker() -> None:
        nonlocal ready, errors, first_error
        async with ep.make_client() as client:
            await _check_first_call(client, ep, s.call_timeout)
            for _ in range(s.client_warmup):
                await _call(client, ep, s.call_timeout)
            ready += 1
            if ready == n:
                all_ready.set()
            await go.wait()
            failed, first = await _timed_calls(client, ep, s.calls_per_client, s.call_timeout, lat)
            errors += failed
            first_error = first_error or first
            end_times.append(time.perf_counter())
            if len(end_times) == n:
                all_done.set()
            # Stay connected until everyone is done so teardown does not overlap measurement.
            await finished.wait()

    all_done = asyncio.Event()
    finished = asyncio.Event()
    t_start = 0.0
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(worker())
        connect_timeout = ctx.settings.ready_timeout + n * 2.0
        await asyncio.wait_for(all_ready.wait(), timeout=connect_timeout)
        cpu0 = cpu_seconds(ep.server_pid)
        t_start = time.perf_counter()
        go.set()
        await all_done.wait()
        cpu = cpu_per_call(cpu0, cpu_seconds(ep.server_pid), n * s.calls_per_client)
        finished.set()
    wall = max(end_times) - t_start
    total = n * s.calls_per_client
    return LoadResult(scenario, "concurrent", n, total, errors, wall, lat, first_error, cpu)


async def run_standard_loads(ctx: BenchContext, ep: Endpoint, scenario: str) -> list[LoadResult]:
    loads: list[LoadResult] = []
    ctx.log(f"  {scenario}: sequential, {ctx.settings.calls} calls (+{ctx.settings.warmup} warm-up)")
    loads.append(await run_sequential(ctx, ep, scenario))
    if ctx.settings.clients > 0:
        ctx.log(f"  {scenario}: {ctx.settings.clients} clients x {ctx.settings.calls_per_client} calls")
        loads.append(await run_concurrent(ctx, ep, scenario))
    return loads


async def run_interleaved(
    ctx: BenchContext, endpoints: Sequence[Endpoint], calls: int | None = None
) -> list[LoadResult]:
    """Sequential calls taking turns between endpoints, so all of them see the same machine.

    Measured one after the other, a busy neighbour during one run and not the other shows up as
    latency the thing under test did not add; taking turns call by call cancels that out.
    `calls` per endpoint (default `--calls`).
    """
    s = ctx.settings if calls is None else dataclasses.replace(ctx.settings, calls=calls)
    lat: list[list[float]] = [[] for _ in endpoints]
    errors = [0 for _ in endpoints]
    first_error: list[str | None] = [None for _ in endpoints]
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(ep.make_client()) for ep in endpoints]
        for client, ep in zip(clients, endpoints, strict=True):
            await _check_first_call(client, ep, s.call_timeout)
            for _ in range(s.warmup):
                await _call(client, ep, s.call_timeout)
        t_start = time.perf_counter()
        for _ in range(s.calls):
            for i, (client, ep) in enumerate(zip(clients, endpoints, strict=True)):
                t0 = time.perf_counter()
                err = await _call(client, ep, s.call_timeout)
                if err is None:
                    lat[i].append((time.perf_counter() - t0) * 1000.0)
                else:
                    errors[i] += 1
                    first_error[i] = first_error[i] or err
        wall = (time.perf_counter() - t_start) / len(endpoints)
    return [
        LoadResult(ep.label, "interleaved", 1, s.calls, errors[i], wall, lat[i], first_error[i])
        for i, ep in enumerate(endpoints)
    ]


async def run_ts_interleaved(
    ctx: BenchContext, endpoints: Sequence[TsEndpoint]
) -> tuple[str, list[LoadResult]]:
    """`run_interleaved` with the TypeScript SDK's client in a Node process (tests/node/bench-client.mjs).

    Most desktop and IDE clients are built on that SDK; its HTTP transport costs far less than the
    Python clients' over stdio, so it shows what the gateway adds with less of the client's own cost.
    """
    s = ctx.settings
    out = ctx.workdir / "ts-client.json"
    spec = {
        "out": str(out),
        "calls": s.calls,
        "warmup": s.warmup,
        "timeoutMs": int(s.call_timeout * 1000),
        "endpoints": [
            {"label": e.label, "tool": e.tool, "arguments": TOOL_ARGS, "era": e.era}
            | ({"url": e.url} if e.url else {"command": TIME_SERVER, "args": list(TIME_ARGS)})
            for e in endpoints
        ],
    }
    mp = ctx.procs.spawn("ts-client", [str(server_node()), str(TS_CLIENT), json.dumps(spec)])
    # Bounded well above a healthy round (~2 ms a call): start-up, then 100 ms a call.
    limit = 60 + len(endpoints) * (s.calls + s.warmup) * 0.1
    try:
        wait = functools.partial(mp.popen.wait, timeout=limit)
        code = await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"TypeScript client not done after {limit:.0f}s:\n{mp.log_tail()}") from None
    finally:
        ctx.procs.stop(mp)
    if code != 0:
        raise RuntimeError(f"TypeScript client exited with {code}:\n{mp.log_tail()}")
    report = json.loads(out.read_text())
    loads = []
    for e in report["endpoints"]:
        lat = e["latenciesMs"]
        wall = sum(lat) / 1000.0
        loads.append(
            LoadResult(e["label"], "ts interleaved", 1, s.calls, e["errors"], wall, lat, e["firstError"])
        )
    return f"{report['client']} on Node {report['node']}", loads
