"""Backends of either revision behind the gateway, for clients of either revision: every case gives
what the same client gets from the backend directly (the gateway exposes names unchanged here).

Backends: our 2026-07-28-only server (stdio and streamable HTTP), `mcp-server-time` (both
revisions), and misbehave pinned to 2025-11-25. Clients: the `mcp` SDK's in 2025-11-25 and in
2026-07-28, and `fastmcp.Client`. A 2025-11-25 client cannot reach a 2026-07-28-only backend
directly; through the gateway it must get what a 2026-07-28 client gets directly.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp import StdioServerParameters
from mcp.client.subscriptions import ResourceUpdated
from pydantic import BaseModel

from tests._support import (
    MISBEHAVE,
    TIME_ARGS,
    TIME_SERVER,
    config,
    envelope,
    fastmcp_client,
    messages,
    modern,
    modern_http,
    rpc,
    serve,
    session,
    wait_until,
)

pytestmark = pytest.mark.anyio

CLIENTS = ("2025-11-25", "2026-07-28", "fastmcp")


def _dump(model: BaseModel) -> dict[str, Any]:
    """A result as a client compares it: the revision's envelope (`_meta` stamps, `resultType`)
    aside, which names the server answering (the gateway or the backend)."""
    data: dict[str, Any] = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    data.pop("_meta", None)
    data.pop("resultType", None)
    return data


@dataclass
class Driver:
    """One connected client, the same few calls whatever its library."""

    call: Callable[..., Awaitable[BaseModel]]
    list_page: Callable[[str | None], Awaitable[types.ListToolsResult]]
    get_prompt: Callable[[str, dict[str, str]], Awaitable[BaseModel]]
    read: Callable[[str], Awaitable[BaseModel]]
    complete: Callable[[types.PromptReference, dict[str, str]], Awaitable[types.CompleteResult]]
    logs: list[tuple[str, Any]] = field(default_factory=list)

    async def tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(20):
            page = await self.list_page(cursor)
            tools += [_dump(t) for t in page.tools]
            cursor = page.next_cursor
            if not cursor:
                break
        return sorted(tools, key=lambda t: t["name"])


@asynccontextmanager
async def driver(kind: str, target: str | StdioServerParameters) -> AsyncIterator[Driver]:
    logs: list[tuple[str, Any]] = []
    if kind == "fastmcp":
        from fastmcp.client.logging import LogMessage
        from fastmcp.client.transports import StdioTransport

        async def on_fast_log(message: LogMessage) -> None:
            logs.append((message.level, message.data))

        transport: Any = target
        if isinstance(target, StdioServerParameters):
            transport = StdioTransport(target.command, list(target.args))
        async with fastmcp_client(transport, log_handler=on_fast_log) as fast:

            async def fast_call(name: str, args: dict[str, Any], progress: Any = None) -> BaseModel:
                return await fast.call_tool_mcp(name, args, progress_handler=progress)

            yield Driver(
                call=fast_call,
                list_page=lambda cursor: fast.list_tools_mcp(cursor=cursor),
                get_prompt=lambda name, args: fast.get_prompt_mcp(name, args),
                read=fast.read_resource_mcp,
                complete=lambda ref, arg: fast.complete_mcp(ref, arg),
                logs=logs,
            )
        return

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append((params.level, params.data))

    mode: Any = "legacy" if kind == "2025-11-25" else kind
    # 2026-07-28 delivers logs only to a request that asks: this client asks for every level.
    level: Any = "debug" if kind == "2026-07-28" else None
    async with SdkClient(target, mode=mode, logging_callback=on_log, log_level=level) as client:

        async def sdk_call(name: str, args: dict[str, Any], progress: Any = None) -> BaseModel:
            return await client.call_tool(name, args, progress_callback=progress)

        yield Driver(
            call=sdk_call,
            list_page=lambda cursor: client.list_tools(cursor=cursor, cache_mode="bypass"),
            get_prompt=lambda name, args: client.get_prompt(name, args),
            read=client.read_resource,
            complete=lambda ref, arg: client.complete(ref, arg),
            logs=logs,
        )


async def _progress_call(d: Driver, name: str, args: dict[str, Any]) -> dict[str, Any]:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = _dump(await d.call(name, args, on_progress))
    return {"result": result, "progress": seen}


async def exercise_modern(d: Driver) -> dict[str, Any]:
    out: dict[str, Any] = {"tools": await d.tools()}
    out["echo"] = _dump(await d.call("echo", {"text": "hi"}))
    out["weather"] = _dump(await d.call("weather", {"city": "Oslo"}))
    out["count"] = await _progress_call(d, "count", {"n": 3})
    await wait_until(lambda: len(d.logs) >= 3, timeout=30)
    out["logs"] = list(d.logs)
    out["prompt"] = _dump(await d.get_prompt("greet", {"name": "ann"}))
    out["info"] = _dump(await d.read("modern://info"))
    out["item"] = _dump(await d.read("modern://item/7"))
    completed = await d.complete(
        types.PromptReference(type="ref/prompt", name="greet"), {"name": "name", "value": "al"}
    )
    out["complete"] = completed.completion.values
    return out


async def exercise_time(d: Driver) -> dict[str, Any]:
    args = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
    return {"tools": await d.tools(), "convert": _dump(await d.call("convert_time", args))}


async def exercise_misbehave(d: Driver) -> dict[str, Any]:
    out: dict[str, Any] = {"tools": await d.tools()}
    out["echo"] = _dump(await d.call("echo", {"text": "hi"}))
    out["add"] = _dump(await d.call("add", {"a": 2, "b": 3}))
    await d.call("log", {"level": "warning", "message": "disk almost full"})
    await wait_until(lambda: d.logs, timeout=30)
    out["logs"] = list(d.logs)
    out["prompt"] = _dump(await d.get_prompt("greet", {"name": "ann"}))
    out["hello"] = _dump(await d.read("misbehave://static/hello"))
    out["item"] = _dump(await d.read("misbehave://item/7"))
    return out


@dataclass
class Case:
    spec: Callable[[str | None], dict[str, Any]]  # the backend's config (given an HTTP URL, if any)
    exercise: Callable[[Driver], Awaitable[dict[str, Any]]]
    revision: str  # what the gateway speaks to it
    http: bool = False
    legacy_direct: bool = True  # whether a 2025-11-25 client can reach it directly


CASES = {
    "modern-stdio": Case(
        lambda url: modern(),
        exercise_modern,
        "2026-07-28",
        http=True,  # direct clients reach the same server over HTTP
        legacy_direct=False,
    ),
    "modern-http": Case(
        lambda url: {"url": url}, exercise_modern, "2026-07-28", http=True, legacy_direct=False
    ),
    "time": Case(lambda url: {"command": TIME_SERVER, "args": list(TIME_ARGS)}, exercise_time, "2026-07-28"),
    "misbehave-2025": Case(
        lambda url: {"command": sys.executable, "args": [MISBEHAVE], "protocol": "2025-11-25"},
        exercise_misbehave,
        "2025-11-25",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_every_client_gets_what_it_gets_directly(name: str) -> None:
    case = CASES[name]
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(modern_http()) if case.http else None
        spec = case.spec(url)
        direct_target: str | StdioServerParameters
        if url is not None:
            direct_target = url
        else:
            direct_target = StdioServerParameters(command=spec["command"], args=spec["args"])
        gw = await stack.enter_async_context(serve(config({"s": {**spec, "prefix": ""}})))
        backend = gw.fleet.backends["s"]
        assert backend.available, backend.last_error
        assert backend.protocol_version == case.revision
        for kind in CLIENTS:
            direct_kind = kind if case.legacy_direct or kind != "2025-11-25" else "2026-07-28"
            async with driver(direct_kind, direct_target) as d:
                expected = await case.exercise(d)
            async with driver(kind, gw.url) as d:
                got = await case.exercise(d)
            assert got == expected, f"{kind} client, {name} backend"


async def test_a_2025_client_sees_a_2026_backend_list_change() -> None:
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        serve(config({"s": modern(prefix="")})) as gw,
        SdkClient(gw.url, mode="legacy", message_handler=on_message) as client,
    ):
        assert "grown" not in {t.name for t in (await client.list_tools()).tools}
        await client.call_tool("grow", {})
        with anyio.fail_after(30):
            await changed.wait()
        assert "grown" in {t.name for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("kind", ["2025-11-25", "2026-07-28"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_client_cancelling_a_call_stops_it_at_the_2026_backend(kind: str, transport: str) -> None:
    """The gateway passes the cancellation on in the backend's revision: a notice on the pipe, the
    request's own HTTP stream closed on streamable HTTP."""
    async with AsyncExitStack() as stack:
        if transport == "stdio":
            spec: dict[str, Any] = modern()
        else:
            spec = {"url": await stack.enter_async_context(modern_http())}
        gw = await stack.enter_async_context(serve(config({"s": {**spec, "prefix": ""}})))
        client = await stack.enter_async_context(
            SdkClient(gw.url, mode="legacy" if kind == "2025-11-25" else kind)
        )
        backend = gw.fleet.backends["s"]
        with anyio.move_on_after(1):
            await client.call_tool("wait", {"seconds": 60})
        await wait_until(lambda: not backend.callers(), timeout=30)

        async def counted() -> int:
            result = await client.call_tool("cancellations", {})
            assert result.structured_content is not None
            return int(result.structured_content["result"])

        with anyio.fail_after(30):
            # The backend saw the cancellation and stopped the wait (its state, in another process).
            while await counted() < 1:  # noqa: ASYNC110 - polled over MCP, no event exists
                await anyio.sleep(0.1)


