from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import pytest
from mcp import Client as SdkClient
from mcp.server.caching import CacheHint
from mcp.shared.exceptions import MCPError

from gateway import naming
from gateway.catalogue import (
    NO_HINT,
    BackendListing,
    Catalogue,
    Collision,
    ListKind,
    Route,
    Source,
    cache_hint_of,
)
from gateway.config.models import ToolFilter
from tests._support import (
    START_TIMEOUT,
    TINY,
    envelope,
    fastmcp_client,
    messages,
    misbehave,
    rpc,
    serve,
    session,
    text_of,
    time_server,
    wait_until,
)
from tests._support import config as make_config
from tests.admin._helpers import serve_admin

if TYPE_CHECKING:
    import fastmcp


def source(
    server: str,
    ns: str,
    tools: list[str],
    *,
    prompts: Sequence[dict[str, str]] = (),
    resources: Sequence[dict[str, str]] = (),
    templates: Sequence[dict[str, str]] = (),
) -> Source:
    listing = BackendListing(
        tools=[{"name": t} for t in tools],
        prompts=list(prompts),
        resources=list(resources),
        templates=list(templates),
    )
    return Source(server, ns, ToolFilter(), listing)


def test_names_are_namespaced_and_route_back() -> None:
    cat = Catalogue.build([source("a", "a", ["x", "b__y"]), source("a_b", "a_b", ["y"])])
    assert {t["name"] for t in cat.tools} == {"a__x", "a__b__y", "a_b__y"}
    assert cat.tool_routes["a__b__y"].server == "a" and cat.tool_routes["a__b__y"].name == "b__y"
    assert cat.tool_routes["a_b__y"].server == "a_b"


def test_collision_between_unprefixed_servers_keeps_both_reachable() -> None:
    cat = Catalogue.build([source("one", "", ["x", "y"]), source("two", "", ["x"])])
    assert [t["name"] for t in cat.tools] == ["x", "y", "two__x"]
    assert cat.route("tool", "x") == Route("one", "x")
    assert cat.route("tool", "two__x") == Route("two", "x")
    assert cat.collisions == (Collision("tool", "x", "one", "two", "x", "two__x"),)
    assert "'one'" in str(cat.collisions[0]) and "'two__x'" in str(cat.collisions[0])


def test_collision_made_by_a_prefix_renames_the_later_server_s_item() -> None:
    # An unprefixed server's `a__x` and server `a`'s `x` are both `a__x` to a client.
    cat = Catalogue.build([source("a", "a", ["x"]), source("plain", "", ["a__x"])])
    assert [t["name"] for t in cat.tools] == ["a__x", "plain__a__x"]
    assert cat.route("tool", "plain__a__x") == Route("plain", "a__x")
    # In the other config order, the other one keeps the name.
    swapped = Catalogue.build([source("plain", "", ["a__x"]), source("a", "a", ["x"])])
    assert swapped.route("tool", "a__x") == Route("plain", "a__x")
    assert swapped.route("tool", "a__a__x") == Route("a", "x")


def test_a_disambiguated_name_never_takes_a_name_another_item_has() -> None:
    # `two__x` is a real name already (server `three`'s, by its prefix): the rename gets a hash.
    cat = Catalogue.build([source("one", "", ["x"]), source("two", "", ["x"]), source("three", "two", ["x"])])
    renamed = cat.collisions[0].renamed
    assert renamed.startswith("two-") and renamed.endswith("__x") and renamed != "two__x"
    assert cat.route("tool", "two__x") == Route("three", "x")
    assert cat.route("tool", renamed) == Route("two", "x")
    again = Catalogue.build(
        [source("one", "", ["x"]), source("two", "", ["x"]), source("three", "two", ["x"])]
    )
    assert again.collisions[0].renamed == renamed  # stable


def test_colliding_prompts_and_resources_are_disambiguated_too() -> None:
    res = {"uri": "memo://a"}
    cat = Catalogue.build(
        [
            source("one", "", [], prompts=[{"name": "p"}], resources=[res]),
            source("two", "", [], prompts=[{"name": "p"}], resources=[res]),
        ]
    )
    assert [p["name"] for p in cat.prompts] == ["p", "two__p"]
    assert [r["uri"] for r in cat.resources] == ["memo://a", "two+memo://a"]
    assert cat.route("prompt", "two__p") == Route("two", "p")
    assert cat.route("resource", "two+memo://a") == Route("two", "memo://a")
    assert cat.route("resource", "memo://a") == Route("one", "memo://a")
    # A backend's own resource URI in a result shows as the name it is listed under.
    assert cat.public_uri("two", "memo://a") == "two+memo://a"
    assert {c.kind for c in cat.collisions} == {"prompt", "resource"}


