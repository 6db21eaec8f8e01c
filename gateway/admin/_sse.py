"""Server-Sent Event streams: a backend's stderr log, and the event log.

Both send what is already known first (the log's last lines; stored events after `Last-Event-ID`)
and then what arrives live. The live listener is registered in the same synchronous step that
takes the backlog, so nothing falls in between and nothing is sent twice. A slow reader costs
only its own buffer: lines beyond it are counted and reported as a `lost` event, never waited for.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.admin._record import EventRecord, iso
from gateway.admin.store import EventFilter, EventStore
from gateway.backends import Backend
from gateway.backends._logbuffer import LogLine

_LIVE_BUFFER = 1000
_PING = 15.0
_SEND_TIMEOUT = 30.0
_ALIVE_CHECK = 2.0  # how often a log stream checks that its backend is still in the fleet


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def log_line(line: LogLine) -> dict[str, Any]:
    return {"time": iso(line.time), "ts": line.time, "server": line.server, "text": line.text}


def _lost(count: int) -> ServerSentEvent:
    return ServerSentEvent(_json({"lost": count}), event="lost")


def log_stream(backend: Backend, tail: int, still_listed: Callable[[], bool]) -> EventSourceResponse:
    """`tail` lines of backlog, then every new line, until the client leaves or the server is removed."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        send, receive = anyio.create_memory_object_stream[LogLine](_LIVE_BUFFER)
        lost = 0

        def listener(line: LogLine) -> None:
            nonlocal lost
            try:
                send.send_nowait(line)
            except anyio.WouldBlock:
                lost += 1

        buffer = backend.log
        buffer.listeners.append(listener)
        backlog = list(buffer.lines)[-tail:] if tail else []
        try:
            for line in backlog:
                yield ServerSentEvent(_json(log_line(line)), event="log")
            while True:
                line_or_none: LogLine | None = None
                with anyio.move_on_after(_ALIVE_CHECK):
                    line_or_none = await receive.receive()
                if lost:
                    yield _lost(lost)
                    lost = 0
                if line_or_none is not None:
                    yield ServerSentEvent(_json(log_line(line_or_none)), event="log")
                elif not still_listed():
                    yield ServerSentEvent(_json({"server": backend.name, "reason": "removed"}), event="end")
                    return
        finally:
            if listener in buffer.listeners:
                buffer.listeners.remove(listener)
            send.close()
            receive.close()

    return EventSourceResponse(stream(), ping=_PING, send_timeout=_SEND_TIMEOUT)


def _event(record: EventRecord) -> ServerSentEvent:
    return ServerSentEvent(
        _json(record.to_json()),
        event="event",
        id=None if record.id is None else str(record.id),
    )


def event_stream(
    store: EventStore, where: EventFilter, matches: Callable[[EventRecord], bool]
) -> EventSourceResponse:
    """Stored events after `where.after_id` (when resuming), then new ones matching the filter."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        send, receive = anyio.create_memory_object_stream[EventRecord](_LIVE_BUFFER)
        lost = 0

        def listener(record: EventRecord) -> None:
            nonlocal lost
            if not matches(record):
                return
            try:
                send.send_nowait(record)
            except anyio.WouldBlock:
                lost += 1

        store.listeners.append(listener)
        # Listeners hear a record once it is stored, which may be after this stream began: what
        # happened before is history (the store has it; a resuming client asks for it), not news.
        opened = time.time()
        try:
            last = where.after_id
            while last is not None:  # resuming: everything stored since, page by page
                page = await store.query(replace(where, after_id=last, ascending=True))
                for record in page:
                    last = record.id
                    yield _event(record)
                if len(page) < where.limit:
                    break
            async for record in receive:
                if lost:
                    yield _lost(lost)
                    lost = 0
                if last is not None and record.id is not None and record.id <= last:
                    continue  # already sent from the backlog
                if where.after_id is None and record.ts < opened:
                    continue
                yield _event(record)
        finally:
            if listener in store.listeners:
                store.listeners.remove(listener)
            send.close()
            receive.close()

    return EventSourceResponse(stream(), ping=_PING, send_timeout=_SEND_TIMEOUT)
