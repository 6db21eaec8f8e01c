"""Gateway benchmark: ``python -m tests.bench`` (run from the repository root).

Measures ``mcp-server-time``'s ``get_current_time`` ({"timezone": "UTC"}) reached

* ``direct``  - over stdio with ``fastmcp.Client`` (no gateway at all),
* ``gateway`` - through ``python -m gateway serve`` over streamable HTTP,
* ``proxy``   - through FastMCP's own ``create_proxy`` over streamable HTTP (same stdio backend),

each sequentially (``--calls`` calls from one client after ``--warmup`` warm-up calls; for the
gateway also from a 2025-11-25 session client, mode ``seq 2025``) and with
``--clients`` concurrent clients (each its own ``fastmcp.Client`` session, ``--calls-per-client``
calls each, after a short untimed warm-up per client).

The servers under test always run in their own processes (started here, in their own process
groups, bound to 127.0.0.1); the client side runs in this process on one asyncio loop. On a small
machine the client and the servers share the cores, so compare paths measured in the same run
rather than numbers across machines.

Adding a section: write ``async def _scenario_x(ctx: BenchContext) -> ScenarioResult`` (the
helpers ``run_standard_loads``, ``run_sequential``, ``run_concurrent``, ``gateway_server`` and
``http_server`` do the heavy lifting) and append a ``Scenario`` to ``SCENARIOS``. Scenarios with
``default=False`` only run when named in ``--only``. Summary lines that compare scenarios live in
``summarize``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import importlib.metadata
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]
import yaml
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sysconfig.get_path("scripts"))  # the venv's bin dir
TIME_SERVER = str(BIN_DIR / "mcp-server-time")
FLOOR_SERVER = Path(__file__).resolve().parent / "servers" / "floor.py"
TS_CLIENT = Path(__file__).resolve().parent / "node" / "bench-client.mjs"
TIME_ARGS = ["--local-timezone", "UTC"]
TOOL = "get_current_time"
TOOL_ARGS: dict[str, Any] = {"timezone": "UTC"}
LOOPBACK = "127.0.0.1"

MetricValue = float | int | str | None


# --------------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    calls: int = 500
    warmup: int = 50
    clients: int = 20
    calls_per_client: int = 100
    client_warmup: int = 5
    ready_timeout: float = 60.0
    call_timeout: float = 30.0
    stop_timeout: float = 5.0


@dataclass
class LoadResult:
    """One measured load pattern against one endpoint."""

    scenario: str
    mode: str  # "sequential" | "concurrent" | anything a later section defines
    clients: int
    calls: int
    errors: int
    wall_s: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    first_error: str | None = None
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)

    @property
    def ok_calls(self) -> int:
        return self.calls - self.errors

    @property
    def calls_per_s(self) -> float:
        return self.ok_calls / self.wall_s if self.wall_s > 0 else 0.0

    def pct(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "clients": self.clients,
            "calls": self.calls,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 4),
            "calls_per_s": round(self.calls_per_s, 1),
            "p50_ms": _round(self.pct(50)),
            "p95_ms": _round(self.pct(95)),
            "p99_ms": _round(self.pct(99)),
            "max_ms": _round(max(self.latencies_ms) if self.latencies_ms else None),
            "first_error": self.first_error,
            "cpu_ms_per_call": self.cpu_ms_per_call,
        }


@dataclass
class ScenarioResult:
    name: str
    title: str
    loads: list[LoadResult] = field(default_factory=list)
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    error: str | None = None

    def load(self, mode: str) -> LoadResult | None:
        return next((ld for ld in self.loads if ld.mode == mode), None)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[BenchContext], Awaitable[ScenarioResult]]
    default: bool = True


@dataclass(frozen=True)
class Endpoint:
    """How to open one client session to the thing under test, and which tool to call."""

    label: str
    make_client: Callable[[], Any]  # an async context manager with fastmcp.Client's call_tool
    tool: str
    arguments: dict[str, Any]
    server_pid: int | None = None  # the gateway/proxy process; None: backends are our children


def cpu_seconds(server_pid: int | None) -> dict[str, float]:
    """CPU time used so far by the client (this process), the server and its backends."""

    def used(p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    me = psutil.Process()
    out = {"client": used(me), "server": 0.0, "backends": 0.0}
    owner = me
    if server_pid is not None:
        with contextlib.suppress(psutil.Error):
            owner = psutil.Process(server_pid)
            out["server"] = used(owner)
    for child in owner.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out["backends"] += used(child)
    return out


def cpu_per_call(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) * 1000.0 / max(calls, 1), 3) for k in before}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100)."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _round(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


# --------------------------------------------------------------------------------------------
# Process management: every server under test lives in its own process group
# --------------------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class ProcessManager:
    """Starts subprocesses in new sessions and kills whole groups (plus strays) on stop."""

    def __init__(self, workdir: Path, stop_timeout: float) -> None:
        self.workdir = workdir
        self.stop_timeout = stop_timeout
        self._procs: list[ManagedProcess] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        log_path = self.workdir / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        mp = ManagedProcess(name=name, popen=popen, log_path=log_path, log_file=log_file)
        self._procs.append(mp)
        return mp

    def stop(self, mp: ManagedProcess) -> None:
        if mp in self._procs:
            self._procs.remove(mp)
        # Backends may have left the group (setsid): remember every descendant before killing,
        # and (as child subreaper) catch the orphans it re-parents to us while it shuts down.
        try:
            descendants = psutil.Process(mp.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        ours_before = {p.pid for p in _own_children()}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if mp.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(mp.pid, sig)
            try:
                mp.popen.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(mp.pid, signal.SIGKILL)  # leftovers still in the group
        kill_processes(descendants, self.stop_timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            mp.popen.wait(timeout=self.stop_timeout)
        orphans = [p for p in _own_children() if p.pid not in ours_before and p.pid != mp.pid]
        kill_processes(orphans, self.stop_timeout)
        mp.log_file.close()

    def stop_all(self) -> None:
        for mp in list(reversed(self._procs)):
            self.stop(mp)


def kill_processes(procs: Sequence[psutil.Process], timeout: float) -> None:
    alive: list[psutil.Process] = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running():
                p.terminate()
                alive.append(p)
    _gone, alive = psutil.wait_procs(alive, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=timeout)


def _own_children() -> list[psutil.Process]:
    try:
        return list(psutil.Process().children(recursive=False))
    except psutil.Error:
        return []


def reap_own_children(timeout: float) -> None:
    """Last resort: anything this bench process started (e.g. stdio backends) and left running."""
    with contextlib.suppress(psutil.Error):
        kill_processes(psutil.Process().children(recursive=True), timeout)


def become_child_subreaper() -> bool:
    """Linux: orphans of our servers' backends re-parent to us, so they can be found and killed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def rss_metrics(pid: int, prefix: str) -> dict[str, MetricValue]:
    """RSS of the process itself and, separately, of all its descendants (MiB)."""
    try:
        proc = psutil.Process(pid)
        own = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.Error as exc:
        return {f"{prefix}_rss_error": str(exc)}
    child_rss = 0
    for c in children:
        with contextlib.suppress(psutil.Error):
            child_rss += c.memory_info().rss
    return {
        f"{prefix}_rss_mib": round(own / 2**20, 1),
        f"{prefix}_children_rss_mib": round(child_rss / 2**20, 1),
        f"{prefix}_children": len(children),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Context handed to scenarios
# --------------------------------------------------------------------------------------------


@dataclass
class RunningServer:
    process: ManagedProcess
    base_url: str
    ready_s: float
    config: Path | None = None  # a gateway's gateway.yaml

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"


@dataclass
class BenchContext:
    settings: BenchSettings
    procs: ProcessManager
    workdir: Path
    log: Callable[[str], None]

    def write_yaml(self, name: str, data: dict[str, Any]) -> Path:
        path = self.workdir / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    @contextlib.asynccontextmanager
    async def http_server(
        self, name: str, argv: list[str], port: int, ready_path: str = "/readyz"
    ) -> AsyncIterator[RunningServer]:
        """Start an HTTP server subprocess, wait (bounded) for ``ready_path`` -> 200, stop it after."""
        base_url = f"http://{LOOPBACK}:{port}"
        t0 = time.perf_counter()
        mp = self.procs.spawn(name, argv)
        try:
            await wait_ready(mp, base_url + ready_path, self.settings.ready_timeout)
            ready_s = time.perf_counter() - t0
            self.log(f"  {name}: ready in {ready_s:.2f}s on {base_url} (pid {mp.pid})")
            yield RunningServer(process=mp, base_url=base_url, ready_s=ready_s)
        finally:
            self.procs.stop(mp)

    @contextlib.asynccontextmanager
    async def gateway_server(self, name: str, config: dict[str, Any]) -> AsyncIterator[RunningServer]:
        """Run ``python -m gateway serve`` with ``config`` (a dict written as YAML)."""
        cfg = self.write_yaml(f"{name}.yaml", config)
        port = free_port()
        argv = [
            sys.executable, "-m", "gateway", "serve",
            "--config", str(cfg), "--host", LOOPBACK, "--port", str(port),
        ]  # fmt: skip
        async with self.http_server(name, argv, port) as srv:
            srv.config = cfg
            yield srv


async def wait_ready(mp: ManagedProcess, url: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    last = "no answer"
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            rc = mp.popen.poll()
            if rc is not None:
                raise RuntimeError(
                    f"{mp.name} exited with code {rc} before ready; log tail:\n{mp.log_tail()}"
                )
            try:
                resp = await http.get(url)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.1)
    raise TimeoutError(
        f"{mp.name} not ready at {url} after {limit_s:.0f}s ({last}); log tail:\n{mp.log_tail()}"
    )


# --------------------------------------------------------------------------------------------
# Load generation (client side, this process, asyncio)
# --------------------------------------------------------------------------------------------


async def _call(client: Client[Any], ep: Endpoint, limit_s: float) -> str | None:
    """One call, bounded here (not every client honours a timeout); an error description or None."""
    try:
        async with asyncio.timeout(limit_s):
            res = await client.call_tool(ep.tool, ep.arguments, raise_on_error=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if res.is_error:
        return f"tool error: {res.content!r:.200}"
    return None


async def _check_first_call(client: Client[Any], ep: Endpoint, limit_s: float) -> None:
    """Fail loudly if the endpoint does not answer with a real time result (misrouting, etc.)."""
    async with asyncio.timeout(limit_s):
        res = await client.call_tool(ep.tool, ep.arguments, raise_on_error=False)
    if res.is_error:
        raise RuntimeError(f"{ep.label}: {ep.tool} returned an error: {res.content!r:.300}")
    text = json.dumps(res.structured_content) if res.structured_content else repr(res.content)
    if "UTC" not in text:
        raise RuntimeError(f"{ep.label}: unexpected {ep.tool} result: {text:.300}")


async def run_sequential(ctx: BenchContext, ep: Endpoint, scenario: str) -> LoadResult:
    s = ctx.settings
    lat: list[float] = []
    errors = 0
    first_error: str | None = None
    async with ep.make_client() as client:
        await _check_first_call(client, ep, s.call_timeout)
        for _ in range(s.warmup):
            await _call(client, ep, s.call_timeout)
        cpu0 = cpu_seconds(ep.server_pid)
        t_start = time.perf_counter()
        for _ in range(s.calls):
            t0 = time.perf_counter()
            err = await _call(client, ep, s.call_timeout)
            t1 = time.perf_counter()
            if err is None:
                lat.append((t1 - t0) * 1000.0)
            else:
                errors += 1
                first_error = first_error or err
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
            for _ in range(s.calls_per_client):
                t0 = time.perf_counter()
                err = await _call(client, ep, s.call_timeout)
                t1 = time.perf_counter()
                if err is None:
                    lat.append((t1 - t0) * 1000.0)
                else:
                    errors += 1
                    first_error = first_error or err
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


def http_endpoint(
    label: str, srv: RunningServer, tool: str, arguments: dict[str, Any] = TOOL_ARGS
) -> Endpoint:
    url = srv.mcp_url
    return Endpoint(label, lambda: Client(url), tool, arguments, server_pid=srv.process.pid)


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


def time_server_gateway_config() -> dict[str, Any]:
    return {"servers": {"time": {"type": "stdio", "command": TIME_SERVER, "args": list(TIME_ARGS)}}}


async def _scenario_direct(ctx: BenchContext) -> ScenarioResult:
    res = ScenarioResult("direct", "mcp-server-time over stdio, fastmcp.Client (one backend per client)")

    ep = direct_endpoint(ctx, "direct-stdio.log")
    res.loads = await run_standard_loads(ctx, ep, res.name)
    return res


def direct_endpoint(ctx: BenchContext, log_name: str) -> Endpoint:
    def make_client() -> Client[Any]:
        transport = StdioTransport(
            TIME_SERVER, list(TIME_ARGS), keep_alive=False, log_file=ctx.workdir / log_name
        )
        return Client(transport)

    return Endpoint("direct", make_client, TOOL, TOOL_ARGS)


def gateway_stdio_endpoint(ctx: BenchContext, config: Path | None) -> Endpoint:
    """The gateway launched by its client (`serve --stdio`): the same client and transport as direct."""

    def make_client() -> Client[Any]:
        argv = ["-m", "gateway", "serve", "--stdio", "--no-reload", "--config", str(config)]
        log = ctx.workdir / "gateway-stdio.log"
        return Client(
            StdioTransport(sys.executable, argv, cwd=str(REPO_ROOT), keep_alive=False, log_file=log)
        )

    return Endpoint("gateway_stdio", make_client, f"time__{TOOL}", TOOL_ARGS)


@dataclass
class _RawResult:
    is_error: bool
    structured_content: Any
    content: Any


class SessionClient:
    """The `mcp` SDK's client in a 2025-11-25 session (most desktop and IDE clients today), with
    `fastmcp.Client`'s `call_tool` shape."""

    def __init__(self, url: str) -> None:
        from mcp import Client as SdkClient

        self._client = SdkClient(url, mode="legacy")

    async def __aenter__(self) -> SessionClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._client.__aexit__(*exc_info)

    async def call_tool(self, name: str, arguments: dict[str, Any], **_: Any) -> _RawResult:
        result = await self._client.call_tool(name, arguments)
        return _RawResult(bool(result.is_error), result.structured_content, result.content)


class RawStdio:
    """The backend with no client library at all: JSON lines on its pipes, one call at a time.

    Its round trip is the backend's own time plus two pipe hops, the floor under any client.
    """

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = iter(range(1, 1 << 62))

    async def __aenter__(self) -> RawStdio:
        self._proc = await asyncio.create_subprocess_exec(
            TIME_SERVER, *TIME_ARGS, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        from tests._support import initialize

        await self._rpc("initialize", initialize()["params"])
        await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 5)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()

    async def call_tool(self, name: str, arguments: dict[str, Any], **_: Any) -> _RawResult:
        result = await self._rpc("tools/call", {"name": name, "arguments": arguments})
        return _RawResult(bool(result.get("isError")), result.get("structuredContent"), result.get("content"))

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self._proc.stdin.drain()

    async def _rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        rid = next(self._ids)
        await self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        while True:
            reply = json.loads(await self._proc.stdout.readline())
            if reply.get("id") == rid:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])


