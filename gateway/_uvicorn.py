"""uvicorn as the gateway runs it: its shutdown begins with the gateway's drain (`_drain`).

uvicorn on its own closes the listening socket and then waits for every connection to finish,
with no bound but `timeout_graceful_shutdown`, after which it cancels the request tasks (the
client sees a torn connection); a second SIGTERM changes nothing, a second SIGINT skips the
application's shutdown, and so the fleet's teardown. Here:

- first signal: the drain runs while the socket still accepts (a new request gets 503 and a
  JSON-RPC error rather than a refused connection), then uvicorn's own shutdown, whose wait for
  connections is bounded by `CLOSE_GRACE` (every call has been answered by then), then the
  application's shutdown: the fleet's bounded teardown;
- second signal (either): the drain stops waiting for running calls and ends them now;
- third: uvicorn's own handling (a SIGINT skips the application's shutdown).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from types import FrameType

import anyio
import uvicorn

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
