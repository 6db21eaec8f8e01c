"""`mcp-gateway serve --workers N`, as a user runs it: a real process tree on a real `redis-server`.

Each worker is a replica of its own (replica id `<cluster.replica_id>-w<k>`); the kernel hands
each new connection to one of them. The clients open a connection per call here (a client keeping
one connection stays on one worker), so that both workers are seen to serve.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
import yaml
from mcp import Client as SdkClient
from redis.asyncio import Redis as RedisClient

from tests._cluster import STATE_KEY
from tests._gateway_process import GatewayProcess, gateway_process
from tests._infra import Redis
from tests._support import MODERN, fastmcp_client, misbehave, modern, text_of
from tests.admin._helpers import ADMIN_KEY, hashed
from tests.front.test_exchange import post
from tests.test_drain import Stream

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

WAIT = 60.0  # generous: a loaded 2-core machine


def workers_config(redis: Redis, tmp_path: Path, **cluster: Any) -> dict[str, Any]:
    return {
        "servers": {"mb": misbehave(), "m": modern()},
        "cluster": {"redis": redis.url, "key_prefix": f"t{uuid.uuid4().hex[:8]}", **cluster},
        "state": {"keys": [STATE_KEY]},
        "admin": {"api_keys": [hashed(ADMIN_KEY)], "events": {"path": str(tmp_path / "events.db")}},
        # Each worker writes its own file (SQLite in WAL mode); the shared view is the Redis stream.
        "middleware": [{"use": "audit", "options": {"path": str(tmp_path / "audit.db")}}],
    }


def workers_of(gateway: GatewayProcess) -> list[psutil.Process]:
    """The worker processes (uvicorn spawns them; the resource tracker is not one)."""
    return [p for p in psutil.Process(gateway.pid).children() if "spawn_main" in " ".join(p.cmdline())]


async def replicas_seen(gateway: GatewayProcess) -> set[str]:
    """The replica ids in the cluster's events, read through any worker."""
    async with httpx.AsyncClient(
        base_url=gateway.base, headers={"x-api-key": ADMIN_KEY}, timeout=WAIT
    ) as http:
        resp = await http.get("/admin/events", params={"limit": "1000"})
        resp.raise_for_status()
        return {e["replica"] for e in resp.json()["events"]}


async def until_seen(gateway: GatewayProcess, replicas: set[str]) -> None:
    """Wait until the cluster's events name exactly `replicas`."""
    seen: set[str] = set()
    try:
        with anyio.fail_after(WAIT):
            while True:
                try:
                    seen = await replicas_seen(gateway)
                except httpx.TransportError:
                    # Seen once in a full run on a loaded 2-core machine, while the workers were
                    # starting: the connection dropped; the question is asked again (bounded).
                    seen = set()
                if seen == replicas:
                    return
                await anyio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"wanted replicas {replicas}, the events name {seen}") from None


async def call_on_new_connections(gateway: GatewayProcess, calls: int, offset: int = 0) -> None:
    """`calls` calls, each from a new client (so a new connection, which the kernel hands to
    either worker): the fastmcp client and the `mcp` SDK client (2026-07-28) in turn."""
    for n in range(offset, offset + calls):
        if n % 2:
            async with SdkClient(gateway.url, mode=MODERN) as sdk:
                assert text_of(await sdk.call_tool("m__echo", {"text": f"sdk {n}"})).endswith(f"sdk {n}")
        else:
            async with fastmcp_client(gateway.url) as client:
                result = await client.call_tool("mb__echo", {"text": f"fastmcp {n}"})
                assert result.structured_content == {"text": f"misbehave: fastmcp {n}"}


async def served_by(redis: Redis, prefix: str) -> Counter[str]:
    """How many calls each worker served: the replica ids of the cluster's audit records."""
    client = RedisClient.from_url(redis.url, decode_responses=True)
    try:
        with anyio.fail_after(WAIT):
            entries: Any = await client.xrange(f"{prefix}:audit")
    finally:
        await client.aclose()
    return Counter(f["replica"] for _, f in entries if f.get("method") == "tools/call")


