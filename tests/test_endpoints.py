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
from fastmcp.client.transports import StreamableHttpTransport
from mcp import Client as SdkClient
from mcp.client import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged

from gateway.search import META_NAMES, SEARCH
from tests._support import (
    LEGACY,
    MISBEHAVE,
    MODERN,
    config,
    envelope,
    fastmcp_client,
    initialize,
    messages,
    serve,
    text_of,
)

pytestmark = pytest.mark.anyio

MODES = ["legacy", "2026-07-28"]
WAIT = 60.0  # bound on every wait: generous for a loaded 2-core machine
ALICE, BOB, CAROL = (secrets.token_hex(16) for _ in range(3))


def _key(name: str, key: str, roles: list[str]) -> dict[str, Any]:
    return {"name": name, "key": "sha256:" + hashlib.sha256(key.encode()).hexdigest(), "roles": roles}


def server(name: str, *flags: str) -> dict[str, Any]:
    # Handshake-era, so that `ask` asks mid-call (the relay turns it into an input round for a
    # 2026-07-28 client); misbehave's 2026-07-28 wire has no back channel for it.
    args = [MISBEHAVE, "--name", name, *flags]
    return {"type": "stdio", "command": sys.executable, "args": args, "timeout": WAIT, "protocol": LEGACY}


