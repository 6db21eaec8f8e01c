"""2025-11-25 sessions on any replica: two gateway apps sharing a real `redis-server` and the same
`state.keys`, each request of one session landing on either.

The clients are real (the `mcp` SDK client in 2025-11-25 mode, raw httpx where the test must
choose the replica of each request); `RoundRobin` sends each of a client's HTTP requests to the
next replica, as a balancer without affinity does (the HAProxy suite, tests/test_replicas.py,
does it with a real balancer and processes).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT

from gateway._sdk import session_open
from tests._infra import Redis
from tests._support import LEGACY, Running, config, messages, misbehave, rpc, serve, session
from tests._support import wait_until as wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

WAIT = 60.0  # generous: a loaded 2-core machine
KEY = "k" * 32


@asynccontextmanager
async def replicas(redis: Redis, *flags: str, **extra: Any) -> AsyncIterator[tuple[Running, Running]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        running = []
        for name in ("gw-a", "gw-b"):
            cfg = config(
                {"mb": misbehave(*flags, **extra)},
                cluster={"redis": redis.url, "key_prefix": prefix, "replica_id": name},
                state={"keys": [KEY]},
            )
            gw = await stack.enter_async_context(serve(cfg))
            with anyio.fail_after(WAIT):
                await gw.fleet.cluster.bus().connected.wait()
            running.append(gw)
        yield running[0], running[1]


class RoundRobin(httpx2.AsyncBaseTransport):
    """Each request to the next replica's port (the `Host` header stays the first's)."""

    def __init__(self, *ports: int) -> None:
        self._next = itertools.cycle(ports)
        self._inner = httpx2.AsyncHTTPTransport()
        self.landed: list[tuple[str, int]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self._next)
        request.url = request.url.copy_with(port=port)
        self.landed.append((request.method, port))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def port_of(gw: Running) -> int:
    return int(gw.base.rsplit(":", 1)[1])


async def sampling(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="4"), model="test-model"
    )


async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def test_an_sdk_client_session_is_served_by_every_replica(redis: Redis) -> None:
    """Every request of the session on the other replica than the last: listing, calls, progress,
    and a backend's questions answered (the answer lands on the replica not running the call);
    the session's DELETE ends it on both."""
    # A backend of the handshake era asks mid-call (a 2026-07-28 one would return input rounds).
    async with replicas(redis, "--ask", protocol=LEGACY) as (a, b):
        balancer = RoundRobin(port_of(a), port_of(b))
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        reported: ProgressFnT = on_progress

        async with httpx2.AsyncClient(transport=balancer, timeout=30) as http:
            transport = streamable_http_client(a.url, http_client=http)
            async with SdkClient(
                transport, mode="legacy", sampling_callback=sampling, elicitation_callback=elicitation
            ) as client:
                with anyio.fail_after(WAIT):
                    tools = await client.list_tools()
                    assert "mb__ask" in {t.name for t in tools.tools}
                    for i in range(4):
                        echo = await client.call_tool("mb__echo", {"text": f"hi {i}"})
                        assert echo.structured_content == {"text": f"misbehave: hi {i}"}
                    asked = await client.call_tool("mb__ask", {"kinds": ["sampling", "elicitation"]})
                    slept = await client.call_tool("mb__sleep", {"seconds": 0.2}, progress_callback=reported)
            answers = (asked.structured_content or {})["answers"]
            assert [a_.get("result", a_) for a_ in answers] == [
                {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "test-model"},
                {"action": "accept", "content": {"name": "Ada"}},
            ]
            assert "slept" in str(slept.content) and seen and seen[-1] == 0.2
        # Both replicas served the session (each restored it from its id alone).
        assert {port for method, port in balancer.landed if method == "POST"} == {port_of(a), port_of(b)}
        opened = [a.app.state.sessions, b.app.state.sessions]
        # The client's DELETE on closing: neither replica holds it, nor restores it.
        with anyio.fail_after(WAIT):
            await wait_for(lambda: all(not m._server_instances for m in opened), timeout=WAIT)