def test_who_keeps_a_contested_name_does_not_change_while_its_keeper_is_down() -> None:
    one, two = source("one", "", ["x"]), source("two", "", ["x"])
    known = Catalogue.build([one, two])
    # `one` is down: `two`'s tool keeps its disambiguated name, and `x` still routes to `one`.
    cat = Catalogue.build([two], known=known)
    assert [t["name"] for t in cat.tools] == ["two__x"]
    assert cat.route("tool", "two__x") == Route("two", "x")
    assert cat.route("tool", "x") == Route("one", "x")
    assert cat.collisions == known.collisions
    # Back up: the same names as before.
    assert [t["name"] for t in Catalogue.build([one, two], known=known).tools] == ["x", "two__x"]


def test_a_backend_listing_a_name_twice_keeps_its_first() -> None:
    cat = Catalogue.build([source("one", "", ["x", "x"]), source("two", "", ["x"])])
    assert [t["name"] for t in cat.tools] == ["x", "two__x"]
    assert len(cat.collisions) == 1


def test_merged_lists_follow_the_sources_order_then_each_backend_s_own() -> None:
    a, b = source("a", "a", ["z", "y"]), source("b", "b", ["x"])
    assert [t["name"] for t in Catalogue.build([a, b]).tools] == ["a__z", "a__y", "b__x"]
    assert [t["name"] for t in Catalogue.build([b, a]).tools] == ["b__x", "a__z", "a__y"]


def _hinted(server: str, ttl_ms: int, scope: Literal["public", "private"] = "public", *, at: float) -> Source:
    hints: dict[ListKind, CacheHint] = {"tools": CacheHint(ttl_ms=ttl_ms, scope=scope)}
    return Source(
        server, server, ToolFilter(), BackendListing(tools=[{"name": "t"}], hints=hints, listed_at=at)
    )


def test_a_list_s_pages_merge_into_one_hint() -> None:
    public = {"ttlMs": 5000, "cacheScope": "public"}
    assert cache_hint_of([public]) == CacheHint(5000, "public")
    assert cache_hint_of([public, {"ttlMs": 2000, "cacheScope": "public"}]) == CacheHint(2000, "public")
    assert cache_hint_of([public, {"ttlMs": 9000, "cacheScope": "private"}]) == CacheHint(5000, "private")
    # A page without a valid hint (a 2025-11-25 backend's): stale at once, private.
    for bad in ({}, {"ttlMs": -1, "cacheScope": "public"}, {"ttlMs": True, "cacheScope": "public"},
                {"ttlMs": 10, "cacheScope": "shared"}, {"ttlMs": "10", "cacheScope": "public"}):  # fmt: skip
        assert cache_hint_of([public, bad]) == NO_HINT


def test_the_merged_hint_is_the_least_time_left_and_private_if_any_is() -> None:
    now = time.monotonic()
    cat = Catalogue.build([_hinted("a", 60_000, at=now), _hinted("b", 30_000, at=now - 10)])
    hint = cat.cache_hint("tools")
    assert hint.scope == "public"
    assert 15_000 < hint.ttl_ms <= 20_000  # b's 30 s, listed 10 s ago
    private = Catalogue.build([_hinted("a", 60_000, at=now), _hinted("b", 60_000, "private", at=now)])
    assert private.cache_hint("tools").scope == "private"
    # A backend without a hint makes the list stale at once; so does time running out.
    assert Catalogue.build([_hinted("a", 60_000, at=now), _hinted("b", 0, "private", at=now)]).cache_hint(
        "tools"
    ) == CacheHint(0, "private")
    assert Catalogue.build([_hinted("a", 1_000, at=now - 5)]).cache_hint("tools").ttl_ms == 0
    # Nobody lists prompts: any backend that starts may change that list.
    assert cat.cache_hint("prompts") == CacheHint(0, "private")
    assert Catalogue().cache_hint("tools") == CacheHint(0, "private")


def test_long_names_are_shortened_stably_within_64() -> None:
    long = "t" * 70
    public = naming.public_name("server", long)
    assert len(public) == 64
    assert public == naming.public_name("server", long)
    assert public != naming.public_name("server", long + "x")
    cat = Catalogue.build([source("server", "server", [long])])
    assert cat.tool_routes[public].name == long


def test_resource_uris_round_trip() -> None:
    cat = Catalogue.build(
        [
            source(
                "fs_1",
                "fs_1",
                [],
                resources=[{"uri": "file:///tmp/a"}],
                templates=[{"uriTemplate": "file:///{p}"}],
            ),
            source("plain", "", [], resources=[{"uri": "memo://x"}]),
        ]
    )
    assert cat.resources[0]["uri"] == "fs-1+file:///tmp/a"
    assert cat.templates[0]["uriTemplate"] == "fs-1+file:///{p}"
    route = cat.route_uri("fs-1+file:///tmp/other")
    assert route is not None and route.server == "fs_1" and route.name == "file:///tmp/other"
    unprefixed = cat.route_uri("memo://y")
    assert unprefixed is not None and unprefixed.server == "plain"