async def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Which of `processes` are still running after a bounded wait for them to end."""
    _gone, left = await anyio.to_thread.run_sync(lambda: psutil.wait_procs(processes, timeout=WAIT))
    return left


async def test_two_workers_serve_one_port_and_sigterm_leaves_nothing(redis: Redis, tmp_path: Path) -> None:
    cfg = workers_config(redis, tmp_path, replica_id="gw")
    prefix = cfg["cluster"]["key_prefix"]
    async with gateway_process(tmp_path, cfg, options=["--workers", "2"]) as gateway:
        # Each worker started its own fleet, and says so under its own replica id.
        await until_seen(gateway, {"gw-w1", "gw-w2"})
        assert len(workers_of(gateway)) == 2
        # Calls from both clients, each on a new connection, served by whichever worker took it:
        # both do, sooner or later (bounded).
        made = 0
        with anyio.fail_after(WAIT * 2):
            while made < 8 or set(await served_by(redis, prefix)) != {"gw-w1", "gw-w2"}:
                assert made < 60, await served_by(redis, prefix)
                await call_on_new_connections(gateway, 4, offset=made)
                made += 4

        # SIGTERM on the parent drains every worker: a call running then is answered.
        tree = gateway.descendants()
        assert len(tree) >= 6, tree  # 2 workers, 2 backends each, uvicorn's resource tracker
        call = Stream()
        headers, body = post(
            "tools/call",
            {"name": "mb__sleep", "arguments": {"seconds": 2}, "_meta": {"progressToken": "p"}},
            rid=7,
        )
        async with httpx.AsyncClient(timeout=WAIT) as http, anyio.create_task_group() as tg:
            tg.start_soon(lambda: call.read(http, "POST", gateway.url, headers=headers, content=body))
            with anyio.fail_after(WAIT):
                await call.open.wait()  # its first progress note: the call runs
            gateway.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(WAIT):
                await call.ended.wait()
        final = call.messages[-1]
        assert final["id"] == 7 and final["result"]["isError"] is False, call.messages[-3:]
        assert await gateway.wait(WAIT) == 0
        # Nothing outlives it (uvicorn's resource tracker ends once the parent has: waited for).
        assert await still_running(tree) == []
    log = gateway.log_text()
    assert "Traceback" not in log
    assert log.count("Application shutdown complete") == 2
    assert "draining: 1 call(s) in flight" in log


async def test_a_worker_that_dies_is_replaced(redis: Redis, tmp_path: Path) -> None:
    cfg = workers_config(redis, tmp_path, replica_id="gw")
    async with gateway_process(tmp_path, cfg, options=["--workers", "2"]) as gateway:
        first = workers_of(gateway)
        assert len(first) == 2
        victim = first[0]
        backends = victim.children(recursive=True)
        # A worker reads the file as it starts; one that no longer validates is logged and the
        # config the parent read is used instead, rather than a worker that cannot start.
        (tmp_path / "gateway.yaml").write_text("servers: [not, a, mapping\n")
        victim.send_signal(signal.SIGKILL)
        # uvicorn's supervisor sees it gone (it checks twice a second) and starts another, a new
        # replica (w3) with a fleet of its own.
        await until_seen(gateway, {"gw-w1", "gw-w2", "gw-w3"})
        now = workers_of(gateway)
        assert len(now) == 2 and victim.pid not in {p.pid for p in now}
        # The dead worker's backends ended with it (their stdin closed).
        assert await still_running(backends) == []
        await call_on_new_connections(gateway, 6)
    assert "worker 3: " in gateway.log_text() and "no longer validates" in gateway.log_text()


def test_several_workers_need_cluster_redis(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"servers": {"mb": misbehave()}}))
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "--workers 2 needs cluster.redis" in out.stderr
    assert "rate limits" in out.stderr and "Traceback" not in out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--workers: must be a whole number of at least 1" in bad.stderr
    stdio = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--stdio", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stdio.returncode == 2 and "--workers serves HTTP" in stdio.stderr
