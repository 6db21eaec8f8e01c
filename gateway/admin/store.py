"""The event log: backend lifecycle events and admin actions, in SQLite, bounded.

Recording never waits: `record_event` / `record_admin` put the record on a bounded queue that one
writer task drains in batches (a full queue drops the record, counted in `dropped`, and logs it).
The writer gives each record its row id, prunes beyond `max_rows` / `max_days`, and then hands
the records, ids set, to `listeners` (live streams, the Redis publisher) in the order written.
Reads (`query`, `after`) share the writer's connection under a lock, which is also what makes
`:memory:` work.

With `cluster.redis`, `SharedEvents` is what the admin API reads instead: every replica's records,
from the `<key_prefix>:events` stream (`gateway.cluster`).
"""

from __future__ import annotations

import logging
import operator
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway._sqlite import BatchWriter, add_columns, open_wal
from gateway.admin._errors import ApiError
from gateway.admin._record import COLUMNS, EventRecord, id_order
from gateway.backends.lifecycle import Event
from gateway.cluster import TIMEOUT, Cluster, follow, scan
from gateway.config.admin import EventsConfig

logger = logging.getLogger("gateway.admin.events")

Listener = Callable[[EventRecord], None]
_MAX_PAGE = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    server TEXT,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    old TEXT,
    new TEXT,
    actor TEXT,
    action TEXT,
    outcome TEXT,
    request_id TEXT,
    replica TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_server ON events (server, id);
