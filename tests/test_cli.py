"""The `mcp-gateway` command as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
import yaml
from mcp import Client as SdkClient
from mcp.client.stdio import StdioServerParameters

from tests._support import MISBEHAVE, free_port, modern, time_server

GATEWAY = [sys.executable, "-m", "gateway"]


def write_config(tmp_path: Path, servers: dict[str, object], name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps({"mcpServers": servers}))
    else:
        path.write_text(yaml.safe_dump({"servers": servers}))
    return path


def test_check_prints_the_merged_catalogue(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, {"time": time_server(), "mb": {"command": sys.executable, "args": [MISBEHAVE]}}
    )
    out = subprocess.run(
        [*GATEWAY, "check", "--config", str(cfg), "--json"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "time__get_current_time" in report["tools"]
    assert "mb__greet" in report["prompts"]
    assert report["servers"]["mb"]["state"] == "running"


def test_tools_lists_namespaced_tools_from_a_desktop_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"clock": time_server()}, name="claude_desktop_config.json")
    out = subprocess.run(
        [*GATEWAY, "tools", "--config", str(cfg), "--json"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert {row["name"] for row in json.loads(out.stdout)} == {
        "clock__get_current_time",
        "clock__convert_time",
    }


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("servers:\n  time:\n    comand: mcp-server-time\n")
    out = subprocess.run(
        [*GATEWAY, "check", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    assert f"{path}:3: servers.time.comand: unknown key; did you mean 'command'?" in out.stderr
    assert f"{path}:2: servers.time.command: required key is missing" in out.stderr
    assert "Traceback" not in out.stderr


def test_check_exits_1_when_a_backend_fails(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        {"dead": {"command": sys.executable, "args": [MISBEHAVE, "--crash-at-start"], "restart": "never"}},
    )
    out = subprocess.run(
        [*GATEWAY, "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "dead: failed" in out.stdout


def test_serve_then_sigterm_leaves_no_process_behind(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        {
            "time": time_server(),
            "mb": {"command": sys.executable, "args": [MISBEHAVE, "--spawn-child"]},
            "stubborn": {"command": sys.executable, "args": [MISBEHAVE, "--ignore-sigterm", "--spawn-child"]},
        },
    )
    port = free_port()
    proc = subprocess.Popen(
        [*GATEWAY, "serve", "--config", str(cfg), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"gateway exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            anyio.run(anyio.sleep, 0.1)
        else:
            pytest.fail("gateway never became ready")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.json() == {"status": "ok"}
        assert "server" not in health.headers  # the HTTP server's name and version are not advertised
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert len(descendants) >= 5  # three servers and two grandchildren
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after a graceful shutdown, so the status says "terminated".
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")
        _gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert alive == [], f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.anyio
async def test_stdio_mode_serves_the_same_aggregate(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"time": time_server()})
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "gateway", "serve", "--stdio", "--config", str(cfg)]
    )
    with anyio.fail_after(60):
        async with SdkClient(params, mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "time__get_current_time" in names
            result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert result.structured_content is not None


def test_committed_json_schema_is_current() -> None:
    from gateway.cli import schema

    committed = json.loads((Path(__file__).parent.parent / "config" / "gateway.schema.json").read_text())
    assert committed == schema(), "run: python -m gateway schema > config/gateway.schema.json"


@pytest.mark.parametrize("name", ["full.yaml", "claude_desktop_config.json"])
def test_example_configs_are_valid(name: str) -> None:
    from gateway.config import load_config

    load_config(Path(__file__).parent.parent / "config" / name)


def test_default_gateway_yaml_is_valid() -> None:
    from gateway.config import load_config

    cfg = load_config(Path(__file__).parent.parent / "gateway.yaml")
    assert {"time", "memory"} <= set(cfg.servers)


def test_tools_and_serve_stdio_refuse_what_check_refuses(tmp_path: Path) -> None:
    # The broken-config table (tests/config) runs check and serve; the other commands share the
    # same validation, so the same words come out.
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "servers:\n  mb: {command: x, env: {K: '${env:MCPGW_SURELY_UNSET}'}}\nmiddleware:\n  - use: audt\n"
    )
    runs = [
        subprocess.run(
            [*GATEWAY, *command, "--config", str(path)], capture_output=True, text=True, timeout=60
        )
        for command in (["check", "--no-start"], ["tools"], ["serve", "--stdio"])
    ]
    assert [run.returncode for run in runs] == [2, 2, 2]
    assert runs[0].stderr == runs[1].stderr == runs[2].stderr
    assert f"{path}:2: servers.mb.env.K: environment variable MCPGW_SURELY_UNSET is not set" in runs[0].stderr
    assert f"{path}:4: middleware[0] (audt).use:" in runs[0].stderr
    assert "did you mean 'audit'?" in runs[0].stderr


def test_check_reports_the_revision_spoken_to_each_backend(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        {
            "modern": modern(),
            "time": time_server(protocol="2025-11-25"),
        },
    )
    out = subprocess.run(
        [*GATEWAY, "check", "--config", str(cfg), "--json"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    servers = json.loads(out.stdout)["servers"]
    assert servers["modern"]["protocol_version"] == "2026-07-28"  # found by probing
    assert servers["time"]["protocol_version"] == "2025-11-25"  # pinned, though it speaks both
    out = subprocess.run(
        [*GATEWAY, "check", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "  modern: running [2026-07-28]" in out.stdout.splitlines()
    assert "  time: running [2025-11-25]" in out.stdout.splitlines()


def test_check_refuses_a_revision_it_does_not_know(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"time": time_server(protocol="2024-11-05")})
    out = subprocess.run(
        [*GATEWAY, "check", "--config", str(cfg), "--no-start"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    assert "servers.time.protocol" in out.stderr and "2026-07-28" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
