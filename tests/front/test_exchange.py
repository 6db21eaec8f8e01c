"""The exchange (`gateway/front/exchange.py`) answers exactly as the SDK's transport would.

Every request below goes over real HTTP to two gateways in front of the same kind of backend (our
misbehave server): the gateway, and its SDK reference (`serve(sdk_reference=True)`: the SDK's
transport dispatching to the same relay, as over stdio). Status, content type and JSON body must be
the same; then the exchange's own duties (SSE on progress, cancel on disconnect, routing what it
must not serve to the SDK) are checked one by one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import mcp.server.streamable_http_manager as manager_module
import pytest
from mcp import Client as SdkClient

from gateway._sdk import session_open
from tests._support import (
    MODERN,
    Running,
    config,
    envelope,
    messages,
    misbehave,
    rpc,
    serve,
    session,
    sse_messages,
    wait_until,
)

pytestmark = pytest.mark.anyio

VERSION = MODERN
ENVELOPE = envelope()


def post(
    method: str, params: dict[str, Any] | None = None, *, rid: int = 1, **headers: str
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a well-formed 2026-07-28 request (headers override, '' removes)."""
    p = dict(params or {})
    p["_meta"] = {**ENVELOPE, **p.get("_meta", {})}
    h = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": VERSION,
        "mcp-method": method,
    }
    if method in ("tools/call", "prompts/get") and "name" in p:
        h["mcp-name"] = p["name"]
    if method == "resources/read" and "uri" in p:
        h["mcp-name"] = p["uri"]
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    body = json.dumps(rpc(method, p, rid)).encode()
    return {k: v for k, v in h.items() if v}, body


CASES: dict[str, tuple[dict[str, str], bytes]] = {
    "tool call": post("tools/call", {"name": "mb__echo", "arguments": {"text": "hi"}}),
    "tool error result": post("tools/call", {"name": "mb__fail", "arguments": {}}),
    "unknown tool": post("tools/call", {"name": "mb__nope", "arguments": {}}),
    "params the schema refuses": post("tools/call", {"arguments": {}}, mcp_name=""),
    "Mcp-Name not the body's": post(
        "tools/call", {"name": "mb__echo", "arguments": {"text": "x"}}, mcp_name="x"
    ),
    "tools/list": post("tools/list"),
    "prompts/list": post("prompts/list"),
    "resources/list": post("resources/list"),
    "templates": post("resources/templates/list"),
    "prompt": post("prompts/get", {"name": "mb__greet", "arguments": {"name": "Ada"}}),
    "resource": post("resources/read", {"uri": "mb+misbehave://static/hello"}),
    "string id": (post("tools/list")[0], post("tools/list")[1].replace(b'"id": 1', b'"id": "abc"')),
    "not JSON": (post("tools/list")[0], b"{nope"),
    "a batch": (post("tools/list")[0], b"[" + post("tools/list")[1] + b"]"),
    "JSON only accepted": post("tools/list", accept="application/json"),
    "foreign Host": post("tools/list", host="evil.example"),
    "wrong content type": post("tools/list", content_type="text/plain"),
    "a notification": (
        post("tools/list")[0],
        json.dumps(
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
        ).encode(),
    ),
}


@asynccontextmanager
async def gateways() -> AsyncIterator[tuple[Running, Running]]:
    cfg = config({"mb": misbehave()})
    async with serve(cfg) as fast, serve(cfg, sdk_reference=True) as sdk:
        yield fast, sdk


def answer(resp: httpx.Response) -> tuple[int, str, Any]:
    """What an answer says (status, content type, body as JSON where it is JSON): a readable diff
    when two answers differ."""
    kind = resp.headers.get("content-type", "")
    return resp.status_code, kind, resp.json() if kind.startswith("application/json") else resp.text


