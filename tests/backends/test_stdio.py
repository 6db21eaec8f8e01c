"""Stdio backends against our misbehaving server: environment, stderr, and process discipline."""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio
import psutil
import pytest

from gateway.fleet import Fleet
from tests._support import config, misbehave, process_tree, wait_until

pytestmark = pytest.mark.anyio


async def _call(fleet: Fleet, server: str, tool: str, **args: object) -> dict[str, Any]:
    result = await fleet.backends[server].request("tools/call", {"name": tool, "arguments": args})
    return result


async def test_environment_is_an_allowlist_and_secrets_resolve_at_launch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_TEST_SECRET", "s3cr3t-value")
    monkeypatch.setenv("GATEWAY_TEST_PASSED", "visible")
    monkeypatch.setenv("GATEWAY_TEST_HIDDEN", "should-not-leak")
    spec = misbehave(env={"API_KEY": "${env:GATEWAY_TEST_SECRET}"}, inherit_env=["GATEWAY_TEST_PASSED"])
    fleet = Fleet(config({"mb": spec}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
        values = {}
        for name in ("API_KEY", "GATEWAY_TEST_PASSED", "GATEWAY_TEST_HIDDEN", "PATH"):
            result = await _call(fleet, "mb", "env", name=name)
            values[name] = result["structuredContent"]["value"]
    assert values["API_KEY"] == "s3cr3t-value"
    assert values["GATEWAY_TEST_PASSED"] == "visible"
    assert values["GATEWAY_TEST_HIDDEN"] is None
    assert values["PATH"]


async def test_missing_secret_fails_that_backend_with_a_message_naming_the_variable() -> None:
    os.environ.pop("GATEWAY_TEST_UNSET", None)
    fleet = Fleet(config({"mb": misbehave(env={"KEY": "${env:GATEWAY_TEST_UNSET}"}, restart="never")}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
        error = fleet.backends["mb"].last_error or ""
    assert "GATEWAY_TEST_UNSET" in error and "servers.mb.env.KEY" in error


async def test_stderr_is_kept_in_a_bounded_buffer() -> None:
    fleet = Fleet(config({"mb": misbehave("--stderr-chatter", "1500")}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
            log = fleet.backends["mb"].log
            size = log.lines.maxlen
            assert size is not None
            await wait_until(lambda: len(log.lines) >= size, timeout=30)
    assert len(log.lines) == 1000
    assert log.lines[-1].text  # the newest lines are kept


async def test_shutdown_kills_grandchildren_and_sigterm_ignorers() -> None:
    cfg = config(
        {
            "child": misbehave("--spawn-child"),
            "stubborn": misbehave("--ignore-sigterm", "--spawn-child"),
        }
    )
    fleet = Fleet(cfg)
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
        pids = []
        for name in ("child", "stubborn"):
            result = await _call(fleet, name, "pid")
            content = result["structuredContent"]
            pids += [content["pid"], content["childPid"]]
        assert all(psutil.pid_exists(p) for p in pids)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    assert process_tree() == []


async def test_a_server_installed_beside_the_gateway_starts_without_an_activated_venv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the virtualenv's bin is not on PATH
    fleet = Fleet(config({"time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
        assert fleet.backends["time"].available, fleet.backends["time"].last_error


async def test_a_missing_command_is_named() -> None:
    fleet = Fleet(config({"gone": {"command": "no-such-mcp-server-xyz", "restart": "never"}}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
    assert "command not found: no-such-mcp-server-xyz" in (fleet.backends["gone"].last_error or "")


async def test_an_oversized_message_costs_that_message_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line over the limit is dropped (its call times out); the session and later calls go on."""
    from gateway.backends import _process
    from gateway.errors import BackendTimeout

    monkeypatch.setattr(_process, "MAX_LINE", 2**16)
    fleet = Fleet(config({"mb": misbehave(timeout=2)}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
        with pytest.raises(BackendTimeout):
            await _call(fleet, "mb", "echo", text="x" * 2**17)
        result = await _call(fleet, "mb", "echo", text="small")
        assert result["structuredContent"] == {"text": "misbehave: small"}
        assert fleet.backends["mb"].available


async def test_concurrent_calls_share_one_pipe_and_each_gets_its_own_answer() -> None:
    fleet = Fleet(config({"mb": misbehave()}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
        answers: dict[int, object] = {}

        async def one(i: int) -> None:
            answers[i] = (await _call(fleet, "mb", "echo", text=str(i)))["structuredContent"]

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
    assert answers == {i: {"text": f"misbehave: {i}"} for i in range(50)}


def test_a_secret_reference_in_args_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    # A command line is readable by every local user (`ps`): no masking can help there.
    caplog.set_level(logging.WARNING, logger="gateway.backends.stdio")
    Fleet(config({"plain": misbehave("--name", "plain")}))
    assert caplog.records == []
    Fleet(config({"mb": misbehave("--name", "${env:HOME}")}))
    [record] = caplog.records
    assert "servers.mb.args holds a secret reference" in record.getMessage()
    assert "servers.mb.env instead" in record.getMessage()


async def test_a_server_that_exits_leaving_its_stdout_open_is_unavailable_then_replaced() -> None:
    """Its stdin is dead, its stdout held by a grandchild: calls fail as the backend's (never an
    internal error, never a wait for the timeout), and the supervisor replaces it."""
    from mcp import Client as SdkClient
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS

    from gateway.errors import BACKEND_UNAVAILABLE
    from tests._support import serve

    timeout = 10.0
    async with (
        serve(config({"mb": misbehave(timeout=timeout, backoff=[0.1, 0.5])})) as gw,
        SdkClient(gw.url, mode="legacy") as client,
    ):
        backend = gw.fleet.backends["mb"]
        pid = backend.log.pid
        with anyio.fail_after(timeout / 2), pytest.raises(MCPError) as err:
            await client.call_tool("mb__quit_keeping_stdout", {})
        assert err.value.code == BACKEND_UNAVAILABLE
        # A call right after reaches a pipe with no reader: the backend's unavailability, an
        # unknown tool once it has left the catalogue, or an answer from its successor.
        with anyio.fail_after(timeout / 2):
            try:
                result = await client.call_tool("mb__echo", {"text": "next"})
                assert result.is_error is not True
            except MCPError as exc:
                assert exc.code in (BACKEND_UNAVAILABLE, INVALID_PARAMS), exc.message
        await wait_until(
            lambda: backend.state.value == "running" and backend.log.pid not in (None, pid),
            timeout=30,
            interval=0.05,
        )
        assert backend.restarts == 1
