"""Checks the misbehave test server directly, with the real `mcp` SDK stdio client.

Two ways in: `connect()` (SDK `stdio_client` + `ClientSession`) for protocol-level checks, and
`RawServer` (a bare subprocess) where the test needs the exit code, signals, or the process group.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TextIO

import anyio
import mcp_types as types
import pytest
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.client.session import ClientSession, LoggingFnT, MessageHandlerFnT
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from tests._support import text_of, wait_until

SERVER = Path(__file__).with_name("misbehave.py")
START = 15.0  # bound for anything that includes a server start (the SDK import alone is ~1 s here)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def connect(
    *args: str,
    errlog: TextIO | None = None,
    env: dict[str, str] | None = None,
    message_handler: MessageHandlerFnT | None = None,
    logging_callback: LoggingFnT | None = None,
) -> AsyncIterator[ClientSession]:
    """An SDK client session on a fresh misbehave process (not yet initialized)."""
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER), *args], env=env)
    async with (
        stdio_client(params, errlog=errlog if errlog is not None else sys.stderr) as (read, write),
        ClientSession(read, write, message_handler=message_handler, logging_callback=logging_callback) as s,
    ):
        yield s


class RawServer:
    """misbehave as a bare subprocess in its own session (so its pid is its process group id)."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        self.stdout = BufferedByteReceiveStream(proc.stdout)
        self.stderr = BufferedByteReceiveStream(proc.stderr)

    @classmethod
    @asynccontextmanager
    async def start(cls, *args: str) -> AsyncIterator[RawServer]:
        proc = await anyio.open_process([sys.executable, str(SERVER), *args], start_new_session=True)
        try:
            yield cls(proc)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with anyio.fail_after(5, shield=True):
                await proc.wait()
            await proc.aclose()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send((json.dumps(message) + "\n").encode())

    async def initialize(self) -> None:
        await self.send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        )

    @staticmethod
    async def line(stream: BufferedByteReceiveStream) -> str:
        return (await stream.receive_until(b"\n", 1 << 20)).decode()

    async def answer(self, rid: int) -> dict[str, Any]:
        """The next message on stdout answering request `rid` (notifications before it skipped)."""
        while True:
            message: dict[str, Any] = json.loads(await self.line(self.stdout))
            if message.get("id") == rid:
                return message

    async def stderr_until(self, needle: str) -> list[str]:
        lines: list[str] = []
        while not lines or needle not in lines[-1]:
            lines.append(await self.line(self.stderr))
        return lines

    async def exit_code(self) -> int:
        return await self.proc.wait()


async def read_all(stream: ByteReceiveStream | None) -> str:
    assert stream is not None
    chunks: list[bytes] = []
    with suppress(anyio.EndOfStream, anyio.ClosedResourceError):
        while True:
            chunks.append(await stream.receive())
    return b"".join(chunks).decode()


# --------------------------------------------------------------------------- normal operation


@pytest.mark.anyio
async def test_echo_has_structured_content_and_server_name() -> None:
    with anyio.fail_after(START):
        async with connect("--name", "alpha") as s:
            init = await s.initialize()
            assert init.server_info.name == "alpha"
            assert init.protocol_version == "2025-11-25"
            assert init.capabilities.tools is not None and init.capabilities.tools.list_changed
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) == {
                "echo",
                "add",
                "fail",
                "sleep",
                "crash",
                "hang",
                "log",
                "change_tools",
                "pid",
                "env",
                "stop_reading",
                "quit_keeping_stdout",
                "raise_error",
            }
            assert tools["echo"].output_schema is not None
            result = await s.call_tool("echo", {"text": "hi"})
            assert not result.is_error
            assert text_of(result) == "alpha: hi"
            assert result.structured_content == {"text": "alpha: hi"}