def test_tool_filter_globs() -> None:
    src = Source(
        "s",
        "s",
        ToolFilter(allow=["git_*"], deny=["git_push"]),
        BackendListing(tools=[{"name": n} for n in ("git_log", "git_push", "rm")]),
    )
    assert [t["name"] for t in Catalogue.build([src]).tools] == ["s__git_log"]


def test_a_down_backends_last_known_names_route_to_it_only_while_it_is_not_listed() -> None:
    hello, item = {"uri": "misbehave://static/hello"}, {"uriTemplate": "misbehave://item/{id}"}
    up = source("up", "up", ["x"])
    down = source("down", "down", ["y"], prompts=[{"name": "p"}], resources=[hello], templates=[item])
    known = Catalogue.build([up, down])
    cat = Catalogue.build([up], known=known)
    assert [t["name"] for t in cat.tools] == ["up__x"] and not cat.prompts and not cat.resources
    assert cat.route("tool", "up__x") == Route("up", "x")
    assert cat.route("tool", "down__y") == Route("down", "y")
    assert cat.route("prompt", "down__p") == Route("down", "p")
    assert cat.route("resource", "down+misbehave://static/hello") == Route("down", "misbehave://static/hello")
    assert cat.route("resource", "down+misbehave://item/7") == Route("down", "misbehave://item/7")
    assert cat.route("tool", "down__never") is None and cat.route("tool", "nothing") is None
    assert cat.route("resource", "nothing://x") is None
    # Listed again without the name: the name is gone, not down.
    assert Catalogue.build([up, source("down", "down", [])], known=known).route("tool", "down__y") is None


def test_a_down_unprefixed_backends_uris_are_not_taken_by_the_catch_all() -> None:
    first = source("first", "", ["x"])
    second = source("second", "", ["z"], resources=[{"uri": "file:///b"}])
    cat = Catalogue.build([first], known=Catalogue.build([first, second]))
    assert cat.route("resource", "file:///b") == Route("second", "file:///b")
    assert cat.route("resource", "file:///other") == Route("first", "file:///other")
    # With no unprefixed backend up, the first down one still owns what cannot be told apart.
    none_up = Catalogue.build([], known=Catalogue.build([second]))
    assert none_up.route("resource", "file:///other") == Route("second", "file:///other")


# -- through the gateway: real backends, a real client over HTTP --------------------------------


def _tiny(name: str, *hint: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [TINY, name, *hint], **extra}


async def _names(client: fastmcp.Client[Any]) -> list[str]:
    return [t.name for t in await client.list_tools()]


@pytest.mark.anyio
async def test_list_order_follows_the_config_whatever_starts_first_or_is_reloaded(tmp_path: Path) -> None:
    go = tmp_path / "go"
    first = misbehave("--name", "a", "--start-when", str(go), tools={"allow": ["echo", "add"]})
    cfg = make_config({"a": first, "b": _tiny("b"), "c": _tiny("c")})
    async with serve(cfg, wait=False) as gw, fastmcp_client(gw.url) as client:
        backends = gw.fleet.backends
        await wait_until(lambda: backends["b"].available and backends["c"].available, timeout=START_TIMEOUT)
        assert await _names(client) == ["b__hello", "c__hello"]
        go.touch()  # `a` comes up last
        await wait_until(lambda: backends["a"].available, timeout=START_TIMEOUT)
        expected = ["a__echo", "a__add", "b__hello", "c__hello"]
        assert await _names(client) == expected
        await backends["b"].restart()  # `b` answers again after the others
        await wait_until(lambda: backends["b"].available, timeout=START_TIMEOUT)
        assert await _names(client) == expected
        # A reload that changes `a` stops it and starts it anew, after the others.
        await gw.fleet.apply(make_config({**cfg.model_dump()["servers"], "a": {**first, "env": {"X": "1"}}}))
        await wait_until(lambda: gw.fleet.backends["a"].available, timeout=START_TIMEOUT)
        assert await _names(client) == expected


