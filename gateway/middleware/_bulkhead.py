"""A per-backend concurrency cap (bulkhead) for the ratelimit middleware.

At most `max` calls run on a backend at once; up to `queue` more wait, each at most
`queue_timeout` seconds; anything beyond is refused at once. The waiting line is bounded so that a
slow backend cannot pile up unbounded coroutines (and client connections) in the gateway.

It is a plain `anyio.Semaphore` plus a counter of waiters: no task per call, and the fast path
(a free slot) takes the slot without yielding. With a Redis store the cap is cluster-wide instead
(`SharedBulkhead`): one Lua script per acquire and one command per release, slots on leases.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("gateway.middleware.ratelimit")


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


# KEYS[1]: the cap's sorted set (member: a slot's token, score: when its lease ends, in Redis's
# own milliseconds, so that replicas' clocks do not matter). ARGV: max, lease (ms), token.
# Expired leases go first; a token that already holds a slot keeps it (a retried acquire).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], lease)
  return 1
end
return 0
"""

# ARGV: lease (ms), tokens... Extends the leases still held; never brings back one that expired
# (its slot may have been given to someone else since). Returns how many were extended.
# (One token per call today; several are accepted so that one script serves a batch as well.)
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local kept = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
    kept = kept + 1
  end
end
if kept > 0 then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return kept
"""

_POLL = 0.1  # seconds between tries of a waiting call for a slot freed by another gateway

Store = Callable[..., Awaitable[Any]]  # runs `op(*args)` on the store, timed and retried


class SharedBulkhead:
    """The same cap, counted in Redis across every gateway on that store (a counting semaphore).

    Each slot is a member of one sorted set with a lease: the gateway holding it extends the
    lease (`renew`, every third of it) while the call runs, so a gateway that dies mid-call frees
    its slots when their lease runs out, at most `lease` seconds after it died. The extension runs
    in a task beside each call (not one per process: a middleware's lifespan may be closed by
    another task than the one that opened it, on reload, which a task group cannot survive).
    The queue bound is per gateway (it protects this process's coroutines); a slot freed here
    wakes the waiters here at once, one freed by another gateway is seen within `_POLL` seconds.

    Store errors propagate to the caller (the ratelimit middleware applies `on_storage_error`).
    """

    __slots__ = (
        "_acquire",
        "_client",
        "_freed",
        "_held",
        "_ids",
        "_key",
        "_lease_ms",
        "_owner",
        "_renew",
        "_store",
        "_waiting",
        "max",
        "queue",
        "queue_timeout",
    )

    def __init__(
        self, options: ConcurrencyOptions, client: Any, key: str, lease: float, store: Store
    ) -> None:
        self.max = options.max
        self.queue = options.queue
        self.queue_timeout = options.queue_timeout
        self._key = key
        self._lease_ms = max(1, round(lease * 1000))
        self._store = store
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._owner = uuid.uuid4().hex
        self._ids = itertools.count()
        self._held: set[str] = set()
        self._freed = anyio.Event()
        self._waiting = 0

    @property
    def in_flight(self) -> int:
        """Calls of this gateway holding a slot."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self) -> str:
        """A slot's token, or raise `Full`. Pair every successful call with `release(token)`."""
        token = f"{self._owner}:{next(self._ids)}"
        if await self._try(token):
            return token
        if self._waiting >= self.queue:
            raise Full(timed_out=False)
        self._waiting += 1
        try:
            with anyio.move_on_after(self.queue_timeout):
                while True:
                    with anyio.move_on_after(_POLL):
                        await self._freed.wait()
                    if await self._try(token):
                        return token
        finally:
            self._waiting -= 1
        raise Full(timed_out=True)

    async def _try(self, token: str) -> bool:
        # Shielded (the store operation is bounded): a slot taken by a script whose answer a
        # cancellation dropped would be held, unrenewed, by nobody until its lease ran out.
        with anyio.CancelScope(shield=True):
            got = await self._store(self._acquire, [self._key], [self.max, self._lease_ms, token])
            if got:
                self._held.add(token)
        return bool(got)

    async def release(self, token: str) -> None:
        """Give the slot back; if the store does not answer, its lease frees it."""
        self._held.discard(token)
        freed, self._freed = self._freed, anyio.Event()
        freed.set()
        with anyio.CancelScope(shield=True), suppress(Exception):
            await self._store(self._client.zrem, self._key, token)

    async def keep(self, token: str) -> None:
        """Extend `token`'s lease every third of it, until cancelled (beside the slot's call).

        Never raises: a store that does not answer for a moment is covered by the lease; one
        that does not answer for a whole lease has let the slot go (the call runs on, uncounted).
        """
        while True:
            await anyio.sleep(self._lease_ms / 3000)
            try:
                kept = await self._store(self._renew, [self._key], [self._lease_ms, token])
            except Exception:  # whatever the store raised, the lease decides
                continue
            if not kept:
                logger.warning(
                    "ratelimit: a concurrency slot on %s outlived its lease (the store did not "
                    "answer for %g s); its call runs on, uncounted",
                    self._key,
                    self._lease_ms / 1000,
                )
                return
