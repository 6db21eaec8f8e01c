"""The chain: order, deny, rewrite, fail closed, configuration errors."""

from __future__ import annotations

import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.config import parse_config
from gateway.errors import DENIED, ConfigError
from gateway.middleware import instantiate
from tests._support import config, misbehave, serve
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
        assert result.content[0].text == "misbehave: HI"  # type: ignore[union-attr]
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
