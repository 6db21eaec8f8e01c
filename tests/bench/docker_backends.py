"""Docker backends: start-up of several containers at once, and a call through a Docker backend
against the same server over plain stdio (needs an engine and the images of `BUILD_IMAGES`)."""

from __future__ import annotations

import statistics
import time

from mcp import Client as SdkClient

from gateway.fleet import Fleet
from tests._support import config, docker_time, serve, time_server


async def bench(starts: int = 5, calls: int = 200, warmup: int = 20) -> dict[str, float]:
    """Seconds to start `starts` time containers concurrently (until all are running), and the p50
    (ms) of `get_current_time` through a Docker backend vs the same server over plain stdio, both
    at the backend (`Backend.request`) and end to end (a real client through the gateway)."""
    numbers: dict[str, float] = {}
    fleet = Fleet(config({f"dstart{i}": docker_time() for i in range(starts)}))
    began = time.perf_counter()
    async with fleet.running():
        await fleet.wait_started()
        numbers[f"start_{starts}_concurrent_s"] = time.perf_counter() - began
        assert all(b.available for b in fleet.backends.values())

    args = {"timezone": "UTC"}
    async with serve(config({"dk": docker_time(), "io": time_server()})) as gw:
        for server in ("dk", "io"):
            backend = gw.fleet.backends[server]
            samples = []
            for i in range(warmup + calls):
                t = time.perf_counter()
                await backend.request("tools/call", {"name": "get_current_time", "arguments": args})
                if i >= warmup:
                    samples.append(time.perf_counter() - t)
            numbers[f"{server}_backend_p50_ms"] = statistics.median(samples) * 1000
        async with SdkClient(gw.url, mode="legacy") as client:
            for server in ("dk", "io"):
                samples = []
                for i in range(warmup + calls):
                    t = time.perf_counter()
                    await client.call_tool(f"{server}__get_current_time", args)
                    if i >= warmup:
                        samples.append(time.perf_counter() - t)
                numbers[f"{server}_gateway_p50_ms"] = statistics.median(samples) * 1000
    return numbers
