"""The admin dashboard (/admin/ui) in a real headless Chromium, against a real gateway and backends.

tests/admin/dashboard.spec.mjs drives the page with playwright-core (from tests/node, using the
Debian `chromium`: no browser download) and prints what it saw as JSON; this test starts the
gateway, feeds it real MCP traffic, crashes one backend at the right moment, and checks that JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client as SdkClient

from tests._infra import NODE_MODULES, REPO_ROOT, Redis, require, server_node
from tests._support import config, misbehave
from tests.admin._helpers import ADMIN_KEY, serve_admin
from tests.servers.misbehave import FAKE_SECRET
from tests.test_control import replica

pytestmark = pytest.mark.anyio

SPEC = Path(__file__).with_name("dashboard.spec.mjs")
ARTIFACTS = REPO_ROOT / "artifacts"
SCREENSHOT = ARTIFACTS / "admin-dashboard.png"
PLAYWRIGHT = NODE_MODULES / "playwright-core"
SPEC_TIMEOUT = 200.0  # the whole browser session; each wait inside the script is bounded too
TARGET = "alpha"
MISBEHAVE_TOOLS = 13  # echo, add, fail, sleep, crash, hang, log, change_tools, pid, env,
# stop_reading, raise_error, quit_keeping_stdout
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def _traffic(url: str, stop: anyio.Event) -> None:
    """A few real calls per second to both backends, some failing, until `stop`."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("alpha__echo", {"text": "hi"}),
        ("beta__echo", {"text": "hi"}),
        ("beta__add", {"a": 1, "b": 2}),
    ]
    n = 0
    while not stop.is_set():
        try:
            async with SdkClient(url, mode="legacy") as client:
                while not stop.is_set():
                    n += 1
                    name, args = ("alpha__fail", {}) if n % 7 == 0 else calls[n % len(calls)]
                    # alpha is down while it restarts: failed calls are part of the picture.
                    with contextlib.suppress(Exception):
                        await client.call_tool(name, args)
                    with anyio.move_on_after(0.15):
                        await stop.wait()
        except Exception:  # a dropped session: open another one
            with anyio.move_on_after(0.5):
                await stop.wait()


async def _crash_when(ready: anyio.Event, url: str) -> None:
    """Crash TARGET once `ready` (the page has followed its admin restart back to "running" and
    streamed the new process's log): the supervisor's restart bumps `restarts`."""
    await ready.wait()
    async with SdkClient(url, mode="legacy") as client:
        # The call dies with the backend: its error is expected.
        with anyio.move_on_after(30), contextlib.suppress(Exception):
            await client.call_tool(f"{TARGET}__crash", {})


@dataclass
class SpecRun:
    returncode: int
    stdout: str
    stderr: str