async def run_interleaved(ctx: BenchContext, endpoints: Sequence[Endpoint]) -> list[LoadResult]:
    """Sequential calls taking turns between endpoints, so all of them see the same machine.

    Measured one after the other, a busy neighbour during one run and not the other shows up as
    latency the thing under test did not add; taking turns call by call cancels that out.
    """
    s = ctx.settings
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


def ts_client_problem() -> str | None:
    """Why the TypeScript SDK's client cannot run here, or None if it can."""
    from tests._infra import missing

    return missing("ts-client")


@dataclass(frozen=True)
class TsEndpoint:
    """An endpoint for the TypeScript SDK's client: an MCP URL, or the time server over stdio."""

    label: str
    tool: str
    era: str  # "2026-07-28": stateless requests; "2025-11-25": a session (that SDK's default)
    url: str | None = None


async def run_ts_interleaved(
    ctx: BenchContext, endpoints: Sequence[TsEndpoint]
) -> tuple[str, list[LoadResult]]:
    """`run_interleaved` with the TypeScript SDK's client in a Node process (tests/node/bench-client.mjs).

    Most desktop and IDE clients are built on that SDK; its HTTP transport costs far less than the
    Python clients' over stdio, so it shows what the gateway adds with less of the client's own cost.
    """
    from tests._infra import server_node

    s = ctx.settings
    out = ctx.workdir / "ts-client.json"
    spec = {
        "out": str(out),
        "calls": s.calls,
        "warmup": s.warmup,
        "timeoutMs": int(s.call_timeout * 1000),
        "endpoints": [
            {"label": e.label, "tool": e.tool, "arguments": TOOL_ARGS, "era": e.era}
            | ({"url": e.url} if e.url else {"command": TIME_SERVER, "args": TIME_ARGS})
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


async def _scenario_gateway(ctx: BenchContext) -> ScenarioResult:
    res = ScenarioResult("gateway", "our gateway over streamable HTTP -> mcp-server-time (stdio)")
    async with ctx.gateway_server("gateway", time_server_gateway_config()) as srv:
        res.metrics["ready_s"] = round(srv.ready_s, 3)
        ep = http_endpoint("gateway", srv, f"time__{TOOL}")
        res.loads = await run_standard_loads(ctx, ep, res.name)
        ctx.log(f"  gateway: sequential, {ctx.settings.calls} calls from a 2025-11-25 session client")
        url = srv.mcp_url
        session = Endpoint("gateway", lambda: SessionClient(url), f"time__{TOOL}", TOOL_ARGS, srv.process.pid)
        legacy = await run_sequential(ctx, session, res.name)
        legacy.mode = "seq 2025"
        res.loads.append(legacy)
        ctx.log(f"  gateway: sequential, {ctx.settings.calls} calls over stdio (serve --stdio)")
        over_stdio = await run_sequential(ctx, gateway_stdio_endpoint(ctx, srv.config), res.name)
        over_stdio.mode = "seq stdio"
        res.loads.append(over_stdio)
        res.metrics.update(rss_metrics(srv.process.pid, "gateway"))
        floor_argv = [
            sys.executable,
            str(FLOOR_SERVER),
            str(port := free_port()),
            "--",
            TIME_SERVER,
            *TIME_ARGS,
        ]
        async with ctx.http_server("floor", floor_argv, port) as floor:
            ctx.log(f"  gateway: {ctx.settings.calls} calls taking turns with direct and zero-work servers")
            endpoints = [
                Endpoint("raw", RawStdio, TOOL, TOOL_ARGS),
                direct_endpoint(ctx, "interleaved-stdio.log"),
                http_endpoint("floor", floor, TOOL),
                ep,
                gateway_stdio_endpoint(ctx, srv.config),
            ]
            loads = await run_interleaved(ctx, endpoints)
            for ld in loads:
                res.metrics[f"interleaved_{ld.scenario}_p50_ms"] = _round(ld.pct(50))
                res.metrics[f"interleaved_{ld.scenario}_errors"] = ld.errors
            await _ts_round(ctx, res, floor.mcp_url, url)
    return res


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
            TsEndpoint("gateway", f"time__{TOOL}", "2026-07-28", gateway_url),
            TsEndpoint("gateway_2025", f"time__{TOOL}", "2025-11-25", gateway_url),
        ],
    )
    res.metrics["ts_client"] = client
    for ld in loads:
        res.metrics[f"ts_{ld.scenario}_p50_ms"] = _round(ld.pct(50))
        res.metrics[f"ts_{ld.scenario}_p95_ms"] = _round(ld.pct(95))
        res.metrics[f"ts_{ld.scenario}_errors"] = ld.errors