@pytest.mark.anyio
async def test_other_tools_resources_prompts_and_notifications() -> None:
    logs: list[types.LoggingMessageNotificationParams] = []
    changed = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    with anyio.fail_after(START):
        async with connect(
            env={"MISBEHAVE_ALLOWED": "yes"}, message_handler=on_message, logging_callback=on_log
        ) as s:
            await s.initialize()
            assert text_of(await s.call_tool("add", {"a": 2, "b": 3.5})) == "5.5"
            assert (await s.call_tool("add", {"a": 2})).is_error  # bad arguments: a tool error
            failed = await s.call_tool("fail")
            assert failed.is_error and text_of(failed) == "deliberate failure"
            pid = await s.call_tool("pid")
            assert int(text_of(pid)) > 1 and pid.structured_content == {
                "pid": int(text_of(pid)),
                "childPid": None,
            }
            env = await s.call_tool("env", {"name": "MISBEHAVE_ALLOWED"})
            assert env.structured_content == {"name": "MISBEHAVE_ALLOWED", "value": "yes"}
            unset = await s.call_tool("env", {"name": "MISBEHAVE_SURELY_UNSET"})
            assert unset.structured_content == {"name": "MISBEHAVE_SURELY_UNSET", "value": None}

            assert text_of(await s.call_tool("log", {"level": "warning", "message": "careful"})) == "logged"
            assert [(p.level, p.data, p.logger) for p in logs] == [("warning", "careful", "misbehave")]

            with pytest.raises(MCPError):
                await s.call_tool("extra")
            await s.call_tool("change_tools")
            await changed.wait()
            assert "extra" in {t.name for t in (await s.list_tools()).tools}
            assert text_of(await s.call_tool("extra")) == "misbehave: extra"

            assert [r.uri for r in (await s.list_resources()).resources] == ["misbehave://static/hello"]
            templates = (await s.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["misbehave://item/{id}"]
            for uri, expected in [
                ("misbehave://static/hello", "hello from misbehave"),
                ("misbehave://item/42", "item 42 from misbehave"),
            ]:
                read = await s.read_resource(uri)
                assert isinstance(read, types.ReadResourceResult)
                contents = read.contents[0]
                assert isinstance(contents, types.TextResourceContents) and contents.text == expected
            with pytest.raises(MCPError):
                await s.read_resource("misbehave://nothing/here")

            prompts = (await s.list_prompts()).prompts
            assert [p.name for p in prompts] == ["greet"]
            prompt = await s.get_prompt("greet", {"name": "Ada"})
            assert isinstance(prompt, types.GetPromptResult)
            content = prompt.messages[0].content
            assert isinstance(content, types.TextContent) and content.text.startswith("Hello, Ada!")


@pytest.mark.anyio
async def test_sleep_reports_progress() -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    with anyio.fail_after(START):
        async with connect() as s:
            await s.initialize()
            result = await s.call_tool("sleep", {"seconds": 0.5}, progress_callback=on_progress)
            assert text_of(result) == "slept 0.5s"
    assert len(seen) >= 4, seen  # every 0.1 s, plus the final one
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert seen[-1] == (0.5, 0.5)


@pytest.mark.anyio
async def test_sleep_honours_cancellation(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("w+") as errlog:
        with anyio.fail_after(START):
            async with connect(errlog=errlog) as s:
                await s.initialize()
                with anyio.move_on_after(0.5) as scope:
                    await s.call_tool("sleep", {"seconds": 60})
                assert scope.cancelled_caught
                # The server is still serving, and its sleep saw the client's notifications/cancelled.
                assert text_of(await s.call_tool("echo", {"text": "still here"})) == "misbehave: still here"
                await wait_until(
                    lambda: "sleep cancelled" in (tmp_path / "stderr").read_text(),
                    timeout=START,
                    interval=0.05,
                )


@pytest.mark.anyio
async def test_hang_tool_never_answers_but_server_stays_up() -> None:
    with anyio.fail_after(START):
        async with connect() as s:
            await s.initialize()
            with anyio.move_on_after(0.5) as scope:
                await s.call_tool("hang")
            assert scope.cancelled_caught
            assert text_of(await s.call_tool("echo", {"text": "x"})) == "misbehave: x"


@pytest.mark.anyio
async def test_modern_discover_is_answered() -> None:
    with anyio.fail_after(START):
        async with connect("--name", "modern") as s:
            discovered = await s.discover()
            assert "2026-07-28" in discovered.supported_versions
            assert s.server_info is not None and s.server_info.name == "modern"
            result = await s.call_tool("echo", {"text": "new era"})
            assert result.structured_content == {"text": "modern: new era"}


# --------------------------------------------------------------------------- failures


@pytest.mark.anyio
async def test_crash_fails_the_session() -> None:
    with anyio.fail_after(START):
        async with connect() as s:
            await s.initialize()
            with pytest.raises(MCPError) as info:
                await s.call_tool("crash")
            assert info.value.code == types.CONNECTION_CLOSED


@pytest.mark.anyio
async def test_crash_exits_with_code_3() -> None:
    with anyio.fail_after(START):
        async with RawServer.start() as srv:
            await srv.initialize()
            assert json.loads(await srv.line(srv.stdout))["id"] == 1
            await srv.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await srv.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "crash"}})
            assert await srv.exit_code() == 3


