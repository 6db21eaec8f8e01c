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
from typing import Any, Generic, TypeVar

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.admin._record import EventRecord, id_order, iso
from gateway.admin.store import EventFilter, EventLog
from gateway.backends import Backend
from gateway.backends._logbuffer import LogLine

T = TypeVar("T")

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


class _Feed(Generic[T]):
    """A live subscription: registered on `listeners` at once, items go to a bounded buffer.

    Items beyond the buffer are counted in `lost`, never waited for. `close()` unregisters it and
    closes both ends of the buffer.
    """

    def __init__(
        self, listeners: list[Callable[[T], None]], accept: Callable[[T], bool] | None = None
    ) -> None:
        self._listeners = listeners
        self._accept = accept
        self._send, self.receive = anyio.create_memory_object_stream[T](_LIVE_BUFFER)
        self.lost = 0
        listeners.append(self._push)

    def _push(self, item: T) -> None:
        if self._accept is not None and not self._accept(item):
            return
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            self.lost += 1

    def take_lost(self) -> ServerSentEvent | None:
        """A `lost` event for what overflowed since the last call, if anything did."""
        if not self.lost:
            return None
        event, self.lost = _lost(self.lost), 0
        return event

    def close(self) -> None:
        if self._push in self._listeners:
            self._listeners.remove(self._push)
        self._send.close()
        self.receive.close()


def log_stream(backend: Backend, tail: int, still_listed: Callable[[], bool]) -> EventSourceResponse:
    """`tail` lines of backlog, then every new line, until the client leaves or the server is removed."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        feed = _Feed(backend.log.listeners)
        backlog = backend.log.tail(tail)
        try:
            for line in backlog:
                yield ServerSentEvent(_json(log_line(line)), event="log")
            while True:
                line_or_none: LogLine | None = None
                with anyio.move_on_after(_ALIVE_CHECK):
                    line_or_none = await feed.receive.receive()
                if lost := feed.take_lost():
                    yield lost
                if line_or_none is not None:
                    yield ServerSentEvent(_json(log_line(line_or_none)), event="log")
                elif not still_listed():
                    yield ServerSentEvent(_json({"server": backend.name, "reason": "removed"}), event="end")
                    return
        finally:
            feed.close()

    return EventSourceResponse(stream(), ping=_PING, send_timeout=_SEND_TIMEOUT)


def _event(record: EventRecord) -> ServerSentEvent:
    return ServerSentEvent(
        _json(record.to_json()),
        event="event",
        id=None if record.id is None else str(record.id),
    )


def event_stream(store: EventLog, where: EventFilter) -> EventSourceResponse:
    """Stored events after `where.after_id` (when resuming), then new ones matching the filter."""
    # Live records are checked against the filter without its cursors: the backlog below decides
    # what was already sent, and a record the store could not number (no id) is still news.
    live = replace(where, before_id=None, after_id=None)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        feed = _Feed(store.listeners, live.matches)
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
            async for record in feed.receive:
                if lost := feed.take_lost():
                    yield lost
                if last is not None and record.id is not None and id_order(record.id) <= id_order(last):
                    continue  # already sent from the backlog
                if where.after_id is None and record.ts < opened:
                    continue
                yield _event(record)
        finally:
            feed.close()

    return EventSourceResponse(stream(), ping=_PING, send_timeout=_SEND_TIMEOUT)
