"""polling: an MCP server on the `mcp` SDK over streamable HTTP that closes a call's SSE stream
mid-call (the SDK's `close_sse_stream`, the conformance suite's `server-sse-polling` scenario).

Its streams are resumable (an event store, and a `retry:` in each priming event): a client is
expected to come back with `Last-Event-ID` and get the rest of its answer. Tools:

    ``poll(seconds)``   progress, then the stream closed, then `seconds` of work, progress, the answer
    ``echo(text)``      answers at once

`app(retry_ms)` is the ASGI app (tests serve it in-process with `tests._support.serve_asgi`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import JSONRPCMessage


class Events(EventStore):
    """The smallest resumable store: every event of this short-lived server, in order."""

    def __init__(self) -> None:
        self.events: deque[tuple[EventId, StreamId, JSONRPCMessage | None]] = deque(maxlen=1000)
        self.replays = 0  # resumptions served (tests check the client came back)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = f"e{_next(self.events)}"
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        found = [i for i, (event_id, _, _) in enumerate(self.events) if event_id == last_event_id]
        if not found:
            return None
        self.replays += 1
        stream = self.events[found[0]][1]
        for event_id, stream_id, message in list(self.events)[found[0] + 1 :]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def _next(events: deque[tuple[EventId, StreamId, JSONRPCMessage | None]]) -> int:
    return int(events[-1][0][1:]) + 1 if events else 1


def app(retry_ms: int = 100) -> tuple[Any, Events]:
    """The server's ASGI app, and its event store."""
    server = MCPServer("polling")
    events = Events()

    @server.tool()
    async def poll(seconds: float, ctx: Context) -> str:
        """Report progress, close this call's stream, work, report again, answer."""
        await ctx.report_progress(0, 2, "started")
        await ctx.close_sse_stream()
        await anyio.sleep(seconds)
        await ctx.report_progress(1, 2, "worked")
        return f"polled after {seconds}s"

    @server.tool()
    async def echo(text: str) -> str:
        return f"polling: {text}"

    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    starlette = server.streamable_http_app(
        event_store=events, retry_interval=retry_ms, transport_security=security
    )
    return starlette, events
