"""The interface every backend kind implements: how a backend session reaches its server.

A `Transport` lives as long as its backend and opens one `Link` per session (`connect()`, an async
context manager: entering it starts the server or connects to it, leaving it stops or
disconnects). What only some kinds can do is declared on every transport, so the session and the
supervisor read a value instead of probing for members:

- `Link.direct`: a pipe (process, container) lets the relay's own requests skip the SDK's
  dispatcher (`_direct`); `None` elsewhere;
- `expired`: the server forgot our session (URL backends; always `False` for a pipe, which
  cannot outlive its session);
- `health_check`: a probe of the kind's own (an HTTP health path), or `None`: MCP ping then;
- `aclose()`: releases what the transport holds for all its sessions (an HTTP or engine client).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol

from mcp.shared.message import SessionMessage

from gateway._sdk import ReadStream, WriteStream
from gateway.backends._direct import DirectCalls

Streams = tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]
HealthCheck = Callable[[], Awaitable[None]]


class Link(NamedTuple):
    """One open connection to a server: the SDK session's streams, and the direct path if any."""

    read: ReadStream[SessionMessage | Exception]
    write: WriteStream[SessionMessage]
    direct: DirectCalls | None = None


class Transport(Protocol):
    """How one backend reaches its server (stdio, docker, http: one module each)."""

    def connect(self) -> AbstractAsyncContextManager[Link]:
        """Open a connection for one session; leaving the context ends it (bounded)."""
        ...

    @property
    def expired(self) -> bool:
        """Whether the server said it no longer knows the current session."""
        ...

    @property
    def health_check(self) -> HealthCheck | None:
        """The kind's own health probe (raises on failure), or `None` for MCP ping."""
        ...

    async def aclose(self) -> None:
        """Release what the transport keeps across sessions; idempotent."""
        ...


class PipeTransport:
    """The declared defaults of a transport whose session is a pipe: never expired, pinged."""

    @property
    def expired(self) -> bool:
        return False

    @property
    def health_check(self) -> HealthCheck | None:
        return None

    async def aclose(self) -> None:
        return None
