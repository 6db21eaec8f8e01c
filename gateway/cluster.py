"""Several gateway processes as one: each replica's id, and the Redis Streams they share.

Every process has a replica id (`cluster.replica_id`, else host:pid:random) that its events and
audit records carry. With `cluster.redis`, those records are also appended to one Redis Stream per
kind (`<key_prefix>:events`, `<key_prefix>:audit`), so the admin API of any replica reads the
whole cluster's: the stream entry id, assigned by Redis, is the cluster-unique id and the order.

`Bus` carries messages between replicas (Redis pub/sub, one connection per replica): what one
replica must tell the others at once, such as a client's answer to a question another replica
asked. Pub/sub delivers only to who listens now; what must outlive a Redis restart or reach a
replica started later is kept in Redis besides (the streams, or keys), not only announced.

Appending is write-behind: `StreamWriter.append` puts the record in a bounded in-memory buffer and
returns; one task sends batches. While Redis is unreachable the buffer holds what was not sent (the
oldest dropped beyond `cluster.buffer`, counted and logged) and the batch is retried with backoff,
so a Redis restart loses nothing that fit in the buffer, the first record after it included. A
batch whose answer was lost to a dropped connection is sent again: delivery is at least once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.config.cluster import ClusterConfig
from gateway.config.secrets import Secrets

logger = logging.getLogger("gateway.cluster")

T = TypeVar("T")
Fields = Mapping[str, str]

# Every Redis command is bounded: a wedged Redis must not hold a writer, a reader or shutdown.
TIMEOUT = 5.0
_BATCH = 256
_RETRY_MIN, _RETRY_MAX = 0.05, 2.0
_WARN_INTERVAL = 30.0


def default_replica_id() -> str:
    """host:pid:random: readable, and unique even for a pid reused on a host."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def stream_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id ("<ms>-<seq>") as something that sorts like Redis orders them."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def is_stream_id(value: str) -> bool:
    ms, dash, seq = value.partition("-")
    return bool(dash) and ms.isdigit() and seq.isdigit() and len(ms) <= 20 and len(seq) <= 20


class Cluster:
    """This process's replica id, and (with `cluster.redis`) its connection to the shared streams."""

    def __init__(self, config: ClusterConfig | None = None, secrets: Secrets | None = None) -> None:
        self.config = config = config or ClusterConfig()
        self.replica = config.replica_id or default_replica_id()
        self.secrets = secrets if secrets is not None else Secrets()
        # The latest writer of each kind, for the admin API's view of what is buffered or lost.
        self.writers: dict[str, StreamWriter[Any]] = {}
        self._bus: Bus | None = None

    @property
    def shared(self) -> bool:
        return self.config.redis is not None

    def key(self, kind: str) -> str:
        return f"{self.config.key_prefix}:{kind}"

    def client(self) -> Redis:
        """A client of the shared Redis (the URL may be a secret reference: resolved, never logged).

        Raises `SecretError` when the reference does not resolve."""
        assert self.config.redis is not None
        url = self.secrets.resolve(self.config.redis, where="cluster.redis")
        return Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, decode_responses=True
        )

    def bus(self) -> Bus:
        """This replica's bus (one per process: it holds one Redis connection)."""
        if self._bus is None:
            self._bus = Bus(self)
        return self._bus

    def writer(self, kind: str, encode: Callable[[T], Fields]) -> StreamWriter[T]:
        config = self.config
        max_age = None if config.max_days is None else config.max_days * 86400
        writer = StreamWriter(
            self, self.key(kind), encode, buffer=config.buffer, max_len=config.max_len, max_age=max_age
        )
        self.writers[kind] = writer
        return writer


