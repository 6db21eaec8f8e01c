"""Mirror every event to a Redis channel as JSON, for other gateway instances and dashboards.

Publishing never holds up the event log: records go on a bounded queue that one task drains. When
Redis is slow or down, records beyond the queue are dropped and counted; the SQLite log still has
them. The URL may be a secret reference; it is resolved when publishing starts and never logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.admin._record import EventRecord
from gateway.config.secrets import Secrets
from gateway.errors import SecretError

logger = logging.getLogger("gateway.admin.events")
_TIMEOUT = 5.0
_DRAIN_TIMEOUT = 5.0
_WARN_INTERVAL = 30.0


class RedisPublisher:
    def __init__(
        self, url: str, channel: str, queue_size: int = 10_000, *, secrets: Secrets | None = None
    ) -> None:
        self.url = url
        self.secrets = secrets if secrets is not None else Secrets()
        self.channel = channel
        self.published = 0
        self.dropped = 0
        self._send, self._receive = anyio.create_memory_object_stream[str](queue_size)
        self._last_warning = -_WARN_INTERVAL

    def publish(self, record: EventRecord) -> None:
        """An event store listener: queue the record, never wait."""
        try:
            self._send.send_nowait(json.dumps(record.to_json(), separators=(",", ":")))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped += 1
            self._warn("event not published to Redis (queue full or publisher stopped)")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL:
            self._last_warning = now
            logger.warning("%s; %d dropped so far", message, self.dropped)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RedisPublisher]:
        try:
            url = self.secrets.resolve(self.url, where="admin.events.redis")
        except SecretError as exc:
            logger.error("events are not published to Redis: %s", exc.message)
            self._send.close()
            yield self
            return
        client = Redis.from_url(url, socket_timeout=_TIMEOUT, socket_connect_timeout=_TIMEOUT)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._publisher, client, self._receive)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._send.close()
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(_DRAIN_TIMEOUT),
                suppress(anyio.WouldBlock, anyio.EndOfStream),
            ):
                while True:
                    await self._publish_one(client, self._receive.receive_nowait())
            with anyio.CancelScope(shield=True), anyio.move_on_after(_DRAIN_TIMEOUT):
                await client.aclose()
            self._receive.close()

    async def _publisher(self, client: Redis, receive: MemoryObjectReceiveStream[str]) -> None:
        async for message in receive:
            await self._publish_one(client, message)

    async def _publish_one(self, client: Redis, message: str) -> None:
        try:
            with anyio.fail_after(_TIMEOUT * 2):
                await client.publish(self.channel, message)
            self.published += 1
        except (RedisError, OSError, TimeoutError) as exc:
            self.dropped += 1
            self._warn(f"publishing an event to Redis failed ({type(exc).__name__})")