RESEARCH = {
    "path": "/mcp/research",
    "name": "research-desk",
    "instructions": "Research tools only.",
    "servers": {"a": {"tools": ["echo", "sleep", "ask", "change_tools", "ext*"], "prompts": ["greet"]}},
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
        {"a": server("a", "--ask"), "b": server("b", "--ask")},
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


@pytest.mark.parametrize("mode", MODES)
async def test_every_relay_feature_works_on_each_endpoint(mode: str) -> None:
    """Calls, resources, prompts, progress and sampling, through each endpoint, under its name."""
    reported: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append(progress)

    async with serve(gateway_config(RESEARCH, OPS)) as gw:
        for path, key, ns in (("/mcp/research", ALICE, "a"), ("/mcp/ops", BOB, "b")):
            async with sdk(gw.base + path, key, mode, sampling_callback=sampling) as client:
                with anyio.fail_after(WAIT):
                    echoed = await client.call_tool(f"{ns}__echo", {"text": "hi"})
                    if mode == "legacy":  # (2026-07-28: `test_each_endpoint_has_its_own_name`)
                        assert client.server_info is not None
                        assert client.server_info.name == ("research-desk" if ns == "a" else "ops-desk")
                    assert text_of(echoed) == f"{ns}: hi"
                    reported.clear()
                    slept = await client.call_tool(
                        f"{ns}__sleep", {"seconds": 0.3}, progress_callback=on_progress
                    )
                    assert not slept.is_error and reported, (path, reported)
                    asked = await client.call_tool(f"{ns}__ask", {"kinds": ["sampling"]})
                    assert asked.structured_content is not None
                    (answer,) = asked.structured_content["answers"]
                    assert answer.get("result", {}).get("content") == {"type": "text", "text": "4"}, answer
                    resources = (await client.list_resources()).resources
                    prompts = (await client.list_prompts()).prompts
                if ns == "a":
                    assert [p.name for p in prompts] == ["a__greet"]
                    with anyio.fail_after(WAIT):
                        greeting = await client.get_prompt("a__greet", {"name": "Ada"})
                    assert "Hello, Ada! (a)" in str(greeting.messages[0].content)
                    (resource,) = resources
                    with anyio.fail_after(WAIT):
                        read = await client.read_resource(str(resource.uri))
                    assert "hello from a" in str(read.contents[0])
                else:
                    # The ops desk takes none of b's prompts or resources: they are unknown there.
                    assert prompts == [] and resources == []
                    with anyio.fail_after(WAIT), pytest.raises(MCPError, match="Unknown prompt: b__greet"):
                        await client.get_prompt("b__greet", {"name": "Ada"})
                    uri = gw.fleet.catalogue.public_uri("b", "misbehave://static/hello")
                    with anyio.fail_after(WAIT), pytest.raises(MCPError, match="Unknown resource"):
                        await client.read_resource(uri)


async def test_each_endpoint_has_its_own_name_and_instructions() -> None:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    modern = {**headers, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": envelope()}}
    expected = {"/mcp/research": ("research-desk", "Research tools only."), "/mcp": ("mcp-gateway", None)}
    async with serve(gateway_config(RESEARCH)) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        for path, (name, instructions) in expected.items():
            hello = await http.post(
                gw.base + path, headers={**headers, "x-api-key": ALICE}, json=initialize()
            )
            result = messages(hello)[0]["result"]
            assert (result["serverInfo"]["name"], result.get("instructions")) == (name, instructions)
            listed = await http.post(gw.base + path, headers={**modern, "x-api-key": ALICE}, json=listing)
            assert listed.json()["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == name


async def test_fastmcp_client_on_an_endpoint() -> None:
    transport = StreamableHttpTransport
    async with serve(gateway_config(RESEARCH)) as gw:
        url = gw.base + "/mcp/research/"
        async with fastmcp_client(transport(url, headers={"x-api-key": ALICE})) as client:
            with anyio.fail_after(WAIT):
                names = {t.name for t in await client.list_tools()}
                result = await client.call_tool("a__echo", {"text": "via fastmcp"})
            assert names == {"a__echo", "a__sleep", "a__ask", "a__change_tools"}
            assert result.data == {"text": "a: via fastmcp"} or "a: via fastmcp" in str(result.content)


async def test_an_identity_refused_on_one_endpoint_works_on_the_other() -> None:
    """Refused before any session opens: HTTP 403 with a clear message, in either revision."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    modern = {**headers, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": envelope()}}
    async with serve(gateway_config(RESEARCH, OPS)) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        cases = [
            ("/mcp/ops", ALICE, "alice"),
            ("/mcp/research", BOB, "bob"),
            ("/mcp/research", CAROL, "carol"),
        ]
        for path, key, name in cases:
            for sent, body in ((headers, initialize()), (modern, listing)):
                refused = await http.post(gw.base + path, headers={**sent, "x-api-key": key}, json=body)
                assert refused.status_code == 403, (path, name, refused.text)
                assert refused.json()["error_description"] == f"{name} may not use the endpoint {path}"
                assert "mcp-session-id" not in refused.headers
        # Each of them is let in where its rules allow.
        for path, key in (("/mcp/research", ALICE), ("/mcp/ops", BOB), ("/mcp", CAROL), ("/mcp", ALICE)):
            answer = await http.post(gw.base + path, headers={**modern, "x-api-key": key}, json=listing)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json()["result"]["tools"]
        # Without credentials the gateway's own 401 comes first, on every endpoint.
        assert (await http.post(gw.base + "/mcp/ops", headers=modern, json=listing)).status_code == 401


async def test_list_changed_reaches_only_the_endpoint_whose_view_changed() -> None:
    heard: dict[str, list[str]] = {"research": [], "ops": []}
    news = {"research": anyio.Event(), "ops": anyio.Event()}

    def recorder(name: str) -> Any:
        async def on_message(message: object) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                heard[name].append("tools/list_changed")
                news[name].set()

        return on_message

    async with (
        serve(gateway_config(RESEARCH, OPS)) as gw,
        sdk(gw.base + "/mcp/research", ALICE, "legacy", message_handler=recorder("research")) as research,
        sdk(gw.base + "/mcp/ops", BOB, "legacy", message_handler=recorder("ops")) as ops,
    ):
        assert "a__extra" not in await tool_names(research)
        await tool_names(ops)
        # a's new tool is in the research desk's selection, and nowhere in the ops desk's.
        with anyio.fail_after(WAIT):
            await research.call_tool("a__change_tools", {})
            await news["research"].wait()
        assert "a__extra" in await tool_names(research)
        heard["ops"].append("b changes now")
        with anyio.fail_after(WAIT):
            await ops.call_tool("b__change_tools", {})
            await news["ops"].wait()
        assert "b__extra" in await tool_names(ops)
        # The ops client heard of its own change only; the research desk did not hear of b's.
        assert heard["ops"] == ["b changes now", "tools/list_changed"]
        assert heard["research"] == ["tools/list_changed"]


async def test_list_changed_reaches_only_the_listen_streams_of_the_endpoint_whose_view_changed() -> None:
    """The same for 2026-07-28 clients, which hear of changes on `subscriptions/listen` streams."""
    heard: dict[str, list[object]] = {"research": [], "ops": []}
    news = {"research": anyio.Event(), "ops": anyio.Event()}

    async def follow(name: str, events: AsyncIterator[object]) -> None:
        async for event in events:
            heard[name].append(event)
            news[name].set()

    async with (
        serve(gateway_config(RESEARCH, OPS)) as gw,
        sdk(gw.base + "/mcp/research", ALICE, MODERN) as research,
        sdk(gw.base + "/mcp/ops", BOB, MODERN) as ops,
        research.listen(tools_list_changed=True) as research_events,
        ops.listen(tools_list_changed=True) as ops_events,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(follow, "research", research_events)
        tg.start_soon(follow, "ops", ops_events)
        with anyio.fail_after(WAIT):
            await research.call_tool("a__change_tools", {})
            await news["research"].wait()
        heard["ops"].append("b changes now")
        with anyio.fail_after(WAIT):
            await ops.call_tool("b__change_tools", {})
            await news["ops"].wait()
        assert "b__extra" in await tool_names(ops)
        assert heard["ops"] == ["b changes now", ToolsListChanged()]
        assert heard["research"] == [ToolsListChanged()]
        tg.cancel_scope.cancel()


async def test_a_resource_update_reaches_only_the_endpoints_that_expose_the_resource() -> None:
    """A 2026-07-28 client of an endpoint without `a`'s resources asks to hear of one anyway: it
    is not told (nor is a subscription made for it); it hears its own endpoint's."""
    left = {"path": "/mcp/left", "servers": {"a": {"tools": ["touch"]}}}
    right = {"path": "/mcp/right", "servers": {"b": {"tools": ["touch"]}}}
    cfg = config(
        {"a": server("a", "--touch"), "b": server("b", "--touch")},
        endpoints=[left, right],
        middleware=[{"use": "auth", "options": {"api_keys": [_key("alice", ALICE, [])]}}],
    )
    heard: dict[str, list[object]] = {"left": [], "right": []}
    news = {"left": anyio.Event(), "right": anyio.Event()}

    async def follow(name: str, events: AsyncIterator[object]) -> None:
        async for event in events:
            heard[name].append(event)
            news[name].set()

    async with serve(cfg) as gw:
        a_uri = gw.fleet.catalogue.public_uri("a", "misbehave://static/hello")
        b_uri = gw.fleet.catalogue.public_uri("b", "misbehave://static/hello")
        async with (
            sdk(gw.base + "/mcp/left", ALICE, MODERN) as left_client,
            sdk(gw.base + "/mcp/right", ALICE, MODERN) as right_client,
            left_client.listen(resource_subscriptions=[a_uri]) as left_events,
            right_client.listen(resource_subscriptions=[a_uri, b_uri]) as right_events,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(follow, "left", left_events)
            tg.start_soon(follow, "right", right_events)
            with anyio.fail_after(WAIT):
                touched = await left_client.call_tool("a__touch", {"uri": "misbehave://static/hello"})
                assert touched.structured_content is not None and touched.structured_content["subscribed"]
                await news["left"].wait()
            heard["right"].append("b is touched now")
            with anyio.fail_after(WAIT):
                await right_client.call_tool("b__touch", {"uri": "misbehave://static/hello"})
                await news["right"].wait()
            assert heard["left"] == [ResourceUpdated(uri=a_uri)]
            assert heard["right"] == ["b is touched now", ResourceUpdated(uri=b_uri)]
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("mode", MODES)
async def test_completions_and_subscriptions_are_routed_through_the_endpoint_s_view(mode: str) -> None:
    """A prompt or resource outside the view is unknown there for completions and subscriptions
    too; inside it, the request reaches the backend (whose own answer it gets)."""
    async with serve(gateway_config(RESEARCH, OPS)) as gw:
        b_uri = gw.fleet.catalogue.public_uri("b", "misbehave://static/hello")
        argument = {"name": "name", "value": "A"}
        async with sdk(gw.base + "/mcp/ops", BOB, mode) as ops:
            with anyio.fail_after(WAIT), pytest.raises(MCPError, match="Unknown prompt: b__greet"):
                await ops.complete(types.PromptReference(type="ref/prompt", name="b__greet"), argument)
            if mode == "legacy":  # (2026-07-28 subscribes on listen streams: tested above)
                with anyio.fail_after(WAIT), pytest.raises(MCPError, match="Unknown resource"):
                    await ops.subscribe_resource(b_uri)
        async with sdk(gw.base + "/mcp/research", ALICE, mode) as research:
            with anyio.fail_after(WAIT), pytest.raises(MCPError) as reached:
                await research.complete(types.PromptReference(type="ref/prompt", name="a__greet"), argument)
            assert "Unknown prompt" not in str(reached.value)  # misbehave has no completions


async def test_a_backend_log_outside_any_call_reaches_only_the_endpoints_that_take_its_server() -> None:
    """Without authentication a log no call is waiting for goes to every client, but only of the
    endpoints that take from its server: another desk's clients do not hear of it."""
    left = {"path": "/mcp/left", "servers": {"a": None}}
    right = {"path": "/mcp/right", "servers": {"b": None}}
    cfg = config({"a": server("a", "--log-later"), "b": server("b", "--log-later")}, endpoints=[left, right])
    heard: dict[str, list[str]] = {"left": [], "right": []}
    news = {"left": anyio.Event(), "right": anyio.Event()}

    def recorder(name: str) -> Any:
        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            heard[name].append(str(params.data))
            news[name].set()

        return on_log

    async with (
        serve(cfg) as gw,
        SdkClient(gw.base + "/mcp/left", mode="legacy", logging_callback=recorder("left")) as left_client,
        SdkClient(gw.base + "/mcp/right", mode="legacy", logging_callback=recorder("right")) as right_client,
    ):
        await tool_names(right_client)  # known to the gateway before any log
        with anyio.fail_after(WAIT):
            await left_client.call_tool("a__log_later", {"seconds": 0.2, "message": "from a"})
            await news["left"].wait()
        heard["right"].append("b logs now")
        with anyio.fail_after(WAIT):
            await right_client.call_tool("b__log_later", {"seconds": 0.2, "message": "from b"})
            await news["right"].wait()
        assert heard["left"] == ["from a"]
        assert heard["right"] == ["b logs now", "from b"]


@pytest.mark.parametrize("mode", MODES)
async def test_an_endpoint_has_its_own_overrides_and_search_mode(mode: str) -> None:
    """`/mcp/ops` renames `b__echo` and fixes its argument; `/mcp/research` lists meta-tools
    (search over its own view only); the default endpoint is unchanged."""
    ops = {**OPS, "overrides": {"b__echo": {"name": "say", "hide": {"text": "fixed"}}}}
    research = {**RESEARCH, "tool_search": {"after": 0}}
    async with serve(gateway_config(research, ops)) as gw:
        async with sdk(gw.base + "/mcp/ops", BOB, mode) as client:
            names = await tool_names(client)
            assert "say" in names and "b__echo" not in names
            tool = next(t for t in (await client.list_tools()).tools if t.name == "say")
            assert "text" not in (tool.input_schema.get("properties") or {})
            with anyio.fail_after(WAIT):
                assert text_of(await client.call_tool("say", {})) == "b: fixed"
            with anyio.fail_after(WAIT), pytest.raises(MCPError, match="Unknown tool: b__echo"):
                await client.call_tool("b__echo", {"text": "hi"})
        async with sdk(gw.base + "/mcp/research", ALICE, mode) as client:
            assert await tool_names(client) == set(META_NAMES)
            with anyio.fail_after(WAIT):
                found = await client.call_tool(SEARCH, {"query": "echo text back"})
            assert "a__echo" in text_of(found) and "b__" not in text_of(found)
        async with sdk(gw.url, CAROL, mode) as client:
            names = await tool_names(client)
            assert "b__echo" in names and "say" not in names and not names & set(META_NAMES)


async def test_a_session_belongs_to_the_endpoint_it_was_opened_on() -> None:
    """Its id names the endpoint: presented on another one (even by its owner), it is unknown
    there, not restored."""
    async with serve(gateway_config(RESEARCH)) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        base = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "x-api-key": ALICE,
        }
        opened = await http.post(gw.base + "/mcp/research", headers=base, json=initialize())
        assert opened.status_code == 200, opened.text
        headers = {**base, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        assert (await http.post(gw.base + "/mcp/research", headers=headers, json=listing)).status_code == 200
        elsewhere = await http.post(gw.url, headers=headers, json=listing)
        assert elsewhere.status_code == 404, elsewhere.text


@pytest.mark.parametrize("mode", MODES)
async def test_auth_rules_name_a_tool_an_endpoint_renames_by_its_catalogue_name(mode: str) -> None:
    """A deny rule on `b__add` holds on an endpoint that shows it as `plus`; a tool the rules allow
    stays listed under its new name."""
    ops = {
        **OPS,
        "overrides": {"b__add": {"name": "plus"}, "b__echo": {"name": "say"}},
        "auth": {"identities": ["bob"]},
    }
    cfg = gateway_config(ops)
    rules = [{"roles": ["ops"], "servers": ["b"]}, {"roles": ["ops"], "tools": ["b__add"], "effect": "deny"}]
    keys = [_key("bob", BOB, ["ops"])]
    cfg = cfg.model_copy(
        update={"middleware": [{"use": "auth", "options": {"api_keys": keys, "rules": rules}}]}
    )
    cfg = type(cfg).model_validate(cfg.model_dump())
    async with serve(cfg) as gw, sdk(gw.base + "/mcp/ops", BOB, mode) as client:
        names = await tool_names(client)
        assert "say" in names and "plus" not in names and "b__add" not in names
        with anyio.fail_after(WAIT), pytest.raises(MCPError) as refused:
            await client.call_tool("plus", {"a": 1, "b": 2})
        assert refused.value.error.message == "Unknown tool: plus"  # as a name it never had
        with anyio.fail_after(WAIT):
            assert text_of(await client.call_tool("say", {"text": "hi"})) == "b: hi"
