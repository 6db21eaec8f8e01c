"""Append-only SQLite stores written off the request path (the audit log, the admin event log).

Records are offered without ever waiting: a bounded queue feeds one writer task that writes them in
batches on a worker thread, so a call never waits on the disk. A full queue drops the record,
counts it and logs (at most once per interval). What is still queued when the store stops is
written before it closes, within a bound.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Generic, Self, TypeVar

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Writing what was queued at shutdown may take this long; a wedged disk must not hold shutdown.
DRAIN_TIMEOUT = 10.0
# A steady overload would otherwise log once per dropped record.
_DROP_LOG_INTERVAL = 10.0


def open_wal(path: str | Path, schema: str, *, busy_timeout: float) -> sqlite3.Connection:
    """A connection in WAL mode (readers never block the writer) with `schema` applied.

    `busy_timeout`: a backup or reader holding the lock delays the writer thread, never a call.
    """
    if str(path) != ":memory:":
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the process
    conn.executescript(schema)
    return conn


def add_columns(conn: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Add the (nullable) `columns` a file written by an older version lacks."""
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    for name, kind in columns.items():
        if name not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class BatchWriter(Generic[T]):
    """Subclasses connect (`connect`, on a worker thread) and write a batch (`write_batch`)."""

    what = "record"  # for log messages
    batch_size = 256
    # Whether records offered before the store runs wait in the queue (else they are dropped).
    queue_before_running = False

    def __init__(self, *, queue_size: int) -> None:
        self.queue_size = queue_size
        self.written = 0
        self.dropped = 0
        self._queue, self._receive = anyio.create_memory_object_stream[T](queue_size)
        self._send: MemoryObjectSendStream[T] | None = self._queue if self.queue_before_running else None
        self._appended = 0
        self._processed = 0  # written or failed: what flush() waits for
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._last_drop_log = -_DROP_LOG_INTERVAL
        self._conn: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def write_batch(self, batch: list[T]) -> None:
        """Write `batch`; count what was written in `self.written` (failures: log, don't raise)."""
        raise NotImplementedError

    def offer(self, record: T) -> bool:
        """Queue a record; never waits. False (and counted) when it had to be dropped."""
        if self._send is not None:
            try:
                self._send.send_nowait(record)
                self._appended += 1
                return True
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL:
            self._last_drop_log = now
            reason = "queue full" if self._send is not None else "store not running"
            logger.warning("%s dropped (%s); %d dropped so far", self.what, reason, self.dropped)
        return False

    async def flush(self) -> None:
        """Until every record offered so far has been written (or has failed), within a bound."""
        if self._send is None or self._processed >= self._appended:
            return
        event = anyio.Event()
        self._waiters.append((self._appended, event))
        with anyio.move_on_after(DRAIN_TIMEOUT):
            await event.wait()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """Accept and write records while inside."""
        self._conn = await anyio.to_thread.run_sync(self.connect)
        send, receive = self._queue, self._receive
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, receive)
                self._send = send
                try:
                    yield self
                finally:
                    self._send = None
                    tg.cancel_scope.cancel()
        finally:
            send.close()
            # Whatever was queued when we stopped (or were cancelled) still reaches the disk.
            with anyio.CancelScope(shield=True), anyio.move_on_after(DRAIN_TIMEOUT):
                rest: list[T] = []
                with suppress(anyio.WouldBlock, anyio.EndOfStream):
                    while True:
                        rest.append(receive.receive_nowait())
                if rest:
                    await self._write(rest)
                conn, self._conn = self._conn, None
                await anyio.to_thread.run_sync(conn.close)
            receive.close()
            for _, event in self._waiters:
                event.set()
            self._waiters.clear()

    async def _writer(self, receive: MemoryObjectReceiveStream[T]) -> None:
        while True:
            batch = [await receive.receive()]
            with suppress(anyio.WouldBlock):
                while len(batch) < self.batch_size:
                    batch.append(receive.receive_nowait())
            with anyio.CancelScope(shield=True):  # a batch taken off the queue is written whole
                await self._write(batch)

    async def _write(self, batch: list[T]) -> None:
        await self.write_batch(batch)
        self._processed += len(batch)
        waiting = []
        for target, event in self._waiters:
            if self._processed >= target:
                event.set()
            else:
                waiting.append((target, event))
        self._waiters = waiting