async def test_the_exchange_answers_byte_for_byte_like_the_sdk() -> None:
    async with gateways() as (fast, sdk), httpx.AsyncClient(timeout=10) as http:
        for name, (headers, body) in CASES.items():
            ours = await http.post(fast.url, headers=headers, content=body)
            theirs = await http.post(sdk.url, headers=headers, content=body)
            assert answer(ours) == answer(theirs), name  # the same status, content type and body...
            assert ours.content == theirs.content, name  # ...in the same bytes: key order, separators


async def test_the_exchange_serves_every_relayed_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    # The manager imports it without re-exporting it: take it from where it is defined, patch it
    # where the manager looks it up.
    from mcp.server._streamable_http_modern import handle_modern_request as original

    async def counting(*args: Any) -> None:
        seen.append("sdk")
        await original(*args)

    monkeypatch.setattr(manager_module, "handle_modern_request", counting)
    async with serve(config({"mb": misbehave()})) as gw:
        async with SdkClient(gw.url, mode=VERSION) as client:
            result = await client.call_tool("mb__echo", {"text": "fast"})
            assert result.structured_content == {"text": "misbehave: fast"}
            await client.list_tools()
            assert seen == []  # the call and the listing were the exchange's

        # A client that can answer a backend's question is served the same way: the relay turns
        # a question into an input round (`_inputs`), whatever the front.
        async def sampling(context: Any, params: Any) -> Any:
            raise AssertionError("not asked")  # pragma: no cover

        async with SdkClient(gw.url, mode=VERSION, sampling_callback=sampling) as client:
            await client.call_tool("mb__echo", {"text": "answerable"})
        assert seen == []


async def test_progress_turns_the_answer_into_an_event_stream() -> None:
    headers, body = post(
        "tools/call", {"name": "mb__sleep", "arguments": {"seconds": 0.35}, "_meta": {"progressToken": "p-1"}}
    )
    async with gateways() as (fast, sdk), httpx.AsyncClient(timeout=10) as http:
        for gw in (fast, sdk):
            resp = await http.post(gw.url, headers=headers, content=body)
            assert resp.headers["content-type"] == "text/event-stream"
            *progress, last = sse_messages(resp)
            assert progress, "no progress notification reached the client"
            assert {e["method"] for e in progress} == {"notifications/progress"}
            assert {e["params"]["progressToken"] for e in progress} == {"p-1"}
            assert last["id"] == 1 and last["result"]["resultType"] == "complete"


async def test_a_client_that_hangs_up_cancels_its_call_at_the_backend() -> None:
    headers, body = post("tools/call", {"name": "mb__hang", "arguments": {}})
    async with serve(config({"mb": misbehave()})) as gw:
        backend = gw.fleet.backends["mb"]
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(gw.url, headers=headers, content=body)
        await wait_until(lambda: not backend.callers(), timeout=5)
        async with httpx.AsyncClient(timeout=10) as http:
            headers, body = post("tools/call", {"name": "mb__echo", "arguments": {"text": "after"}})
            resp = await http.post(gw.url, headers=headers, content=body)
        assert resp.json()["result"]["structuredContent"] == {"text": "misbehave: after"}


async def test_an_oversized_body_is_refused_like_the_sdk_does() -> None:
    headers, _ = post("tools/list")
    huge = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": "a" * (5 * 2**20)}})
    async with gateways() as (fast, sdk), httpx.AsyncClient(timeout=10) as http:

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit is met mid-body
            for i in range(0, len(huge), 2**16):
                yield huge[i : i + 2**16].encode()

        for gw in (fast, sdk):
            resp = await http.post(gw.url, headers=headers, content=chunked())
            assert (resp.status_code, resp.text) == (413, "Request body too large")