async def test_a_session_deleted_on_one_replica_is_gone_on_the_other(redis: Redis) -> None:
    async with replicas(redis) as (a, b), httpx.AsyncClient(timeout=30) as http:
        async with session(http, a.url) as headers:
            first = messages(await http.post(b.url, headers=headers, json=rpc("tools/call", _echo("one"))))
            assert first[0]["result"]["structuredContent"] == {"text": "misbehave: one"}
            sid = headers["mcp-session-id"]
            assert session_open(a.app.state.sessions, sid) and session_open(b.app.state.sessions, sid)
        # `session()` sent DELETE to replica a: b lets go of its copy, and neither restores it.
        with anyio.fail_after(WAIT):
            await wait_for(lambda: not session_open(b.app.state.sessions, sid), timeout=WAIT)
        for gw in (a, b):
            resp = await http.post(gw.url, headers=headers, json=rpc("tools/call", _echo("two")))
            assert resp.status_code == 404, resp.text


async def test_a_session_id_is_bound_to_its_keys_and_its_owner(redis: Redis) -> None:
    """An id another gateway sealed (other keys), a forged one and a tampered one are unknown."""
    async with (
        replicas(redis) as (a, b),
        httpx.AsyncClient(timeout=30) as http,
        session(http, a.url) as headers,
    ):
        if True:
            sid = headers["mcp-session-id"]
            assert len(sid) < 1024 and sid.isascii() and all(0x21 <= ord(c) <= 0x7E for c in sid)
            tampered = sid[:-2] + ("AA" if sid[-2:] != "AA" else "BB")
            for forged in (tampered, uuid.uuid4().hex, "v1." + "A" * 200):
                resp = await http.post(
                    b.url, headers={**headers, "mcp-session-id": forged}, json=rpc("tools/list")
                )
                assert resp.status_code == 404, forged


async def test_a_cancellation_sent_to_another_replica_reaches_the_call(redis: Redis) -> None:
    async with replicas(redis) as (a, b), httpx.AsyncClient(timeout=30) as http:
        backend = a.fleet.backends["mb"]
        async with session(http, a.url) as headers:
            answers: list[httpx.Response] = []

            async def call() -> None:
                answers.append(
                    await http.post(
                        a.url, headers=headers, json=rpc("tools/call", {"name": "mb__hang"}, rid=9)
                    )
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await wait_for(backend.callers, timeout=WAIT)
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}
                assert (await http.post(b.url, headers=headers, json=cancel)).status_code == 202
            assert answers[0].status_code == 200 and messages(answers[0]) == []
            assert not backend.callers()


async def test_a_resource_update_reaches_the_get_stream_on_another_replica(redis: Redis) -> None:
    """Subscribed and changed through replica a; the session's GET stream is open on b; the
    unsubscription, sent to b, reaches a."""
    async with (
        replicas(redis, "--touch") as (a, b),
        httpx.AsyncClient(timeout=30) as http,
        session(http, a.url) as headers,
    ):
        if True:
            uri, original = "mb+misbehave://static/hello", "misbehave://static/hello"
            heard: list[dict[str, Any]] = []
            streaming = anyio.Event()

            async def listen() -> None:
                async with http.stream(
                    "GET", b.url, headers={**headers, "accept": "text/event-stream"}
                ) as resp:
                    assert resp.status_code == 200
                    streaming.set()
                    async for line in resp.aiter_lines():
                        if line.startswith("data:") and line[5:].strip():
                            heard.append(json.loads(line[5:]))
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                with anyio.fail_after(WAIT):
                    await streaming.wait()
                    await wait_for(
                        lambda: headers["mcp-session-id"] in b.app.state.exchange.sessions._listening,
                        timeout=WAIT,
                    )
                    sub = await http.post(
                        a.url, headers=headers, json=rpc("resources/subscribe", {"uri": uri})
                    )
                    assert "error" not in messages(sub)[0], sub.text
                    await http.post(
                        a.url,
                        headers=headers,
                        json=rpc("tools/call", {"name": "mb__touch", "arguments": {"uri": original}}),
                    )
                    await wait_for(lambda: heard, timeout=WAIT)
            assert heard == [
                {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}
            ]
            # Unsubscribed through b: a, which took the subscription, stops sending its updates.
            clients = a.fleet.clients
            assert clients.subscriptions.get(uri)
            unsub = await http.post(b.url, headers=headers, json=rpc("resources/unsubscribe", {"uri": uri}))
            assert "error" not in messages(unsub)[0], unsub.text
            with anyio.fail_after(WAIT):
                await wait_for(lambda: not clients.subscriptions.get(uri), timeout=WAIT)


def _echo(text: str) -> dict[str, Any]:
    return {"name": "mb__echo", "arguments": {"text": text}}
