"""Resumable event streams for 2025-11-25 clients (`gateway/front/events.py`, and the exchange's
streams in `gateway/front/exchange.py`).

A client whose connection drops mid-call reconnects with a GET carrying `Last-Event-ID` and gets
exactly what it missed, then the rest of its answer. Real gateway, real backend (our misbehave
server: `sleep` reports progress every 0.1 s), raw httpx and the `mcp` SDK client over loopback.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client as SdkClient
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification

from gateway.config.models import EventStoreConfig
from gateway.front.events import Event, Events, Sender
from tests._support import (
    Running,
    config,
    initialize,
    misbehave,
    rpc,
    serve,
    session,
    sse_messages,
    text_of,
    wait_until,
)

pytestmark = pytest.mark.anyio

SLEEP = 3.0  # the backend's call: long enough to drop and resume in, on a loaded machine


async def test_the_store_forgets_the_oldest_first_by_number_and_by_age() -> None:
    now = [0.0]
    events = Events(EventStoreConfig(max_events=3, max_age=10), clock=lambda: now[0])
    one, two = events.view("one"), events.view("two")
    note = JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"progress": 1})
    ids = [await one.store_event("1", None), *[await one.store_event("1", note) for _ in range(3)]]
    assert len(events) == 3 and events.find("one", ids[0]) is None  # the oldest went first
    replayed: list[EventMessage] = []

    async def collect(message: EventMessage) -> None:
        replayed.append(message)

    assert await one.replay_events_after(ids[1], collect) == "1"
    assert [m.event_id for m in replayed] == ids[2:]
    # Another session's view knows none of them, though its stream ids are the same.
    assert await two.replay_events_after(ids[1], collect) is None
    now[0] = 5.0
    await two.store_event("1", note)
    assert [m.event_id for m in replayed] == ids[2:]
    now[0] = 10.5  # past max_age: all of session one's are forgotten, the newer one is kept
    assert events.find("one", ids[3]) is None and len(events) == 1
    now[0] = 15.5
    assert events.find("two", "nothing") is None and len(events) == 0
    assert events._streams == {}  # no stream outlives its last event


async def test_the_store_keeps_at_most_max_bytes_of_relayed_messages() -> None:
    events = Events(EventStoreConfig(max_bytes=100))
    stream = events.stream("one", 7)
    small = [events.add(stream, b"x" * 40) for _ in range(2)]
    large = events.add(stream, b"y" * 50)  # 130 bytes: the oldest goes
    assert events.find("one", small[0]) is None and events.find("one", small[1]) is not None
    assert events.find("one", large) is not None
    assert events.find("one", events.add(stream, b"z" * 101)) is None  # too large to keep at all
    assert len(events) == 0 and events._bytes == 0


def sleeping(seconds: float = SLEEP, rid: int = 7) -> dict[str, Any]:
    params = {"name": "mb__sleep", "arguments": {"seconds": seconds}, "_meta": {"progressToken": "p"}}
    return rpc("tools/call", params, rid)


def events_of(text: str) -> list[dict[str, str]]:
    """The SSE events of a stream's text, each as its fields in the order they came (comments,
    such as keep-alive pings, left out)."""
    found = []
    for block in re.split(r"\r\n\r\n|\n\n", text):
        fields: dict[str, str] = {}
        for line in re.split(r"\r\n|\r|\n", block):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if fields:
            found.append(fields)
    return found


def store(gw: Running) -> Events:
    events: Events = gw.app.state.exchange.events
    return events


def _kept_events(gw: Running, request_id: str) -> list[Event]:
    """The events the gateway keeps of the exchange's streams for `request_id`, in order."""
    return [
        e
        for e in store(gw)._events.values()
        if e.stream[1] == Sender.EXCHANGE and e.stream[2].startswith(f"{request_id}#")
    ]


def kept(gw: Running, request_id: str) -> list[tuple[str, bool]]:
    """(id, carries a message) of each event kept of the exchange's streams for `request_id`."""
    return [(e.id, e.message is not None) for e in _kept_events(gw, request_id)]


def after(events: list[tuple[str, bool]], event_id: str) -> list[tuple[str, bool]]:
    ids = [i for i, _ in events]
    return events[ids.index(event_id) + 1 :]


