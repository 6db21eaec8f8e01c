"""Test helpers: run a real gateway in-process on a loopback port, and build configs."""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import httpx
import mcp_types
import uvicorn
from starlette.applications import Starlette

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.fleet import Fleet
from gateway.front import _uvicorn

if TYPE_CHECKING:
    import fastmcp

HERE = Path(__file__).parent
MISBEHAVE = str(HERE / "servers" / "misbehave.py")
TINY = str(HERE / "servers" / "tiny.py")
FLOOR = str(HERE / "servers" / "floor.py")
MODERN_SERVER = str(HERE / "servers" / "modern.py")
MANY_TOOLS = str(HERE / "servers" / "many_tools.py")
VENV_BIN = Path(sys.executable).parent
TIME_SERVER = str(VENV_BIN / "mcp-server-time")
TIME_ARGS = ("--local-timezone", "UTC")
# Images of tests/fixtures/docker/build-images (the docker tests and the benchmark build them).
BUILD_IMAGES = HERE / "fixtures" / "docker" / "build-images"
TIME_IMAGE = "local/mcp-time:test"

# Bounds for waits in tests: generous for a loaded 2-core CI machine, but never unbounded.
START_TIMEOUT = 60.0


def misbehave(*flags: str, **extra: Any) -> dict[str, Any]:
    """A stdio server spec for our own misbehaving test server."""
    return {"type": "stdio", "command": sys.executable, "args": [MISBEHAVE, *flags], **extra}


def modern(**extra: Any) -> dict[str, Any]:
    """A stdio server spec for our own 2026-07-28-only server."""
    return {"type": "stdio", "command": sys.executable, "args": [MODERN_SERVER], **extra}


