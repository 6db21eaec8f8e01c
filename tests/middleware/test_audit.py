"""audit: every call on disk, never waiting for the disk, append-only, readable back."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.config import parse_config
from gateway.errors import DENIED, ConfigError, Denied
from gateway.logs import request_scope
from gateway.middleware import Call, Identity, Result, instantiate
from gateway.middleware.audit import MASKED_ARGUMENTS, Audit, AuditLog, AuditRecord, iso_ms
from tests._support import config, misbehave, serve

pytestmark = pytest.mark.anyio
EX = "tests.middleware._examples"
ALICE = Identity("alice", source="apikey")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def record(identity: str = "alice", server: str | None = "mb", ts_ms: int | None = None) -> AuditRecord:
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    return AuditRecord(
        ts=iso_ms(ts_ms),
        ts_ms=ts_ms,
        identity=identity,
        identity_source="test",
        method="tools/call",
        server=server,
        name="mb__echo",
        outcome="ok",
        error_code=None,
        duration_ms=1.0,
        request_id=None,
        rpc_id="1",
        arguments=None,
    )


def tool_call(arguments: dict[str, Any], name: str = "mb__echo") -> Call:
    return Call(
        method="tools/call",
        params={"name": name, "arguments": arguments},
        identity=ALICE,
        name=name,
        server="mb",
        original=name.removeprefix("mb__"),
        request_id=3,
    )


async def ok(call: Call) -> Result:
    return {"content": []}


async def test_a_real_client_s_calls_are_recorded_with_who_what_and_outcome(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    cfg = config(
        {"mb": misbehave()},
        middleware=[
            {"use": "audit", "options": {"path": str(db)}},
            {"use": f"{EX}:DenyTool", "options": {"tool": "mb__crash"}},
        ],
    )
    before = int(time.time() * 1000)
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        await client.list_tools()
        await client.call_tool("mb__echo", {"text": "very secret value"})
        assert (await client.call_tool("mb__fail", {})).is_error
        with pytest.raises(MCPError):
            await client.call_tool("mb__crash", {})
    # The gateway has stopped: its writer drained the queue on the way out.
    rows = await AuditLog(db).query()
    by_name = {r["name"]: r for r in rows if r["method"] == "tools/call"}
    echo, fail, crash = by_name["mb__echo"], by_name["mb__fail"], by_name["mb__crash"]
    assert (echo["outcome"], echo["error_code"]) == ("ok", None)
    assert (fail["outcome"], crash["outcome"], crash["error_code"]) == ("is_error", "error", DENIED)
    assert echo["identity"] == "anonymous" and echo["identity_source"] == "anonymous"
    assert echo["server"] == "mb" and echo["rpc_id"] is not None
    assert echo["arguments"] == ["text"]  # default `keys`: the value never reaches the disk
    assert "very secret value" not in db.read_bytes().decode("latin-1")
    assert before <= echo["ts_ms"] <= int(time.time() * 1000) and echo["duration_ms"] > 0
    when = datetime.fromisoformat(echo["ts"].removesuffix("Z")).replace(tzinfo=UTC)
    assert echo["ts"].endswith("Z") and (when - EPOCH) // timedelta(milliseconds=1) == echo["ts_ms"]
    assert any(r["method"] == "tools/list" and r["server"] is None for r in rows)
    assert [r["name"] for r in rows if r["method"] == "tools/call"] == ["mb__crash", "mb__fail", "mb__echo"]


async def test_arguments_are_stored_as_an_outer_middleware_rewrote_them(tmp_path: Path) -> None:
    # Shout stands in for masking: listed before audit, its rewrite is what audit stores.
    db = tmp_path / "audit.db"
    cfg = config(
        {"mb": misbehave()},
        middleware=[
            {"use": f"{EX}:Shout"},
            {"use": "audit", "options": {"path": str(db), "arguments": "full", "methods": ["tools/*"]}},
        ],
    )
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        await client.list_tools()
        await client.call_tool("mb__echo", {"text": "quiet"})
    rows = await AuditLog(db).query()
    call = next(r for r in rows if r["method"] == "tools/call")
    assert call["arguments"] == {"text": "QUIET"}
    assert {r["method"] for r in rows} == {"tools/list", "tools/call"}


async def test_full_arguments_are_clipped_and_secrets_redacted(tmp_path: Path) -> None:
    audit = Audit(path=str(tmp_path / "a.db"), arguments="full", max_value_chars=10)
    masked = tool_call({"card": "4111111111111111", "user": "bob"})
    masked.state[MASKED_ARGUMENTS] = {"card": "****1111", "user": "bob"}
    async with audit.lifespan():
        await audit(masked, ok)
        with request_scope("rid-1"):
            await audit(tool_call({"q": "x" * 50, "nested": {"api_token": "s3cr3t"}, "n": [1, 2]}), ok)
        await audit(tool_call({f"k{i}": "y" * 8 for i in range(500)}), ok)  # too big: keys only
        none = Audit(path=str(tmp_path / "b.db"), arguments="none")
        async with none.lifespan():
            await none(tool_call({"q": 1}), ok)
            await none.log.flush()
            assert (await none.log.query())[0]["arguments"] is None
        await audit.log.flush()
        big, first, stand_in = await audit.log.query()
    assert stand_in["arguments"] == {"card": "****1111", "user": "bob"}  # what masking handed over
    assert first["arguments"] == {"q": "xxxxxxxxxx…[+40]", "nested": {"api_token": "[redacted]"}, "n": [1, 2]}
    assert first["request_id"] == "rid-1" and first["rpc_id"] == "3"
    assert (first["identity"], first["identity_source"]) == ("alice", "apikey")
    assert isinstance(big["arguments"], list) and len(big["arguments"]) == 500


async def test_refusals_failures_and_cancellation_have_their_outcomes(tmp_path: Path) -> None:
    audit = Audit(path=str(tmp_path / "a.db"))

    async def deny(call: Call) -> Result:
        raise Denied("no")

    async def backend_error(call: Call) -> Result:
        raise MCPError(-32602, "bad params")

    async def bug(call: Call) -> Result:
        raise RuntimeError("bug")

    async def hang(call: Call) -> Result:
        await anyio.sleep_forever()
        raise AssertionError

    async with audit.lifespan():
        for handler, exc in ((deny, Denied), (backend_error, MCPError), (bug, RuntimeError)):
            with pytest.raises(exc):
                await audit(tool_call({}), handler)
        with anyio.move_on_after(0.05):
            await audit(tool_call({}), hang)
        await audit.log.flush()
        rows = await audit.log.query()
    outcomes = [(r["outcome"], r["error_code"]) for r in reversed(rows)]
    assert outcomes == [("error", DENIED), ("error", -32602), ("error", -32603), ("cancelled", None)]
    assert rows[0]["duration_ms"] >= 40


async def test_notifications_are_not_calls(tmp_path: Path) -> None:
    audit = Audit(path=str(tmp_path / "a.db"))
    async with audit.lifespan():
        await audit(Call(method="notifications/message", params={}, kind="notification"), ok)
        await audit(tool_call({}), ok)
        await audit.log.flush()
        assert [r["method"] for r in await audit.log.query()] == ["tools/call"]


async def test_query_filters_newest_first(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.db")
    assert await log.query() == []  # no file yet: nothing, not an error
    now = int(time.time() * 1000)
    async with log.running():
        for i, (who, server) in enumerate([("alice", "mb"), ("bob", "mb"), ("alice", "time"), ("bob", None)]):
            assert log.append(record(who, server, ts_ms=now - (3 - i) * 60_000))
        await log.flush()
        assert [r["identity"] for r in await log.query()] == ["bob", "alice", "bob", "alice"]
        assert [r["server"] for r in await log.query(identity="alice")] == ["time", "mb"]
        assert [r["identity"] for r in await log.query(server="mb")] == ["bob", "alice"]
        since = datetime.fromtimestamp(now / 1000, UTC) - timedelta(seconds=90)
        assert len(await log.query(since=since)) == 2
        assert len(await log.query(since=now - 90_000, identity="bob")) == 1
        assert len(await log.query(limit=3)) == 3


async def test_store_is_wal_indexed_and_append_only(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    log = AuditLog(db)
    async with log.running():
        log.append(record(ts_ms=int(time.time() * 1000)))
        log.append(record(ts_ms=int(time.time() * 1000) - 3 * 86_400_000))
        await log.flush()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index'") if r[0]}
        assert any("(ts_ms)" in s for s in indexes) and any("(identity, ts_ms)" in s for s in indexes)
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit SET outcome = 'ok'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit")  # the recent row is protected; the statement fails whole
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 2
    finally:
        conn.close()


async def test_a_file_from_before_replica_ids_gains_the_column(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    conn = sqlite3.connect(db)
    try:
        with conn:  # the table as versions without `cluster:` wrote it
            conn.execute(
                "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, "
                "ts_ms INTEGER NOT NULL, identity TEXT NOT NULL, identity_source TEXT NOT NULL, "
                "method TEXT NOT NULL, server TEXT, name TEXT, outcome TEXT NOT NULL, error_code INTEGER, "
                "duration_ms REAL NOT NULL, request_id TEXT, rpc_id TEXT, arguments TEXT)"
            )
            conn.execute(
                "INSERT INTO audit (ts, ts_ms, identity, identity_source, method, outcome, duration_ms) "
                "VALUES ('t', 1, 'old', 'test', 'tools/call', 'ok', 1.0)"
            )
    finally:
        conn.close()
    async with (log := AuditLog(db)).running():
        log.append(replace(record("new"), replica="gw-a"))
        await log.flush()
        rows = await log.query()
    assert [(r["identity"], r["replica"], r["id"]) for r in rows] == [("new", "gw-a", 2), ("old", None, 1)]


async def test_retention_prunes_old_records_at_start(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    now = int(time.time() * 1000)
    async with (log := AuditLog(db)).running():
        log.append(record("old", ts_ms=now - 40 * 86_400_000))
        log.append(record("recent", ts_ms=now - 20 * 86_400_000))
        await log.flush()
    async with (log := AuditLog(db, retention_days=30)).running():
        assert [r["identity"] for r in await log.query()] == ["recent"]


async def test_a_full_queue_drops_and_counts_instead_of_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = AuditLog(tmp_path / "a.db", queue_size=2)
    assert not log.append(record())  # not running: dropped, not queued
    async with log.running():
        with caplog.at_level(logging.WARNING, "gateway.middleware.audit"):
            # No await in between: the writer cannot run, so the third append finds the queue full.
            accepted = [log.append(record()) for _ in range(10)]
        assert accepted == [True, True] + [False] * 8
        await log.flush()
        assert log.written == 2 and log.dropped == 9
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1  # logged, but not once per record


async def test_calls_do_not_wait_while_the_disk_is_locked(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    audit = Audit(path=str(db))
    async with audit.lifespan():
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the writer now waits for this lock in its thread
        try:
            with anyio.fail_after(1):
                for _ in range(20):
                    await audit(tool_call({"text": "x"}), ok)
            assert audit.log.written == 0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        with anyio.fail_after(30):
            await audit.log.flush()
        assert audit.log.written == 20


def test_bad_options_are_config_errors() -> None:
    cfg = parse_config("middleware:\n  - use: audit\n    options: {arguments: values, retention_days: 0}\n")
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.middleware)
    text = "\n".join(err.value.problems)
    assert "middleware[0] (audit).options.arguments" in text
    assert "options.retention_days" in text


async def test_a_callable_stand_in_is_called_only_when_arguments_are_stored(tmp_path: Path) -> None:
    asked: list[str] = []

    def stand_in() -> dict[str, Any]:
        asked.append("masked")
        return {"card": "****1111"}

    full = Audit(path=str(tmp_path / "a.db"), arguments="full")
    none = Audit(path=str(tmp_path / "b.db"), arguments="none")
    async with full.lifespan(), none.lifespan():
        for audit in (none, full):
            call = tool_call({"card": "4111111111111111"})
            call.state[MASKED_ARGUMENTS] = stand_in
            await audit(call, ok)
            await audit.log.flush()
        assert asked == ["masked"]  # `none` never needed the value
        (stored,) = await full.log.query()
    assert stored["arguments"] == {"card": "****1111"}
