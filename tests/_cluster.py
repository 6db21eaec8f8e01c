"""Replicas behind a real load balancer: `mcp-gateway serve` processes sharing a real `redis-server`,
with HAProxy (Debian's) on 127.0.0.1 in front, round-robin and without stickiness.

`replicas(...)` starts the whole thing and stops it on exit: each test owns what it starts. HAProxy
checks each replica's `/readyz` every 200 ms and takes it out after two failures; a request whose
connection is refused is sent to another replica (`option redispatch`), as a deployment would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
from anyio.abc import Process
from redis.asyncio import Redis as RedisClient

from tests._gateway_process import GatewayProcess, gateway_process
from tests._infra import Redis, require
from tests._support import START_TIMEOUT, free_port
from tests.admin._helpers import ADMIN_KEY, hashed

WAIT = 60.0  # generous: a loaded 2-core machine
STATE_KEY = "s" * 48  # every replica holds it: a 2026-07-28 input round resumes on any
ADMIN = {"x-api-key": ADMIN_KEY}

# `inter 200ms fall 2`: a dead replica is out within about half a second. The check sends a Host
# the gateway accepts (it refuses others: DNS rebinding).
_GLOBAL = """\
global
    maxconn 2000
    stats socket {stats} mode 600 level admin

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 30s
    option redispatch
    retries 3
"""
_POOL = """
frontend mcp{port}
    bind 127.0.0.1:{port}
    default_backend gateways{port}

backend gateways{port}
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server inter 200ms fastinter 200ms downinter 500ms fall 2 rise 1
{servers}
"""


def haproxy_config(stats: Path, pools: Mapping[int, Mapping[str, str]]) -> str:
    """HAProxy's config: for each port, round-robin without stickiness over its replicas (name
    -> host:port), each checked on /readyz; `stats`: the admin socket."""
    text = _GLOBAL.format(stats=stats)
    for port, backends in pools.items():
        servers = "\n".join(f"    server {name} {address} check" for name, address in backends.items())
        text += _POOL.format(port=port, servers=servers)
    return text


@dataclass
class Balancer:
    """A running HAProxy in front of the replicas."""

    process: Process
    port: int
    stats: Path
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    async def status(self) -> dict[str, str]:
        """Each replica's state as HAProxy sees it ("UP", "DOWN", ...), from its stats socket."""
        with anyio.fail_after(10):
            async with await anyio.connect_unix(self.stats) as sock:
                await sock.send(b"show stat\n")
                chunks = []
                with suppress(anyio.EndOfStream):
                    while True:
                        chunks.append(await sock.receive())
        lines = b"".join(chunks).decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row["status"].split()[0]
            for row in rows
            if row.get("pxname") == f"gateways{self.port}" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def wait_status(self, wanted: Mapping[str, str], timeout: float = WAIT) -> None:
        """Wait until each replica named in `wanted` has that status."""
        seen: dict[str, str] = {}
        try:
            with anyio.fail_after(timeout):
                while True:
                    seen = await self.status()
                    if all(seen.get(name) == status for name, status in wanted.items()):
                        return
                    await anyio.sleep(0.1)
        except TimeoutError:
            raise TimeoutError(f"HAProxy: wanted {dict(wanted)}, saw {seen}") from None