async def _run_spec(argv: list[str], env: dict[str, str], step: str, reached: anyio.Event) -> SpecRun:
    """Run the spec to its end; set `reached` when its progress (on stderr) reports `step`."""
    mark = f"[dashboard.spec] {step} ".encode()
    out, err = bytearray(), bytearray()
    async with await anyio.open_process(argv, env=env) as process:
        assert process.stdout is not None and process.stderr is not None
        stdout, stderr = process.stdout, process.stderr

        async def drain() -> None:
            async for chunk in stdout:
                out.extend(chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            async for chunk in stderr:
                err.extend(chunk)
                if not reached.is_set() and mark in err:
                    reached.set()
        returncode = await process.wait()
    return SpecRun(returncode, out.decode(errors="replace"), err.decode(errors="replace"))


@pytest.mark.redis
@pytest.mark.timeout(300)
async def test_the_cluster_panel_shows_every_replica_and_its_backends(
    redis: Redis,
    tmp_path: Path,
) -> None:
    """Two `serve` processes sharing a real Redis: the dashboard of one lists both, with their
    backends' states."""
    require("chromium")
    require("playwright")
    node, chromium = server_node(), shutil.which("chromium")
    assert node is not None and chromium is not None
    await anyio.Path(ARTIFACTS).mkdir(exist_ok=True)
    servers = {name: misbehave("--name", name) for name in ("alpha", "beta")}
    prefix = f"t{uuid.uuid4().hex[:8]}"
    async with (
        replica(redis, prefix, "gw-a", tmp_path, servers) as (a, _),
        replica(redis, prefix, "gw-b", tmp_path, servers),
    ):
        env = {
            **os.environ,
            "GATEWAY_BASE": a.base,
            "ADMIN_KEY": ADMIN_KEY,
            "CHROMIUM": chromium,
            "SERVERS": json.dumps(sorted(servers)),
            "TARGET": "alpha",
            "SCREENSHOT": str(ARTIFACTS / "admin-dashboard-cluster.png"),
            "PLAYWRIGHT": str(PLAYWRIGHT / "index.mjs"),
            "REPLICAS": "2",
            "ONLY": "cluster",
        }
        with anyio.fail_after(SPEC_TIMEOUT):
            done = await _run_spec([node, str(SPEC)], env, "cluster", anyio.Event())
    lines = done.stdout.strip().splitlines()
    assert lines, f"the spec printed nothing (exit {done.returncode}):\n{done.stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    assert out["ok"] is True and done.returncode == 0, f"{out.get('error')}\n{done.stderr}"
    rows = {row["replica"]: row for row in out["cluster"]}
    assert list(rows) == ["gw-a", "gw-b"]
    assert rows["gw-a"]["text"] == "gw-athis replica" and rows["gw-b"]["text"] == "gw-b"
    for row in rows.values():
        assert row["backends"] == ["alpha running", "beta running"]
    assert out["cluster_summary"] == "2 replicas"
    assert out["page_errors"] == [] and out["console_errors"] == [] and out["foreign_requests"] == []


@pytest.mark.timeout(300)
async def test_dashboard_drives_the_fleet_in_a_real_browser() -> None:
    require("chromium")
    require("playwright")
    playwright = str(PLAYWRIGHT / "index.mjs")
    node = server_node()
    chromium = shutil.which("chromium")
    assert node is not None and chromium is not None
    await anyio.Path(ARTIFACTS).mkdir(exist_ok=True)
    await anyio.Path(SCREENSHOT).unlink(missing_ok=True)

    cfg = config(
        {
            TARGET: misbehave("--stderr-chatter", "3", "--name", TARGET),
            "beta": misbehave("--stderr-chatter", "1", "--name", "beta"),
        },
        middleware=[{"use": "masking", "options": {"backend_stderr": True}}],
        endpoints=[
            {
                "path": "/mcp/beta",
                "name": "beta-desk",
                "servers": {"beta": {"tools": ["echo", "add"]}},
                "auth": {"roles": ["ops"]},
            },
        ],
        cluster={"replica_id": "gw-dash"},
    )
    async with serve_admin(cfg) as gw:
        env = {
            **os.environ,
            "GATEWAY_BASE": gw.base,
            "ADMIN_KEY": ADMIN_KEY,
            "CHROMIUM": chromium,
            "SERVERS": json.dumps(sorted(gw.fleet.backends)),
            "TARGET": TARGET,
            "SCREENSHOT": str(SCREENSHOT),
            "PLAYWRIGHT": playwright,
            "SECRET": FAKE_SECRET,
        }
        stop, streamed = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_traffic, gw.url, stop)
            tg.start_soon(_crash_when, streamed, gw.url)
            try:
                with anyio.fail_after(SPEC_TIMEOUT):
                    done = await _run_spec([node, str(SPEC)], env, "log-streamed", streamed)
            finally:
                stop.set()
                tg.cancel_scope.cancel()

    stderr = done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines, f"the spec printed nothing (exit {done.returncode}):\n{stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    # Kept beside the screenshots: what the page showed, for a look after a failure in CI.
    await anyio.Path(ARTIFACTS / "admin-dashboard.json").write_text(
        json.dumps(out, indent=2, ensure_ascii=False)
    )
    assert out["ok"] is True and done.returncode == 0, f"{out.get('error')}\nsteps: {out['steps']}\n{stderr}"

    # /admin/ui redirected to the page; a wrong key stayed on the form, the right one got in.
    assert out["url"].endswith("/admin/ui/?refresh=1")
    assert "not accepted" in out["wrong_key_message"]
    assert out["session_key_stored"] is True
    assert out["headers"][:10] == [
        "Server", "State", "Health", "Protocol", "Uptime", "Restarts", "Tools", "Calls", "Errors",
        "p50 / p95",
    ]  # fmt: skip
    # The endpoints: the default one (the whole fleet) and the virtual one, with what each exposes.
    default = {"path": "/mcp (default)", "name": "mcp-gateway", "servers": "all"}
    default |= {"auth": "anyone the gateway admits", "tools": str(2 * MISBEHAVE_TOOLS), "prompts": "2"}
    beta = {"path": "/mcp/beta", "name": "beta-desk", "servers": "beta", "auth": "roles: ops", "tools": "2"}
    assert out["endpoints"] == [{**default, "resources": "4"}, {**beta, "prompts": "1", "resources": "2"}]
    # The cluster panel: this one process, each backend's state on it.
    [replica] = out["cluster"]
    assert (replica["replica"], replica["text"]) == ("gw-dash", "gw-dashthis replica")
    assert replica["backends"] == sorted(f"{name} running" for name in (TARGET, "beta"))
    assert replica["in_flight"].isdigit()  # the test's traffic runs meanwhile
    assert out["cluster_summary"] == "1 replica · a single process (no cluster.redis)"
    before = {s["name"]: s for s in out["fleet_before"]}
    assert set(before) == {TARGET, "beta"}
    for row in before.values():
        assert row["state"] == "running" and row["health"] == "healthy", row
        assert row["tools"] == MISBEHAVE_TOOLS
        assert row["restarts"] == 0
        assert row["protocol"] == "2026-07-28"  # misbehave speaks both revisions: the newest is chosen

    # The restart went through the states and back, seen live; the row was busy meanwhile.
    states = out["states_after_restart"]
    assert states[0] == "running" and states[-1] == "running"
    assert {"stopping", "stopped", "starting"} & set(states[1:-1]), states
    assert out["busy_seen"] is True
    assert out["notice"].startswith(f"{TARGET}: restart done")

    # The log view showed the old process's stderr, then the new one's, streamed in.
    assert out["log_lines_before"] >= 3 and out["log_lines_after"] > out["log_lines_before"]
    assert len(out["log_pids_after"]) >= 2 and set(out["log_pids_before"]) < set(out["log_pids_after"])
    assert out["secret_shown"] is False and out["masked_line"] is not None

    # The crash: the supervisor restarted it, the count went up, the state came back.
    after = {s["name"]: s for s in out["fleet_after"]}
    assert after[TARGET]["restarts"] > out["restarts_before"] == 0
    assert after[TARGET]["state"] == "running" and after["beta"]["restarts"] == 0
    assert after[TARGET]["health"] == "healthy" and after[TARGET]["tools"] == MISBEHAVE_TOOLS
    assert "backoff" in out["states_after_crash"] or "starting" in out["states_after_crash"]
    assert any(e.startswith(f"{TARGET}: running → backoff") for e in out["events"]), out["events"]
    assert any(e.endswith(f"restart {TARGET}: ok") for e in out["events"]), out["events"]

    # Real calls reached the table and the charts.
    assert after[TARGET]["calls"] > 0 and after[TARGET]["errors"].endswith("%")
    assert after[TARGET]["latency"].count("ms") == 2
    charts = {c["kind"]: c for c in out["charts"]}
    assert set(charts) == {"rate", "errors", "latency"}
    assert charts["rate"]["points"] >= 8 and charts["rate"]["polylines"] >= 1
    assert charts["latency"]["polylines"] >= 2  # p50 and p95
    assert "latest" in charts["rate"]["label"] and charts["rate"]["latest"].endswith("/s")

    # A key that stops working sends the page back to sign-in and forgets it.
    assert "refused" in out["revoked_message"]
    assert out["dashboard_hidden"] is True and out["key_cleared"] is True

    # Everything came from the gateway itself, and nothing went wrong in the page.
    assert out["foreign_requests"] == []
    assert out["page_errors"] == [] and out["console_errors"] == []
    for shot in (SCREENSHOT, out["narrow_screenshot"]):
        assert (await anyio.Path(shot).read_bytes())[:8] == PNG_SIGNATURE, shot
    assert out["narrow_page_overflow"] <= 0  # only the table scrolls sideways, not the page


async def test_ui_routes_serve_the_page_with_hardening_headers() -> None:
    async with (
        serve_admin(config({"mb": misbehave()})) as gw,
        httpx.AsyncClient(base_url=gw.base, timeout=60) as http,
    ):
        r = await http.get("/admin/ui", params={"refresh": "2"})
        assert r.status_code == 308 and r.headers["location"] == "ui/?refresh=2"
        r = await http.get("/admin/ui/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="app.js">' in r.text
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        for name, kind in [
            ("app.js", "javascript"),
            ("sse.js", "javascript"),
            ("charts.js", "javascript"),
            ("app.css", "text/css"),
        ]:
            r = await http.get(f"/admin/ui/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"], name
        assert (await http.get("/admin/ui/nope.js")).status_code == 404
        # The API next to it still wants a key; the page itself does not.
        assert (await http.get("/admin/servers")).status_code == 401
