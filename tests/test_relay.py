"""End to end: real clients over real HTTP, through the gateway, to real backends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from gateway.errors import BACKEND_UNAVAILABLE
from tests._support import config as make_config
from tests._support import fastmcp_client, misbehave, serve, serve_asgi, text_of, time_server, wait_until

pytestmark = pytest.mark.anyio


def fleet(**extra: Any) -> Any:
    return make_config({"time": time_server(), "mb": misbehave("--name", "mb"), **extra})


async def test_tools_are_namespaced_and_carry_structured_content() -> None:
    async with serve(fleet()) as gw, fastmcp_client(gw.url) as client:
        names = {t.name for t in await client.list_tools()}
        assert {"time__get_current_time", "time__convert_time", "mb__echo", "mb__sleep"} <= names
        echo = next(t for t in await client.list_tools() if t.name == "mb__echo")
        assert echo.output_schema is not None
        result = await client.call_tool("mb__echo", {"text": "hi"})
        assert result.structured_content == {"text": "mb: hi"}
        assert text_of(result) == "mb: hi"
        now = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert now.structured_content is not None and now.structured_content["timezone"] == "UTC"


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_sdk_client_both_protocol_revisions(mode: str) -> None:
    async with serve(fleet()) as gw, SdkClient(gw.url, mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        tools = await client.list_tools()
        assert "mb__add" in {t.name for t in tools.tools}
        result = await client.call_tool("mb__add", {"a": 2, "b": 3})
        assert isinstance(result, types.CallToolResult)
        assert text_of(result) == "5"
        failed = await client.call_tool("mb__fail", {})
        assert failed.is_error is True


async def test_unknown_tool_is_invalid_params() -> None:
    async with serve(fleet()) as gw, SdkClient(gw.url, mode="legacy") as client:
        with pytest.raises(MCPError) as err:
            await client.call_tool("nope__nothing", {})
        assert err.value.code == types.INVALID_PARAMS


async def test_progress_is_relayed_to_the_calling_client() -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with serve(fleet()) as gw, fastmcp_client(gw.url) as client:
        with anyio.fail_after(20):
            await client.call_tool("mb__sleep", {"seconds": 0.5}, progress_handler=on_progress)
    assert len(seen) >= 3
    assert seen == sorted(seen)


async def test_resources_and_templates_are_namespaced_and_read_back() -> None:
    async with serve(fleet()) as gw, fastmcp_client(gw.url) as client:
        uris = {str(r.uri) for r in await client.list_resources()}
        assert "mb+misbehave://static/hello" in uris
        templates = {t.uri_template for t in await client.list_resource_templates()}
        assert "mb+misbehave://item/{id}" in templates
        contents = await client.read_resource("mb+misbehave://static/hello")
        assert str(contents[0].uri) == "mb+misbehave://static/hello"
        item = await client.read_resource("mb+misbehave://item/42")
        assert isinstance(item[0], types.TextResourceContents)
        assert "42" in item[0].text


async def test_prompts_are_namespaced() -> None:
    async with serve(fleet()) as gw, fastmcp_client(gw.url) as client:
        assert "mb__greet" in {p.name for p in await client.list_prompts()}
        prompt = await client.get_prompt("mb__greet", {"name": "Ada"})
        greeting = prompt.messages[0].content
        assert isinstance(greeting, types.TextContent)
        assert "Ada" in greeting.text


async def test_prefix_override_and_empty_prefix() -> None:
    cfg = make_config({"t": time_server(prefix="clock"), "mb": misbehave(prefix="")})
    async with serve(cfg) as gw, fastmcp_client(gw.url) as client:
        names = {t.name for t in await client.list_tools()}
        assert "clock__get_current_time" in names
        assert "echo" in names and "mb__echo" not in names
        assert (
            str((await client.read_resource("misbehave://static/hello"))[0].uri) == "misbehave://static/hello"
        )


async def test_tool_filter_hides_tools() -> None:
    cfg = make_config({"mb": misbehave(tools={"allow": ["e*", "add"], "deny": ["env"]})})
    async with serve(cfg) as gw, fastmcp_client(gw.url) as client:
        assert {t.name for t in await client.list_tools()} == {"mb__echo", "mb__add"}
        with pytest.raises(Exception, match="Unknown tool"):
            await client.call_tool("mb__fail", {})


async def test_concurrent_calls_are_multiplexed_not_serialized() -> None:
    async with serve(fleet()) as gw, fastmcp_client(gw.url) as client:
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(client.call_tool, "mb__sleep", {"seconds": 1.0})
        # Serialized this would take 5 s; multiplexed on one backend session, about 1 s.
        assert anyio.current_time() - start < 3.5


async def test_list_changed_from_a_backend_refreshes_the_catalogue_and_reaches_clients() -> None:
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with serve(fleet()) as gw, SdkClient(gw.url, mode="legacy", message_handler=on_message) as client:
        assert "mb__extra" not in {t.name for t in (await client.list_tools()).tools}
        await client.call_tool("mb__change_tools", {})
        with anyio.fail_after(10):
            await changed.wait()
        assert "mb__extra" in {t.name for t in (await client.list_tools()).tools}


async def test_backend_log_notifications_reach_the_client() -> None:
    got: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        got.append(params)

    async with serve(fleet()) as gw, SdkClient(gw.url, mode="legacy", logging_callback=on_log) as client:
        await client.call_tool("mb__log", {"level": "warning", "message": "disk almost full"})
        await wait_until(lambda: got, timeout=5)
    assert got[0].level == "warning"
    assert "disk almost full" in str(got[0].data)
    assert got[0].logger is not None and got[0].logger.startswith("mb")


async def test_cancellation_reaches_the_backend() -> None:
    async with serve(fleet()) as gw, SdkClient(gw.url, mode="legacy") as client:
        with anyio.move_on_after(0.5):
            await client.call_tool("mb__sleep", {"seconds": 30})
        # The backend saw notifications/cancelled and freed the call: nothing stays in flight.
        await wait_until(lambda: not gw.fleet.backends["mb"].callers(), timeout=5)
        assert (await client.call_tool("mb__echo", {"text": "still here"})).is_error is not True


async def test_per_client_sessions_give_each_client_its_own_backend_process() -> None:
    cfg = make_config({"mb": misbehave(session="per-client")})
    async with serve(cfg) as gw:
        pids = set()
        for _ in range(2):
            async with SdkClient(gw.url, mode="legacy") as client:
                a = await client.call_tool("mb__pid", {})
                b = await client.call_tool("mb__pid", {})
                assert a.structured_content == b.structured_content  # same session within a client
                assert a.structured_content is not None
                pids.add(a.structured_content["pid"])
        assert len(pids) == 2


async def test_shared_session_is_one_process_for_all_clients() -> None:
    async with serve(fleet()) as gw:
        pids = set()
        for _ in range(2):
            async with SdkClient(gw.url, mode="legacy") as client:
                result = await client.call_tool("mb__pid", {})
                assert result.structured_content is not None
                pids.add(result.structured_content["pid"])
        assert len(pids) == 1


async def test_modern_clients_hear_list_changes_on_their_listen_stream() -> None:
    from mcp.server.subscriptions import ToolsListChanged

    async with serve(fleet()) as gw, SdkClient(gw.url, mode="2026-07-28") as client:
        async with client.listen(tools_list_changed=True) as subscription:
            assert subscription.honored.tools_list_changed
            await client.call_tool("mb__change_tools", {})
            with anyio.fail_after(10):
                event = await subscription.__anext__()
            assert isinstance(event, ToolsListChanged)
        assert "mb__extra" in {t.name for t in (await client.list_tools()).tools}


async def test_client_credentials_are_never_forwarded_to_backends() -> None:
    """An HTTP backend of our own records every header it receives; the client's never arrive."""
    import httpx2
    from fastmcp import FastMCP
    from fastmcp.server.dependencies import get_http_headers
    from mcp.client.streamable_http import streamable_http_client

    seen: list[dict[str, str]] = []
    backend = FastMCP("recorder")

    @backend.tool
    def whoami() -> str:
        seen.append(get_http_headers(include_all=True))
        return "recorded"

    async with serve_asgi(backend.http_app()) as backend_url:
        cfg = make_config({"rec": {"url": f"{backend_url}/mcp"}})
        headers = {"Authorization": "Bearer client-secret-token", "Cookie": "session=abc", "X-Api-Key": "k"}
        async with (
            serve(cfg) as gw,
            httpx2.AsyncClient(headers=headers) as http,
            SdkClient(streamable_http_client(gw.url, http_client=http), mode="legacy") as client,
        ):
            result = await client.call_tool("rec__whoami", {})
    assert text_of(result) == "recorded"
    received = {k.lower(): v for k, v in seen[0].items()}
    assert "authorization" not in received and "cookie" not in received and "x-api-key" not in received
    assert "client-secret-token" not in str(received)


