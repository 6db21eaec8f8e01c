"""A broken backend never takes the others down; calls to it fail fast and clearly."""

from __future__ import annotations

import anyio
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.errors import BACKEND_UNAVAILABLE
from tests._support import config, misbehave, serve, text_of, time_server, wait_until

pytestmark = pytest.mark.anyio


async def test_backend_that_fails_to_start_leaves_the_rest_serving() -> None:
    cfg = config(
        {
            "time": time_server(),
            "dead": misbehave("--crash-at-start", restart="never"),
            "missing": {"command": "/nonexistent/mcp-server", "restart": "never"},
            "mute": misbehave("--hang-at-start", startup_timeout=1.5, restart="never"),
        }
    )
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "time__get_current_time" in names
        assert not any(n.startswith(("dead__", "missing__", "mute__")) for n in names)
        states = {n: b.state.value for n, b in gw.fleet.backends.items()}
        assert states == {"time": "running", "dead": "failed", "missing": "failed", "mute": "failed"}
        assert "not found" in (gw.fleet.backends["missing"].last_error or "")
        assert "handshake" in (gw.fleet.backends["mute"].last_error or "")
        # The crash message the server printed is kept in its log buffer.
        assert any("crash" in line.text.lower() for line in gw.fleet.backends["dead"].log.lines)
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert result.is_error is not True


async def test_crash_mid_call_fails_that_call_then_backend_restarts_and_clients_are_told() -> None:
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    cfg = config({"time": time_server(), "mb": misbehave()})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy", message_handler=on_message) as client:
        backend = gw.fleet.backends["mb"]
        with anyio.fail_after(20):
            with pytest.raises(MCPError) as err:
                await client.call_tool("mb__crash", {})
            assert err.value.code == BACKEND_UNAVAILABLE
            await changed.wait()  # tools disappeared
            # The other backend never noticed.
            assert (
                await client.call_tool("time__get_current_time", {"timezone": "UTC"})
            ).is_error is not True
            await wait_until(lambda: backend.state.value == "running", timeout=20, interval=0.05)
        assert backend.restarts == 1
        result = await client.call_tool("mb__echo", {"text": "back"})
        assert text_of(result) == "misbehave: back"


async def test_hanging_call_times_out_with_a_clear_error_and_others_keep_working() -> None:
    cfg = config({"mb": misbehave(timeout=1.0), "time": time_server()})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:

                async def hang() -> None:
                    with pytest.raises(MCPError) as err:
                        await client.call_tool("mb__hang", {})
                    assert err.value.code == types.REQUEST_TIMEOUT
                    assert "mb" in err.value.message and "1s" in err.value.message

                tg.start_soon(hang)
                for _ in range(5):
                    assert (await client.call_tool("mb__add", {"a": 1, "b": 1})).is_error is not True
        # The hung call was cancelled at the backend; the backend still serves.
        assert (await client.call_tool("mb__echo", {"text": "x"})).is_error is not True


async def test_garbage_on_stdout_is_survived() -> None:
    cfg = config({"mb": misbehave("--garbage")})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        for i in range(3):
            result = await client.call_tool("mb__echo", {"text": str(i)})
            assert text_of(result) == f"misbehave: {i}"
        assert gw.fleet.backends["mb"].state.value == "running"
