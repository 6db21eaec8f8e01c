"""Shutdown without waiting on clients: the calls in flight, and the drain that ends them.

Every client call runs through `Relay.dispatch`, inside `Drain.call()`. When the gateway is asked to
stop (SIGTERM/SIGINT, over HTTP or stdio), `Drain.run()`:

1. refuses new work: a call that starts now is answered `ShuttingDown` (-32010) at once, and the
   transports' `on_close` hooks run (listen streams and standalone GET streams end, so no client
   keeps a connection open by listening);
2. lets the calls in flight finish, until `listen.drain_timeout` (or a second signal: `hurry`);
3. ends the calls still running: each is cancelled and answered `ShuttingDown` on its own stream,
   so its client gets a JSON-RPC error rather than a torn connection.

The fleet is stopped after that, by its own bounded teardown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio

from gateway.errors import ShuttingDown

logger = logging.getLogger(__name__)

# After the deadline: time for the cancelled calls to unwind and hand their error to the transport.
CANCEL_GRACE = 2.0


class Drain:
    def __init__(self) -> None:
        self.closing = False
        # Run once when the drain begins: what holds a client connection open without a call.
        self.on_close: list[Callable[[], None]] = []
        self._calls: set[asyncio.Task[object]] = set()
        self._ended: set[asyncio.Task[object]] = set()  # cancelled by the drain, not by anyone else
        self._idle: anyio.Event | None = None

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one client call: refused once the drain began, ended by its deadline."""
        if self.closing:
            raise ShuttingDown()
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            yield
        except BaseException:
            if task in self._ended:  # ours: whatever the cancellation became on its way out
                raise ShuttingDown("gateway shutting down: the call was ended before it finished") from None
            raise
        finally:
            self._calls.discard(task)
            if task in self._ended:
                self._ended.discard(task)
                task.uncancel()  # answered: the task goes on to send the error
            if self._idle is not None and not self._calls:
                self._idle.set()

    async def run(self, timeout: float, hurry: anyio.Event | None = None) -> None:
        """Refuse new work, wait (at most `timeout`, or until `hurry`) for the calls in flight, then
        end the rest. Returns when every call has been answered or CANCEL_GRACE has passed."""
        if self.closing:
            return
        self.closing = True
        self._idle = idle = anyio.Event()
        for close in self.on_close:
            close()
        if not self._calls:
            idle.set()
        else:
            logger.info("draining: %d call(s) in flight, given up to %gs", len(self._calls), timeout)
        async with anyio.create_task_group() as tg:
            if hurry is not None:
                tg.start_soon(_cancel_on, hurry, tg.cancel_scope)
            with anyio.move_on_after(timeout):
                await idle.wait()
            tg.cancel_scope.cancel()
        left = self._calls - self._ended
        if left:
            logger.warning("drain: ending %d call(s) still running", len(left))
        for task in left:
            self._ended.add(task)
            task.cancel()
        with anyio.move_on_after(CANCEL_GRACE):
            await idle.wait()


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