async def _scenario_proxy(ctx: BenchContext) -> ScenarioResult:
    res = ScenarioResult("proxy", "FastMCP create_proxy over streamable HTTP -> mcp-server-time (stdio)")
    port = free_port()
    argv = [
        sys.executable, "-m", "tests.bench", "--serve-fastmcp-proxy",
        "--port", str(port), "--", TIME_SERVER, *TIME_ARGS,
    ]  # fmt: skip
    async with ctx.http_server("fastmcp-proxy", argv, port) as srv:
        res.metrics["ready_s"] = round(srv.ready_s, 3)
        ep = http_endpoint("proxy", srv, TOOL)
        res.loads = await run_standard_loads(ctx, ep, res.name)
        res.metrics.update(rss_metrics(srv.process.pid, "proxy"))
    return res


async def _scenario_fleet(ctx: BenchContext) -> ScenarioResult:
    """Start-up of 20 real stdio backends, and the gateway's own memory with 50 idle ones."""
    res = ScenarioResult("fleet", "fleet start-up and idle memory")
    twenty = {
        f"time{i}": {"command": TIME_SERVER, "args": list(TIME_ARGS), "startup_timeout": 120}
        for i in range(20)
    }
    async with ctx.gateway_server("fleet20", {"servers": twenty}) as srv:
        res.metrics["start_20_stdio_s"] = round(srv.ready_s, 2)
    tiny = str(Path(__file__).parent / "servers" / "tiny.py")
    fifty = {f"tiny{i}": {"command": sys.executable, "args": [tiny, f"tiny{i}"]} for i in range(50)}
    async with ctx.gateway_server("fleet50", {"servers": fifty}) as srv:
        res.metrics["start_50_tiny_s"] = round(srv.ready_s, 2)
        await asyncio.sleep(1.0)  # let start-up garbage settle before reading RSS
        res.metrics.update(rss_metrics(srv.process.pid, "gateway_50_idle"))
    return res