async def test_a_2026_backend_s_results_are_shaped_for_each_client_s_revision_on_the_wire() -> None:
    """A 2025-11-25 client sees no 2026-07-28 fields; a 2026-07-28 client sees the gateway's identity
    stamp, never the backend's."""
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("tools/call", "echo", {"name": "echo", "arguments": {"text": "x"}}),
        ("prompts/get", "greet", {"name": "greet", "arguments": {"name": "a"}}),
        ("resources/read", "modern://info", {"uri": "modern://info"}),
    ]
    spec = modern(prefix="")
    async with serve(config({"s": spec})) as gw, httpx.AsyncClient(trust_env=False, timeout=30) as http:
        async with session(http, gw.url) as headers:
            for method, _, params in calls:
                result = messages(await http.post(gw.url, headers=headers, json=rpc(method, params)))[0][
                    "result"
                ]
                assert not {"resultType", "ttlMs", "cacheScope", "_meta"} & set(result), (method, result)
        for method, name, params in calls:
            modern_headers = {
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2026-07-28",
                "mcp-method": method,
                "mcp-name": name,
            }
            body = rpc(method, {**params, "_meta": envelope()})
            result = messages(await http.post(gw.url, headers=modern_headers, json=body))[0]["result"]
            assert result["resultType"] == "complete", (method, result)
            assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-gateway", result