"""
_INSERT = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_values = operator.attrgetter(*COLUMNS)  # a record as its row


@dataclass(frozen=True)
class EventFilter:
    servers: Sequence[str] = ()
    severities: Sequence[str] = ()
    categories: Sequence[str] = ()
    types: Sequence[str] = ()
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # exclusive
    before_id: int | str | None = None  # paging cursor: rows older than this one
    after_id: int | str | None = None  # resuming a stream: rows newer than this one
    limit: int = 100
    ascending: bool = False

    def matches(self, record: EventRecord) -> bool:
        """Whether `record` passes the filter: the clauses of `_sql`, and a missing id (NULL) never
        passes an id bound."""
        return (
            (not self.servers or record.server in self.servers)
            and (not self.severities or record.severity in self.severities)
            and (not self.categories or record.category in self.categories)
            and (not self.types or record.type in self.types)
            and (self.since is None or record.ts >= self.since)
            and (self.until is None or record.ts < self.until)
            and (
                self.before_id is None
                or (record.id is not None and id_order(record.id) < id_order(self.before_id))
            )
            and (
                self.after_id is None
                or (record.id is not None and id_order(record.id) > id_order(self.after_id))
            )
        )


class EventLog(Protocol):
    """What the admin API reads events from: this process's store, or the cluster's stream."""

    listeners: list[Listener]

    async def query(self, where: EventFilter) -> list[EventRecord]: ...


class EventStore(BatchWriter[EventRecord]):
    what = "event"
    queue_before_running = True  # events from before the store runs are kept, not lost

    def __init__(self, config: EventsConfig | None = None, *, replica: str | None = None) -> None:
        config = config or EventsConfig()
        self.replica = replica  # stamped on every record
        super().__init__(queue_size=config.queue_size)
        self.path = config.path
        self.max_rows = config.max_rows
        self.max_days = config.max_days
        self.listeners: list[Listener] = []
        self._lock = threading.Lock()

    # -- recording (never waits) -----------------------------------------------------------------

    def record_event(self, event: Event) -> None:
        """A fleet event listener: `fleet.event_listeners.append(store.record_event)`."""
        self.offer(EventRecord.of(event, self.replica))

    def record_admin(
        self,
        who: str,
        action: str,
        target: str | None,
        outcome: str,
        *,
        reason: str = "",
        request_id: str | None = None,
    ) -> bool:
        """An admin action: who did what to which server (or `None`: the gateway), and how it ended."""
        return self.offer(
            EventRecord(
                ts=time.time(),
                type="action",
                server=target,
                category="admin",
                severity="info" if outcome == "ok" else "warning",
                reason=reason,
                actor=who,
                action=action,
                outcome=outcome,
                request_id=request_id,
                replica=self.replica,
            )
        )

    # -- the writer ------------------------------------------------------------------------------

    async def write_batch(self, batch: list[EventRecord]) -> None:
        try:
            written = await anyio.to_thread.run_sync(self._insert, batch)
            self.written += len(written)
        except sqlite3.Error:
            logger.exception("writing %d events to %s failed; they are only streamed", len(batch), self.path)
            written = batch
        for record in written:
            for listener in list(self.listeners):
                try:
                    listener(record)
                except Exception:
                    logger.exception("event listener %r failed", listener)

    def connect(self) -> sqlite3.Connection:
        conn = open_wal(self.path, _SCHEMA, busy_timeout=30)
        add_columns(conn, "events", {"replica": "TEXT"})  # files written before replica ids
        with self._lock, conn:
            self._prune(conn)
        return conn

    def _insert(self, batch: list[EventRecord]) -> list[EventRecord]:
        assert self._conn is not None
        out: list[EventRecord] = []
        with self._lock, self._conn:
            for record in batch:
                cur = self._conn.execute(_INSERT, _values(record))
                assert cur.lastrowid is not None
                out.append(record.with_id(cur.lastrowid))
            self._prune(self._conn)
        return out

    def _prune(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self.max_rows,),
        )
        if self.max_days is not None:
            conn.execute("DELETE FROM events WHERE ts < ?", (time.time() - self.max_days * 86400,))

    # -- reading ---------------------------------------------------------------------------------

    async def query(self, where: EventFilter) -> list[EventRecord]:
        """Records matching `where`, newest first (or oldest first with `ascending`)."""
        await self.flush()
        return await anyio.to_thread.run_sync(self._select, where)

    def _select(self, where: EventFilter) -> list[EventRecord]:
        if self._conn is None:
            return []
        sql, args = _sql(where)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_row(row) for row in rows]


def _sql(where: EventFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, values in (
        ("server", where.servers),
        ("severity", where.severities),
        ("category", where.categories),
        ("type", where.types),
    ):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
    for clause, value in (
        ("ts >= ?", where.since),
        ("ts < ?", where.until),
        ("id < ?", where.before_id),
        ("id > ?", where.after_id),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    sql = f"SELECT id, {', '.join(COLUMNS)} FROM events"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += f" ORDER BY id {'ASC' if where.ascending else 'DESC'} LIMIT ?"
    args.append(max(1, min(where.limit, _MAX_PAGE)))
    return sql, args


def _row(row: tuple[Any, ...]) -> EventRecord:
    values = dict(zip(COLUMNS, row[1:], strict=True))
    return EventRecord(**values, id=row[0])


class SharedEvents:
    """The whole cluster's event log (`cluster.redis`): every replica appends what its own store
    wrote to one stream, and reads everyone's from it.

    The local store stays the record of this process (and its listeners the Redis channel's); the
    stream's copy is what queries and live streams see, so any replica shows every replica's
    events, ordered and numbered by the stream entry id."""

    def __init__(self, cluster: Cluster, local: EventStore) -> None:
        self.cluster = cluster
        self.local = local
        self.key = cluster.key("events")
        self.writer = cluster.writer("events", EventRecord.to_stream)
        self.listeners: list[Listener] = []
        self._client: Redis | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SharedEvents]:
        """Enter before the local store, so that its final drain still reaches the stream."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.writer.running())
            self._client = self.cluster.client()
            stack.push_async_callback(self._close)
            self.local.listeners.append(self.writer.append)
            stack.callback(self.local.listeners.remove, self.writer.append)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            tg.start_soon(follow, self.cluster, self.key, self._deliver)
            yield self

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                await client.aclose()

    def _deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        record = EventRecord.from_stream(entry_id, fields)
        if record is None:
            return
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception:
                logger.exception("event listener %r failed", listener)

    async def query(self, where: EventFilter) -> list[EventRecord]:
        """As `EventStore.query`, across the cluster. Redis unreachable: a 503, not a partial view."""
        # Read your own writes: what this replica recorded is in the stream before it is read.
        await self.local.flush()
        await self.writer.flush(TIMEOUT)
        plain = replace(where, before_id=None, after_id=None)

        def accept(entry_id: str, fields: dict[str, str]) -> EventRecord | None:
            record = EventRecord.from_stream(entry_id, fields)
            return record if record is not None and plain.matches(record) else None

        if self._client is None:
            raise _unavailable()
        try:
            return await scan(
                self._client,
                self.key,
                accept,
                limit=max(1, min(where.limit, _MAX_PAGE)),
                before=None if where.before_id is None else str(where.before_id),
                after=None if where.after_id is None else str(where.after_id),
            )
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("reading the cluster's events from Redis failed (%s)", type(exc).__name__)
            raise _unavailable() from None


def _unavailable() -> ApiError:
    return ApiError(503, "unavailable", "the cluster's event log (Redis) is unreachable; retry later")