@pytest.mark.anyio
async def test_crash_at_start_fails_initialize(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("w+") as errlog:
        with anyio.fail_after(START):
            async with connect("--crash-at-start", errlog=errlog) as s:
                with pytest.raises(MCPError) as info:
                    await s.initialize()
                assert info.value.code == types.CONNECTION_CLOSED
    assert "--crash-at-start" in (tmp_path / "stderr").read_text()


@pytest.mark.anyio
async def test_crash_at_start_exit_code_and_stderr_chatter() -> None:
    with anyio.fail_after(START):
        async with RawServer.start("--mode", "crash-at-start", "--stderr-chatter", "5") as srv:
            assert await srv.exit_code() == 2
            err = (await read_all(srv.proc.stderr)).splitlines()
            assert len(err) == 6 and "AKIAIOSFODNN7EXAMPLE" in "\n".join(err)
            assert await read_all(srv.proc.stdout) == ""


@pytest.mark.anyio
async def test_garbage_mode_still_serves_echo() -> None:
    faults: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            faults.append(message)

    with anyio.fail_after(START):
        async with connect("--garbage", "--name", "messy", message_handler=on_message) as s:
            await s.initialize()
            for i in range(3):
                result = await s.call_tool("echo", {"text": str(i)})
                assert result.structured_content == {"text": f"messy: {i}"}
            assert len((await s.list_tools()).tools) == 13
    assert faults, "the client should have seen unparseable lines"


@pytest.mark.anyio
async def test_garbage_mode_puts_non_json_on_stdout() -> None:
    with anyio.fail_after(START):
        async with RawServer.start("--garbage") as srv:
            await srv.initialize()
            lines: list[str] = []
            while not lines or not lines[-1].startswith('{"jsonrpc"'):
                lines.append(await srv.line(srv.stdout))
            assert json.loads(lines[-1])["id"] == 1
            assert len(lines) >= 3
            assert any(not line.startswith("{") for line in lines[:-1])


@pytest.mark.anyio
async def test_hang_at_start_never_answers_initialize() -> None:
    async with RawServer.start("--hang-at-start") as srv:
        with anyio.fail_after(START):
            await srv.stderr_until("hanging")
        await srv.initialize()
        assert srv.proc.stdin is not None
        await srv.proc.stdin.aclose()  # even EOF does not end it
        with anyio.move_on_after(2) as scope:
            await srv.line(srv.stdout)
        assert scope.cancelled_caught
        assert srv.proc.returncode is None


@pytest.mark.anyio
async def test_exit_after() -> None:
    with anyio.fail_after(START):
        async with RawServer.start("--exit-after", "0.5") as srv:
            await srv.initialize()
            assert await srv.exit_code() == 1


@pytest.mark.anyio
async def test_ignore_sigterm_needs_sigkill() -> None:
    async with RawServer.start("--ignore-sigterm") as srv:
        with anyio.fail_after(START):
            await srv.initialize()
            await srv.answer(1)  # serving, so its handler is in place
            srv.proc.send_signal(signal.SIGTERM)
            await srv.stderr_until("ignoring SIGTERM")
            # Alive past the signal, and still serving: it answers a ping.
            await srv.send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
            assert await srv.answer(2) == {"jsonrpc": "2.0", "id": 2, "result": {}}
        assert srv.proc.returncode is None
        srv.proc.kill()
        with anyio.fail_after(5):
            assert await srv.exit_code() == -signal.SIGKILL


@pytest.mark.anyio
async def test_spawn_child_is_in_the_process_group() -> None:
    async with RawServer.start("--spawn-child", "--hang-at-start") as srv:
        with anyio.fail_after(START):
            line = (await srv.stderr_until("spawned child"))[-1]
        child = int(line.rsplit("pid=", 1)[1])
        assert os.getpgid(child) == srv.proc.pid  # same group as the server, which leads its own
        os.killpg(srv.proc.pid, signal.SIGKILL)
        with anyio.fail_after(5):
            await srv.exit_code()
            # killed; reaped or not
            await wait_until(lambda: _state(child) in ("Z", "gone"), timeout=5, interval=0.05)


@pytest.mark.anyio
async def test_spawn_child_pid_tool_reports_it() -> None:
    child: int | None = None
    try:
        with anyio.fail_after(START):
            async with connect("--spawn-child") as s:
                await s.initialize()
                structured = (await s.call_tool("pid")).structured_content
                assert isinstance(structured, dict)
                child = structured["childPid"]
                assert isinstance(child, int) and os.getpgid(child) == structured["pid"]
    finally:
        # The SDK client only kills the group when the server outlives stdin EOF; a clean exit leaks it.
        if child is not None:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "gone"
