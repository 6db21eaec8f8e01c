"""Resumable event streams (2025-11-25): the SSE events a client may ask for again.

A 2025-11-25 client whose connection drops mid-call reconnects with a GET carrying the id of the
last event it received (`Last-Event-ID`) and gets what it missed, then the rest. Every SSE event
sent to such a client has an id and is kept here, bounded in number and age (the oldest is
forgotten first, and in bytes of what the exchange relays: a result may be large), so a stream
nobody resumes is forgotten too.

One store per gateway, shared by both senders, with one id scheme, so a `Last-Event-ID` names an
event whoever sent it:
- the SDK's transport, for what it serves (its GET stream, `initialize`, refusals): each session's
  transport gets its own view of the store (`Events.view`), the SDK's `EventStore`. Its stream ids
  are request ids, unique only within a session, and one session's `Last-Event-ID` must never
  replay another's events;
- the exchange (`front.exchange`), for the SSE answers of the relayed calls it serves. A GET
  resuming one of its streams is its to serve; any other `Last-Event-ID` is the SDK's.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage, jsonrpc_message_adapter

from gateway.config.models import EventStoreConfig


class Sender(IntEnum):
    """Who sent a stream: the SDK's transport, or the exchange."""

    SDK = 0
    EXCHANGE = 1


# (session id, sender, stream id). The SDK's stream id is the request's id as text; a client may
# use an id again once its request is answered, so the exchange's add a number of their own.
StreamKey = tuple[str, Sender, str]


@dataclass(slots=True)
class Event:
    id: EventId
    seq: int
    stream: StreamKey
    # The SDK's message; the exchange's JSON text (it has it already, as sent); None: a priming event.
    message: JSONRPCMessage | bytes | None
    at: float
    size: int  # bytes counted against `max_bytes` (the exchange's; the SDK's are small: its own)


class Events:
    """Every kept event, oldest first; at most `max_events` of them, `max_bytes` of the exchange's
    messages, none older than `max_age` seconds."""

    def __init__(self, config: EventStoreConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_events = config.max_events
        self.max_age = config.max_age
        self.max_bytes = config.max_bytes
        self._bytes = 0
        self.retry = config.retry  # milliseconds a client is told to wait before reconnecting
        self._clock = clock
        self._events: OrderedDict[EventId, Event] = OrderedDict()
        self._streams: dict[StreamKey, deque[Event]] = {}
        self._seq = 0
        self._streams_made = 0
        # A new gateway's ids never name an event of an earlier one's (a client may still hold one).
        self._prefix = secrets.token_hex(4)

    def __len__(self) -> int:
        return len(self._events)

    def view(self, session_id: str) -> SessionEvents:
        """The SDK's event store for one session's transport."""
        return SessionEvents(self, session_id)

    def stream(self, session_id: str, request_id: str | int) -> StreamKey:
        """A new stream of the exchange's, for its answer to the request `request_id`."""
        self._streams_made += 1
        return (session_id, Sender.EXCHANGE, f"{request_id}#{self._streams_made}")

    def add(self, stream: StreamKey, message: JSONRPCMessage | bytes | None) -> EventId:
        """Keep an event of `stream`; its id."""
        now = self._clock()
        self._expire(now)
        self._seq += 1
        size = len(message) if isinstance(message, bytes) else 0
        event = Event(f"{self._prefix}-{self._seq}", self._seq, stream, message, now, size)
        self._bytes += size
        self._events[event.id] = event
        kept = self._streams.get(stream)
        if kept is None:
            kept = self._streams[stream] = deque()
        kept.append(event)
        while len(self._events) > self.max_events or self._bytes > self.max_bytes:
            self._drop_oldest()  # possibly this one too: too large to keep
        return event.id

    def find(self, session_id: str, event_id: str) -> Event | None:
        """The kept event `event_id` of the session (None: unknown, forgotten, or another's)."""
        self._expire(self._clock())
        event = self._events.get(event_id)
        return event if event is not None and event.stream[0] == session_id else None

    def after(self, event: Event) -> list[Event]:
        """The events of `event`'s stream kept after it, in order."""
        return [e for e in self._streams.get(event.stream, ()) if e.seq > event.seq]

    def _expire(self, now: float) -> None:
        oldest = now - self.max_age
        while self._events and next(iter(self._events.values())).at < oldest:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, event = self._events.popitem(last=False)
        self._bytes -= event.size
        # Events are kept in one order: the oldest of all is the oldest of its stream.
        kept = self._streams[event.stream]
        kept.popleft()
        if not kept:
            del self._streams[event.stream]


class SessionEvents(EventStore):
    """One session's view of the store, for the SDK's transport (its streams only)."""

    def __init__(self, events: Events, session_id: str) -> None:
        self._events = events
        self._session = session_id

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self._events.add((self._session, Sender.SDK, stream_id), message)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        event = self._events.find(self._session, last_event_id)
        if event is None or event.stream[1] != Sender.SDK:
            return None  # the SDK answers an id it does not know (the exchange serves its own)
        for later in self._events.after(event):
            if later.message is not None:  # priming events carry no message
                await send_callback(EventMessage(_message(later.message), later.id))
        return event.stream[2]


def _message(message: JSONRPCMessage | bytes) -> JSONRPCMessage:
    if isinstance(message, bytes):
        return jsonrpc_message_adapter.validate_json(message, by_name=False)
    return message
