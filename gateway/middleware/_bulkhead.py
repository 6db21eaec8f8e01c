"""A per-backend concurrency cap (bulkhead) for the ratelimit middleware.

At most `max` calls run on a backend at once; up to `queue` more wait, each at most
`queue_timeout` seconds; anything beyond is refused at once. The waiting line is bounded so that a
slow backend cannot pile up unbounded coroutines (and client connections) in the gateway.

It is a plain `anyio.Semaphore` plus a counter of waiters: no task per call, and the fast path
(a free slot) takes the slot without yielding.
"""

from __future__ import annotations

import anyio
from pydantic import BaseModel, ConfigDict, Field


class ConcurrencyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max: int = Field(ge=1, description="Calls in flight on the backend at most.")
    queue: int = Field(default=0, ge=0, description="Calls waiting for a slot at most; more are refused.")
    queue_timeout: float = Field(default=5.0, gt=0, description="Seconds a call waits for a slot at most.")


class Full(Exception):
    """No slot: the waiting line is full (`timed_out` False) or the wait took too long (True)."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out waiting for a slot" if timed_out else "queue full")
        self.timed_out = timed_out


class Bulkhead:
    __slots__ = ("_semaphore", "_waiting", "max", "queue", "queue_timeout")

    def __init__(self, options: ConcurrencyOptions) -> None:
        self.max = options.max
        self.queue = options.queue
        self.queue_timeout = options.queue_timeout
        self._semaphore = anyio.Semaphore(options.max, max_value=options.max)
        self._waiting = 0

    @property
    def in_flight(self) -> int:
        return self.max - self._semaphore.value

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self) -> None:
        """Take a slot, or raise `Full`. Pair every successful call with `release()`."""
        try:
            # anyio hands a released slot straight to the first waiter, so a free slot here
            # means nobody is queued: taking it does not jump the line.
            self._semaphore.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        if self._waiting >= self.queue:
            raise Full(timed_out=False)
        self._waiting += 1
        try:
            with anyio.move_on_after(self.queue_timeout) as scope:
                await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        # anyio's acquire gives the slot back itself when cancelled after being handed one.
        if scope.cancelled_caught:
            raise Full(timed_out=True)

    def release(self) -> None:
        self._semaphore.release()
