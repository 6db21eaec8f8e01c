"""Tool overrides (`gateway.overrides`): what clients see of an overridden tool, what its backend
receives, and what the gateway reports of overrides a backend's listing does not allow.

The backend is `tests/servers/recorder.py`, which answers every call with the name and arguments
it received: assertions are on what the backend saw, not on what the client sent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import yaml
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.catalogue import BackendListing, Catalogue, Source, overridden
from gateway.config import load_config
from gateway.config.models import ToolFilter, ToolOverride
from gateway.errors import InvalidArguments
from gateway.overrides import Plan, Problem, apply
from tests._support import START_TIMEOUT, fastmcp_client, serve, wait_until
from tests._support import config as make_config
from tests.admin._helpers import serve_admin

RECORDER = str(Path(__file__).parent / "servers" / "recorder.py")

SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "What to look for."},
        "region": {"type": "string", "description": "Where the records live."},
        "limit": {"type": "integer", "minimum": 1},
        "units": {"type": "string"},
    },
    "required": ["query", "region"],
}
SEARCH = {
    "name": "search",
    "title": "Search",
    "description": "Search the records.",
    "inputSchema": SEARCH_SCHEMA,
}
LOOKUP = {"name": "lookup", "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}}}

# Rename, retitle, extend the description, hide `region`, default `limit`, tighten `units`.
FIND: dict[str, Any] = {
    "name": "find",
    "title": "Find records",
    "description_append": "Only European records.",
    "hide": {"region": "eu"},
    "defaults": {"limit": 5},
    "schema": {"units": {"enum": ["metric", "imperial"]}},
}


def override(**fields: Any) -> ToolOverride:
    return ToolOverride.model_validate(fields)


def recorder(**extra: Any) -> dict[str, Any]:
    return {"type": "stdio", "command": sys.executable, "args": [RECORDER], **extra}


# -- the module: shaping a listing, preparing a call -------------------------------------------


def test_an_overridden_tool_is_shown_as_overridden() -> None:
    applied = apply([SEARCH, LOOKUP], {"search": override(**FIND)}, owner="servers.rec")
    assert applied.problems == ()
    search, lookup = applied.tools
    assert lookup.item is LOOKUP and lookup.plan is None  # untouched tools are not copied
    assert search.original == "search"
    item = search.item
    assert item["name"] == "find" and item["title"] == "Find records"
    assert item["description"] == "Search the records.\n\nOnly European records."
    schema = item["inputSchema"]
    assert set(schema["properties"]) == {"query", "limit", "units"}
    assert schema["required"] == ["query"]
    assert schema["properties"]["limit"] == {"type": "integer", "minimum": 1, "default": 5}
    assert schema["properties"]["units"] == {"type": "string", "enum": ["metric", "imperial"]}
    assert SEARCH_SCHEMA["properties"]["units"] == {"type": "string"}  # the backend's listing is intact


def test_a_plan_fills_hidden_and_default_arguments() -> None:
    plan = apply([SEARCH], {"search": override(**FIND)}, owner="servers.rec").tools[0].plan
    assert plan is not None
    assert plan.prepare("rec__find", {"query": "x"}) == {"query": "x", "limit": 5, "region": "eu"}
    given = {"query": "x", "limit": 2, "units": "metric"}
    assert plan.prepare("rec__find", given) == {**given, "region": "eu"}
    assert plan.prepare("rec__find", None) == {"limit": 5, "region": "eu"}
    assert plan.summary() == {"hidden": ["region"], "defaults": {"limit": 5}, "tightened": ["units"]}


def test_a_plan_refuses_a_hidden_argument_and_a_value_outside_its_tightened_schema() -> None:
    plan = apply([SEARCH], {"search": override(**FIND)}, owner="servers.rec").tools[0].plan
    assert plan is not None
    with pytest.raises(InvalidArguments) as hidden:
        plan.prepare("rec__find", {"query": "x", "region": "us"})
    assert hidden.value.code == types.INVALID_PARAMS
    assert hidden.value.message == (
        "Invalid arguments for tool rec__find: argument 'region' is set by the gateway and must not be sent"
    )
    assert hidden.value.data == {"tool": "rec__find", "argument": "region"}
    with pytest.raises(InvalidArguments) as tightened:
        plan.prepare("rec__find", {"query": "x", "units": "kelvin"})
    assert tightened.value.message == (
        "Invalid arguments for tool rec__find: "
        "argument 'units': 'kelvin' is not one of ['metric', 'imperial']"
    )


def test_overrides_of_a_missing_tool_or_argument_are_reported_and_left_out() -> None:
    overrides = {
        "search": override(hide={"region": "eu", "zone": "z1"}, defaults={"limit": "many"}),
        "gone": override(name="here"),
        "lookup": override(name="search"),
    }
    applied = apply([SEARCH, LOOKUP], overrides, owner="servers.rec", server="rec")
    assert sorted(applied.problems, key=str) == [
        Problem("servers.rec", "gone", "", "no tool 'gone' is listed; the override is ignored", "rec"),
        Problem(
            "servers.rec",
            "lookup",
            "name",
            "another tool is named 'search'; the tool keeps its own name",
            "rec",
        ),
        Problem(
            "servers.rec",
            "search",
            "defaults.limit",
            "the value does not satisfy the tool's own schema",
            "rec",
        ),
        Problem("servers.rec", "search", "hide.zone", "the tool has no argument 'zone'; ignored", "rec"),
    ]
    assert str(applied.problems[0]).startswith("servers.rec.overrides.")
    search, lookup = applied.tools
    assert lookup.item["name"] == "lookup"
    assert search.plan is not None and search.plan.prepare("search", {}) == {"limit": "many", "region": "eu"}


def test_plans_stack_an_endpoints_over_a_servers() -> None:
    server = apply([SEARCH], {"search": override(hide={"region": "eu"})}, owner="servers.rec")
    outer = apply([server.tools[0].item], {"search": override(defaults={"limit": 3})}, owner="endpoints.e")
    inner, top = server.tools[0].plan, outer.tools[0].plan
    assert top is not None and inner is not None
    stacked = top.over(inner)
    assert stacked.prepare("search", {"query": "q"}) == {"query": "q", "limit": 3, "region": "eu"}
    with pytest.raises(InvalidArguments, match="'region'"):
        stacked.prepare("search", {"query": "q", "region": "us"})
    assert isinstance(Plan().over(None), Plan)


def test_the_catalogue_routes_an_overridden_name_to_the_backends_own() -> None:
    listing = BackendListing(tools=[SEARCH, LOOKUP])
    filters = ToolFilter(deny=["lookup"])
    catalogue = Catalogue.build([Source("rec", "rec", filters, listing, {"search": override(**FIND)})])
    assert [t["name"] for t in catalogue.tools] == ["rec__find"]  # the namespace still applies
    route = catalogue.route("tool", "rec__find")
    assert route is not None and (route.server, route.name) == ("rec", "search")
    assert route.plan is not None and route.plan.prepare("rec__find", {"query": "q"})["region"] == "eu"
    assert catalogue.route("tool", "rec__search") is None
    assert catalogue.public_name("tool", "rec", "rec", "search") == "rec__find"
    # The `known` build's problems are the live one's: a restart does not report them anew.
    broken = Source("rec", "rec", ToolFilter(), listing, {"nope": override(title="t")})
    known = Catalogue.build([broken])
    assert [p.tool for p in known.override_problems] == ["nope"]
    assert Catalogue.build([], known=known).override_problems == known.override_problems


def test_overrides_over_public_tools_stack_on_their_routes_plans() -> None:
    # What an endpoint does with its own `overrides:` over its view of the catalogue.
    listing = BackendListing(tools=[SEARCH, LOOKUP])
    catalogue = Catalogue.build([Source("rec", "rec", ToolFilter(), listing, {"search": override(**FIND)})])
    on_top = {"rec__find": override(name="records", defaults={"units": "metric"}), "gone": override()}
    tools, routes, problems = overridden(catalogue.tools, catalogue.tool_routes, on_top, owner="endpoints./r")
    assert [t["name"] for t in tools] == ["records", "rec__lookup"]
    assert tools[0]["title"] == "Find records"  # the server's override shows through
    assert tools[0]["inputSchema"]["properties"]["units"]["default"] == "metric"
    assert routes["rec__lookup"] is catalogue.tool_routes["rec__lookup"]
    route = routes["records"]
    assert (route.server, route.name) == ("rec", "search") and route.plan is not None
    assert route.plan.prepare("records", {"query": "q"}) == {
        "query": "q",
        "units": "metric",
        "limit": 5,
        "region": "eu",
    }
    with pytest.raises(InvalidArguments, match="'units'"):  # the server's enum still holds
        route.plan.prepare("records", {"query": "q", "units": "kelvin"})
    assert [str(p) for p in problems] == [
        "endpoints./r.overrides.gone: no tool 'gone' is listed; the override is ignored"
    ]


# -- through the gateway: real clients, a real backend -----------------------------------------

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@asynccontextmanager
async def client_of(kind: str, url: str) -> AsyncIterator[tuple[list[dict[str, Any]], Call]]:
    """The tools a client of `kind` lists (as JSON) and its way to call one: the result's
    structuredContent, or `MCPError` as the client raises it."""
    if kind == "fastmcp":
        async with fastmcp_client(url) as fast:
            tools = [t.model_dump(by_alias=True, exclude_none=True) for t in await fast.list_tools()]

            async def fast_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
                result = await fast.call_tool_mcp(name, args)  # a JSON-RPC error raises MCPError
                return dict(result.structured_content or {})

            yield tools, fast_call
        return
    mode: Any = "legacy" if kind == "2025-11-25" else kind
    async with SdkClient(url, mode=mode) as client:
        listed = (await client.list_tools()).tools
        tools = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in listed]

        async def sdk_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
            result = await client.call_tool(name, args)
            return dict(result.structured_content or {})

        yield tools, sdk_call


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["fastmcp", "2025-11-25", "2026-07-28"])
async def test_a_client_calls_the_overridden_tool_and_the_backend_gets_its_own(kind: str) -> None:
    cfg = make_config({"rec": recorder(prefix="rec", overrides={"search": FIND})})
    async with serve(cfg) as gw, client_of(kind, gw.url) as (tools, call):
        by_name = {t["name"]: t for t in tools}
        assert "rec__search" not in by_name
        find = by_name["rec__find"]
        assert find["title"] == "Find records"
        assert find["description"] == "Search the records.\n\nOnly European records."
        properties = find["inputSchema"]["properties"]
        assert "region" not in properties and find["inputSchema"]["required"] == ["query"]
        assert properties["limit"]["default"] == 5
        assert properties["units"]["enum"] == ["metric", "imperial"]

        seen = await call("rec__find", {"query": "ice"})
        assert seen == {"tool": "search", "arguments": {"query": "ice", "limit": 5, "region": "eu"}}
        seen = await call("rec__find", {"query": "ice", "limit": 9, "units": "imperial"})
        assert seen["arguments"] == {"query": "ice", "limit": 9, "units": "imperial", "region": "eu"}

        with pytest.raises(MCPError) as refused:
            await call("rec__find", {"query": "ice", "units": "kelvin"})
        assert "'units'" in str(refused.value) and "kelvin" in str(refused.value)
        with pytest.raises(MCPError) as hidden:
            await call("rec__find", {"query": "ice", "region": "us"})
        assert "'region' is set by the gateway" in str(hidden.value)
        assert refused.value.error.code == hidden.value.error.code == types.INVALID_PARAMS
        # Neither refused call reached the backend.
        received = await call("rec__received", {})
        assert [c["arguments"].get("units") for c in received["calls"]] == [None, "imperial"]


@pytest.mark.anyio
async def test_overrides_the_listing_does_not_allow_are_warning_events() -> None:
    overrides = {"search": {**FIND, "hide": {"region": "eu", "zone": "z1"}}, "nope": {"title": "Nope"}}
    cfg = make_config({"rec": recorder(overrides=overrides)})
    async with serve_admin(cfg) as gw, gw.client() as admin:

        async def warnings() -> list[str]:
            response = await admin.get("/events", params={"category": "config", "severity": "warning"})
            return sorted(e["reason"] for e in response.json()["events"] if e["server"] == "rec")

        expected = [
            "servers.rec.overrides.nope: no tool 'nope' is listed; the override is ignored",
            "servers.rec.overrides.search.hide.zone: the tool has no argument 'zone'; ignored",
        ]
        got: list[str] = []

        async def reported(count: int) -> bool:
            got[:] = await warnings()
            return len(got) >= count

        await _eventually(lambda: reported(2))
        assert got == expected
        async with fastmcp_client(gw.url) as client:
            # The rest of the override applies.
            result = await client.call_tool_mcp("rec__find", {"query": "q"})
            assert result.structured_content == {
                "tool": "search",
                "arguments": {"query": "q", "limit": 5, "region": "eu"},
            }
            # The backend drops the tool: reported, not crashed on; the name is gone.
            await client.call_tool_mcp("rec__forget", {"tool": "search"})
            await wait_until(lambda: "rec__find" not in gw.fleet.catalogue.tool_routes, timeout=START_TIMEOUT)
            await _eventually(lambda: reported(3))
            assert "servers.rec.overrides.search: no tool 'search' is listed; the override is ignored" in got
            with pytest.raises(MCPError, match="Unknown tool: rec__find"):
                await client.call_tool_mcp("rec__find", {"query": "q"})
            assert (await client.call_tool_mcp("rec__lookup", {"id": "7"})).structured_content == {
                "tool": "lookup",
                "arguments": {"id": "7"},
            }
        # Once each, however often the catalogue was rebuilt since.
        assert len(got) == 3


@pytest.mark.anyio
async def test_a_reload_that_changes_only_overrides_keeps_the_backend_running(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"servers": {"rec": recorder(prefix="rec", overrides={"search": FIND})}}))
    changed: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.append(message.method)

    async with (
        serve(load_config(path), config_path=path) as gw,
        SdkClient(gw.url, mode="legacy", message_handler=on_message) as client,
    ):
        backend = gw.fleet.backends["rec"]
        started = backend.started_at
        await client.call_tool("rec__find", {"query": "before"})
        retitled = {**FIND, "title": "Look for records", "hide": {"region": "us"}}
        path.write_text(
            yaml.safe_dump({"servers": {"rec": recorder(prefix="rec", overrides={"search": retitled})}})
        )
        report = await gw.app.state.reloader.reload("test")
        assert report["servers"] == {
            "added": [],
            "removed": [],
            "changed": [],
            "unchanged": [],
            "reshaped": ["rec"],
        }
        assert gw.fleet.backends["rec"] is backend and backend.started_at == started  # not restarted
        await wait_until(lambda: changed, timeout=START_TIMEOUT)
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["rec__find"].title == "Look for records"
        result = await client.call_tool("rec__find", {"query": "after"})
        assert result.structured_content == {
            "tool": "search",
            "arguments": {"query": "after", "limit": 5, "region": "us"},
        }
        # The same process, which has heard both calls.
        received = (await client.call_tool("rec__received", {})).structured_content or {}
        assert [c["arguments"]["query"] for c in received["calls"]] == ["before", "after"]


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    import anyio

    with anyio.fail_after(START_TIMEOUT):
        while not await check():  # noqa: ASYNC110 - polled over HTTP, no event exists
            await anyio.sleep(0.05)


# -- mcp-gateway tools --------------------------------------------------------------------------


def test_the_tools_command_shows_what_is_overridden(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    overrides = {"search": FIND, "missing": {"title": "x"}}
    path.write_text(yaml.safe_dump({"servers": {"rec": recorder(prefix="rec", overrides=overrides)}}))

    def tools(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway", "tools", "--config", str(path), *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT * 2, check=False)

    text = tools()
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    find = next(i for i, line in enumerate(lines) if line.startswith("rec__find "))
    assert "Search the records." in lines[find]
    assert lines[find + 1].strip() == "overrides rec's search: hides region; defaults limit=5; checks units"
    assert not any(line.startswith("rec__search") for line in lines)
    assert "servers.rec.overrides.missing: no tool 'missing' is listed" in text.stderr

    rows = {row["name"]: row for row in json.loads(tools("--json").stdout)}
    assert rows["rec__find"]["original"] == "search"
    assert rows["rec__find"]["override"] == {
        "hidden": ["region"],
        "defaults": {"limit": 5},
        "tightened": ["units"],
    }
    assert rows["rec__lookup"]["original"] == "lookup" and "override" not in rows["rec__lookup"]