async def _chain_cost(middlewares: list[Any], calls: int) -> float:
    """Median µs per call of `middlewares` around a terminal that answers at once (no I/O)."""
    from gateway.middleware import Call, Identity, build_chain

    result = {"content": [{"type": "text", "text": "2026-11-24T07:00:00+00:00 in UTC, nothing secret here"}]}

    async def terminal(call: Any) -> dict[str, Any]:
        return {"content": [dict(c) for c in result["content"]]}

    chain = build_chain(middlewares, terminal)
    identity = Identity("bench", frozenset({"admin"}), "api_key", {"key": "bench"})
    samples: list[float] = []
    for i in range(calls + 200):
        call = Call(
            method="tools/call",
            params={"name": "time__get_current_time", "arguments": {"timezone": "UTC"}},
            identity=identity,
            name="time__get_current_time",
            server="time",
            original="get_current_time",
            request_id=i,
        )
        t0 = time.perf_counter()
        await chain(call)
        if i >= 200:
            samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return samples[len(samples) // 2]


async def _scenario_chain(ctx: BenchContext) -> ScenarioResult:
    """Per-call cost of the full default chain (telemetry, auth, ratelimit, masking, audit) vs none."""
    import hashlib

    from gateway.config.models import MiddlewareSpec
    from gateway.middleware import instantiate

    res = ScenarioResult("chain", "middleware chain overhead, in process (no I/O)")
    key = "sha256:" + hashlib.sha256(b"bench-key").hexdigest()
    specs = [
        MiddlewareSpec(use="telemetry", options={"metrics_path": None}),
        MiddlewareSpec(
            use="auth",
            options={
                "api_keys": [{"name": "bench", "key": key, "roles": ["admin"]}],
                "rules": [{"roles": ["admin"]}],
            },
        ),
        MiddlewareSpec(
            use="ratelimit", options={"per_identity": "1000000/minute", "per_tool": "1000000/minute"}
        ),
        MiddlewareSpec(use="masking"),
        MiddlewareSpec(use="audit", options={"path": str(ctx.workdir / "audit.db")}),
    ]
    middlewares = instantiate(specs)
    async with contextlib.AsyncExitStack() as stack:
        for middleware in middlewares:
            if hasattr(middleware, "lifespan"):
                await stack.enter_async_context(middleware.lifespan())
        empty = await _chain_cost([], ctx.settings.calls * 4)
        full = await _chain_cost(middlewares, ctx.settings.calls * 4)
    res.metrics.update(
        empty_chain_us=round(empty, 1), full_chain_us=round(full, 1), added_ms=round((full - empty) / 1000, 3)
    )
    from gateway.masking._bench import benchmark_masking

    masking = benchmark_masking(runs=50, size=100_000)
    res.metrics.update({f"mask_100kb_{k}": round(v, 2) for k, v in masking.items()})
    return res


async def _scenario_docker(ctx: BenchContext) -> ScenarioResult:
    """Start 5 containers concurrently; a call through a Docker backend vs the same server over stdio."""
    import shutil

    res = ScenarioResult("docker", "Docker backends (needs an engine and tests/fixtures/docker/build-images)")
    if (
        shutil.which("docker") is None
        or (await anyio.run_process(["docker", "info"], check=False)).returncode != 0
    ):
        res.error = "no Docker engine answers; run scripts/install-test-deps"
        return res
    build = Path(__file__).parent / "fixtures" / "docker" / "build-images"
    with anyio.fail_after(900):  # a cold debootstrap base takes a minute or two
        await anyio.run_process([str(build), "time"])
    from tests.backends.test_docker import bench as docker_bench

    numbers = await docker_bench(starts=5, calls=ctx.settings.calls // 2, warmup=20)
    res.metrics.update({k: round(v, 3) for k, v in numbers.items()})
    return res


SCENARIOS: list[Scenario] = [
    Scenario("direct", "direct stdio", _scenario_direct),
    Scenario("gateway", "through the gateway (HTTP)", _scenario_gateway),
    Scenario("proxy", "through FastMCP 4.1 create_proxy (HTTP)", _scenario_proxy),
    Scenario("fleet", "start 20 stdio backends; RSS with 50 idle backends", _scenario_fleet),
    Scenario("chain", "full default middleware chain vs empty; masking 100 KB", _scenario_chain),
    Scenario("docker", "5 containers' start-up; Docker backend vs stdio", _scenario_docker, default=False),
]


def serve_fastmcp_proxy(port: int, backend: list[str]) -> None:
    """Child-process entry point: FastMCP's own proxy over one kept-alive stdio backend."""
    from fastmcp.server import create_proxy
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response

    if not backend:
        raise SystemExit("--serve-fastmcp-proxy needs the backend command after --")
    proxy = create_proxy(StdioTransport(backend[0], backend[1:]), name="fastmcp-proxy")

    @proxy.custom_route("/readyz", methods=["GET"])
    async def readyz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    proxy.run(transport="http", host=LOOPBACK, port=port, show_banner=False, log_level="WARNING")


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def summarize(results: dict[str, ScenarioResult], clients: int) -> dict[str, str]:
    lines: dict[str, str] = {}

    def p50(name: str, mode: str) -> float | None:
        r = results.get(name)
        ld = r.load(mode) if r else None
        return ld.pct(50) if ld else None

    def cps(name: str, mode: str) -> float | None:
        r = results.get(name)
        ld = r.load(mode) if r else None
        return ld.calls_per_s if ld and ld.ok_calls else None

    direct = p50("direct", "sequential")
    parts = []
    for name, mode, label in (
        ("gateway", "sequential", "gateway"),
        ("gateway", "seq stdio", "gateway over stdio"),
        ("proxy", "sequential", "proxy"),
    ):
        other = p50(name, mode)
        if name in results:
            if direct is not None and other is not None:
                parts.append(f"{label} {other - direct:+.2f} ms ({other:.2f} vs {direct:.2f})")
            else:
                parts.append(f"{label} n/a")
    if parts:
        lines["added p50 latency vs direct (separate sequential runs)"] = "; ".join(parts)
    m = results["gateway"].metrics if "gateway" in results else {}
    t = {k: m.get(f"interleaved_{k}_p50_ms") for k in ("raw", "direct", "floor", "gateway")}
    if all(isinstance(v, float) for v in t.values()):
        raw, direct, floor, gw = (float(t[k] or 0) for k in ("raw", "direct", "floor", "gateway"))
        over_stdio = m.get("interleaved_gateway_stdio_p50_ms")
        stdio = f"; over stdio {float(over_stdio) - direct:+.2f} ms ({over_stdio:.2f})" if over_stdio else ""
        lines["added p50 latency vs direct, fastmcp.Client (calls taking turns, same run)"] = (
            f"gateway over HTTP {gw - direct:+.2f} ms ({gw:.2f} vs {direct:.2f}){stdio}"
        )
        lines["  of which"] = (
            f"HTTP instead of stdio {floor - (direct - raw):+.2f} ms (a zero-work HTTP MCP server answers "
            f"in {floor:.2f} ms; the stdio client's own share of a direct call is {direct - raw:.2f} ms), "
            f"the gateway's own work {gw - floor - raw:+.2f} ms (over the bare backend round trip, "
            f"{raw:.2f} ms)"
        )

    ts = {k: m.get(f"ts_{k}_p50_ms") for k in ("direct", "floor", "gateway", "gateway_2025")}
    if all(isinstance(v, float) for v in ts.values()):
        direct, floor, gw, gw25 = (float(ts[k] or 0) for k in ("direct", "floor", "gateway", "gateway_2025"))
        lines["added p50 latency vs direct, TypeScript SDK client (calls taking turns)"] = (
            f"gateway {gw - direct:+.2f} ms ({gw:.2f} vs {direct:.2f}), in a 2025-11-25 session "
            f"{gw25 - direct:+.2f} ms ({gw25:.2f}); a zero-work HTTP MCP server answers in {floor:.2f} ms"
        )

    gw, px = cps("gateway", "concurrent"), cps("proxy", "concurrent")
    if "gateway" in results and "proxy" in results:
        ratio = f"{gw / px:.2f}x ({gw:.0f} vs {px:.0f} calls/s)" if gw and px else "n/a"
        lines[f"gateway/FastMCP-proxy throughput ratio at {clients} clients"] = ratio
    return lines


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: dict[str, ScenarioResult], summary: dict[str, str], header: dict[str, Any]) -> None:
    print()
    print("  ".join(f"{k}={v}" for k, v in header.items()))
    cols = f"{'scenario':<10} {'mode':<11} {'clients':>7} {'calls':>6} {'errors':>6} "
    cols += f"{'calls/s':>9} {'p50 ms':>8} {'p95 ms':>8}  cpu ms/call client+server+backends"
    print(cols)
    print("-" * len(cols))
    for r in results.values():
        for ld in r.loads:
            print(
                f"{r.name:<10} {ld.mode:<11} {ld.clients:>7} {ld.calls:>6} {ld.errors:>6} "
                f"{ld.calls_per_s:>9.1f} {_fmt(ld.pct(50), '>8.2f')} {_fmt(ld.pct(95), '>8.2f')}  "
                + "+".join(f"{v:.2f}" for v in ld.cpu_ms_per_call.values())
            )
        if r.error:
            print(f"{r.name:<10} FAILED: {r.error.splitlines()[0] if r.error else ''}")
    print()
    for r in results.values():
        for ld in r.loads:
            if ld.first_error:
                print(f"{r.name} {ld.mode}: first error: {ld.first_error}")
        if r.metrics:
            print(f"{r.name}: " + ", ".join(f"{k}={v}" for k, v in r.metrics.items()))
        if r.error and "\n" in r.error:
            print(f"{r.name} error detail:\n{r.error}")
    for k, v in summary.items():
        print(f"{k}: {v}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = BenchSettings()
    names = [s.name for s in SCENARIOS]
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=d.calls, help="sequential calls (default %(default)s)")
    p.add_argument(
        "--warmup", type=int, default=d.warmup, help="sequential warm-up calls (default %(default)s)"
    )
    p.add_argument("--clients", type=int, default=d.clients, help="concurrent clients, 0 to skip")
    p.add_argument(
        "--calls-per-client", type=int, default=d.calls_per_client, help="calls per concurrent client"
    )
    p.add_argument("--client-warmup", type=int, default=d.client_warmup, help="untimed calls per client")
    p.add_argument("--ready-timeout", type=float, default=d.ready_timeout, help="seconds to wait for /readyz")
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated scenarios from {','.join(names)} (default: all default ones)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with server logs")
    # internal: child-process mode for the FastMCP proxy baseline
    p.add_argument("--serve-fastmcp-proxy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("backend", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.backend and not args.serve_fastmcp_proxy:
        p.error(f"unexpected arguments: {args.backend}")
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            p.error(f"unknown scenario(s) {unknown}; choose from {names}")
        args.selected = [s for s in SCENARIOS if s.name in wanted]
    else:
        args.selected = [s for s in SCENARIOS if s.default]
    return args


async def run_bench(ctx: BenchContext, selected: Sequence[Scenario]) -> dict[str, ScenarioResult]:
    results: dict[str, ScenarioResult] = {}
    for sc in selected:
        ctx.log(f"[{sc.name}] {sc.title}")
        try:
            results[sc.name] = await sc.run(ctx)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ExceptionGroup):
                detail += "".join(f"\n  {type(e).__name__}: {e}" for e in exc.exceptions)
            ctx.log(f"  {sc.name} FAILED: {detail}")
            results[sc.name] = ScenarioResult(sc.name, sc.title, error=detail)
    return results


def _loadavg() -> float | None:
    """Other work on the machine skews every number; the 1-minute load average shows it."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # only outside the event loop; inside it, SIGTERM cancels the main task


async def _run_cancellable(ctx: BenchContext, selected: Sequence[Scenario]) -> dict[str, ScenarioResult]:
    """Like Ctrl-C under asyncio.run, SIGTERM cancels the main task so every context unwinds."""
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_bench(ctx, selected)


@contextlib.contextmanager
def bench_workdir(keep: bool) -> Iterator[Path]:
    if keep:
        yield Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    else:
        with tempfile.TemporaryDirectory(prefix="mcp-bench-") as d:
            yield Path(d)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fastmcp_proxy:
        serve_fastmcp_proxy(args.port, list(args.backend))
        return 0
    for flag in ("calls", "warmup", "clients", "calls_per_client", "client_warmup"):
        if getattr(args, flag) < 0:
            raise SystemExit(f"--{flag.replace('_', '-')} must be >= 0")
    if args.calls < 1:
        raise SystemExit("--calls must be >= 1")
    if not Path(TIME_SERVER).exists():
        raise SystemExit(f"{TIME_SERVER} not found: pip install mcp-server-time into this venv")

    settings = BenchSettings(
        calls=args.calls,
        warmup=args.warmup,
        clients=args.clients,
        calls_per_client=args.calls_per_client,
        client_warmup=args.client_warmup,
        ready_timeout=args.ready_timeout,
    )
    quiet = bool(args.json)

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    # Ctrl-C must work even if SIGINT was inherited as ignored (e.g. started with `&` from a script).
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    become_child_subreaper()
    with bench_workdir(args.keep_logs) as workdir:
        procs = ProcessManager(workdir, settings.stop_timeout)
        ctx = BenchContext(settings, procs, workdir, log)
        load_before = _loadavg()
        try:
            results = asyncio.run(_run_cancellable(ctx, args.selected))
        except (KeyboardInterrupt, asyncio.CancelledError):
            log("interrupted; stopping servers")
            return 130
        finally:
            # Cleanup is bounded (stop_timeout per wait); do not let a second signal cut it short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            procs.stop_all()
            reap_own_children(settings.stop_timeout)
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            if args.keep_logs:
                log(f"logs kept in {workdir}")

    header: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "fastmcp": _dist_version("fastmcp"),
        "mcp": _dist_version("mcp"),
        "loadavg_1m_at_start": load_before,
        "calls": settings.calls,
        "warmup": settings.warmup,
        "clients": settings.clients,
        "calls_per_client": settings.calls_per_client,
    }
    summary = summarize(results, settings.clients)
    if args.json:
        out = {
            "settings": asdict(settings),
            "environment": header,
            "scenarios": {
                name: {
                    "title": r.title,
                    "error": r.error,
                    "loads": [ld.summary() for ld in r.loads],
                    "metrics": r.metrics,
                }
                for name, r in results.items()
            },
            "summary": summary,
        }
        print(json.dumps(out, indent=2))
    else:
        print_table(results, summary, header)
    return 1 if any(r.error for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
