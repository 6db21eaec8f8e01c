"""`mcp-gateway host -- CMD`: a stdio server run once and served over HTTP, as replicas reach it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
import yaml
from anyio.abc import Process

from tests._gateway_process import gateway_process
from tests._infra import REPO_ROOT
from tests._support import (
    MISBEHAVE,
    START_TIMEOUT,
    TIME_ARGS,
    TIME_SERVER,
    fastmcp_client,
    free_port,
    text_of,
    wait_http_ready,
)

pytestmark = pytest.mark.anyio

KEY_VARIABLE = "MCP_TEST_HOST_KEY"
KEY = "host-key-0123456789abcdef"


@asynccontextmanager
async def host_process(
    tmp_path: Path, *options: str, server: Sequence[str] = (TIME_SERVER, *TIME_ARGS)
) -> AsyncIterator[tuple[Process, str]]:
    """`python -m gateway host OPTIONS -- SERVER` (default: mcp-server-time), ready; its base URL."""
    port = free_port()
    log = tmp_path / "host.log"
    argv = [sys.executable, "-m", "gateway", "host", "--listen", f"127.0.0.1:{port}", *options]
    with log.open("wb") as out:
        process = await anyio.open_process(
            [*argv, "--", *server],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"

    def exited() -> str | None:
        if process.returncode is None:
            return None
        return f"host exited at start:\n{log.read_text(errors='replace')}"

    try:
        await wait_http_ready(f"{base}/readyz", timeout=START_TIMEOUT, exited=exited)
        yield process, base
    finally:
        if process.returncode is None:
            left: list[psutil.Process] = []
            with suppress(psutil.NoSuchProcess):
                left = psutil.Process(process.pid).children(recursive=True)
            process.send_signal(signal.SIGKILL)
            with anyio.fail_after(30):
                await process.wait()
            for proc in left:
                with suppress(psutil.NoSuchProcess):
                    proc.kill()


def _time_servers(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if TIME_SERVER in " ".join(p.cmdline())]


async def test_two_gateways_share_one_hosted_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The host and both gateways read the key from their environment (inherited from ours).
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    async with host_process(tmp_path, "--name", "time", "--api-key-env", KEY_VARIABLE) as (host, base):
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            ready = (await http.get(f"{base}/readyz")).json()
            assert ready["servers"] == {"time": {"state": "running", "required": True, "error": None}}
            # Without the key, nothing but the probes answers.
            anonymous = await http.post(
                f"{base}/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"accept": "application/json, text/event-stream"},
            )
            assert anonymous.status_code == 401
        backend = {"url": f"{base}/mcp", "headers": {"X-API-Key": f"${{env:{KEY_VARIABLE}}}"}}
        cfg = {"servers": {"time": backend}}
        async with (
            gateway_process(tmp_path, cfg, name="replica-a") as a,
            gateway_process(tmp_path, cfg, name="replica-b") as b,
        ):
            for replica in (a, b):
                async with fastmcp_client(replica.url) as client:
                    names = {tool.name for tool in await client.list_tools()}
                    # Unprefixed by the host, namespaced once by each replica.
                    assert {"time__get_current_time", "time__convert_time"} <= names
                    result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
                    assert '"timezone": "UTC"' in text_of(result)
                # The replicas launched nothing: the server runs in the host only.
                assert replica.descendants() == []
        servers = _time_servers(host.pid)
        assert len(servers) == 1, f"the host runs one server, not {servers}"
        everything = [psutil.Process(host.pid), *psutil.Process(host.pid).children(recursive=True)]
        host.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            status = await host.wait()
        assert status in (0, -signal.SIGTERM)
        _gone, alive = psutil.wait_procs(everything, timeout=10)
        assert alive == [], f"left behind: {alive}"
    log = (tmp_path / "host.log").read_text(errors="replace")
    assert "Traceback" not in log
    assert KEY not in log


def _host(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "host", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_host_refuses_a_config_with_servers(tmp_path: Path) -> None:
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump({"servers": {"other": {"command": "true"}}}))
    done = _host("--config", str(path), "--", TIME_SERVER)
    assert done.returncode == 2
    assert "remove `servers:`" in done.stderr


def test_host_refuses_an_unset_key_and_a_missing_command() -> None:
    done = _host("--api-key-env", "MCP_TEST_HOST_UNSET_VARIABLE", "--", TIME_SERVER)
    assert done.returncode == 2
    assert "MCP_TEST_HOST_UNSET_VARIABLE: the variable is unset or empty" in done.stderr
    done = _host("--listen", "127.0.0.1:0")
    assert done.returncode == 2
    assert "give its command after `--`" in done.stderr
    done = _host("--listen", "nowhere", "--", TIME_SERVER)
    assert done.returncode == 2
    assert "expected HOST:PORT" in done.stderr


async def test_host_takes_listen_and_auth_from_a_config(tmp_path: Path) -> None:
    # The small-config-file way: `auth` with a hashed key, as a replica's operator writes it.
    import hashlib

    digest = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    path = tmp_path / "host.yaml"
    path.write_text(
        yaml.safe_dump(
            {"middleware": [{"use": "auth", "options": {"api_keys": [{"name": "replica", "key": digest}]}}]}
        )
    )
    async with host_process(tmp_path, "--config", str(path)) as (_host_proc, base):
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            accept = {"accept": "application/json, text/event-stream"}
            assert (await http.post(f"{base}/mcp", json=body, headers=accept)).status_code == 401
        async with fastmcp_client(f"{base}/mcp", auth=KEY) as client:
            # `--name` defaults to the command's name; `prefix: ""` leaves tool names as they are.
            assert {"get_current_time", "convert_time"} <= {t.name for t in await client.list_tools()}


async def test_host_hands_the_server_its_environment_as_serve_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "hosted-s3cret-value-42"
    monkeypatch.setenv("MCP_TEST_HOST_SECRET", secret)
    monkeypatch.setenv("MCP_TEST_HOST_PLAIN", "plain-value")
    monkeypatch.setenv("MCP_TEST_HOST_WITHHELD", "withheld-value")
    options = (
        "--env",
        "TOKEN=${env:MCP_TEST_HOST_SECRET}",
        "--inherit-env",
        "MCP_TEST_HOST_PLAIN",
    )
    async with host_process(tmp_path, *options, server=[sys.executable, MISBEHAVE]) as (host, base):
        async with fastmcp_client(f"{base}/mcp") as client:
            texts = {
                name: text_of(await client.call_tool("env", {"name": name}))
                for name in ("TOKEN", "MCP_TEST_HOST_PLAIN", "MCP_TEST_HOST_WITHHELD")
            }
        # The server got the secret; what leaves the host is masked, as under `serve`.
        assert texts["TOKEN"] == "[secret:MCP_TEST_HOST_SECRET]"
        assert texts["MCP_TEST_HOST_PLAIN"] == "plain-value"
        assert "withheld-value" not in texts["MCP_TEST_HOST_WITHHELD"]
        assert all(
            secret not in " ".join(p.cmdline()) for p in psutil.Process(host.pid).children(recursive=True)
        )
    assert secret not in (tmp_path / "host.log").read_text(errors="replace")