async def started_stream(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any], *, events: int
) -> list[dict[str, str]]:
    """POST `body`, read its event stream until `events` events came (the priming one included),
    then drop the connection mid-call; the events read."""
    seen: list[dict[str, str]] = []
    text = ""
    async with http.stream("POST", url, headers=headers, json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for chunk in resp.aiter_text():
            text += chunk
            seen = events_of(text[: text.rfind("\r\n\r\n") + 4] if "\r\n\r\n" in text else "")
            if len(seen) >= events:
                break
    # Leaving the block with the body unread closes the connection: the client is gone.
    return seen[:events]


async def test_a_dropped_stream_resumes_with_exactly_the_missed_events_then_the_answer() -> None:
    async with serve(config({"mb": misbehave()})) as gw, httpx.AsyncClient(timeout=30) as http:
        backend = gw.fleet.backends["mb"]
        async with session(http, gw.url) as headers:
            before = await started_stream(http, gw.url, headers, sleeping(), events=3)
            priming, *progress = before
            # Resumable from the start: an id and nothing else but how long to wait to reconnect.
            assert priming["data"] == "" and priming["retry"] == "1000" and priming["id"]
            assert all(e["id"] and e["event"] == "message" for e in progress)
            last = before[-1]["id"]
            # The hang-up cancels nothing: the call goes on, its events kept for the client.
            await wait_until(lambda: len(after(kept(gw, "7"), last)) >= 3, timeout=30)
            assert backend.callers(), "the call stopped when its client's connection dropped"

            resumed = await http.get(gw.url, headers={**headers, "last-event-id": last})
            assert resumed.status_code == 200
            assert resumed.headers["content-type"].startswith("text/event-stream")
            events = events_of(resumed.text)
            # Exactly what was missed and what came next, in order, once: every message event
            # the gateway kept of the call after the last one the client saw...
            sent = [e["id"] for e in events if e["data"]]
            assert sent == [i for i, message in after(kept(gw, "7"), last) if message]
            assert not {e["id"] for e in before} & set(sent)
            # ...and one priming event for the new connection, after the replayed ones.
            assert [e["data"] for e in events].count("") == 1
            # No progress lost or repeated across the drop: one increasing sequence, then the answer.
            *notes, answer = sse_messages(resumed)
            assert {n["method"] for n in notes} == {"notifications/progress"}
            values = [n["params"]["progress"] for n in [*map(_json, progress), *notes]]
            assert values == sorted(set(values)) and values[-1] == SLEEP
            assert answer["id"] == 7 and answer["result"]["content"][0]["text"] == f"slept {SLEEP}s"
        assert not backend.callers()


def _json(event: dict[str, str]) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(event["data"])
    return message


async def test_a_stream_resumed_after_its_call_ended_gets_the_rest_and_its_answer() -> None:
    async with (
        serve(config({"mb": misbehave()})) as gw,
        httpx.AsyncClient(timeout=30) as http,
        session(http, gw.url) as headers,
    ):
        before = await started_stream(http, gw.url, headers, sleeping(1.0), events=2)
        last = before[-1]["id"]
        # The call ends while nobody listens: its answer is kept, the last of its stream.
        await wait_until(lambda: b'"result"' in _last_kept(gw, "7"), timeout=30)
        first = kept(gw, "7")
        # The client may use the id again once its request is answered: another stream.
        again = await http.post(gw.url, headers=headers, json=sleeping(0.3))
        assert sse_messages(again)[-1]["result"]["content"][0]["text"] == "slept 0.3s"
        resumed = await http.get(gw.url, headers={**headers, "last-event-id": last})
        events = events_of(resumed.text)
        assert [e["id"] for e in events] == [i for i, message in after(first, last) if message]
        *notes, answer = sse_messages(resumed)
        assert {n["method"] for n in notes} == {"notifications/progress"}
        assert answer["id"] == 7 and answer["result"]["content"][0]["text"] == "slept 1.0s"


def _last_kept(gw: Running, request_id: str) -> bytes:
    found = _kept_events(gw, request_id)
    return found[-1].message if found and isinstance(found[-1].message, bytes) else b""


async def _empty_replay(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[int, str, str]:
    """The SDK transport's answer to a GET resuming from an event id it does not know."""
    resp = await http.get(url, headers={**headers, "last-event-id": "never-sent"})
    return resp.status_code, resp.headers["content-type"], resp.text


@pytest.mark.parametrize(
    "bound", [{"max_events": 4}, {"max_age": 0.5}], ids=["evicted by number", "evicted by age"]
)
async def test_a_forgotten_event_id_gets_the_sdks_answer_for_an_unknown_one(bound: dict[str, Any]) -> None:
    cfg = config({"mb": misbehave()}, listen={"event_store": bound})
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=30) as http, session(http, gw.url) as headers:
        unknown = await _empty_replay(http, gw.url, headers)
        assert unknown[0] == 200 and sse_messages_of(events_of(unknown[2])) == []
        before = await started_stream(http, gw.url, headers, sleeping(1.0), events=2)
        first = before[0]["id"]
        await wait_until(lambda: first not in {i for i, _ in kept(gw, "7")}, timeout=30)
        assert len(store(gw)) <= bound.get("max_events", 10_000)
        resumed = await http.get(gw.url, headers={**headers, "last-event-id": first})
        assert (resumed.status_code, resumed.headers["content-type"], resumed.text) == unknown


def sse_messages_of(events: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [json.loads(e["data"]) for e in events if e.get("data")]


async def test_one_sessions_event_id_never_replays_into_another_session() -> None:
    """The SDK's own streams are resumable too, each session's from its own view of the store:
    request ids (the SDK's stream ids) repeat across sessions, events must not."""
    async with serve(config({"mb": misbehave()})) as gw, httpx.AsyncClient(timeout=30) as http:
        base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        opened = await http.post(gw.url, headers=base, json=initialize(rid=0))
        priming, hello = events_of(opened.text)  # the SDK's own stream: priming, then the answer
        assert priming["data"] == "" and priming["retry"] == "1000" and hello["id"]
        mine = {
            **base,
            "mcp-session-id": opened.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        async with session(http, gw.url) as theirs:
            stolen = await http.get(gw.url, headers={**theirs, "last-event-id": priming["id"]})
            assert sse_messages_of(events_of(stolen.text)) == []
            assert (stolen.status_code, stolen.text) == (await _empty_replay(http, gw.url, theirs))[::2]
        # The SDK replays its own stream's events: the initialize answer (then it waits for more).
        replayed: list[dict[str, str]] = []
        async with http.stream("GET", gw.url, headers={**mine, "last-event-id": priming["id"]}) as resp:
            text = ""
            async for chunk in resp.aiter_text():
                text += chunk
                replayed = [e for e in events_of(text) if e.get("data")]
                if replayed:
                    break
        assert replayed[0]["id"] == hello["id"] and json.loads(replayed[0]["data"])["id"] == 0
        await http.delete(gw.url, headers=mine)


class Cutter:
    """A TCP relay on loopback in front of the gateway that can cut every connection through it
    at once: a network drop, as the client sees one."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
        finally:
            self.cut()
            server.close()
            await server.wait_closed()


async def test_the_sdk_client_resumes_a_dropped_call_by_itself() -> None:
    cfg = config({"mb": misbehave()}, listen={"event_store": {"retry": 100}})
    async with serve(cfg) as gw:
        cutter = Cutter(int(gw.base.rsplit(":", 1)[1]))
        async with cutter.running() as url, SdkClient(url, mode="legacy") as client:
            reports: list[float] = []
            dropped = anyio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                reports.append(progress)
                if len(reports) == 3 and not dropped.is_set():
                    dropped.set()
                    cutter.cut()  # mid-call, on the call's own stream

            connections = cutter.connections
            result = await client.call_tool(
                "mb__sleep", {"seconds": 2.0}, read_timeout_seconds=60, progress_callback=on_progress
            )
            assert dropped.is_set()
            assert text_of(result) == "slept 2.0s"
            assert cutter.connections > connections  # it came back (a GET with Last-Event-ID)
            # Nothing missed nor repeated across the drop, up to the last report.
            assert reports == sorted(set(reports)) and reports[-1] == 2.0
            assert len(reports) > 3


async def test_a_sessions_event_stream_is_framed_like_the_sdks() -> None:
    """The exchange's resumable stream against the SDK reference's for the same call: the same
    events, field for field in the same order (ids differ by value: each gateway mints its own)."""
    cfg = config({"mb": misbehave()})
    async with (
        serve(cfg) as fast,
        serve(cfg, sdk_reference=True) as sdk,
        httpx.AsyncClient(timeout=30) as http,
        session(http, fast.url) as ours,
        session(http, sdk.url) as theirs,
    ):
        shapes = []
        for gw, headers in ((fast, ours), (sdk, theirs)):
            resp = await http.post(gw.url, headers=headers, json=sleeping(0.25))
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = events_of(resp.text)
            assert len({e["id"] for e in events}) == len(events)  # every event has its own id
            priming, *rest = events
            shapes.append(
                (
                    list(priming),
                    priming["data"],
                    priming["retry"],
                    {tuple(e) for e in rest},  # progress counts may differ by timing
                    sse_messages_of(rest)[-1],
                )
            )
        assert shapes[0] == shapes[1]
        assert shapes[0][0] == ["id", "data", "retry"] and shapes[0][3] == {("id", "event", "data")}
