"""`audit`: an append-only record of every call — who, what, when, how it ended, how long it took.

Configured in gateway.yaml::

    middleware:
      - use: masking          # first: audit stores arguments as they reach it (or the masked copy
                              # an earlier middleware puts in call.state["masked_arguments"])
      - use: audit
        options: {path: /var/lib/mcp-gateway/audit.db, arguments: keys, retention_days: 90}

The store is SQLite (WAL mode). Calls never wait on the disk: records go into a bounded queue that
one writer task drains in batches; when the queue is full the record is dropped, counted
(`Audit.log.dropped`) and logged — an audit log must not become a way to stall the gateway.
The table refuses UPDATE, and DELETE of rows younger than a day, by trigger; the only delete the
gateway itself issues is the `retention_days` pruning when it starts.

Every record carries the replica id of the process that served the call. With `cluster.redis`
(`gateway.cluster`), records are also appended, write-behind, to the `<key_prefix>:audit` stream,
and `Audit.query` reads the whole cluster's from there; the file stays this process's own.
"""

from __future__ import annotations

import json
import logging
import operator
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from gateway._sqlite import BatchWriter, add_columns, open_wal
from gateway.cluster import TIMEOUT, Cluster, scan
from gateway.config.secrets import SecretValues
from gateway.errors import GatewayError
from gateway.logs import current_request_id
from gateway.middleware.base import Call, CallNext, Result
from gateway.middleware.globs import compile_globs

if TYPE_CHECKING:
    from gateway.fleet import Fleet

logger = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    identity TEXT NOT NULL,
    identity_source TEXT NOT NULL,
    method TEXT NOT NULL,
    server TEXT,
    name TEXT,
    outcome TEXT NOT NULL,
    error_code INTEGER,
    duration_ms REAL NOT NULL,
    request_id TEXT,
    rpc_id TEXT,
    arguments TEXT,
    replica TEXT
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_ms);
CREATE INDEX IF NOT EXISTS audit_identity_ts ON audit (identity, ts_ms);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_recent_delete BEFORE DELETE ON audit
WHEN old.ts_ms > CAST(strftime('%s', 'now') AS INTEGER) * 1000 - {_DAY_MS}
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only (only retention pruning deletes)'); END;
"""
MASKED_ARGUMENTS = "masked_arguments"  # call.state key: what to store instead of the real arguments
_SECRET_KEYS = ["*password*", "*passwd*", "*secret*", "*token*", "*api_key*", "*apikey*", "*authorization*"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    ts: str  # UTC ISO 8601, when the call arrived
    ts_ms: int  # the same instant, epoch milliseconds
    identity: str
    identity_source: str
    method: str
    server: str | None
    name: str | None  # public tool/prompt name or resource URI
    outcome: str  # ok | is_error | input_required | error | cancelled
    error_code: int | None
    duration_ms: float
    request_id: str | None  # the gateway's request id (as in the logs)
    rpc_id: str | None  # the client's JSON-RPC id
    arguments: str | None  # JSON, per the `arguments` option
    replica: str | None = None  # the gateway process that served the call (`cluster.replica_id`)


_COLUMNS = tuple(f.name for f in fields(AuditRecord))
_row = operator.attrgetter(*_COLUMNS)  # a record's values in column order (astuple deep-copies)
_INSERT = f"INSERT INTO audit ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


class AuditLog(BatchWriter[AuditRecord]):
    """The SQLite store: a non-blocking `append` while `running()`, and `query` for readers."""

    what = "audit record"
    batch_size = 512

    def __init__(self, path: str | Path, *, queue_size: int = 10_000, retention_days: int | None = None):
        super().__init__(queue_size=queue_size)
        self.path = Path(path).absolute()
        self.retention_days = retention_days

    def append(self, record: AuditRecord) -> bool:
        """Queue a record for writing; never waits. False (and counted) when it had to be dropped."""
        return self.offer(record)

    async def write_batch(self, batch: list[AuditRecord]) -> None:
        assert self._conn is not None
        try:
            await anyio.to_thread.run_sync(_insert, self._conn, batch)
            self.written += len(batch)
        except sqlite3.Error:
            self.dropped += len(batch)
            logger.exception("audit: writing %d records to %s failed", len(batch), self.path)

    def connect(self) -> sqlite3.Connection:
        conn = open_wal(self.path, _SCHEMA, busy_timeout=60)
        add_columns(conn, "audit", {"replica": "TEXT"})  # files written before replica ids
        if self.retention_days is not None:
            cutoff = int(time.time() * 1000) - self.retention_days * _DAY_MS
            with conn:
                pruned = conn.execute("DELETE FROM audit WHERE ts_ms < ?", (cutoff,)).rowcount
            if pruned:
                logger.info("audit: pruned %d records older than %d days", pruned, self.retention_days)
        return conn

    # -- reading ------------------------------------------------------------------------------

    async def query(
        self,
        since: datetime | int | None = None,
        identity: str | None = None,
        server: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest records first; `since` is a datetime or epoch milliseconds."""
        return await anyio.to_thread.run_sync(self._query, since, identity, server, limit)

    def _query(
        self, since: datetime | int | None, identity: str | None, server: str | None, limit: int
    ) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("ts_ms >= ?")
            args.append(int(since.timestamp() * 1000) if isinstance(since, datetime) else since)
        if identity is not None:
            where.append("identity = ?")
            args.append(identity)
        if server is not None:
            where.append("server = ?")
            args.append(server)
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(max(0, min(limit, 10_000)))
        conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute(sql, args).fetchall()
        finally:
            conn.close()
        records = [{"id": row[0], **dict(zip(_COLUMNS, row[1:], strict=True))} for row in rows]
        for record in records:
            if record["arguments"] is not None:
                record["arguments"] = json.loads(record["arguments"])
        return records