@pytest.mark.anyio
async def test_colliding_names_both_stay_reachable_under_names_that_survive_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.fleet")
    cfg = make_config({"one": _tiny("one", prefix=""), "two": _tiny("two", prefix="")})
    async with serve(cfg) as gw, fastmcp_client(gw.url) as client:
        assert await _names(client) == ["hello", "two__hello"]
        assert text_of(await client.call_tool("hello", {})).startswith("one ")
        assert text_of(await client.call_tool("two__hello", {})).startswith("two ")
        one = gw.fleet.backends["one"]
        await one.stop()
        # `one` is down: its name is not handed to `two`, and calling it says why it fails.
        assert await _names(client) == ["two__hello"]
        with pytest.raises(MCPError, match="server 'one' is stopped"):
            await client.call_tool("hello", {})
        assert text_of(await client.call_tool("two__hello", {})).startswith("two ")
        one.start()
        await wait_until(lambda: one.available, timeout=START_TIMEOUT)
        await gw.fleet.backends["two"].restart()
        await wait_until(lambda: gw.fleet.backends["two"].available, timeout=START_TIMEOUT)
        assert await _names(client) == ["hello", "two__hello"]
        assert text_of(await client.call_tool("hello", {})).startswith("one ")
    warnings = [r.getMessage() for r in caplog.records if "name collision" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not once per listing or restart
    assert "'hello'" in warnings[0] and "'two__hello'" in warnings[0]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_two_copies_of_a_real_server_without_prefixes_are_both_callable(mode: str) -> None:
    cfg = make_config({"time": time_server(prefix=""), "time2": time_server(prefix="")})
    async with serve(cfg) as gw, SdkClient(gw.url, mode=mode) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["get_current_time", "convert_time", "time2__get_current_time", "time2__convert_time"]
        for name in ("get_current_time", "time2__get_current_time"):
            result = await client.call_tool(name, {"timezone": "UTC"})
            assert result.structured_content is not None and result.structured_content["timezone"] == "UTC"
        assert gw.fleet.catalogue.route("tool", "time2__convert_time") == Route("time2", "convert_time")


@pytest.mark.anyio
async def test_the_admin_api_shows_collisions_and_the_names_clients_see() -> None:
    cfg = make_config(
        {"one": _tiny("one", prefix=""), "two": _tiny("two", prefix=""), "three": _tiny("three")}
    )
    collision = {
        "kind": "tool",
        "name": "hello",
        "kept": "one",
        "server": "two",
        "original": "hello",
        "renamed": "two__hello",
    }
    async with serve_admin(cfg) as gw, gw.client() as http:
        listing = (await http.get("/servers")).json()
        assert listing["collisions"] == [collision]
        two = (await http.get("/servers/two")).json()["catalogue"]
        assert [t["name"] for t in two["tools"]] == ["two__hello"]
        assert two["collisions"] == [collision]
        assert (await http.get("/servers/three")).json()["catalogue"]["collisions"] == []


@pytest.mark.anyio
async def test_backends_list_hints_merge_into_the_gateway_s_hint(tmp_path: Path) -> None:
    cfg = make_config({"a": _tiny("a", "60000", "public"), "b": _tiny("b", "120000", "public")})
    async with serve(cfg) as gw:
        fleet = gw.fleet
        hint = fleet.cache_hint("tools")
        assert hint.scope == "public" and 0 < hint.ttl_ms <= 60_000
        assert fleet.cache_hint("prompts") == CacheHint(0, "private")  # nobody lists prompts
        fleet.add("c", make_config({"c": _tiny("c", "60000", "private")}).servers["c"])
        await wait_until(lambda: fleet.backends["c"].available, timeout=START_TIMEOUT)
        hint = fleet.cache_hint("tools")
        assert hint.scope == "private" and 0 < hint.ttl_ms <= 60_000
        # While a backend starts, its tools are about to join the list: stale at once.
        go = tmp_path / "go"
        fleet.add("d", make_config({"d": misbehave("--start-when", str(go))}).servers["d"])
        await wait_until(lambda: fleet.backends["d"].state == "starting", timeout=START_TIMEOUT)
        assert fleet.catalogue.cache_hint("tools").ttl_ms > 0
        assert fleet.cache_hint("tools").ttl_ms == 0
        go.touch()
        await wait_until(lambda: fleet.backends["d"].available, timeout=START_TIMEOUT)
        # Its lists carry no hint (a 2025-11-25 session's never do): the list is stale at once.
        assert fleet.cache_hint("tools") == CacheHint(0, "private")


@pytest.mark.anyio
async def test_a_list_result_carries_the_merged_hint_to_2026_clients_only() -> None:
    cfg = make_config({"a": _tiny("a", "60000", "public"), "b": _tiny("b", "120000", "public")})
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/list",
    }
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=START_TIMEOUT) as http:
        body = rpc("tools/list", {"_meta": envelope()})
        result = (await http.post(gw.url, headers=headers, json=body)).json()["result"]
        assert result["cacheScope"] == "public"
        assert 0 < result["ttlMs"] <= 60_000  # the shortest of the two, counted down since listed
        async with session(http, gw.url) as legacy:
            answer = messages(await http.post(gw.url, headers=legacy, json=rpc("tools/list")))
        assert "ttlMs" not in answer[0]["result"] and "cacheScope" not in answer[0]["result"]