async def test_backend_logs_reach_a_client_that_opted_in_on_that_request() -> None:
    call = {"name": "mb__log", "arguments": {"level": "warning", "message": "disk almost full"}}
    opted_in = post("tools/call", {**call, "_meta": {"io.modelcontextprotocol/logLevel": "info"}})
    silent = post("tools/call", call)
    async with gateways() as (fast, sdk), httpx.AsyncClient(timeout=10) as http:
        for gw in (fast, sdk):
            resp = await http.post(gw.url, headers=opted_in[0], content=opted_in[1])
            assert resp.headers["content-type"] == "text/event-stream"
            *logs, last = sse_messages(resp)
            assert [m["method"] for m in logs] == ["notifications/message"]
            assert logs[0]["params"]["level"] == "warning" and logs[0]["params"]["logger"].startswith("mb")
            assert "disk almost full" in json.dumps(logs[0]["params"]["data"])
            assert last["result"]["content"][0]["text"] == "logged"
            # 2026-07-28 logging is opt-in per request: without it, nothing but the answer.
            resp = await http.post(gw.url, headers=silent[0], content=silent[1])
            assert resp.headers["content-type"] == "application/json"
            assert resp.json()["result"]["content"][0]["text"] == "logged"


async def test_a_long_silent_call_keeps_its_stream_alive_with_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp.server import _streamable_http_modern

    from gateway import _sdk

    monkeypatch.setattr(_sdk, "SSE_PING_INTERVAL", 0.2)  # the exchange's interval
    monkeypatch.setattr(_streamable_http_modern, "_SSE_PING_INTERVAL", 0.2)  # the SDK's
    headers, body = post("tools/call", {"name": "mb__sleep", "arguments": {"seconds": 0.7}})
    async with gateways() as (fast, sdk), httpx.AsyncClient(timeout=10) as http:
        for gw in (fast, sdk):
            resp = await http.post(gw.url, headers=headers, content=body)
            assert resp.headers["content-type"] == "text/event-stream"
            assert resp.text.count(": ping") >= 2, resp.text
            (last,) = sse_messages(resp)
            assert last["id"] == 1 and last["result"]["resultType"] == "complete"


# -- 2025-11-25 sessions ---------------------------------------------------------------------------

LEGACY_CASES = {
    "tool call": rpc("tools/call", {"name": "mb__echo", "arguments": {"text": "hi"}}),
    "tool error result": rpc("tools/call", {"name": "mb__fail", "arguments": {}}),
    "unknown tool": rpc("tools/call", {"name": "mb__nope", "arguments": {}}),
    "params the schema refuses": rpc("tools/call", {"arguments": {}}),
    "tools/list": rpc("tools/list"),
    "prompt": rpc("prompts/get", {"name": "mb__greet", "arguments": {"name": "Ada"}}),
    "resource": rpc("resources/read", {"uri": "mb+misbehave://static/hello"}),
}


