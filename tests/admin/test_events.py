"""The event log: SQLite store (retention, never waiting), the /admin/events API, its SSE stream, Redis."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.admin.store import EventFilter, EventStore
from gateway.backends import Event
from gateway.backends.lifecycle import State
from gateway.config.admin import EventsConfig
from tests._infra import require
from tests._support import config, free_port, misbehave
from tests.admin._helpers import SSEReader, admin_config, error_of, serve_admin

pytestmark = pytest.mark.anyio


# -- the store -----------------------------------------------------------------------------------


async def test_store_keeps_events_bounded_by_rows_and_age(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = EventStore(EventsConfig(path=str(path), max_rows=5, max_days=1))
    async with store.running():
        old = time.time() - 3 * 86400
        store.record_event(Event(old, "a", "stopped", "starting", "ancient", "info", "lifecycle"))
        for i in range(8):
            store.record_admin("alice", "start", f"s{i}", "ok")
        rows = await store.query(EventFilter(limit=100))
        assert [r.server for r in rows] == ["s7", "s6", "s5", "s4", "s3"]  # 5 newest; the old one is gone
        assert all(r.id is not None for r in rows) and rows[0].actor == "alice"
    # Written to disk: a new store on the same file reads them back.
    again = EventStore(EventsConfig(path=str(path), max_rows=5))
    async with again.running():
        assert len(await again.query(EventFilter())) == 5


async def test_a_file_from_before_replica_ids_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    conn = sqlite3.connect(path)
    try:
        with conn:  # the table as versions without `cluster:` wrote it
            conn.execute(
                "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
                "type TEXT NOT NULL, server TEXT, category TEXT NOT NULL, severity TEXT NOT NULL, "
                "reason TEXT NOT NULL, old TEXT, new TEXT, actor TEXT, action TEXT, outcome TEXT, "
                "request_id TEXT)"
            )
            conn.execute(
                "INSERT INTO events (ts, type, server, category, severity, reason) "
                f"VALUES ({time.time()}, 'action', 'old', 'admin', 'info', '')"
            )
    finally:
        conn.close()
    store = EventStore(EventsConfig(path=str(path)), replica="gw-a")
    async with store.running():
        store.record_admin("alice", "stop", "new", "ok")
        rows = await store.query(EventFilter())
    assert [(r.server, r.replica, r.id) for r in rows] == [("new", "gw-a", 2), ("old", None, 1)]


async def test_store_never_waits_a_full_queue_drops_and_counts() -> None:
    store = EventStore(EventsConfig(path=":memory:", queue_size=3))
    # Not running yet: the queue fills, the fourth record is dropped without blocking.
    assert [store.record_admin("x", "stop", "s", "ok") for _ in range(4)] == [True, True, True, False]
    assert store.dropped == 1
    seen: list[int | str | None] = []
    store.listeners.append(lambda record: seen.append(record.id))
    async with store.running():
        await store.flush()
        assert seen == [1, 2, 3]  # listeners hear each record once written, with its id, in order
    assert store.record_admin("x", "stop", "s", "ok") is False  # stopped: dropped, never raises


# -- the API -------------------------------------------------------------------------------------


async def test_a_filter_matches_a_record_exactly_when_the_query_returns_it() -> None:
    store = EventStore(EventsConfig(path=":memory:"))
    now = time.time()
    async with store.running():
        store.record_event(Event(now - 200, "a", "stopped", "starting", "start", "info", "lifecycle"))
        store.record_event(Event(now - 100, "b", "running", "failed", "crash", "error", "lifecycle"))
        store.record_admin("alice", "stop", "a", "failed")
        store.record_admin("alice", "reload", None, "ok")
        records = await store.query(EventFilter(limit=100, ascending=True))
        assert len(records) == 4
        middle = records[1].id
        assert middle is not None
        filters = [
            EventFilter(),
            EventFilter(servers=["a"]),
            EventFilter(servers=["a", "b"], severities=["info", "warning"]),
            EventFilter(categories=["admin"], types=["action"]),
            EventFilter(since=now - 200, until=now - 100),
            EventFilter(before_id=middle),
            EventFilter(after_id=middle, servers=["a"]),
        ]
        for where in filters:
            stored = [r.id for r in await store.query(replace(where, limit=100, ascending=True))]
            assert [r.id for r in records if where.matches(r)] == stored, where
    # A record the store could not number never passes an id bound (SQL: NULL compares false).
    unnumbered = replace(records[0], id=None)
    assert EventFilter().matches(unnumbered)
    assert not EventFilter(after_id=0).matches(unnumbered)
    assert not EventFilter(before_id=1 << 40).matches(unnumbered)


async def test_events_filter_and_page(tmp_path: Path) -> None:
    cfg = config(
        {
            "mb": misbehave(),
            "dead": misbehave("--crash-at-start", restart="never"),
        }
    )
    async with serve_admin(cfg, admin_config(tmp_path / "events.db")) as gw, gw.client() as http:
        for action in ("stop", "start", "restart"):
            assert (await http.post(f"/servers/mb/{action}")).json()["ok"] is True
        everything = (await http.get("/events", params={"limit": 1000})).json()
        assert everything["next_cursor"] is None
        events = everything["events"]
        ids = [e["id"] for e in events]
        assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids)) >= 10

        paged: list[int] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/events", params=params)).json()
            assert len(page["events"]) <= 3
            paged += [e["id"] for e in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == ids

        errors = (await http.get("/events", params={"severity": "error"})).json()["events"]
        assert errors and all(e["server"] == "dead" and e["new"] == "failed" for e in errors)
        warn_or_error = (await http.get("/events", params={"severity": "warning,error"})).json()["events"]
        assert {e["severity"] for e in warn_or_error} <= {"warning", "error"} and len(warn_or_error) >= 1
        actions = (await http.get("/events", params={"category": "admin", "type": "action"})).json()["events"]
        assert [a["action"] for a in actions] == ["restart", "start", "stop"]
        assert all(a["actor"] == "admin-key:" + a["actor"].removeprefix("admin-key:") for a in actions)
        assert all(a["request_id"] for a in actions)
        both = (await http.get("/events", params=[("server", "mb"), ("server", "dead")])).json()["events"]
        assert {e["server"] for e in both} == {"mb", "dead"}

        middle = events[len(events) // 2]
        since = (await http.get("/events", params={"since": middle["time"], "limit": 1000})).json()["events"]
        assert since and all(e["ts"] >= middle["ts"] - 0.001 for e in since)
        until = (await http.get("/events", params={"until": middle["ts"], "limit": 1000})).json()["events"]
        assert all(e["ts"] < middle["ts"] for e in until)
        assert len(since) + len(until) >= len(events)

        for bad in ({"severity": "fatal"}, {"type": "x"}, {"since": "yesterday"}, {"limit": 0},
                    {"cursor": "abc"}, {"until": "-5"}):  # fmt: skip
            error = error_of(await http.get("/events", params=bad), 400, "invalid_parameter")
            assert error["details"]["parameter"] == next(iter(bad))


async def test_event_stream_is_live_filtered_and_resumable() -> None:
    async with serve_admin(config({"mb": misbehave(), "other": misbehave()})) as gw, gw.client() as http:
        async with http.stream("GET", "/events/stream", params={"server": "mb"}) as stream:
            assert stream.status_code == 200
            reader = SSEReader(stream)
            await http.post("/servers/other/stop")  # filtered out
            await http.post("/servers/mb/stop")
            got = [json.loads(e["data"]) | {"sse_id": e["id"]} for e in await reader.next(3)]
        assert [(g["type"], g.get("new"), g.get("action")) for g in got] == [
            ("transition", "stopping", None),
            ("transition", "stopped", None),
            ("action", None, "stop"),
        ]
        assert all(g["server"] == "mb" and str(g["id"]) == g["sse_id"] for g in got)

        # Resume after the first one: the two stored since come first, then live ones.
        headers = {"Last-Event-ID": got[0]["sse_id"]}
        async with http.stream("GET", "/events/stream", params={"server": "mb"}, headers=headers) as stream:
            reader = SSEReader(stream)
            replayed = [json.loads(e["data"])["id"] for e in await reader.next(2)]
            assert replayed == [got[1]["id"], got[2]["id"]]
            await http.post("/servers/mb/start")
            live = [json.loads(e["data"]) for e in await reader.next(2)]
            assert [(e["old"], e["new"]) for e in live] == [("stopped", "starting"), ("starting", "running")]
        error_of(await http.get("/events/stream", headers={"Last-Event-ID": "x"}), 400, "invalid_parameter")


async def test_a_live_stream_does_not_replay_what_happened_before_it_opened() -> None:
    """Listeners hear a record once the writer has stored it, which can be after a stream opened;
    a record from before the stream is history, not news."""
    async with serve_admin(config({"mb": misbehave()})) as gw, gw.client() as http:
        async with http.stream("GET", "/events/stream", params={"server": "mb"}) as stream:
            assert stream.status_code == 200
            reader = SSEReader(stream)
            # Stored only now, but it happened before the stream opened (as a slow writer would).
            old = Event.transition("mb", State.STARTING, State.RUNNING, "handshake complete", "lifecycle")
            gw.api.store.record_event(replace(old, time=time.time() - 5))
            await http.post("/servers/mb/stop")
            first = json.loads((await reader.next(1))[0]["data"])
        assert (first["type"], first["new"]) == ("transition", "stopping")


# -- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    require("redis")
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; waiting is bounded below
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        with anyio.fail_after(20):
            while True:
                try:
                    await client.ping()
                    break
                except (OSError, RedisConnectionError):
                    await anyio.sleep(0.05)  # still starting: there is nothing to await but a connect
        await client.aclose()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def test_events_are_published_on_redis(redis_url: str) -> None:
    subscriber = Redis.from_url(redis_url)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe("mcp-gateway:events")
    try:
        admin = admin_config(redis=redis_url)
        async with serve_admin(config({"mb": misbehave()}), admin) as gw, gw.client() as http:
            assert (await http.post("/servers/mb/stop")).json()["ok"] is True
            seen: list[dict[str, object]] = []
            with anyio.fail_after(20):
                while not any(e.get("new") == "stopped" for e in seen):
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                    if message is not None:
                        seen.append(json.loads(message["data"]))
            stopped = next(e for e in seen if e.get("new") == "stopped")
            assert stopped["server"] == "mb" and stopped["type"] == "transition" and stopped["id"]
            # The start-up events of the fleet were published too (the admin context came first).
            assert any(e.get("new") == "running" for e in seen)
            assert gw.api.publisher is not None and gw.api.publisher.dropped == 0
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        await subscriber.aclose()
