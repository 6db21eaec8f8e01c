"""Three gateway processes behind a real HAProxy (round-robin, no stickiness) on one real Redis.

What a deployment of replicas promises (README "Running several replicas"), checked through the
load balancer with real clients: 2026-07-28 calls from any client reach every replica and all
succeed; a rate limit is exact and a concurrency cap cluster-wide; one replica reads the events and
audit of all; a replica killed with SIGKILL is taken out and later calls succeed; Redis stopped
and restarted behaves as documented and loses nothing acknowledged. 2025-11-25 sessions too, each
request of a session on the next replica: calls, progress, notifications, DELETE, a replica
killed mid-session (two cases that do not hold across replicas yet are marked).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.errors import RATE_LIMITED
from tests._cluster import WAIT, Replicas, argument, replicas
from tests._infra import Redis
from tests._support import (
    MODERN,
    fastmcp_client,
    messages,
    misbehave,
    modern,
    rpc,
    session,
    text_of,
)
from tests.front.test_exchange import post

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NAMES = {"r1", "r2", "r3"}


@pytest.fixture
async def cluster(tmp_path: Path, redis: Redis) -> AsyncIterator[Replicas]:
    async with replicas(tmp_path, redis, {"mb": misbehave()}) as running:
        yield running


async def test_2026_calls_from_every_client_succeed_on_every_replica(cluster: Replicas) -> None:
    calls = 0
    async with fastmcp_client(cluster.url) as client:
        for n in range(6):
            result = await client.call_tool("mb__echo", {"text": f"fastmcp {n}"})
            assert result.structured_content == {"text": f"misbehave: fastmcp {n}"}
            calls += 1
    async with SdkClient(cluster.url, mode=MODERN) as sdk:
        for n in range(6):
            assert text_of(await sdk.call_tool("mb__echo", {"text": f"sdk {n}"})) == f"misbehave: sdk {n}"
            calls += 1
    # Raw HTTP, a new connection for each request: round-robin by connection and by request alike.
    for n in range(6):
        headers, body = post("tools/call", {"name": "mb__echo", "arguments": {"text": f"raw {n}"}}, rid=n)
        async with httpx.AsyncClient(timeout=WAIT) as http:
            resp = await http.post(cluster.url, headers=headers, content=body)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["id"] == n and answer["result"]["structuredContent"] == {"text": f"misbehave: raw {n}"}
        calls += 1
    rows = await cluster.audit(calls)
    assert len(rows) == calls and all(r["outcome"] == "ok" for r in rows)
    served = Counter(r["replica"] for r in rows)
    assert set(served) == NAMES, served  # every replica served some
    # No stickiness: no replica took more than its round-robin share and a bit.
    assert max(served.values()) <= calls // 2, served


async def test_a_rate_limit_is_exact_across_replicas(tmp_path: Path, redis: Redis) -> None:
    limit = {"use": "ratelimit", "options": {"storage": redis.url, "global": "20/minute", "key_prefix": "rl"}}
    async with replicas(tmp_path, redis, {"mb": misbehave()}, middleware=[limit]) as cluster:
        admitted: list[str] = []
        refused: list[MCPError] = []

        async def caller(c: int) -> None:
            async with SdkClient(cluster.url, mode=MODERN) as client:
                for n in range(10):
                    try:
                        await client.call_tool("mb__echo", {"text": f"{c}.{n}"})
                        admitted.append(f"{c}.{n}")
                    except MCPError as exc:
                        refused.append(exc)

        with anyio.fail_after(50):  # inside the minute of the window
            async with anyio.create_task_group() as tg:
                for c in range(3):
                    tg.start_soon(caller, c)
        assert (len(admitted), len(refused)) == (20, 10)
        assert all(e.code == RATE_LIMITED and e.data["scope"] == "global" for e in refused)
        rows = await cluster.audit(30)
        ok = Counter(r["replica"] for r in rows if r["outcome"] == "ok")
        assert sum(ok.values()) == 20 and set(ok) == NAMES  # one budget, spent on all three


async def test_a_concurrency_cap_holds_across_replicas(tmp_path: Path, redis: Redis) -> None:
    cap = {
        "use": "ratelimit",
        "options": {"storage": redis.url, "key_prefix": "cc", "concurrency": {"mb": {"max": 1, "queue": 0}}},
    }
    async with replicas(tmp_path, redis, {"mb": misbehave()}, middleware=[cap]) as cluster:
        held = anyio.Event()

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            held.set()  # the call runs on its backend: it holds the cluster's one slot

        async with (
            fastmcp_client(cluster.url) as sleeper,
            fastmcp_client(cluster.url) as other,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(lambda: sleeper.call_tool("mb__sleep", {"seconds": 120}, progress_handler=progress))
            with anyio.fail_after(WAIT):
                await held.wait()
            # Three requests in a row, round-robin: at least two land on replicas with no call of
            # their own in flight, and are refused all the same.
            for n in range(3):
                with pytest.raises(MCPError) as err:
                    await other.call_tool("mb__echo", {"text": f"capped {n}"})
                assert err.value.code == RATE_LIMITED and err.value.data["scope"] == "concurrency"
            tg.cancel_scope.cancel()
        rows = await cluster.audit(4)
        sleep = [r for r in rows if r["name"] == "mb__sleep"]
        refusals = [r for r in rows if r["name"] == "mb__echo"]
        assert len(sleep) == 1 and len(refusals) == 3
        assert all(r["outcome"] != "ok" and r["error_code"] == str(RATE_LIMITED) for r in refusals)
        assert {r["replica"] for r in refusals} - {sleep[0]["replica"]}, (sleep, refusals)


async def test_one_replica_reads_every_replicas_events_and_audit(cluster: Replicas) -> None:
    async with fastmcp_client(cluster.url) as client:
        for n in range(6):
            await client.call_tool("mb__echo", {"text": str(n)})
    rows = await cluster.audit(6)
    assert {r["replica"] for r in rows} == NAMES
    for name in sorted(NAMES):
        events = await cluster.events(name)
        # Each replica's backend started, as recorded by that replica, read from this one.
        started = {e["replica"] for e in events if e.get("new") == "running"}
        assert started == NAMES, (name, started)
        ids = [e["id"] for e in events]
        assert len(ids) == len(set(ids))
    # Audit, as any replica's `Audit.query()` reads it: the shared stream, every replica's calls.
    assert Counter(r["outcome"] for r in rows) == {"ok": 6}


async def test_a_replica_killed_mid_run_is_taken_out_and_later_calls_succeed(cluster: Replicas) -> None:
    async with SdkClient(cluster.url, mode=MODERN) as sdk:
        # This client's requests land on every replica before the kill and go on after it.
        for n in range(6):
            assert (
                text_of(await sdk.call_tool("mb__echo", {"text": f"before {n}"})) == f"misbehave: before {n}"
            )
        cluster.kill("r2")
        # While HAProxy finds out, a request may still reach the dead replica: refused
        # connections are sent elsewhere; one already on the wire may fail, clearly. (A client
        # that saw a failure may also report it when it closes: each has its own client.)
        failures: list[BaseException] = []
        for n in range(6):
            try:
                async with fastmcp_client(cluster.url) as meanwhile:
                    await meanwhile.call_tool("mb__echo", {"text": f"meanwhile {n}"})
            except Exception as exc:
                failures.append(exc)
        assert len(failures) <= 2, failures
        await cluster.balancer.wait_status({"r1": "UP", "r2": "DOWN", "r3": "UP"})
        async with fastmcp_client(cluster.url) as client:
            for n in range(12):
                result = await client.call_tool("mb__echo", {"text": f"after {n}"})
                assert result.structured_content == {"text": f"misbehave: after {n}"}
                assert text_of(await sdk.call_tool("mb__echo", {"text": f"sdk {n}"})) == f"misbehave: sdk {n}"
    after = [*await cluster.audit(12, text="after"), *await cluster.audit(12, text="sdk ")]
    assert len(after) == 24 and {r["replica"] for r in after} == {"r1", "r3"}


async def test_a_redis_restart_behaves_as_documented_and_loses_nothing(tmp_path: Path, redis: Redis) -> None:
    """With a Redis `storage` and the default `on_storage_error: deny`, calls are refused while
    Redis is down (scope "storage") on every replica, and served again once it is back; the audit
    records of the refused calls, written while Redis was down, reach the shared stream after."""
    limit = {
        "use": "ratelimit",
        "options": {"storage": redis.url, "global": "1000/minute", "key_prefix": "rr"},
    }
    async with replicas(tmp_path, redis, {"mb": misbehave()}, middleware=[limit]) as cluster:
        async with SdkClient(cluster.url, mode=MODERN) as client:
            for n in range(3):
                await client.call_tool("mb__echo", {"text": f"up {n}"})
            await cluster.audit(3)
            await anyio.to_thread.run_sync(redis.stop)
            for n in range(6):
                with pytest.raises(MCPError) as err:
                    await client.call_tool("mb__echo", {"text": f"down {n}"})
                assert err.value.code == RATE_LIMITED and err.value.data["scope"] == "storage"
            await anyio.to_thread.run_sync(redis.start)  # a new, empty Redis on the same port
            back = 0
            with anyio.fail_after(WAIT):  # each replica asks its store again once a second
                while back < 6:
                    try:
                        await client.call_tool("mb__echo", {"text": f"back {back}"})
                        back += 1
                    except MCPError as exc:
                        assert exc.data["scope"] == "storage"
                        await anyio.sleep(0.2)
        down = await cluster.audit(6, text="down")
        assert sorted(argument(r, "text") for r in down) == [f"down {n}" for n in range(6)]
        assert {r["replica"] for r in down} == NAMES  # each replica's refusals were kept and sent
        assert all(r["error_code"] == str(RATE_LIMITED) for r in down)


# -- 2025-11-25 sessions: each consecutive request of a session on another replica ----------------

HELLO = "misbehave://static/hello"


@pytest.fixture
async def sessions(tmp_path: Path, redis: Redis) -> AsyncIterator[Replicas]:
    """Replicas whose backends ask the client mid-call (`mb__ask`, a 2025-11-25 backend
    session), announce resource changes (`mb__touch`) and count cancelled waits
    (`m__cancellations`). Each case passes against one replica (`replicas(count=1)`)."""
    servers = {"mb": misbehave("--ask", "--touch", protocol="2025-11-25"), "m": modern()}
    async with replicas(tmp_path, redis, servers) as running:
        yield running


@pytest.mark.parametrize("client", ["sdk", "fastmcp"])
async def test_a_2025_session_calls_with_progress_on_every_replica(sessions: Replicas, client: str) -> None:
    notes: list[float] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(progress)

    with anyio.fail_after(WAIT * 2):
        if client == "sdk":
            async with SdkClient(sessions.url, mode="legacy") as sdk:
                assert "mb__echo" in {t.name for t in (await sdk.list_tools()).tools}
                for n in range(6):
                    assert text_of(await sdk.call_tool("mb__echo", {"text": f"{n}"})) == f"misbehave: {n}"
                await sdk.call_tool("mb__sleep", {"seconds": 0.5}, progress_callback=progress)
        else:
            async with fastmcp_client(sessions.url, mode="legacy") as fast:
                assert "mb__echo" in {t.name for t in await fast.list_tools()}
                for n in range(6):
                    result = await fast.call_tool("mb__echo", {"text": f"{n}"})
                    assert result.structured_content == {"text": f"misbehave: {n}"}
                await fast.call_tool("mb__sleep", {"seconds": 0.5}, progress_handler=progress)
    assert notes  # the backend's progress reached the client, wherever its stream was
    rows = await sessions.audit(7)
    assert {r["replica"] for r in rows} == NAMES and all(r["outcome"] == "ok" for r in rows)


async def test_a_2025_session_outlives_a_replica_killed_mid_session(sessions: Replicas) -> None:
    async with SdkClient(sessions.url, mode="legacy") as sdk:
        for n in range(3):
            assert (
                text_of(await sdk.call_tool("mb__echo", {"text": f"before {n}"})) == f"misbehave: before {n}"
            )
        sessions.kill("r2")
        await sessions.balancer.wait_status({"r1": "UP", "r2": "DOWN", "r3": "UP"})
        # The same session, its id sealed: the two replicas left serve it (its GET stream, if it
        # was on r2, is gone; the client may open another).
        for n in range(6):
            assert text_of(await sdk.call_tool("mb__echo", {"text": f"after {n}"})) == f"misbehave: after {n}"
    after = await sessions.audit(6, text="after")
    assert {r["replica"] for r in after} == {"r1", "r3"}


async def test_a_2025_cancellation_reaches_the_replica_running_the_call(sessions: Replicas) -> None:
    async with SdkClient(sessions.url, mode="legacy") as sdk:
        with anyio.move_on_after(2):  # the SDK client sends notifications/cancelled
            await sdk.call_tool("m__wait", {"seconds": 60})

        async def cancelled() -> int:  # each replica's backend, in turn (round-robin)
            asked = range(len(sessions.gateways))
            return sum([int(text_of(await sdk.call_tool("m__cancellations", {}))) for _ in asked])

        with anyio.fail_after(WAIT):
            while await cancelled() != 1:  # noqa: ASYNC110 - backends' state in other processes
                await anyio.sleep(0.2)


async def test_a_2025_backend_question_is_answered_through_another_replica(sessions: Replicas) -> None:
    import mcp_types as types
    from mcp.client.context import ClientRequestContext

    async def sampling(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult.model_validate(
            {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "test-model"}
        )

    async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async with SdkClient(
        sessions.url, mode="legacy", sampling_callback=sampling, elicitation_callback=elicitation
    ) as sdk:
        with anyio.fail_after(WAIT):
            result = await sdk.call_tool("mb__ask", {"kinds": ["sampling", "elicitation"]})
    assert result.structured_content is not None
    sampled, elicited = result.structured_content["answers"]
    assert sampled.get("result", {}).get("content") == {"type": "text", "text": "4"}, sampled
    assert elicited["result"] == {"action": "accept", "content": {"name": "Ada"}}, elicited


async def test_2025_notifications_reach_the_session_s_stream_from_any_replica(sessions: Replicas) -> None:
    """A resource subscription made through one replica: its update comes from that replica's
    backend and reaches the client's GET stream wherever it is. list_changed: each replica
    announces its own catalogue's changes on the streams it holds (README), so every replica's
    backend changes its tools here."""
    import mcp_types as types

    updated, changed = anyio.Event(), anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.set()
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with SdkClient(sessions.url, mode="legacy", message_handler=on_message) as sdk:
        uri = next(str(r.uri) for r in (await sdk.list_resources()).resources if "static/hello" in str(r.uri))
        await sdk.subscribe_resource(uri)
        touched = [json.loads(text_of(await sdk.call_tool("mb__touch", {"uri": HELLO}))) for _ in range(3)]
        # Every replica's backend announced the change; the one the subscription went through
        # had a subscriber.
        assert [t["subscribed"] for t in touched].count(True) == 1, touched
        with anyio.move_on_after(WAIT):
            await updated.wait()
        for _ in range(3):
            await sdk.call_tool("mb__change_tools", {})
        with anyio.move_on_after(WAIT):
            await changed.wait()
    assert (updated.is_set(), changed.is_set()) == (True, True)


async def test_a_2025_session_deleted_through_one_replica_is_gone_on_all(sessions: Replicas) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        async with session(http, sessions.url) as headers:
            for n in range(3):
                resp = await http.post(sessions.url, headers=headers, json=rpc("tools/list", rid=10 + n))
                assert resp.status_code == 200, resp.text
                assert "result" in messages(resp)[0]
            # The GET stream, opened through whichever replica is next.
            async with http.stream(
                "GET", sessions.url, headers={**headers, "accept": "text/event-stream"}
            ) as get:
                assert get.status_code == 200
        # `session` sent DELETE on leaving; the bus tells every replica, a moment later (bounded):
        # then the id is unknown everywhere, three requests in a row (round-robin) answering 404.
        statuses: list[int] = []
        with anyio.fail_after(WAIT):
            while statuses[-3:] != [404, 404, 404]:
                resp = await http.post(sessions.url, headers=headers, json=rpc("tools/list", rid=20))
                assert resp.status_code in (200, 404), resp.text
                statuses.append(resp.status_code)
        assert len(statuses) < 30, statuses
