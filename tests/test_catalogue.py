from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway import naming
from gateway.catalogue import BackendListing, Catalogue, Route, Source
from gateway.config.models import ToolFilter
from tests._support import START_TIMEOUT, TINY, fastmcp_client, misbehave, serve, wait_until
from tests._support import config as make_config

if TYPE_CHECKING:
    import fastmcp


def source(server: str, ns: str, tools: list[str], **listing: list[dict[str, str]]) -> Source:
    return Source(server, ns, ToolFilter(), BackendListing(tools=[{"name": t} for t in tools], **listing))


def test_names_are_namespaced_and_route_back() -> None:
    cat = Catalogue.build([source("a", "a", ["x", "b__y"]), source("a_b", "a_b", ["y"])])
    assert {t["name"] for t in cat.tools} == {"a__x", "a__b__y", "a_b__y"}
    assert cat.tool_routes["a__b__y"].server == "a" and cat.tool_routes["a__b__y"].name == "b__y"
    assert cat.tool_routes["a_b__y"].server == "a_b"


def test_collision_between_unprefixed_servers_keeps_first_and_names_both() -> None:
    cat = Catalogue.build([source("one", "", ["x"]), source("two", "", ["x"])])
    assert [t["name"] for t in cat.tools] == ["x"]
    assert cat.tool_routes["x"].server == "one"
    assert "'one'" in cat.collisions[0] and "'two'" in cat.collisions[0]


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


def test_merged_lists_follow_the_sources_order_then_each_backend_s_own() -> None:
    a, b = source("a", "a", ["z", "y"]), source("b", "b", ["x"])
    assert [t["name"] for t in Catalogue.build([a, b]).tools] == ["a__z", "a__y", "b__x"]
    assert [t["name"] for t in Catalogue.build([b, a]).tools] == ["b__x", "a__z", "a__y"]


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
