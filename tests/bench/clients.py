"""The clients a load is run from, and the endpoints they reach: what to open, which tool to call.

Most endpoints call ``mcp-server-time``'s ``get_current_time`` ({"timezone": "UTC"}), directly or
through the thing under test; the input-round ones call tools of tests/conformance/fixture_server.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcp import StdioServerParameters

from tests._infra import REPO_ROOT, missing
from tests._support import TIME_ARGS, TIME_SERVER, initialize
from tests.bench.processes import BenchContext, RunningServer

TS_CLIENT = Path(__file__).resolve().parents[1] / "node" / "bench-client.mjs"
TOOL = "get_current_time"
TOOL_ARGS: dict[str, Any] = {"timezone": "UTC"}
GATEWAY_TOOL = f"time__{TOOL}"  # the time server's tool as the gateway names it
# A backend that speaks 2026-07-28 (and 2025-11-25), with a tool that asks the user first.
FIXTURE = REPO_ROOT / "tests" / "conformance" / "fixture_server.py"
PLAIN_TOOL = "test_simple_text"
ROUND_TOOL = "test_input_required_result_elicitation"
ELICITED = "bench-user"  # what the client answers at once, found again in the round tool's result


@dataclass(frozen=True)
class Endpoint:
    """How to open one client session to the thing under test, and which tool to call."""

    label: str
    make_client: Callable[[], Any]  # an async context manager with fastmcp.Client's call_tool
    tool: str
    arguments: dict[str, Any]
    server_pid: int | None = None  # the gateway/proxy process; None: backends are our children
    expect: str = "UTC"  # in the first call's result, or the endpoint is misrouted


def http_endpoint(
    label: str, srv: RunningServer, tool: str, arguments: dict[str, Any] = TOOL_ARGS
) -> Endpoint:
    url = srv.mcp_url
    return Endpoint(label, lambda: Client(url), tool, arguments, server_pid=srv.process.pid)


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

    return Endpoint("gateway_stdio", make_client, GATEWAY_TOOL, TOOL_ARGS)


def session_endpoint(srv: RunningServer) -> Endpoint:
    url = srv.mcp_url
    return Endpoint("gateway", lambda: SdkClient(url), GATEWAY_TOOL, TOOL_ARGS, srv.process.pid)


def fixture_endpoint(label: str, tool: str, *, mode: str, srv: RunningServer | None = None) -> Endpoint:
    """The `mcp` SDK's client calling `tool` of the fixture server: launched over stdio (no `srv`),
    or behind the gateway `srv` (whose name for it is `fixture__<tool>`), in revision `mode`."""
    expect = ELICITED if tool == ROUND_TOOL else "simple text"
    if srv is None:
        params = StdioServerParameters(command=sys.executable, args=[str(FIXTURE)])
        return Endpoint(label, lambda: SdkClient(params, mode=mode, elicit=True), tool, {}, expect=expect)
    url = srv.mcp_url
    pid = srv.process.pid
    return Endpoint(
        label, lambda: SdkClient(url, mode=mode, elicit=True), f"fixture__{tool}", {}, pid, expect
    )


@dataclass
class _RawResult:
    is_error: bool
    structured_content: Any
    content: Any


async def _answer_at_once(context: Any, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
    return mcp_types.ElicitResult(action="accept", content={"name": ELICITED})


class SdkClient:
    """The `mcp` SDK's client with `fastmcp.Client`'s `call_tool` shape: by default in a 2025-11-25
    session (most desktop and IDE clients today), or at `mode` "2026-07-28". With `elicit`, it
    declares elicitation and answers at once, as a request mid-call (2025-11-25) or as an input
    round (2026-07-28)."""

    def __init__(
        self, server: str | StdioServerParameters, *, mode: str = "legacy", elicit: bool = False
    ) -> None:
        from mcp import Client as McpClient

        callback = _answer_at_once if elicit else None
        self._client = McpClient(server, mode=mode, elicitation_callback=callback)

    async def __aenter__(self) -> SdkClient:
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


def ts_client_problem() -> str | None:
    """Why the TypeScript SDK's client cannot run here, or None if it can."""
    return missing("ts-client")


@dataclass(frozen=True)
class TsEndpoint:
    """An endpoint for the TypeScript SDK's client: an MCP URL, or the time server over stdio."""

    label: str
    tool: str
    era: str  # "2026-07-28": stateless requests; "2025-11-25": a session (that SDK's default)
    url: str | None = None
