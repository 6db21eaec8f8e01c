"""The chain: order, deny, rewrite, fail closed, configuration errors."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR

from gateway.config import parse_config
from gateway.errors import BACKEND_UNAVAILABLE, DENIED, ChainFailure, ConfigError, GatewayError
from gateway.middleware import Call, Middleware, Result, build_chain, instantiate
from tests._support import config, misbehave, serve, text_of
from tests.middleware import _examples

pytestmark = pytest.mark.anyio
EX = "tests.middleware._examples"


async def test_order_deny_and_rewrite_through_a_real_client() -> None:
    _examples.ORDER.clear()
    cfg = config(
        {"mb": misbehave()},
        middleware=[
            {"use": f"{EX}:Record", "options": {"label": "outer"}},
            {"use": f"{EX}:Record", "options": {"label": "inner"}},
            {"use": f"{EX}:DenyTool", "options": {"tool": "mb__fail"}},
            {"use": f"{EX}:Shout"},
        ],
    )
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        result = await client.call_tool("mb__echo", {"text": "hi"})
        assert text_of(result) == "misbehave: HI"
        assert result.meta == {"shouted": True}
        with pytest.raises(MCPError) as err:
            await client.call_tool("mb__fail", {})
        assert err.value.code == DENIED and "not allowed" in err.value.message
    calls = [entry for entry in _examples.ORDER if entry.endswith("tools/call")]
    assert calls[:4] == ["outer>tools/call", "inner>tools/call", "inner<tools/call", "outer<tools/call"]


async def test_a_raising_middleware_fails_closed() -> None:
    cfg = config({"mb": misbehave()}, middleware=[{"use": f"{EX}:Broken"}])
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        with pytest.raises(MCPError) as err:
            await client.call_tool("mb__echo", {"text": "secret result"})
        assert err.value.code == -32603
        assert "secret result" not in err.value.message and "Broken" in err.value.message
        assert (await client.list_tools()).tools  # lists still work


def test_unknown_middleware_and_bad_options_are_config_errors() -> None:
    cfg = parse_config(
        "middleware:\n  - use: nope\n  - use: nosuchmodule:X\n  - use: tests.middleware._examples:DenyTool\n"
        "    options: {wrong: 1}\n"
    )
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.middleware)
    problems = err.value.problems
    assert len(problems) == 3
    assert "middleware[0] (nope)" in problems[0] and "built-in" in problems[0]
    assert "nosuchmodule" in problems[1]
    assert "middleware[2]" in problems[2] and "wrong" in problems[2]


class PipeGone(Exception):
    """Stands in for whatever a terminal may raise that no middleware knows."""


async def test_only_a_middlewares_own_failure_is_blamed_on_it() -> None:
    async def terminal(call: Call) -> Result:
        raise PipeGone("the backend's pipe")

    # Broken raises only after call_next returns; Shout and Record only pass exceptions on.
    middlewares: list[Middleware] = [_examples.Record("outer"), _examples.Broken(), _examples.Shout()]
    for end in (terminal, lambda call: terminal(call)):  # an async def, and a plain callable
        chain = build_chain(middlewares, end)
        with pytest.raises(GatewayError) as failed:
            await chain(Call("tools/call", {"name": "x", "arguments": {}}))
        assert not isinstance(failed.value, ChainFailure), failed.value
        assert failed.value.code == INTERNAL_ERROR
        assert failed.value.message == "Internal gateway error"
        assert isinstance(failed.value.__cause__, PipeGone)

    async def answering(call: Call) -> Result:
        return {"content": []}

    with pytest.raises(ChainFailure, match="middleware Broken failed"):
        await build_chain(middlewares, answering)(Call("tools/call", {"name": "x", "arguments": {}}))


# A stdio backend that, asked to `drop_stdin`, closes its stdin and then answers: the gateway's next
# write to it finds the pipe dead while the process (and its stdout) live on. misbehave cannot do
# this: its SDK reads stdin in a thread, which holds the pipe open.
DROP_STDIN_SERVER = r"""
import json, os, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    method = msg["method"]
    if method == "initialize":
        result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "drop", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("drop_stdin", "echo")]}
    elif method == "tools/call" and msg["params"]["name"] == "drop_stdin":
        os.close(0)
        time.sleep(0.5)  # the gateway sees its stdin pipe close before it sees this answer
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": []}}), flush=True)
        time.sleep(3600)
    else:
        result = {"content": [{"type": "text", "text": "echo"}]} if method == "tools/call" else {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"""


async def test_a_dead_backend_pipe_is_not_blamed_on_the_middlewares_around_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    drop = {"type": "stdio", "command": sys.executable, "args": ["-c", DROP_STDIN_SERVER], "timeout": 20}
    cfg = config(
        {"drop": drop},
        middleware=[{"use": "telemetry"}, {"use": "audit", "options": {"path": str(tmp_path / "a.db")}}],
    )
    caplog.set_level(logging.INFO, logger="gateway")
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        with anyio.fail_after(30):
            assert (await client.call_tool("drop__drop_stdin", {})).is_error is not True
            with pytest.raises(MCPError) as err:
                await client.call_tool("drop__echo", {})
        assert gw.fleet.backends["drop"].state.value != "failed"
    assert err.value.code == BACKEND_UNAVAILABLE, err.value
    assert "drop" in err.value.message
    assert "middleware" not in err.value.message.lower()
    assert not [r for r in caplog.records if "middleware" in r.getMessage() and "failed" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info is not None], "a traceback was logged"