class StreamWriter(Generic[T]):
    """Write-behind appends to one stream: `append` never waits; `running()` sends."""

    def __init__(
        self,
        cluster: Cluster,
        key: str,
        encode: Callable[[T], Fields],
        *,
        buffer: int,
        max_len: int,
        max_age: float | None,
    ) -> None:
        self.cluster = cluster
        self.key = key
        self.encode = encode  # on the writer task: the caller pays only for the append
        self.buffer = buffer
        self.max_len = max_len
        self.max_age = max_age
        self.written = 0
        self.dropped = 0
        self.failures = 0  # batches that Redis refused or did not answer (each retried)
        # (sequence number, record): a batch in flight is taken off the front only once written,
        # and `append` may drop from the front meanwhile; the numbers tell what is left.
        self._pending: deque[tuple[int, T]] = deque()
        self._next = 0
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._last_warning = -_WARN_INTERVAL

    def __len__(self) -> int:
        """Records not yet in Redis."""
        return len(self._pending)

    def append(self, record: T) -> None:
        if len(self._pending) >= self.buffer:
            self._pending.popleft()
            self.dropped += 1
            self._warn(f"{self.key}: buffer of {self.buffer} full, oldest record dropped")
        self._pending.append((self._next, record))
        self._next += 1
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    async def flush(self, timeout: float = TIMEOUT * 2) -> bool:
        """Until everything appended so far is in Redis (True), or `timeout` passed (False)."""
        with anyio.move_on_after(timeout):
            await self._idle.wait()
        return not self._pending

    @asynccontextmanager
    async def running(self) -> AsyncIterator[StreamWriter[T]]:
        client = self.cluster.client()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._send_forever, client)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
            # What is still buffered gets one bounded chance before the process goes.
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                while self._pending and await self._send(client):
                    pass
            if self._pending:
                logger.warning("%s: %d records not written at shutdown", self.key, len(self._pending))
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                await client.aclose()

    async def _send_forever(self, client: Redis) -> None:
        delay = _RETRY_MIN
        while True:
            if not self._pending:
                self._idle.set()
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            if await self._send(client):
                delay = _RETRY_MIN
            else:
                await anyio.sleep(delay)  # Redis down: retry the same records, backing off
                delay = min(delay * 2, _RETRY_MAX)

    async def _send(self, client: Redis) -> bool:
        batch = [self._pending[i] for i in range(min(_BATCH, len(self._pending)))]
        try:
            with anyio.fail_after(TIMEOUT * 2):
                async with client.pipeline(transaction=False) as pipe:
                    for _, record in batch:
                        fields: dict[Any, Any] = dict(self.encode(record))
                        pipe.xadd(self.key, fields, maxlen=self.max_len, approximate=False)
                    if self.max_age is not None:
                        cutoff = int((time.time() - self.max_age) * 1000)
                        pipe.xtrim(self.key, minid=f"{cutoff}-0", approximate=False)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            self._warn(f"{self.key}: appending to Redis failed ({type(exc).__name__}); retrying")
            return False
        last = batch[-1][0]
        while self._pending and self._pending[0][0] <= last:
            self._pending.popleft()
            self.written += 1
        return True

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL:
            self._last_warning = now
            logger.warning("%s; %d buffered, %d dropped so far", message, len(self._pending), self.dropped)


Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Bus:
    """Messages between replicas: JSON objects on topics (channel `<key_prefix>:bus:<topic>`).

    Every message carries `from`, the sender's replica id; handlers hear every message of their
    topic, this replica's own included (a handler that acts only elsewhere checks `from`). While
    Redis is unreachable `publish` returns False at once rather than waiting, and the subscriber
    reconnects with backoff: what was published meanwhile is not delivered (pub/sub keeps
    nothing), so a sender that must not lose a message keeps it in Redis as well."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._handlers: dict[str, list[Handler]] = {}
        self._client: Redis | None = None
        self.connected = anyio.Event()  # set once subscribed (tests and start-up wait on it)

    def on(self, topic: str, handler: Handler) -> None:
        """Hear `topic`'s messages (registered before `running()`: the channels are fixed then)."""
        self._handlers.setdefault(self.cluster.key(f"bus:{topic}"), []).append(handler)

    def off(self, topic: str, handler: Handler) -> None:
        """Stop hearing `topic` with `handler` (a part unmounted while the bus runs)."""
        handlers = self._handlers.get(self.cluster.key(f"bus:{topic}"), [])
        if handler in handlers:
            handlers.remove(handler)

    async def publish(self, topic: str, message: Mapping[str, Any]) -> bool:
        """Send `message` to every replica listening; False (logged) when Redis did not take it."""
        client = self._client
        if client is None:
            return False
        data = json.dumps({**message, "from": self.cluster.replica}, separators=(",", ":"))
        try:
            with anyio.fail_after(TIMEOUT):
                await client.publish(self.cluster.key(f"bus:{topic}"), data)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("bus: publishing on %s failed (%s)", topic, type(exc).__name__)
            return False
        return True

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Bus]:
        client = self._client = self.cluster.client()
        try:
            async with anyio.create_task_group() as tg:
                if self._handlers:
                    tg.start_soon(self._listen_forever, client)
                else:
                    self.connected.set()
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._client = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                await client.aclose()

    async def _listen_forever(self, client: Redis) -> None:
        delay = _RETRY_MIN
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                with anyio.fail_after(TIMEOUT):
                    await pubsub.subscribe(*self._handlers)
                self.connected.set()
                delay = _RETRY_MIN
                while True:
                    # Bounded, so that a connection Redis dropped silently is noticed.
                    with anyio.fail_after(TIMEOUT * 6):
                        raw = await pubsub.get_message(timeout=TIMEOUT * 2)
                    if raw is not None:
                        await self._deliver(raw)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.debug("bus: %s; resubscribing", type(exc).__name__)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await anyio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _deliver(self, raw: Mapping[str, Any]) -> None:
        try:
            message = json.loads(raw["data"])
        except (TypeError, ValueError, KeyError):
            return  # not one of ours: the channel names are ours, but Redis is shared
        if not isinstance(message, dict):
            return
        for handler in self._handlers.get(str(raw.get("channel")), ()):
            try:
                await handler(message)
            except Exception:  # one handler's bug must not end the bus for the others
                logger.exception("bus: handler for %s failed", raw.get("channel"))


