"""Virtual endpoints (`endpoints:`): each serves its own curated part of the fleet, on its own path,
under its own name and auth rules, with every relay feature, in both revisions.

Two of our misbehave servers (`a`, `b`) behind the gateway; `/mcp/research` takes some of `a`'s
tools, its prompt and resources, and admits the `research` role (alice); `/mcp/ops` takes `b`'s
tools but `crash` and admits the identity `bob` only. Clients are the `mcp` SDK's (both
revisions) and fastmcp's, over real HTTP with API keys.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests._support import MISBEHAVE, config, serve, text_of

pytestmark = pytest.mark.anyio

MODES = ["legacy", "2026-07-28"]
WAIT = 60.0  # bound on every wait: generous for a loaded 2-core machine
ALICE, BOB, CAROL = (secrets.token_hex(16) for _ in range(3))


def _key(name: str, key: str, roles: list[str]) -> dict[str, Any]:
    return {"name": name, "key": "sha256:" + hashlib.sha256(key.encode()).hexdigest(), "roles": roles}


def server(name: str, *flags: str) -> dict[str, Any]:
    return {
        "type": "stdio",
        "command": sys.executable,
        "args": [MISBEHAVE, "--name", name, *flags],
        "timeout": WAIT,
    }


RESEARCH = {
    "path": "/mcp/research",
    "name": "research-desk",
    "instructions": "Research tools only.",
    "servers": {"a": {"tools": ["echo", "sleep", "ask", "change_tools"], "prompts": ["greet"]}},
    "auth": {"roles": ["research"]},
}
OPS = {
    "path": "/mcp/ops",
    "name": "ops-desk",
    "servers": {"b": {"tools": {"deny": ["crash", "quit*"]}, "prompts": [], "resources": {"deny": ["*"]}}},
    "auth": {"identities": ["bob"]},
}


def gateway_config(*endpoints: dict[str, Any]) -> Any:
    keys = [_key("alice", ALICE, ["research"]), _key("bob", BOB, []), _key("carol", CAROL, ["admin"])]
    return config(
        {"a": server("a", "--ask"), "b": server("b")},
        endpoints=list(endpoints),
        middleware=[{"use": "auth", "options": {"api_keys": keys}}],
    )


async def sampling(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="4"), model="test-model"
    )


@asynccontextmanager
async def sdk(url: str, key: str, mode: str, **options: Any) -> AsyncIterator[SdkClient]:
    async with (
        httpx.AsyncClient(headers={"x-api-key": key}, timeout=WAIT) as http,
        SdkClient(streamable_http_client(url, http_client=http), mode=mode, **options) as client,  # type: ignore[arg-type]
    ):
        yield client


async def tool_names(client: SdkClient) -> set[str]:
    with anyio.fail_after(WAIT):
        return {t.name for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("mode", MODES)
async def test_each_endpoint_sees_only_its_own_tools(mode: str) -> None:
    async with serve(gateway_config(RESEARCH, OPS)) as gw:
        async with sdk(gw.base + "/mcp/research", ALICE, mode) as client:
            assert await tool_names(client) == {"a__echo", "a__sleep", "a__ask", "a__change_tools"}
            with anyio.fail_after(WAIT):
                result = await client.call_tool("a__echo", {"text": "hi"})
            assert text_of(result) == "a: hi"
            with anyio.fail_after(WAIT), pytest.raises(MCPError, match="Unknown tool: a__add"):
                await client.call_tool("a__add", {"a": 1, "b": 2})
            with anyio.fail_after(WAIT), pytest.raises(MCPError, match="Unknown tool: b__echo"):
                await client.call_tool("b__echo", {"text": "hi"})
        async with sdk(gw.base + "/mcp/ops", BOB, mode) as client:
            names = await tool_names(client)
            assert names and all(n.startswith("b__") for n in names)
            assert "b__crash" not in names and "b__quit_keeping_stdout" not in names and "b__echo" in names
            with anyio.fail_after(WAIT), pytest.raises(MCPError, match="Unknown tool: b__crash"):
                await client.call_tool("b__crash", {})
        # The default endpoint is still the whole fleet.
        async with sdk(gw.url, CAROL, mode) as client:
            names = await tool_names(client)
            assert {"a__add", "b__crash", "a__echo", "b__echo"} <= names
