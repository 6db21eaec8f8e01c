"""URL backends against server-everything in its HTTP modes, bound to 127.0.0.1 by a preload."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.backends._logbuffer import LogBuffer
from gateway.backends.http import HttpTransport
from gateway.config import HttpServer
from gateway.config.secrets import Secrets
from tests import _infra
from tests._support import config, free_port, serve, text_of, wait_until

pytestmark = pytest.mark.node
LOOPBACK = Path(__file__).parent.parent / "conformance" / "loopback.cjs"


class Everything:
    """server-everything over HTTP on 127.0.0.1:port, restartable on the same port."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.mode == 'sse' else 'mcp'}"

    def _spawn(self) -> None:
        node, *rest = _infra.npm_server_command("server-everything", self.mode)
        env = {**os.environ, "PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [node, "--require", str(LOOPBACK), *rest],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _listening(self) -> bool:
        assert self.proc is not None
        try:
            httpx.get(f"http://127.0.0.1:{self.port}/", timeout=0.5)
            return True
        except httpx.TransportError:
            if self.proc.poll() is not None:
                pytest.fail(f"server-everything {self.mode} exited with {self.proc.returncode}")
            return False

    def start(self) -> None:
        self._spawn()
        deadline = time.monotonic() + 30
        while not self._listening():  # a port has no event to await; poll, bounded
            if time.monotonic() > deadline:
                pytest.fail("server-everything did not listen")
            time.sleep(0.05)

    async def restart(self) -> None:
        self.stop()
        self._spawn()
        with anyio.fail_after(30):
            while not await anyio.to_thread.run_sync(self._listening):  # noqa: ASYNC110 - a port has no event to await
                await anyio.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)


@pytest.fixture
def everything_http() -> Iterator[Everything]:
    server = Everything("streamableHttp")
    server.start()
    yield server
    server.stop()


@pytest.mark.anyio
async def test_streamable_http_backend_relays_and_survives_a_server_restart(
    everything_http: Everything,
) -> None:
    cfg = config({"remote": {"url": everything_http.url, "backoff": [0.05, 0.5]}})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        backend = gw.fleet.backends["remote"]
        transport = backend.transport
        assert isinstance(transport, HttpTransport)
        http_client = transport.client()
        result = await client.call_tool("remote__get-sum", {"a": 2, "b": 3})
        assert "5" in text_of(result)

        await everything_http.restart()  # same port, new process: it knows nothing of our session
        errors = 0
        with anyio.fail_after(60):
            while True:
                try:
                    result = await client.call_tool("remote__get-sum", {"a": 20, "b": 22})
                    break
                except MCPError as exc:
                    errors += 1
                    assert "remote" in exc.message  # a clear error naming the backend
                    await anyio.sleep(0.1)
        assert "42" in text_of(result)
        assert backend.restarts >= 1
        assert transport.client() is http_client  # one HTTP client for the backend's whole life


@pytest.mark.anyio
async def test_legacy_sse_backend() -> None:
    server = Everything("sse")
    server.start()
    try:
        cfg = config({"old": {"type": "sse", "url": server.url}})
        async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
            assert gw.fleet.backends["old"].available, gw.fleet.backends["old"].last_error
            result = await client.call_tool("old__echo", {"message": "over sse"})
            assert "over sse" in text_of(result)
    finally:
        server.stop()


def test_headers_and_bearer_token_resolve_secret_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TEST_TOKEN", "tok-123")
    monkeypatch.setenv("GATEWAY_TEST_TENANT", "acme")
    spec = HttpServer(
        url="http://127.0.0.1:9/mcp",
        headers={"X-Tenant": "${env:GATEWAY_TEST_TENANT}"},
        bearer_token="${env:GATEWAY_TEST_TOKEN}",
    )
    client = HttpTransport("remote", spec, LogBuffer("remote"), Secrets()).client()
    assert client.headers["authorization"] == "Bearer tok-123"
    assert client.headers["x-tenant"] == "acme"
    assert spec.bearer_token == "${env:GATEWAY_TEST_TOKEN}"  # the config keeps the reference


@pytest.mark.anyio
async def test_unreachable_url_fails_that_backend_only() -> None:
    cfg = config(
        {
            "gone": {"url": f"http://127.0.0.1:{free_port()}/mcp", "restart": "never", "startup_timeout": 5},
            "t": {"command": "true", "restart": "never", "required": False},
        }
    )
    async with serve(cfg) as gw:
        backend = gw.fleet.backends["gone"]
        assert backend.state.value == "failed"
        assert backend.last_error


@pytest.mark.anyio
async def test_http_health_check_path_failing_restarts_the_backend(everything_http: Everything) -> None:
    # server-everything serves no /nope: every health check answers 404.
    spec = {
        "url": everything_http.url,
        "health_check": "/nope",
        "health": {"interval": 0.3, "timeout": 2, "failures": 2},
        "backoff": [0.05, 0.2],
    }
    async with serve(config({"remote": spec})) as gw:
        backend = gw.fleet.backends["remote"]
        await wait_until(lambda: backend.restarts >= 1, timeout=30, interval=0.05)
        assert any(e.category == "health" for e in gw.fleet.events)


@pytest.mark.anyio
async def test_a_url_backends_own_errors_pass_unchanged_and_its_timeout_is_the_gateways() -> None:
    """Through the SDK's dispatcher (a URL backend: another gateway, serving misbehave), a
    backend's errors keep their code, message and data even with the codes the SDK uses for its
    own timeout (-32001) and closed connection (-32000); the SDK's own timeout is the gateway's."""
    from mcp_types import REQUEST_TIMEOUT

    from tests._support import misbehave

    inner_cfg = config({"mb": misbehave(timeout=30)})
    async with serve(inner_cfg) as inner:
        outer_cfg = config({"up": {"url": inner.url, "timeout": 2}})
        async with serve(outer_cfg) as outer, SdkClient(outer.url, mode="legacy") as client:
            for code in (-32000, -32001, -32603):
                args = {"code": code, "message": f"backend says {code}", "data": {"code": code}}
                with anyio.fail_after(10), pytest.raises(MCPError) as err:
                    await client.call_tool("up__mb__raise_error", args)
                assert (err.value.code, err.value.message) == (code, f"backend says {code}")
                assert err.value.data == {"code": code}
            with anyio.fail_after(10), pytest.raises(MCPError) as err:
                await client.call_tool("up__mb__hang", {})
            assert err.value.code == REQUEST_TIMEOUT
            assert err.value.message == "server 'up' did not answer tools/call within 2s"