@asynccontextmanager
async def haproxy(tmp_path: Path, backends: Mapping[str, str]) -> AsyncIterator[Balancer]:
    """HAProxy round-robin over `backends` (name -> host:port), all of them up before it yields."""
    require("haproxy")
    port = free_port()
    stats = tmp_path / "haproxy.sock"
    path = tmp_path / "haproxy.cfg"
    path.write_text(haproxy_config(stats, {port: backends}))
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        # -db: in the foreground, not a daemon, so that this test owns it.
        process = await anyio.open_process(
            ["haproxy", "-db", "-f", str(path)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    balancer = Balancer(process, port, stats, log)
    try:
        with anyio.fail_after(START_TIMEOUT):
            while not stats.exists():
                assert process.returncode is None, f"haproxy exited:\n{log.read_text()}"
                await anyio.sleep(0.05)
        await balancer.wait_status(dict.fromkeys(backends, "UP"), timeout=START_TIMEOUT)
        yield balancer
    finally:
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                with anyio.fail_after(10):
                    await process.wait()


def replica_config(
    redis: Redis,
    prefix: str,
    name: str,
    tmp_path: Path,
    servers: Mapping[str, Any],
    middleware: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Replica `name`'s gateway.yaml: the shared Redis, state key and admin key; audit first, so
    that every call, refused ones included, is recorded with the replica that served it."""
    audit = {"use": "audit", "options": {"path": str(tmp_path / f"{name}-audit.db"), "arguments": "full"}}
    return {
        "servers": dict(servers),
        "cluster": {"redis": redis.url, "key_prefix": prefix, "replica_id": name},
        "state": {"keys": [STATE_KEY]},
        "admin": {"api_keys": [hashed(ADMIN_KEY)], "events": {"path": str(tmp_path / f"{name}-events.db")}},
        "middleware": [audit, *middleware],
    }


def argument(record: Mapping[str, str], name: str) -> str:
    """Argument `name` of an audit record (stored in full: `replica_config`), or ""."""
    value = json.loads(record.get("arguments") or "{}").get(name, "")
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class Replicas:
    redis: Redis
    prefix: str
    balancer: Balancer
    gateways: dict[str, GatewayProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.balancer.url

    def kill(self, name: str) -> None:
        """SIGKILL replica `name` (and, as an init would, the backends it leaves behind)."""
        gateway = self.gateways[name]
        left = gateway.descendants()
        gateway.process.send_signal(signal.SIGKILL)
        for proc in left:
            with suppress(psutil.NoSuchProcess):
                proc.kill()

    async def audit(
        self, count: int | None = None, *, text: str = "", timeout: float = WAIT
    ) -> list[dict[str, str]]:
        """The shared audit stream's `tools/call` records whose `text` argument starts with
        `text`, oldest first; with `count`, once there are at least that many (records are
        written behind the calls)."""
        client = RedisClient.from_url(self.redis.url, decode_responses=True)
        try:
            with anyio.fail_after(timeout):
                while True:
                    entries: Any = await client.xrange(f"{self.prefix}:audit")
                    rows = [
                        dict(f)
                        for _, f in entries
                        if f.get("method") == "tools/call" and argument(f, "text").startswith(text)
                    ]
                    if count is None or len(rows) >= count:
                        return rows
                    await anyio.sleep(0.1)
        finally:
            await client.aclose()

    async def events(self, name: str, **params: str) -> list[dict[str, Any]]:
        """`GET /admin/events` on replica `name` itself (not through the balancer)."""
        async with httpx.AsyncClient(base_url=self.gateways[name].base, headers=ADMIN, timeout=WAIT) as http:
            resp = await http.get("/admin/events", params={"limit": "1000", **params})
            resp.raise_for_status()
            events: list[dict[str, Any]] = resp.json()["events"]
            return events


@asynccontextmanager
async def replicas(
    tmp_path: Path,
    redis: Redis,
    servers: Mapping[str, Any],
    *,
    count: int = 3,
    middleware: Sequence[Mapping[str, Any]] = (),
) -> AsyncIterator[Replicas]:
    """`count` gateway processes (replicas r1, r2, ...) serving `servers`, on `redis`, behind HAProxy."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        gateways: dict[str, GatewayProcess] = {}
        for k in range(1, count + 1):
            name = f"r{k}"
            cfg = replica_config(redis, prefix, name, tmp_path, servers, middleware)
            gateways[name] = await stack.enter_async_context(gateway_process(tmp_path, cfg, name=name))
        addresses = {name: gw.base.removeprefix("http://") for name, gw in gateways.items()}
        balancer = await stack.enter_async_context(haproxy(tmp_path, addresses))
        yield Replicas(redis, prefix, balancer, gateways)
