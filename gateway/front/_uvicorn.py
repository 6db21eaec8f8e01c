"""uvicorn as the gateway runs it: deadlines for reading a request, and a shutdown that begins
with the gateway's drain (`_drain`). `settings()` is what the CLI and the tests serve with.

Reading a request. uvicorn waits as long as a client likes for a request's headers and body: fifty
clients sending a byte now and then (slowloris) each hold a connection and its buffers for as long
as they keep going. `DeadlineHttp` is uvicorn's own protocol (httptools) with two deadlines,
through uvicorn's public extension point (`uvicorn.Config(http=<protocol class>)`) and its parser
callbacks:

- `header_timeout`: from a connection's first moment, or from the first byte of a request on a
  kept-alive connection, to the end of the request's headers. Past it the client gets a 408 and
  the connection is closed. (An idle kept-alive connection is closed by `timeout_keep_alive`.)
- `body_timeout`: from the end of the headers to the end of the body. Past it the connection is
  closed; the app reading the body sees the client disconnect.

Shutting down. uvicorn on its own closes the listening socket and then waits for every connection
to finish, with no bound but `timeout_graceful_shutdown`, after which it cancels the request tasks
(the client sees a torn connection); a second SIGTERM changes nothing, a second SIGINT skips the
application's shutdown, and so the fleet's teardown. `Server`:

- first signal: the drain runs while the socket still accepts (a new request gets 503 and a
  JSON-RPC error rather than a refused connection), then uvicorn's own shutdown, whose wait for
  connections is bounded by `CLOSE_GRACE` (every call has been answered by then), then the
  application's shutdown: the fleet's bounded teardown;
- second signal (either): the drain stops waiting for running calls and ends them now;
- third: uvicorn's own handling (a SIGINT skips the application's shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import anyio
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config.models import ListenConfig

logger = logging.getLogger("gateway")

# Seconds an idle client connection is kept. uvicorn's default (5 s) is httpx's pool expiry too: a
# client reusing a pooled connection as the server closes it gets a torn request (ReadError), seen
# under load in the crash-storm test. Longer than the common clients' expiry, as nginx's 75 s.
KEEP_ALIVE = 75

# After the drain every call is answered: time for the last bytes to reach slow clients.
CLOSE_GRACE = 2

DrainFn = Callable[[anyio.Event | None], Awaitable[None]]


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: DrainFn) -> None:
        if config.timeout_graceful_shutdown is None:
            config.timeout_graceful_shutdown = CLOSE_GRACE
        super().__init__(config)
        self._drain = drain
        self._signals = 0
        self._hurry: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._hurry = anyio.Event()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 2 and self._loop is not None and self._hurry is not None:
            # A signal handler runs between two bytecodes of the loop's thread: wake the loop.
            self._loop.call_soon_threadsafe(self._hurry.set)
            return
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._drain(self._hurry)
        await super().shutdown(sockets)


_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class DeadlineHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines above (set on a subclass: `http_protocol`)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, headers=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a new request on a kept-alive connection
            self._arm(self.header_timeout, headers=True)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self.body_timeout, headers=False)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, *, headers: bool) -> None:
        self._disarm()
        self._reading_headers = headers
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        what = "headers" if self._reading_headers else "body"
        logger.info("closed a connection from %s: its request %s took too long", client, what)
        if self._reading_headers and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_TIMED_OUT)  # nothing else is being answered on this connection
        self.transport.close()


def http_protocol(listen: ListenConfig) -> type[DeadlineHttp]:
    """The protocol class to give uvicorn (`http=`), with `listen`'s deadlines."""
    deadlines = {"header_timeout": listen.header_timeout, "body_timeout": listen.body_timeout}
    return type("DeadlineHttp", (DeadlineHttp,), deadlines)


def settings(app: ASGIApp, listen: ListenConfig, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for the gateway's app (`options`: host, port, log settings)."""
    return uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        server_header=False,  # no HTTP server name and version to fingerprint
        timeout_keep_alive=KEEP_ALIVE,
        http=http_protocol(listen),  # deadlines for reading a request
        **options,
    )