_INTS = frozenset({"ts_ms", "error_code"})


def _to_stream(record: AuditRecord) -> dict[str, str]:
    return {name: str(value) for name in _COLUMNS if (value := getattr(record, name)) is not None}


def _from_stream(entry_id: str, fields: dict[str, str]) -> dict[str, Any] | None:
    """A stream entry as `AuditLog.query` returns rows (the entry id as `id`); None if unreadable."""
    try:
        record: dict[str, Any] = {"id": entry_id}
        for name in _COLUMNS:
            value: Any = fields.get(name)
            if value is not None:
                if name in _INTS:
                    value = int(value)
                elif name == "duration_ms":
                    value = float(value)
                elif name == "arguments":
                    value = json.loads(value)
            record[name] = value
    except ValueError:
        return None
    return record


class SharedAudit:
    """The whole cluster's audit log (`cluster.redis`): every replica appends its records to one
    stream, write-behind (a call never waits on Redis), and any replica queries all of them."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.key = cluster.key("audit")
        self.writer = cluster.writer("audit", _to_stream)

    async def query(
        self,
        since: datetime | int | None = None,
        identity: str | None = None,
        server: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """As `AuditLog.query`, across the cluster (this replica's records sent first)."""
        await self.writer.flush()
        since_ms = int(since.timestamp() * 1000) if isinstance(since, datetime) else since

        def accept(entry_id: str, fields: dict[str, str]) -> dict[str, Any] | None:
            record = _from_stream(entry_id, fields)
            if (
                record is None
                or (since_ms is not None and record["ts_ms"] < since_ms)
                or (identity is not None and record["identity"] != identity)
                or (server is not None and record["server"] != server)
            ):
                return None
            return record

        if limit <= 0:
            return []
        client = self.cluster.client()
        try:
            return await scan(client, self.key, accept, limit=min(limit, 10_000))
        except (RedisError, OSError, TimeoutError) as exc:
            raise GatewayError(
                f"the cluster's audit log (Redis) is unreachable ({type(exc).__name__})"
            ) from None
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                await client.aclose()


def iso_ms(epoch_ms: int) -> str:
    """UTC ISO 8601 with milliseconds, exactly the instant `epoch_ms` (no float rounding)."""
    seconds, ms = divmod(epoch_ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def _insert(conn: sqlite3.Connection, batch: list[AuditRecord]) -> None:
    with conn:
        conn.executemany(_INSERT, [_row(r) for r in batch])


class AuditOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        "audit.db", description="SQLite file (relative: to the directory the gateway starts in)"
    )
    arguments: Literal["full", "keys", "none"] = Field(
        "keys", description="what to store of call arguments: values (truncated), key names, or nothing"
    )
    methods: list[str] = Field(["*"], description="globs of the methods to record")
    retention_days: int | None = Field(None, ge=1, description="prune older records when the gateway starts")
    queue_size: int = Field(10_000, ge=1, le=1_000_000)
    max_value_chars: int = Field(200, ge=8, description="`full`: longer strings are cut to this length")
    max_arguments_chars: int = Field(4_000, ge=64, description="`full`: larger arguments are stored as keys")
    redact_keys: list[str] = Field(
        _SECRET_KEYS, description="`full`: values under keys matching these globs are never stored"
    )


class Audit:
    def __init__(self, **options: Any) -> None:
        self.options = opts = AuditOptions(**options)
        self.log = AuditLog(opts.path, queue_size=opts.queue_size, retention_days=opts.retention_days)
        self._methods = compile_globs(opts.methods)
        self._redact = compile_globs(k.lower() for k in opts.redact_keys)  # keys compared lower-cased
        self._secrets: SecretValues | None = None  # the gateway's, once attached
        self._replica: str | None = None
        self.shared: SharedAudit | None = None  # with `cluster.redis`, once attached

    async def query(
        self,
        since: datetime | int | None = None,
        identity: str | None = None,
        server: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest records first: the cluster's with `cluster.redis`, else this process's file."""
        store = self.shared if self.shared is not None else self.log
        return await store.query(since, identity, server, limit)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if self.shared is not None:
                await stack.enter_async_context(self.shared.writer.running())
            await stack.enter_async_context(self.log.running())
            yield

    def attach(self, fleet: Fleet) -> None:
        # Before `lifespan`: which streams to run depends on the gateway's `cluster:`.
        self._replica = fleet.cluster.replica
        if fleet.cluster.shared:
            self.shared = SharedAudit(fleet.cluster)
        # Resolved secret values are masked in stored arguments: a client may pass on what it saw
        # before masking existed, or what it learnt elsewhere; the audit file is read by others.
        self._secrets = fleet.secrets

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.kind != "request" or not self._methods.match(call.method):
            return await call_next(call)
        wall_ms = time.time_ns() // 1_000_000
        start = time.perf_counter()
        arguments = self._arguments(call)  # as the call arrives here: after any outer rewriting
        outcome, code = "error", None
        try:
            result = await call_next(call)
            if result.get("isError") is True:
                outcome = "is_error"
            elif result.get("resultType") == "input_required":
                outcome = "input_required"
            else:
                outcome = "ok"
            return result
        except (GatewayError, MCPError) as exc:
            code = exc.code
            raise
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        except Exception:
            code = -32603  # the chain turns it into an internal error
            raise
        finally:
            record = AuditRecord(
                ts=iso_ms(wall_ms),
                ts_ms=wall_ms,
                identity=call.identity.name,
                identity_source=call.identity.source,
                method=call.method,
                server=call.server,
                name=call.name,
                outcome=outcome,
                error_code=code,
                duration_ms=round((time.perf_counter() - start) * 1000, 3),
                request_id=current_request_id(),
                rpc_id=None if call.request_id is None else str(call.request_id),
                arguments=arguments,
                replica=self._replica,
            )
            self.log.append(record)
            if self.shared is not None:
                self.shared.writer.append(record)

    def _arguments(self, call: Call) -> str | None:
        # A masking middleware listed earlier may leave the backend the real arguments but hand
        # audit a masked copy; otherwise the arguments as they reach this point are stored.
        # (A masking middleware hands a callable: masking costs only when the value is needed.)
        mode = self.options.arguments
        if mode == "none":
            return None
        args = call.state.get(MASKED_ARGUMENTS, call.params.get("arguments"))
        if callable(args):
            args = args()
        if not isinstance(args, dict):
            return None
        if self._secrets is not None:
            args = self._secrets.mask_json(args)  # before clipping, which could cut a value in two
        if mode == "keys":
            return json.dumps(sorted(str(k) for k in args))
        text = json.dumps(self._clip(args, 0), ensure_ascii=False, default=str)
        if len(text) <= self.options.max_arguments_chars:
            return text
        return json.dumps(sorted(str(k) for k in args))

    def _clip(self, value: Any, depth: int) -> Any:
        """A copy that is safe and small enough to store: secrets out, long strings cut."""
        if depth > 8:
            return "[nested too deep]"
        if isinstance(value, dict):
            return {
                str(k): "[redacted]" if self._redact.match(str(k).lower()) else self._clip(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._clip(v, depth + 1) for v in value[:50]] + (["[...]"] if len(value) > 50 else [])
        if isinstance(value, str) and len(value) > self.options.max_value_chars:
            return f"{value[: self.options.max_value_chars]}…[+{len(value) - self.options.max_value_chars}]"
        return value
