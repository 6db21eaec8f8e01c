"""The event log: backend lifecycle events and admin actions, in SQLite, bounded.

Recording never waits: `record_event` / `record_admin` put the record on a bounded queue that one
writer task drains in batches (a full queue drops the record, counted in `dropped`, and logs it).
The writer gives each record its row id, prunes beyond `max_rows` / `max_days`, and then hands
the records, ids set, to `listeners` (live streams, the Redis publisher) in the order written.
Reads (`query`, `after`) share the writer's connection under a lock, which is also what makes
`:memory:` work.
"""

from __future__ import annotations

import logging
import operator
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from gateway._sqlite import BatchWriter, open_wal
from gateway.admin._record import COLUMNS, EventRecord
from gateway.backends.lifecycle import Event
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
    request_id TEXT
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
    before_id: int | None = None  # paging cursor: rows older than this one
    after_id: int | None = None  # resuming a stream: rows newer than this one
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
            and (self.before_id is None or (record.id is not None and record.id < self.before_id))
            and (self.after_id is None or (record.id is not None and record.id > self.after_id))
        )


class EventStore(BatchWriter[EventRecord]):
    what = "event"
    queue_before_running = True  # events from before the store runs are kept, not lost

    def __init__(self, config: EventsConfig | None = None) -> None:
        config = config or EventsConfig()
        super().__init__(queue_size=config.queue_size)
        self.path = config.path
        self.max_rows = config.max_rows
        self.max_days = config.max_days
        self.listeners: list[Listener] = []
        self._lock = threading.Lock()

    # -- recording (never waits) -----------------------------------------------------------------

    def record_event(self, event: Event) -> None:
        """A fleet event listener: `fleet.event_listeners.append(store.record_event)`."""
        self.offer(EventRecord.of(event))

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
