"""Replicas as one gateway: replica ids, and events and audit shared through a real Redis.

Two gateway apps on their own ports share one `redis-server`; whatever either records, one query
on either reads. A Redis stopped and restarted under publishing loses nothing that fit the buffer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from redis.asyncio import Redis as RedisClient

from gateway.admin._record import EventRecord
from gateway.cluster import Cluster, StreamWriter, default_replica_id, is_stream_id, stream_order
from gateway.config import load_config
from gateway.config.cluster import ClusterConfig
from gateway.errors import ConfigError
from gateway.middleware.audit import Audit
from tests._infra import Redis
from tests._support import config, fastmcp_client, misbehave, serve
from tests.admin._helpers import SSEReader, error_of, serve_admin

pytestmark = pytest.mark.anyio

WAIT = 60.0  # generous: a loaded 2-core machine


@pytest.fixture
def server(redis: Redis) -> Redis:
    """A real redis-server of this test's own, which a test may stop and start again."""
    return redis


def cluster_config(server: Redis, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"redis": server.url, "key_prefix": prefix, **extra}


@asynccontextmanager
async def replica(
    server: Redis, prefix: str, name: str, tmp_path: Path, **servers: dict[str, Any]
) -> AsyncIterator[Any]:
    """A gateway (admin API, audit) that is replica `name` of the cluster under `prefix`."""
    cfg = config(
        {"mb": misbehave(), **servers},
        middleware=[{"use": "audit", "options": {"path": str(tmp_path / f"{name}-audit.db")}}],
        cluster=cluster_config(server, prefix, replica_id=name),
        state={"keys": ["k" * 32]},  # what every replica shares
    )
    async with serve_admin(cfg) as gw:
        yield gw


def audit_of(gw: Any) -> Audit:
    relay = gw.app.state.relay
    return next(m for m in relay.middlewares if isinstance(m, Audit))