@asynccontextmanager
async def modern_http() -> AsyncIterator[str]:
    """Our 2026-07-28-only server over streamable HTTP in its own process; yields its MCP URL once
    it accepts connections (bounded), and stops it on exit."""
    port = free_port()
    async with await anyio.open_process(
        [sys.executable, MODERN_SERVER, "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
                with anyio.fail_after(START_TIMEOUT):
                    while True:
                        try:
                            await http.get(f"http://127.0.0.1:{port}/")
                            break
                        except httpx.TransportError:
                            assert proc.returncode is None, f"modern.py exited with {proc.returncode}"
                            await anyio.sleep(0.1)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.terminate()
            with anyio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()


def time_server(**extra: Any) -> dict[str, Any]:
    return {"command": TIME_SERVER, "args": list(TIME_ARGS), **extra}


def docker_time(**extra: Any) -> dict[str, Any]:
    """mcp-server-time as a Docker backend (needs the images of `BUILD_IMAGES`)."""
    return {"type": "docker", "image": TIME_IMAGE, "pull": "never", **extra}


def gateway_command(config_path: Path, port: int, *options: str) -> list[str]:
    """argv of `python -m gateway serve` on `config_path`, listening on 127.0.0.1:`port`."""
    return [
        sys.executable, "-m", "gateway", "serve", *options,
        "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


class _HasContent(Protocol):
    @property
    def content(self) -> Sequence[mcp_types.ContentBlock]: ...


def text_of(result: _HasContent) -> str:
    """The text of a tool result's first content block (the SDK's result or fastmcp's); fails the
    test if that block is not text."""
    block = result.content[0]
    assert isinstance(block, mcp_types.TextContent), block
    return block.text


def request_meta(entries: dict[str, Any]) -> mcp_types.RequestParamsMeta:
    """`_meta` for a client's call. The SDK types it as an open TypedDict (PEP 728 `extra_items`),
    which mypy does not read yet: it would refuse every key the TypedDict does not list."""
    return cast(mcp_types.RequestParamsMeta, entries)


def config(servers: dict[str, Any], **rest: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({"servers": servers, **rest})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_http_ready(
    url: str, *, timeout: float, exited: Callable[[], str | None] = lambda: None
) -> None:
    """Poll `url` until it answers 200 (a server's /readyz); fail after `timeout` seconds, or at
    once when `exited()` says why the server is gone (it returns None while the server runs)."""
    last = "no answer"
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
        try:
            with anyio.fail_after(timeout):
                while True:
                    gone = exited()
                    if gone is not None:
                        raise RuntimeError(gone)
                    try:
                        resp = await http.get(url)
                        if resp.status_code == 200:
                            return
                        last = f"HTTP {resp.status_code}"
                    except httpx.HTTPError as exc:
                        last = type(exc).__name__
                    await anyio.sleep(0.1)
        except TimeoutError:
            raise TimeoutError(f"not ready at {url} after {timeout:.0f}s ({last})") from None


async def wait_until(predicate: Callable[[], object], *, timeout: float, interval: float = 0.01) -> None:
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polled state, no event exists
            await anyio.sleep(interval)


@dataclass
class Running:
    url: str  # the MCP endpoint
    base: str
    fleet: Fleet
    app: Starlette


@asynccontextmanager
async def serve(
    cfg: GatewayConfig,
    *,
    wait: bool = True,
    config_path: Path | None = None,
    watch: bool = False,
    sdk_reference: bool = False,
) -> AsyncIterator[Running]:
    """The real gateway app under uvicorn on 127.0.0.1, in this event loop.

    `sdk_reference`: the exchange hands every request to the SDK's transport, which dispatches it
    to the same relay (`gateway.front.sdk`, as over stdio). Not a way the gateway runs: the
    reference the exchange must answer exactly like (tests compare the two, byte for byte)."""
    fleet = Fleet(cfg)
    app = build_app(cfg, fleet, config_path=config_path, watch=watch)
    if sdk_reference:
        app.state.exchange._admit = lambda *args: None
    port = free_port()
    settings = _uvicorn.settings(app, cfg.listen, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(settings)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(START_TIMEOUT):
            while not server.started:  # noqa: ASYNC110 - uvicorn's `started` is a flag; no event marks it
                await anyio.sleep(0.01)
            if wait:
                await fleet.wait_started()
        base = f"http://127.0.0.1:{port}"
        try:
            yield Running(url=f"{base}/mcp", base=base, fleet=fleet, app=app)
        finally:
            server.should_exit = True


@asynccontextmanager
async def fastmcp_client(transport: Any, **options: Any) -> AsyncIterator[fastmcp.Client[Any]]:
    """A connected fastmcp client. Its `__aenter__` is unannotated: `async with Client(...) as c`
    would make `c` an `Any`, and nothing done with it would be type-checked."""
    import fastmcp

    client: fastmcp.Client[Any] = fastmcp.Client(transport, **options)
    async with client:
        yield client


@asynccontextmanager
async def serve_asgi(app: Any, **uvicorn_kw: Any) -> AsyncIterator[str]:
    """Any ASGI app under uvicorn on 127.0.0.1; yields its base URL (http://127.0.0.1:PORT).

    The socket is bound and listening before uvicorn runs, so early connections wait in the
    backlog: there is nothing to poll for. `uvicorn_kw` goes to `uvicorn.Config`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", **uvicorn_kw}))
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(server.serve, sockets=[sock]))
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True


# -- raw 2026-07-28 requests over HTTP -----------------------------------------------------------

MODERN = "2026-07-28"


def envelope(client: str = "raw-test", capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `_meta` envelope a 2026-07-28 request carries (no capabilities unless given)."""
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": client, "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": capabilities or {},
    }


# -- raw 2025-11-25 sessions over HTTP ------------------------------------------------------------

LEGACY = "2025-11-25"


def initialize(rid: int = 1, client: str = "raw") -> dict[str, Any]:
    """A 2025-11-25 `initialize` request declaring no capabilities."""
    info = {"name": client, "version": "0"}
    return rpc("initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": info}, rid)


def sse_messages(resp: httpx.Response) -> list[dict[str, Any]]:
    # SSE lines end at CR, LF or CRLF only: `str.splitlines` would also split a message's JSON at
    # the U+2028, U+0085 or U+001C it may carry unescaped.
    lines = re.split(r"\r\n|\r|\n", resp.text)
    # A resumable stream's priming event has an id and empty data: it carries no message.
    return [
        json.loads(line.removeprefix("data: "))
        for line in lines
        if line.startswith("data: ") and line != "data: "
    ]


def messages(resp: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an answer, whether it came as JSON or as an event stream."""
    if resp.headers.get("content-type", "").startswith("application/json"):
        return [resp.json()]
    return sse_messages(resp)


@asynccontextmanager
async def session(
    http: httpx.AsyncClient, url: str, extra: Mapping[str, str] = {}
) -> AsyncIterator[dict[str, str]]:
    """Open a 2025-11-25 session the way a client does (sending `extra` headers, such as
    credentials, on every request); yield the headers its requests carry. Closed on exit."""
    hello = initialize(rid=0)
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream", **extra}
    resp = await http.post(url, headers=base, json=hello)
    assert messages(resp)[0]["result"]["protocolVersion"] == LEGACY
    headers = {**base, "mcp-session-id": resp.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, headers=headers, json=note)).status_code == 202
    yield headers
    await http.delete(url, headers=headers)


def rpc(method: str, params: dict[str, Any] | None = None, rid: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": method,
        **({"params": params} if params is not None else {}),
    }


def process_tree(root: int | None = None) -> list[int]:
    """PIDs of all live descendants of `root` (default: this process), zombies included."""
    import psutil

    proc = psutil.Process(root or os.getpid())
    return [p.pid for p in proc.children(recursive=True)]
