"""The secret scan: a real gateway process is handed secrets three ways and a backend leaks them
every way it can; no resolved value may leave the gateway anywhere, masking middleware off.

The backend (misbehave) gets one secret from `${env:...}`, one from `${file:...}` and one from
`secret_ref:` in its environment. It echoes them in tool results, in a JSON-RPC error's message and
data, in a log notification, on stderr at start and in its last words before it crashes. Then every
place a string leaves is read: each line of the gateway's log, each admin API response the
dashboard makes (and the rest of the admin API, its streams included), /metrics, /readyz, every
audit row (`arguments: full`, which receives a secret as an argument), every event row, and every
response a client received. The values are plain words: no detector can be what masks them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
import yaml
from fastmcp import Client
from mcp.shared.exceptions import MCPError

from tests._support import START_TIMEOUT, free_port, messages, misbehave, rpc, session

ENV_SECRET = "orchid-tundra-pelican-vortex"
FILE_SECRET = "saffron-glacier-mosaic-thimble"
REF_SECRET = 'quill "harbor" lantern\\wicker'  # a quote and a backslash: JSON escapes them
SECRETS = {"SCAN_ENV": ENV_SECRET, "scan.key": FILE_SECRET, "scan_ref": REF_SECRET}
pytestmark = pytest.mark.anyio

ADMIN_KEY = "scan-admin-key"
STOP_TIMEOUT = 30.0


def forms(value: str) -> set[str]:
    """The ways a value can be written where it leaks: as is, JSON-escaped (both encoders), and
    either of those escaped again as JSON or as a Python repr (of bytes: a library's debug line)."""
    once = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return once | {json.dumps(f)[1:-1] for f in once} | {repr(f.encode())[2:-1] for f in once}


@dataclass
class Gateway:
    base: str
    tmp: Path
    log: Path
    seen: list[tuple[str, str]] = field(default_factory=list)  # (where, text) of everything read

    def keep(self, where: str, text: str) -> str:
        self.seen.append((where, text))
        return text

    async def get(self, http: httpx.AsyncClient, path: str) -> httpx.Response:
        resp = await http.get(self.base + path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        self.keep(f"GET {path}", resp.text)
        return resp


def write_config(tmp: Path, port: int) -> Path:
    (tmp / "scan.key").write_text(FILE_SECRET + "\n")
    (tmp / "secrets.yaml").write_text(yaml.safe_dump({"scan_ref": REF_SECRET}))
    echo = ["--echo-env", "ENV_SECRET", "--echo-env", "FILE_SECRET", "--echo-env", "REF_SECRET"]
    server = misbehave(
        *echo,
        env={
            "ENV_SECRET": "${env:SCAN_ENV}",
            "FILE_SECRET": f"${{file:{tmp / 'scan.key'}}}",
            "REF_SECRET": "secret_ref:scan_ref",
        },
        backoff=[0.1, 0.5],
    )
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "secrets": {"file": str(tmp / "secrets.yaml")},
        "admin": {
            "api_keys": ["sha256:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest()],
            "events": {"path": str(tmp / "events.db")},
        },
        "middleware": [
            {"use": "audit", "options": {"path": str(tmp / "audit.db"), "arguments": "full"}},
            {"use": "telemetry", "options": {"metrics_path": "/metrics"}},
        ],
        "servers": {"mb": server},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@asynccontextmanager
async def gateway_process(tmp: Path) -> AsyncIterator[Gateway]:
    port = free_port()
    path = write_config(tmp, port)
    log = tmp / "gateway.log"
    env = {**os.environ, "SCAN_ENV": ENV_SECRET}
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--log-format", "json"]
    argv += ["--log-level", "debug"]  # every stderr line of the backend is logged too
    with log.open("wb") as out:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)  # noqa: ASYNC220
    gw = Gateway(f"http://127.0.0.1:{port}", tmp, log)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            with anyio.fail_after(START_TIMEOUT):
                while True:
                    assert proc.poll() is None, f"gateway exited: {log.read_text()}"
                    try:
                        if (await http.get(f"{gw.base}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.1)  # nothing to await but the port itself
        yield gw
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def database(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path)
    try:
        yield conn
    finally:
        conn.close()


def rows_of(path: Path, table: str) -> list[str]:
    with database(path) as conn:
        return [json.dumps(row, ensure_ascii=False) for row in conn.execute(f"SELECT * FROM {table}")]


async def read_sse(http: httpx.AsyncClient, url: str, until: str) -> str:
    """An event stream's text up to the first chunk holding `until` (bounded)."""
    text = ""
    with anyio.fail_after(START_TIMEOUT):
        async with http.stream("GET", url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
            async for chunk in resp.aiter_text():
                text += chunk
                if until in text:
                    break
    return text


async def test_no_resolved_secret_leaves_the_gateway(tmp_path: Path) -> None:
    async with gateway_process(tmp_path) as gw, httpx.AsyncClient(timeout=60) as http:
        url = gw.base + "/mcp"
        # -- a real client: results, a JSON-RPC error, and a secret sent as an argument
        async with Client(url, timeout=60) as client:
            tools = {t.name for t in await client.list_tools()}
            shorts = ("env", "echo", "log", "crash")
            name = {short: next(t for t in tools if t in (short, f"mb__{short}")) for short in shorts}
            for variable in ("ENV_SECRET", "FILE_SECRET", "REF_SECRET"):
                result = await client.call_tool(name["env"], {"name": variable})
                shown = json.dumps(result.structured_content) + repr(result.content)
                gw.keep(f"fastmcp env({variable})", shown)
            with pytest.raises(MCPError) as err:
                await client.call_tool(name["env"], {"name": "REF_SECRET", "error": True})
            gw.keep("fastmcp env_error", f"{err.value!s} {err.value!r}")
            echoed = await client.call_tool(name["echo"], {"text": f"relay {FILE_SECRET} please"})
            gw.keep("fastmcp echo", repr(echoed.content) + json.dumps(echoed.structured_content))

        # -- the raw wire of a 2025-11-25 session: results, an error, a log notification
        async with session(http, url) as headers:
            leak = f"leak {ENV_SECRET}"  # sent by the client: audit stores it, the log echoes it
            arguments = [
                (name["env"], {"name": "FILE_SECRET"}),
                (name["env"], {"name": "ENV_SECRET", "error": True}),
                (name["log"], {"level": "error", "message": leak}),
            ]
            calls = [rpc("tools/call", {"name": n, "arguments": a}, i) for i, (n, a) in enumerate(arguments)]
            for call, label in zip(calls, ("env", "env_error", "log"), strict=True):
                resp = await http.post(url, headers=headers, json=call)
                gw.keep(f"wire {label}", resp.text)
                if label == "env_error":
                    assert messages(resp)[0]["error"]["code"] == -32603  # a JSON-RPC error, as sent

        # -- the backend crashes, saying its secrets on the way out; the supervisor restarts it
        async with Client(url, timeout=60) as client:
            with pytest.raises(MCPError):  # the call dies with the process
                await client.call_tool(name["crash"], {})
        with anyio.fail_after(START_TIMEOUT):
            while True:
                servers = (await gw.get(http, "/admin/servers")).json()
                mb = next(s for s in servers["servers"] if s["name"] == "mb")
                if mb["restarts"] >= 1 and mb["state"] == "running":
                    break
                await anyio.sleep(0.1)  # polled admin state: no event reaches this test

        # -- everything the admin API and the dashboard show
        for path in (
            "/admin/servers",
            "/admin/servers/mb",
            "/admin/servers/mb?logs=0&events=30",  # the dashboard's detail view
            "/admin/servers/mb?logs=200&events=200",
            "/admin/servers/mb/logs?tail=1000",
            "/admin/events?limit=200",
            "/admin/config",
            "/readyz",
            "/metrics",
        ):
            assert (await gw.get(http, path)).status_code == 200, path
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        probe = await http.post(f"{gw.base}/admin/servers/mb/test", headers=auth)  # the dashboard's test
        gw.keep("POST /admin/servers/mb/test", probe.text)
        logs_url = f"{gw.base}/admin/servers/mb/logs?follow=1&tail=1000"
        gw.keep("SSE logs", await read_sse(http, logs_url, "crashing"))
        gw.keep("SSE events", await read_sse(http, f"{gw.base}/admin/events/stream?after=0", "exited"))

    # -- after the process is gone: its log, the audit and event databases
    for n, line in enumerate(gw.log.read_text().splitlines()):
        gw.keep(f"gateway log line {n + 1}", line)
    for row in rows_of(tmp_path / "audit.db", "audit"):
        gw.keep("audit row", row)
    for row in rows_of(tmp_path / "events.db", "events"):
        gw.keep("event row", row)

    leaks = [
        (where, label, text[max(0, text.find(form) - 60) : text.find(form) + len(form) + 20])
        for where, text in gw.seen
        for label, value in SECRETS.items()
        for form in forms(value)
        if form in text
    ]
    assert leaks == [], "\n".join(f"{where}: {label}: ...{excerpt}..." for where, label, excerpt in leaks)

    # What was scanned did quote the secrets (masked): the backend got them and leaked them.
    def seen(where: str) -> str:
        return "\n".join(text for w, text in gw.seen if w.startswith(where))

    assert "[secret:SCAN_ENV]" in seen("fastmcp env(ENV_SECRET)")
    assert "[secret:scan_ref]" in seen("fastmcp env_error") and "[secret:SCAN_ENV]" in seen("wire log")
    assert "[secret:SCAN_ENV]" in seen("wire env_error")
    assert "[secret:scan.key]" in seen("fastmcp echo") and "[secret:scan.key]" in seen("audit row")
    assert "crashing: ENV_SECRET=[secret:SCAN_ENV]" in seen("SSE logs")
    assert "crashing: REF_SECRET=[secret:scan_ref]" in seen("gateway log")  # the exit summary