@pytest.mark.redis
async def test_two_replicas_read_each_others_events_and_audit(server: Redis, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(replica(server, prefix, "gw-a", tmp_path))
        # `own` is B's alone: an action on it, announced, changes nothing on A.
        b = await stack.enter_async_context(replica(server, prefix, "gw-b", tmp_path, own=misbehave()))
        http_a = await stack.enter_async_context(a.client())
        http_b = await stack.enter_async_context(b.client())
        view = (await http_a.get("/cluster")).json()
        assert (view["replica"], view["shared"]) == ("gw-a", True)
        assert {kind: stream["key"] for kind, stream in view["streams"].items()} == {
            "events": f"{prefix}:events",
            "audit": f"{prefix}:audit",
        }
        assert all(stream["dropped"] == 0 for stream in view["streams"].values())
        assert (await http_b.get("/cluster")).json()["replica"] == "gw-b"

        # A's SSE stream is open before B acts: it must show B's events live.
        stream = await stack.enter_async_context(
            http_a.stream("GET", "/events/stream", params={"server": "own"})
        )
        assert stream.status_code == 200
        reader = SSEReader(stream)
        assert (await http_b.post("/servers/own/stop")).json()["ok"] is True
        live = [json.loads(e["data"]) | {"sse_id": e["id"]} for e in await reader.next(3, timeout=WAIT)]
        assert [(e["replica"], e["type"], e.get("new"), e.get("action")) for e in live] == [
            ("gw-b", "transition", "stopping", None),
            ("gw-b", "transition", "stopped", None),
            ("gw-b", "action", None, "stop"),
        ]
        assert all(e["sse_id"] == e["id"] and is_stream_id(e["id"]) for e in live)
        # Resuming on the other replica from the first one: the rest come from the shared log.
        resume = {"Last-Event-ID": live[0]["id"]}
        async with http_b.stream("GET", "/events/stream", params={"server": "own"}, headers=resume) as again:
            replayed = [json.loads(e["data"])["id"] for e in await SSEReader(again).next(2, timeout=WAIT)]
        assert replayed == [live[1]["id"], live[2]["id"]]

        assert (await http_b.post("/servers/own/start")).json()["ok"] is True

        # One call through each replica.
        for gw in (a, b):
            async with fastmcp_client(gw.url) as client:
                await client.call_tool("mb__echo", {"text": "hello"})

        # One listing on either replica: both replicas' events, newest first, ids cluster-unique.
        for http in (http_a, http_b):
            events = (await http.get("/events", params={"limit": 1000})).json()["events"]
            ids = [e["id"] for e in events]
            assert len(ids) == len(set(ids)) and all(is_stream_id(i) for i in ids)
            assert [stream_order(i) for i in ids] == sorted((stream_order(i) for i in ids), reverse=True)
            assert {e["replica"] for e in events} == {"gw-a", "gw-b"}
            # Each replica's start-up: its backend came up, recorded under its own id.
            for name in ("gw-a", "gw-b"):
                assert any(e["replica"] == name and e.get("new") == "running" for e in events)
        # Filters and paging work on the shared log as on the local one.
        page = (await http_a.get("/events", params={"type": "action", "limit": 1})).json()
        assert [e["action"] for e in page["events"]] == ["start"]
        assert page["next_cursor"] == page["events"][0]["id"]
        older = (await http_a.get("/events", params={"type": "action", "cursor": page["next_cursor"]})).json()
        assert [(e["action"], e["id"]) for e in older["events"]] == [("stop", live[2]["id"])]
        error_of(await http_a.get("/events", params={"cursor": "12"}), 400, "invalid_parameter")

        # Audit: each replica's call, read from either one, stamped with who served it.
        for gw in (a, b):
            rows = [r for r in await audit_of(gw).query() if r["method"] == "tools/call"]
            assert sorted(r["replica"] for r in rows) == ["gw-a", "gw-b"]
            assert len({r["id"] for r in rows}) == 2 and all(is_stream_id(r["id"]) for r in rows)
            assert all(r["name"] == "mb__echo" and r["outcome"] == "ok" for r in rows)
        # The local file still has this replica's own record, with its replica id.
        local = [r for r in await audit_of(a).log.query() if r["method"] == "tools/call"]
        assert [r["replica"] for r in local] == ["gw-a"]


async def test_a_replica_id_is_generated_unique_per_process() -> None:
    first, second = Cluster(), Cluster()
    assert first.replica != second.replica  # the random part: a reused pid does not collide
    host, pid, _ = default_replica_id().split(":")
    assert host and pid.isdigit()
    assert Cluster(ClusterConfig(replica_id="gw-1")).replica == "gw-1"
    with pytest.raises(ValueError, match="replica_id"):
        ClusterConfig(replica_id="has space")
    with pytest.raises(ValueError, match="redis"):
        ClusterConfig(redis="http://127.0.0.1:6379")


async def test_replicas_without_a_shared_state_key_are_refused_with_the_fix(tmp_path: Path) -> None:
    """Each replica would seal session ids under a key of its own: no other could serve them."""
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump({"servers": {"mb": misbehave()}, "cluster": {"redis": "redis://127.0.0.1:1"}})
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "state.keys" in str(caught.value) and "MCP_STATE_KEY" in str(caught.value)
    path.write_text(
        yaml.safe_dump(
            {
                "servers": {"mb": misbehave()},
                "cluster": {"redis": "redis://127.0.0.1:1"},
                "state": {"keys": ["k" * 32]},
            }
        )
    )
    assert load_config(path).cluster.redis == "redis://127.0.0.1:1"


def record(text: str) -> EventRecord:
    return EventRecord(
        ts=time.time(), type="action", server="s", category="admin", severity="info", reason=text
    )


async def reasons(server: Redis, key: str) -> list[str]:
    """The reasons of the admin actions in stream `key`, oldest first."""
    client = RedisClient.from_url(server.url, decode_responses=True)
    try:
        with anyio.fail_after(WAIT):
            entries: Any = await client.xrange(key)
            return [f["reason"] for _, f in entries if f.get("type") == "action"]
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_publishing_survives_a_redis_restart(server: Redis, tmp_path: Path) -> None:
    """Records published while Redis is down, and the first one after it is back, all arrive."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    async with replica(server, prefix, "gw-a", tmp_path) as gw, gw.client() as http:
        store, shared = gw.api.store, gw.api.shared
        assert shared is not None
        store.record_admin("alice", "before", None, "ok", reason="before")
        await store.flush()
        with anyio.fail_after(WAIT):
            await shared.writer.flush()
        assert await reasons(server, f"{prefix}:events") == ["before"]

        await anyio.to_thread.run_sync(server.stop)
        for i in range(5):
            store.record_admin("alice", f"during-{i}", None, "ok", reason=f"during-{i}")
        await store.flush()  # written locally, handed to the stream writer, which cannot send
        # A call while Redis is down is served; its audit record waits in the buffer.
        async with fastmcp_client(gw.url) as client:
            await client.call_tool("mb__echo", {"text": "in the outage"})
        error_of(await http.get("/events"), 503, "unavailable")  # no partial view while Redis is down
        await anyio.to_thread.run_sync(server.start)  # a new, empty Redis on the same port
        store.record_admin("alice", "after", None, "ok", reason="after")
        await store.flush()
        with anyio.fail_after(WAIT):
            while len(shared.writer):
                await shared.writer.flush()
        # A fresh Redis (no persistence): what it holds is exactly what was buffered, then "after".
        assert await reasons(server, f"{prefix}:events") == [f"during-{i}" for i in range(5)] + ["after"]
        events = (await http.get("/events", params={"type": "action"})).json()["events"]
        assert [e["action"] for e in events] == ["after", *(f"during-{i}" for i in reversed(range(5)))]
        assert shared.writer.dropped == 0 and shared.writer.failures >= 1
        audit = audit_of(gw)
        assert audit.shared is not None
        with anyio.fail_after(WAIT):
            while len(audit.shared.writer):
                await audit.shared.writer.flush()
        calls = [r for r in await audit.query() if r["method"] == "tools/call"]
        assert [(r["name"], r["replica"], r["outcome"]) for r in calls] == [("mb__echo", "gw-a", "ok")]


@pytest.mark.redis
async def test_a_full_buffer_drops_the_oldest_and_counts(server: Redis) -> None:
    cluster = Cluster(ClusterConfig(**cluster_config(server, f"t{uuid.uuid4().hex[:8]}", buffer=3)))
    writer: StreamWriter[EventRecord] = cluster.writer("events", EventRecord.to_stream)
    async with writer.running():
        await anyio.to_thread.run_sync(server.stop)
        for i in range(5):
            writer.append(record(f"r{i}"))  # never waits, Redis or not
        assert writer.dropped == 2 and len(writer) == 3
        await anyio.to_thread.run_sync(server.start)
        with anyio.fail_after(WAIT):
            while len(writer):
                await writer.flush()
    assert await reasons(server, writer.key) == ["r2", "r3", "r4"]


@pytest.mark.redis
async def test_retention_bounds_each_stream(server: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    cluster = Cluster(ClusterConfig(**cluster_config(server, prefix, max_len=100, max_days=1)))
    client = RedisClient.from_url(server.url, decode_responses=True)
    try:
        # An entry two days old, as a replica would have written it then.
        ancient = int((time.time() - 2 * 86400) * 1000)
        await client.xadd(cluster.key("events"), {"type": "action", "reason": "ancient"}, id=f"{ancient}-0")
        writer: StreamWriter[EventRecord] = cluster.writer("events", EventRecord.to_stream)
        async with writer.running():
            writer.append(record("r0"))
            with anyio.fail_after(WAIT):
                await writer.flush()
            assert await reasons(server, writer.key) == ["r0"]  # older than max_days: trimmed
            for i in range(1, 350):
                writer.append(record(f"r{i}"))
            with anyio.fail_after(WAIT):
                while len(writer):
                    await writer.flush()
        assert await client.xlen(writer.key) == 100
        assert await reasons(server, writer.key) == [f"r{i}" for i in range(250, 350)]  # the newest
    finally:
        await client.aclose()


async def test_cluster_settings_are_restart_only(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"servers": {"mb": misbehave()}, "cluster": {"replica_id": "gw-a"}}))
    async with serve(load_config(path), config_path=path) as gw:
        path.write_text(yaml.safe_dump({"servers": {"mb": misbehave()}, "cluster": {"replica_id": "gw-b"}}))
        report = await gw.app.state.reloader.reload("test")
        assert report["restart_required"] == ["cluster"]
        assert gw.fleet.cluster.replica == "gw-a"  # a process keeps its id for its whole life


@pytest.mark.redis
async def test_the_bus_carries_messages_between_replicas_and_survives_a_restart(server: Redis) -> None:
    """A message published by one replica reaches the other's handler (and its own, marked as
    its own); after Redis restarts, the subscriber is back without anyone restarting it."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    a = Cluster(ClusterConfig(redis=server.url, key_prefix=prefix, replica_id="a"))
    b = Cluster(ClusterConfig(redis=server.url, key_prefix=prefix, replica_id="b"))
    heard: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    arrived = {"a": anyio.Event(), "b": anyio.Event()}

    def hearing(who: str) -> Any:
        async def handler(message: dict[str, Any]) -> None:
            heard[who].append(message)
            arrived[who].set()

        return handler

    a.bus().on("news", hearing("a"))
    b.bus().on("news", hearing("b"))
    gone: list[dict[str, Any]] = []

    async def unmounted(message: dict[str, Any]) -> None:
        gone.append(message)

    b.bus().on("news", unmounted)
    b.bus().off("news", unmounted)  # a handler taken off hears nothing (delivered in the same turn)
    async with a.bus().running(), b.bus().running():
        with anyio.fail_after(WAIT):
            await a.bus().connected.wait()
            await b.bus().connected.wait()
        assert await a.bus().publish("news", {"n": 1})
        with anyio.fail_after(WAIT):
            await arrived["a"].wait()
            await arrived["b"].wait()
        assert heard == {"a": [{"n": 1, "from": "a"}], "b": [{"n": 1, "from": "a"}]}
        assert gone == []

        await anyio.to_thread.run_sync(server.stop)
        assert not await a.bus().publish("news", {"n": 2})  # refused at once, not queued
        await anyio.to_thread.run_sync(server.start)
        arrived["b"] = anyio.Event()
        with anyio.fail_after(WAIT):
            # The subscriber reconnects with backoff: publish until it is heard again.
            while not arrived["b"].is_set():
                await a.bus().publish("news", {"n": 3})
                with anyio.move_on_after(0.5):
                    await arrived["b"].wait()
        assert heard["b"][-1] == {"n": 3, "from": "a"}
        assert {"n": 2, "from": "a"} not in heard["b"]