async def test_per_client_sessions_for_stateless_clients_follow_the_identity() -> None:
    # 2026-07-28 clients have no session: each request is a new connection, but one identity must
    # keep one backend session (not a new process per request).
    cfg = make_config({"mb": misbehave(session="per-client")})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="2026-07-28") as client:
        first = await client.call_tool("mb__pid", {})
        second = await client.call_tool("mb__pid", {})
        assert first.structured_content is not None and second.structured_content is not None
        assert first.structured_content["pid"] == second.structured_content["pid"]


async def _refusal(call: Awaitable[object]) -> MCPError:
    with pytest.raises(MCPError) as err:
        await call
    return err.value


async def test_a_down_backends_names_get_backend_unavailable_and_unknown_names_no_hints() -> None:
    """While a backend restarts (`restart: always`) and once it has failed for good (`max_restarts`),
    calls on its tools, prompts and resources get -32010 naming it and its state, never -32602; a
    name no backend ever had gets -32602 and nothing about servers that have nothing to do with it."""
    cfg = make_config(
        {
            "storm": misbehave("--name", "storm", restart="always", backoff=[3.0, 3.0], max_restarts=50),
            "doomed": misbehave("--name", "doomed", restart="always", backoff=[0.1, 0.1], max_restarts=1),
        }
    )
    errors: list[MCPError] = []
    in_backoff: list[str] = []

    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        storm, doomed = gw.fleet.backends["storm"], gw.fleet.backends["doomed"]

        async def traffic() -> None:
            # Every kind of name on the crashing backend, all along the storm.
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: client.call_tool("storm__echo", {"text": "x"}),
                lambda: client.get_prompt("storm__greet", {"name": "x"}),
                lambda: client.read_resource("storm+misbehave://static/hello"),
                lambda: client.read_resource("storm+misbehave://item/7"),
            ]
            while True:
                for call in calls:
                    try:
                        await call()
                    except MCPError as exc:
                        errors.append(exc)
                await anyio.sleep(0.05)

        with anyio.fail_after(180):
            async with anyio.create_task_group() as tg:
                tg.start_soon(traffic)
                for _ in range(3):
                    await wait_until(lambda: storm.available, timeout=60, interval=0.05)
                    crashed = await _refusal(client.call_tool("storm__crash", {}))
                    assert crashed.code == BACKEND_UNAVAILABLE
                    await wait_until(lambda: storm.state.value != "running", timeout=30, interval=0.02)
                    if storm.state.value == "backoff":  # 2.4 s at least: a call lands in it
                        down = await _refusal(client.call_tool("storm__echo", {"text": "x"}))
                        assert down.code == BACKEND_UNAVAILABLE, down
                        in_backoff.append(down.message)
                        unknown = await _refusal(client.call_tool("nothing__here", {}))
                        assert (unknown.code, unknown.message) == (
                            INVALID_PARAMS,
                            "Unknown tool: nothing__here",
                        )
                await wait_until(lambda: storm.available, timeout=60, interval=0.05)
                tg.cancel_scope.cancel()

            # max_restarts: 1 -> the second crash in a row opens the circuit.
            assert (await _refusal(client.call_tool("doomed__crash", {}))).code == BACKEND_UNAVAILABLE
            await wait_until(lambda: doomed.restarts == 1 and doomed.available, timeout=60, interval=0.05)
            assert (await _refusal(client.call_tool("doomed__crash", {}))).code == BACKEND_UNAVAILABLE
            await wait_until(lambda: doomed.state.value == "failed", timeout=30, interval=0.05)

        assert "storm__echo" in {t.name for t in (await client.list_tools()).tools}
        assert not [t for t in (await client.list_tools()).tools if t.name.startswith("doomed__")]
        for call in (
            client.call_tool("doomed__echo", {"text": "x"}),
            client.get_prompt("doomed__greet", {"name": "x"}),
            client.read_resource("doomed+misbehave://static/hello"),
            client.read_resource("doomed+misbehave://item/7"),
            client.complete(
                types.PromptReference(type="ref/prompt", name="doomed__greet"), {"name": "name", "value": ""}
            ),
        ):
            failed = await _refusal(call)
            assert failed.code == BACKEND_UNAVAILABLE, failed
            assert "'doomed' is failed" in failed.message and "admin must start it" in failed.message
            assert "starting" not in failed.message
        unknown = await _refusal(client.call_tool("nothing__here", {}))
        assert (unknown.code, unknown.message) == (INVALID_PARAMS, "Unknown tool: nothing__here")
        assert (await _refusal(client.get_prompt("nothing__here"))).message == "Unknown prompt: nothing__here"

    assert in_backoff, "no call landed while the backend was in backoff"
    assert all("'storm' is backoff" in message for message in in_backoff), in_backoff
    assert errors, "the traffic never met the backend down"
    wrong = [
        (e.code, e.message) for e in errors if e.code != BACKEND_UNAVAILABLE or "'storm'" not in e.message
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("sdk_reference", [False, True], ids=["exchange", "sdk-reference"])
async def test_a_resolved_secret_is_masked_in_results_and_errors_on_both_paths(
    sdk_reference: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "cobalt-meadow-tinsel-harp"  # looks like nothing: only masking by value can catch it
    monkeypatch.setenv("RELAY_TEST_SECRET", secret)
    cfg = make_config({"mb": misbehave(env={"TOKEN": "${env:RELAY_TEST_SECRET}"})})
    async with serve(cfg, sdk_reference=sdk_reference) as gw, SdkClient(gw.url, mode="legacy") as client:
        result = await client.call_tool("mb__env", {"name": "TOKEN"})
        assert result.structured_content == {"name": "TOKEN", "value": "[secret:RELAY_TEST_SECRET]"}
        assert text_of(result) == "[secret:RELAY_TEST_SECRET]"
        with pytest.raises(MCPError) as err:
            await client.call_tool("mb__env", {"name": "TOKEN", "error": True})
        assert err.value.error.message == "cannot use TOKEN=[secret:RELAY_TEST_SECRET]"
        assert err.value.error.data == {"name": "TOKEN", "value": "[secret:RELAY_TEST_SECRET]"}
        echoed = await client.call_tool("mb__echo", {"text": f"it is {secret}"})  # sent by the client
        assert echoed.structured_content == {"text": "misbehave: it is [secret:RELAY_TEST_SECRET]"}


async def test_a_resolved_secret_is_masked_in_progress_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    # misbehave's progress says "slept 0.1s of 0.4s": make its tail a secret the server was handed.
    monkeypatch.setenv("RELAY_PROGRESS_SECRET", "s of 0.4s")
    cfg = make_config({"mb": misbehave(env={"TOKEN": "${env:RELAY_PROGRESS_SECRET}"})})
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async with serve(cfg) as gw, fastmcp_client(gw.url) as client:
        with anyio.fail_after(20):
            await client.call_tool("mb__sleep", {"seconds": 0.4}, progress_handler=on_progress)
    assert messages and all("of 0.4s" not in m for m in messages)
    assert any(m.endswith("[secret:RELAY_PROGRESS_SECRET]") for m in messages)
