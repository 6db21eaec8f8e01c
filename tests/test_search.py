"""Tool search mode (`gateway.search`): a 1,000-tool fleet shown as meta-tools, searched, described
and called through them, with the chain (auth, rate limits, audit) seeing the real tool."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from gateway.config.models import ToolSearchConfig
from gateway.errors import RATE_LIMITED, BadArguments, UnknownName
from gateway.middleware.audit import AuditLog
from gateway.search import CALL, DESCRIBE, SEARCH, ToolSearch, words
from tests._support import MANY_TOOLS, config, fastmcp_client, serve, text_of, time_server
from tests.servers.many_tools import generate

pytestmark = pytest.mark.anyio

COUNT = 1000
META = [SEARCH, DESCRIBE, CALL]
WAIT = 60.0
READER_KEY = "rk_search_5d0c9a7e31b24f6c8e0a1b2c3d4e5f60"
ADMIN_KEY = "ak_search_8e1f2a3b4c5d6e7f8091a2b3c4d5e6f7"


def hashed(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def many() -> dict[str, Any]:
    return {"command": sys.executable, "args": [MANY_TOOLS, str(COUNT)]}


def names(result: Any) -> list[str]:
    """The names a search result cites (the SDK's result or fastmcp's)."""
    structured = result.structured_content
    assert isinstance(structured, dict), result
    return [hit["name"] for hit in structured["tools"]]


@asynccontextmanager
async def keyed(url: str, key: str, mode: str = "legacy") -> AsyncIterator[SdkClient]:
    """An SDK client whose every HTTP request carries an API key."""
    async with (
        httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=WAIT) as http,
        SdkClient(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


# -- the index, over any list of tools -----------------------------------------------------------


def test_names_are_split_into_words() -> None:
    assert words("git__git_diff_unstaged") == "git git diff unstaged"
    assert words("getHTTPStatus.v2-beta") == "get HTTP Status v2 beta"


def test_a_search_ranks_by_words_and_the_index_is_built_once_per_list() -> None:
    tools = generate(COUNT)
    search = ToolSearch(
        ToolSearchConfig(after=50, pinned=["pagerduty_acknowledge_incident", "pagerduty_resolve_*"], limit=5)
    )
    view = search.view(tools)
    assert view.condensed and [t["name"] for t in view.listed] == [
        *META, "pagerduty_acknowledge_incident", "pagerduty_resolve_incident",
    ]  # fmt: skip
    hits = search.hits(tools, {"query": "who is on call right now"})
    assert hits[0].name == "pagerduty_who_is_on_call" and len(hits) == 5
    assert hits[0].score > hits[1].score > 0
    assert hits[0].description == "Pagerduty: Find out who is on call right now for a schedule."
    assert search.hits(tools, {"query": "restart my kubernetes deployment", "limit": 1})[0].name == (
        "kubernetes_restart_deployment"
    )
    assert search.hits(tools, {"query": "zzz qqq"}) == []  # no word in common: nothing, not noise
    # Built once: the same list, or a copy of it (a middleware filtering nothing out), hits.
    index = view.index
    assert search.view(tools).index is index and search.view(list(tools)).index is index
    # Another list (another identity's, a new catalogue) is a view of its own.
    few = tools[:10]
    assert not search.view(few).condensed and search.view(few).listed is few
    found = search.hits(few, {"query": "stripe customer charge", "limit": 50})
    assert found and {h.name for h in found} <= {t["name"] for t in few}


def test_describe_and_bad_arguments() -> None:
    tools = generate(COUNT)
    search = ToolSearch(ToolSearchConfig(after=0))
    described = search.describe(tools, {"name": "stripe_refund_charge"})
    wanted = next(t for t in tools if t["name"] == "stripe_refund_charge")
    assert described["structuredContent"] == wanted and json.loads(described["content"][0]["text"]) == wanted
    with pytest.raises(UnknownName, match="Unknown tool: nope"):
        search.describe(tools, {"name": "nope"})
    for arguments in ({}, {"query": ""}, {"query": "x", "limit": 0}, {"query": "x", "extra": 1}, "text"):
        with pytest.raises(BadArguments, match=f"Invalid arguments for {SEARCH}"):
            search.hits(tools, arguments)
    with pytest.raises(BadArguments, match=f"Invalid arguments for {CALL}: name"):
        search.unwrapped({"name": CALL, "arguments": {"arguments": {}}})
    call = {"name": CALL, "arguments": {"name": "t", "arguments": {"a": 1}}, "_meta": {"progressToken": 7}}
    assert search.unwrapped(call) == {"name": "t", "arguments": {"a": 1}, "_meta": {"progressToken": 7}}


def test_a_backend_tool_with_a_meta_tool_s_name_is_shadowed_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    own = {"name": CALL, "description": "a backend's own", "inputSchema": {"type": "object"}}
    tools = [*generate(60), own]
    search = ToolSearch(ToolSearchConfig(after=50))
    search.view(tools)
    search.view(list(reversed(tools)))  # another view: said once, not per view
    assert [r.getMessage() for r in caplog.records].count(
        f"tool search: a backend's tool {CALL!r} is shadowed by the gateway's meta-tool of that name; "
        f"call it through {CALL} (or give its server a `prefix:`)"
    ) == 1
    # Still described and reachable through the meta-tool; listed only as the meta-tool.
    assert search.describe(tools, {"name": CALL})["structuredContent"] == own
    assert [t["name"] for t in search.view(tools).listed] == META
    assert search.unwrapped({"name": CALL, "arguments": {"name": CALL}})["name"] == CALL


def test_a_gateway_without_search_mode_does_not_load_its_libraries() -> None:
    """numpy and bm25s cost ~13 MB and 0.4 s of start-up: loaded with the first index only."""
    code = "import sys, gateway.app; print(sorted({'numpy', 'bm25s', 'Stemmer'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


# -- a 1,000-tool fleet through the gateway -------------------------------------------------------


async def test_meta_tools_list_search_describe_and_call_audited_and_limited(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    cfg = config(
        {"many": many(), "time": time_server()},
        tool_search={"after": 50, "pinned": ["time__*"]},
        middleware=[
            {"use": "audit", "options": {"path": str(db), "arguments": "full"}},
            {"use": "ratelimit", "options": {"per_tool": "3/minute", "lists": None}},
        ],
    )
    async with serve(cfg) as gw, fastmcp_client(gw.url) as client:
        assert len(gw.fleet.catalogue.tools) == COUNT + 2
        listed = [t.name for t in await client.list_tools()]
        assert listed == [*META, "time__get_current_time", "time__convert_time"]

        found = await client.call_tool(SEARCH, {"query": "refund a credit card charge"})
        assert "many__stripe_refund_charge" in names(found)[:3]
        described = await client.call_tool(DESCRIBE, {"name": "many__stripe_refund_charge"})
        schema = described.structured_content["inputSchema"]  # type: ignore[index]
        assert schema["required"] == ["charge_id"] and "amount" in schema["properties"]

        arguments = {"charge_id": "ch_1", "amount": 500}
        result = await client.call_tool(CALL, {"name": "many__stripe_refund_charge", "arguments": arguments})
        # The backend got its own tool's name and the arguments, as for a direct call.
        assert json.loads(text_of(result)) == {"name": "stripe_refund_charge", "arguments": arguments}
        direct = await client.call_tool("many__stripe_refund_charge", arguments)
        assert text_of(direct) == text_of(result)
        # A pinned tool (a 2026-07-28 backend's) is called the same way, through the meta-tool too.
        now = await client.call_tool(
            CALL, {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}
        )
        assert "UTC" in text_of(now)

        # One budget for the tool, however it is called: two meta-calls and a direct one used it.
        await client.call_tool(CALL, {"name": "many__stripe_refund_charge", "arguments": arguments})
        async with SdkClient(gw.url, mode="legacy") as sdk:
            with pytest.raises(MCPError) as err:
                await sdk.call_tool(CALL, {"name": "many__stripe_refund_charge", "arguments": arguments})
            assert err.value.code == RATE_LIMITED and err.value.data["scope"] == "per_tool"
            # Bad meta-arguments are the client's error, at once.
            with pytest.raises(MCPError) as err:
                await sdk.call_tool(SEARCH, {"limit": 3})
            assert err.value.code == INVALID_PARAMS and SEARCH in err.value.message
    rows = await AuditLog(db).query()
    calls = [r for r in reversed(rows) if r["method"] == "tools/call"]
    # Audit recorded the real tool each time, with its server and arguments; never a meta-tool.
    assert [(r["name"], r["server"], r["outcome"]) for r in calls] == [
        ("many__stripe_refund_charge", "many", "ok"),
        ("many__stripe_refund_charge", "many", "ok"),
        ("time__get_current_time", "time", "ok"),
        ("many__stripe_refund_charge", "many", "ok"),
        ("many__stripe_refund_charge", "many", "error"),  # the one rate-limited
    ]
    assert calls[0]["arguments"] == arguments
    # A search or a description is a read of the caller's list: audited as one.
    assert sum(r["method"] == "tools/list" for r in rows) >= 3


async def test_a_2026_07_28_client_searches_and_calls() -> None:
    cfg = config({"many": many()}, tool_search={"after": 0, "limit": 3})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="2026-07-28") as client:
        assert [t.name for t in (await client.list_tools()).tools] == META
        found = await client.call_tool(SEARCH, {"query": "scale the replicas of a deployment"})
        assert names(found)[0] == "many__kubernetes_scale_deployment" and len(names(found)) == 3
        result = await client.call_tool(CALL, {"name": names(found)[0], "arguments": {"replicas": 3}})
        assert json.loads(text_of(result))["arguments"] == {"replicas": 3}
        # Results cite real names: callable directly as well, though not listed.
        direct = await client.call_tool("many__kubernetes_scale_deployment", {"replicas": 3})
        assert text_of(direct) == text_of(result)
        with pytest.raises(MCPError) as err:
            await client.call_tool(CALL, {"name": "many__no_such_tool", "arguments": {}})
        assert (err.value.code, err.value.message) == (INVALID_PARAMS, "Unknown tool: many__no_such_tool")
        # Search mode follows the configuration (a reload swaps `fleet.config`): off, the full list.
        gw.fleet.config = gw.fleet.config.model_copy(update={"tool_search": None})
        assert len((await client.list_tools(cache_mode="bypass")).tools) == COUNT
        with pytest.raises(MCPError) as err:
            await client.call_tool(SEARCH, {"query": "deployment"})
        assert (err.value.code, err.value.message) == (INVALID_PARAMS, f"Unknown tool: {SEARCH}")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_an_identity_never_finds_nor_calls_a_tool_it_may_not_use(mode: str) -> None:
    rules = [
        {"roles": ["admin"]},
        {"roles": ["reader"], "tools": ["many__stripe_*", "many__shopify_*"]},
        {"roles": ["reader"], "tools": ["many__shopify_refund_order*"], "effect": "deny"},
    ]
    keys = [
        {"name": "reader", "key": hashed(READER_KEY), "roles": ["reader"]},
        {"name": "admin", "key": hashed(ADMIN_KEY), "roles": ["admin"]},
    ]
    cfg = config(
        {"many": many()},
        tool_search={"after": 50},
        middleware=[{"use": "auth", "options": {"api_keys": keys, "rules": rules}}],
    )
    query = {"query": "refund an order or a charge", "limit": 50}
    async with serve(cfg) as gw:
        async with keyed(gw.url, ADMIN_KEY, mode) as admin:
            assert [t.name for t in (await admin.list_tools()).tools] == META
            assert "many__shopify_refund_order" in names(await admin.call_tool(SEARCH, query))
        async with keyed(gw.url, READER_KEY, mode) as reader:
            assert [t.name for t in (await reader.list_tools()).tools] == META  # stripe + shopify: > 50
            found = names(await reader.call_tool(SEARCH, query))
            assert "many__stripe_refund_charge" in found
            assert all(n.startswith(("many__stripe_", "many__shopify_")) for n in found), found
            assert not any(n.startswith("many__shopify_refund_order") for n in found)
            hidden = "many__shopify_refund_order"
            for meta, arguments in (
                (DESCRIBE, {"name": hidden}),
                (CALL, {"name": hidden, "arguments": {}}),
                (CALL, {"name": "many__jira_get_issue", "arguments": {}}),
            ):
                with pytest.raises(MCPError) as err:
                    await reader.call_tool(meta, arguments)
                # Exactly the error of a name that does not exist.
                name = arguments["name"]
                assert (err.value.code, err.value.message) == (INVALID_PARAMS, f"Unknown tool: {name}")


async def test_found_tools_join_a_2025_11_25_session_s_list() -> None:
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    cfg = config({"many": many()}, tool_search={"after": 50, "limit": 2, "expose_found": True})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy", message_handler=on_message) as client:
        assert [t.name for t in (await client.list_tools()).tools] == META
        found = names(await client.call_tool(SEARCH, {"query": "acknowledge the incident"}))
        assert found[0] == "many__pagerduty_acknowledge_incident"
        with anyio.fail_after(WAIT):
            await changed.wait()
        listed = [t.name for t in (await client.list_tools(cache_mode="refresh")).tools]
        assert listed[:3] == META and sorted(listed[3:]) == sorted(found) and len(found) == 2
        # Another session's list is its own.
        async with SdkClient(gw.url, mode="legacy") as other:
            assert [t.name for t in (await other.list_tools()).tools] == META