@pytest.fixture
def through_sdk(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Grows by one for every POST the SDK's transport handles."""
    from mcp.server.streamable_http import StreamableHTTPServerTransport

    posts: list[str] = []
    original = StreamableHTTPServerTransport._handle_post_request

    async def counting(self: Any, scope: Any, request: Any, receive: Any, send: Any) -> None:
        posts.append("post")
        await original(self, scope, request, receive, send)

    monkeypatch.setattr(StreamableHTTPServerTransport, "_handle_post_request", counting)
    return posts


async def test_a_sessions_calls_are_answered_like_the_sdk_does(through_sdk: list[str]) -> None:
    async with (
        gateways() as (fast, sdk),
        httpx.AsyncClient(timeout=10) as http,
        session(http, fast.url) as ours,
        session(http, sdk.url) as theirs,
    ):
        # Learned from `notifications/initialized` (handled after its 202), at the latest from this.
        await http.post(fast.url, headers=ours, json=rpc("tools/list"))
        for name, body in LEGACY_CASES.items():
            before = len(through_sdk)
            mine = messages(await http.post(fast.url, headers=ours, json=body))
            # Served by the exchange, except what the SDK must refuse in its own words.
            assert len(through_sdk) - before == (name == "params the schema refuses"), name
            sdk_answer = messages(await http.post(sdk.url, headers=theirs, json=body))
            assert mine == sdk_answer, name


async def test_a_session_is_served_hot_from_its_first_request(through_sdk: list[str]) -> None:
    async with serve(config({"mb": misbehave()})) as gw, httpx.AsyncClient(timeout=10) as http:
        sessions = gw.app.state.exchange.sessions
        async with session(http, gw.url) as headers:
            # Learned from `notifications/initialized`, which the SDK handles after its 202.
            await wait_until(lambda: headers["mcp-session-id"] in sessions, timeout=5)
            before = len(through_sdk)
            first = messages(await http.post(gw.url, headers=headers, json=LEGACY_CASES["tool call"]))
            assert len(through_sdk) == before
            assert first[0]["result"]["structuredContent"] == {"text": "misbehave: hi"}


@pytest.mark.parametrize("named", [9, "9"], ids=["int", "string"])  # one id to the SDK too
async def test_a_session_cancels_an_exchange_call_with_a_notification(named: int | str) -> None:
    async with serve(config({"mb": misbehave()})) as gw, httpx.AsyncClient(timeout=10) as http:
        backend = gw.fleet.backends["mb"]
        async with session(http, gw.url) as headers:
            await http.post(gw.url, headers=headers, json=rpc("tools/list"))  # learned

            answers: list[httpx.Response] = []

            async def call() -> None:
                hang = rpc("tools/call", {"name": "mb__hang"}, rid=9)
                answers.append(await http.post(gw.url, headers=headers, json=hang))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await wait_until(backend.callers, timeout=5)
                cancel = {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": named},
                }
                assert (await http.post(gw.url, headers=headers, json=cancel)).status_code == 202
            # No answer is owed to a cancelled request; the backend was told, and is free again.
            assert answers[0].status_code == 200 and messages(answers[0]) == []
            assert not backend.callers()
            echo = messages(await http.post(gw.url, headers=headers, json=LEGACY_CASES["tool call"]))
            assert echo[0]["result"]["structuredContent"] == {"text": "misbehave: hi"}


async def test_a_closed_session_is_left_to_the_sdk() -> None:
    async with serve(config({"mb": misbehave()})) as gw, httpx.AsyncClient(timeout=10) as http:
        async with session(http, gw.url) as headers:
            await http.post(gw.url, headers=headers, json=rpc("tools/list"))  # learned
        # `session()` deleted it: the SDK's transport answers, as for any unknown session.
        resp = await http.post(gw.url, headers=headers, json=LEGACY_CASES["tool call"])
        assert resp.status_code == 404


async def test_a_session_used_only_by_the_exchange_does_not_expire_as_idle(through_sdk: list[str]) -> None:
    """The SDK's idle expiry counts requests its transport serves; the exchange's count too: a
    session busy with hot-path calls stays open past `session_idle_timeout`, then expires once
    it is left alone; its id stays good, so its next request restores it."""
    idle = 2.0
    cfg = config({"mb": misbehave()}, listen={"session_idle_timeout": idle})
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=10) as http, session(http, gw.url) as headers:
        await http.post(gw.url, headers=headers, json=rpc("tools/list"))  # learned
        before = len(through_sdk)
        began = anyio.current_time()
        while anyio.current_time() - began < idle * 2.5:
            resp = await http.post(gw.url, headers=headers, json=LEGACY_CASES["tool call"])
            assert resp.status_code == 200, resp.text
            await anyio.sleep(idle / 8)  # busy, never idle for long
        assert len(through_sdk) == before  # every call was the exchange's
        # Left alone, it expires (bounded wait).
        await wait_until(
            lambda: not session_open(gw.app.state.sessions, headers["mcp-session-id"]), timeout=60
        )
        again = await http.post(gw.url, headers=headers, json=LEGACY_CASES["tool call"])
        assert again.status_code == 200, again.text
        assert session_open(gw.app.state.sessions, headers["mcp-session-id"])