# -- reading ---------------------------------------------------------------------------------------

_PAGE = 500


async def scan(
    client: Redis,
    key: str,
    accept: Callable[[str, dict[str, str]], T | None],
    *,
    limit: int,
    before: str | None = None,
    after: str | None = None,
) -> list[T]:
    """Up to `limit` entries `accept` takes (it returns None for the rest), newest first; or
    oldest first from just after `after`. Filters run here: a stream has no secondary index, and
    retention (`max_len`) bounds how much a query can scan."""
    out: list[T] = []
    ascending = after is not None
    cursor = f"({after}" if after is not None else f"({before}" if before is not None else None
    while len(out) < limit:
        with anyio.fail_after(TIMEOUT * 2):
            if ascending:
                page = _entries(await client.xrange(key, min=cursor or "-", max="+", count=_PAGE))
            else:
                page = _entries(await client.xrevrange(key, max=cursor or "+", min="-", count=_PAGE))
        for entry_id, fields in page:
            item = accept(entry_id, fields)
            if item is not None:
                out.append(item)
                if len(out) == limit:
                    break
        if len(page) < _PAGE:
            break
        cursor = f"({page[-1][0]}"
    return out


async def follow(cluster: Cluster, key: str, deliver: Callable[[str, dict[str, str]], None]) -> None:
    """Hand every entry appended to `key` from now on to `deliver`, in order, until cancelled.

    Redis being unreachable pauses it; it resumes after the last entry delivered, so nothing
    written meanwhile is skipped."""
    client = cluster.client()
    last = "$"
    delay = _RETRY_MIN
    try:
        while True:
            try:
                with anyio.fail_after(TIMEOUT * 2):
                    if last == "$":
                        # The current end, as an id: a "$" re-sent after a failure would skip entries.
                        info = await client.xinfo_stream(key) if await client.exists(key) else None
                        last = str(info["last-generated-id"]) if info else "0-0"
                    answer: Any = await client.xread({key: last}, count=_PAGE, block=int(TIMEOUT * 1000 / 2))
                delay = _RETRY_MIN
            except (RedisError, OSError, TimeoutError) as exc:
                logger.debug("following %s: %s; retrying", key, type(exc).__name__)
                await anyio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            for _, entries in answer or []:
                for entry_id, fields in _entries(entries):
                    last = entry_id
                    deliver(entry_id, fields)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
            await client.aclose()


def _entries(raw: Any) -> list[tuple[str, dict[str, str]]]:
    """Stream entries as the client decodes them (`decode_responses`), typed."""
    return [(str(entry_id), dict(fields or {})) for entry_id, fields in raw or []]