async def test_a_2026_backend_s_input_round_breaks_nothing() -> None:
    """Relaying input rounds is not this layer's work; here only: a 2026-07-28 client gets the round
    (the backend's own input keys), a 2025-11-25 client gets an answer at once, and the backend
    and both clients' next calls are unharmed."""
    modern_headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "ask",
    }
    spec = modern(prefix="")
    async with serve(config({"s": spec})) as gw, httpx.AsyncClient(trust_env=False, timeout=30) as http:
        meta = envelope(capabilities={"elicitation": {}})
        body = rpc("tools/call", {"name": "ask", "arguments": {}, "_meta": meta})
        answer = messages(await http.post(gw.url, headers=modern_headers, json=body))[0]
        assert answer["result"]["resultType"] == "input_required", answer
        assert set(answer["result"]["inputRequests"]) == {"who"}
        async with session(http, gw.url) as headers:
            with anyio.fail_after(30):
                legacy = await http.post(gw.url, headers=headers, json=rpc("tools/call", {"name": "ask"}))
            assert messages(legacy)[0]["id"] == 1  # answered (how: the input-round relay's to decide)
            echo = rpc("tools/call", {"name": "echo", "arguments": {"text": "after"}}, rid=2)
            again = messages(await http.post(gw.url, headers=headers, json=echo))[0]
            assert again["result"]["content"][0]["text"] == "after"
        assert gw.fleet.backends["s"].available


@pytest.mark.parametrize("kind", ["2025-11-25", "2026-07-28"])
async def test_resource_subscriptions_reach_a_2026_backend_s_listen_stream(kind: str) -> None:
    """2026-07-28 has no `resources/subscribe`: the backend session subscribes on a listen stream.
    A 2025-11-25 client subscribes as it always did; a 2026-07-28 client listens."""
    updated = anyio.Event()
    seen: list[str] = []

    async def on_message(message: object) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            seen.append(message.params.uri)
            if message.params.uri == "modern://info":
                updated.set()

    spec = modern(prefix="")
    async with serve(config({"s": spec})) as gw:
        if kind == "2025-11-25":
            async with SdkClient(gw.url, mode="legacy", message_handler=on_message) as client:
                await client.subscribe_resource("modern://info")
                await client.call_tool("touch", {"uri": "modern://other"})  # not subscribed: no news
                await client.call_tool("touch", {"uri": "modern://info"})
                with anyio.fail_after(30):
                    await updated.wait()
                assert seen == ["modern://info"]
                await client.unsubscribe_resource("modern://info")
        else:
            async with (
                SdkClient(gw.url, mode="2026-07-28") as client,
                client.listen(resource_subscriptions=["modern://info"]) as events,
            ):
                await client.call_tool("touch", {"uri": "modern://info"})
                with anyio.fail_after(30):
                    event = await events.__anext__()
                assert event == ResourceUpdated(uri="modern://info")


async def test_a_2025_client_s_log_level_applies_to_a_2026_backend() -> None:
    """2026-07-28 has no `logging/setLevel`: the level becomes the one the session asks for on
    each request, as a 2025-11-25 backend's own level would filter."""
    got: list[tuple[str, Any]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        got.append((params.level, params.data))

    spec = modern(prefix="")
    async with (
        serve(config({"s": spec})) as gw,
        SdkClient(gw.url, mode="legacy", logging_callback=on_log) as client,
    ):
        await client.set_logging_level("warning")
        await client.call_tool("count", {"n": 2})  # info lines, below the level: none sent
        assert got == []
        await client.set_logging_level("info")
        await client.call_tool("count", {"n": 2})
        await wait_until(lambda: len(got) >= 2, timeout=30)
        assert got == [("info", "counted 1"), ("info", "counted 2")]
