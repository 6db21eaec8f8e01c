"""`mcp-gateway serve --stdio` (gateway/front/stdio.py): the gateway launched by its client, over real pipes.

The wire is read and written on the event loop's own callbacks; what cannot be polled (a regular
file) goes through the SDK's `stdio_server`. Either way the process's own stdout is diverted:
nothing but messages reaches the client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import psutil
import pytest
import yaml
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client as SdkClient
from mcp.client.stdio import StdioServerParameters

from gateway.errors import BACKEND_UNAVAILABLE
from tests._infra import REPO_ROOT
from tests._support import initialize, misbehave, rpc, wait_until

pytestmark = pytest.mark.anyio


def gateway_argv(tmp_path: Path, **cfg: Any) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"servers": {"mb": misbehave()}, **cfg}))
    return [sys.executable, "-m", "gateway", "serve", "--stdio", "--no-reload", "--config", str(path)]


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


HELLO = line(initialize()) + line({"jsonrpc": "2.0", "method": "notifications/initialized"})
ECHO = line(rpc("tools/call", {"name": "mb__echo", "arguments": {"text": "hi"}}, rid=2))


async def answers_until(stdout: BufferedByteReceiveStream, rid: int) -> list[dict[str, Any]]:
    """Every line the gateway writes up to the answer to `rid`; each must be a JSON-RPC message."""
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(60):
        while not seen or seen[-1].get("id") != rid:
            seen.append(json.loads(await stdout.receive_until(b"\n", 1 << 20)))
            assert seen[-1].get("jsonrpc") == "2.0", seen[-1]
    return seen


async def stop(process: Process) -> None:
    """Close the gateway's stdin (its client went away): it must exit, leaving nothing behind."""
    children = psutil.Process(process.pid).children(recursive=True)
    assert children, "the backend should be running"
    assert process.stdin is not None
    await process.stdin.aclose()
    with anyio.fail_after(30):
        assert await process.wait() == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


async def test_concurrent_calls_and_an_answer_larger_than_the_pipe(tmp_path: Path) -> None:
    argv = gateway_argv(tmp_path)
    params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(REPO_ROOT))
    texts = [f"call {i}" for i in range(30)] + ["x" * 300_000]  # a 64 KiB pipe fills many times
    answers: dict[str, str] = {}
    with anyio.fail_after(60):
        async with SdkClient(params, mode="legacy") as client:

            async def one(text: str) -> None:
                result = await client.call_tool("mb__echo", {"text": text})
                answers[text] = result.structured_content["text"]

            async with anyio.create_task_group() as tg:
                for text in texts:
                    tg.start_soon(one, text)
    assert answers == {text: f"misbehave: {text}" for text in texts}


async def test_what_the_gateway_process_prints_never_reaches_the_wire(tmp_path: Path) -> None:
    argv = gateway_argv(tmp_path, middleware=[{"use": "tests.plugins.noisy:Noisy"}])
    async with await anyio.open_process(argv, cwd=REPO_ROOT) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        await process.stdin.send(HELLO + ECHO)
        seen = await answers_until(BufferedByteReceiveStream(process.stdout), 2)
        assert seen[-1]["result"]["structuredContent"] == {"text": "misbehave: hi"}
        assert [m.get("id") for m in seen] == [1, 2]  # nothing else on the wire
        await stop(process)
        errors = (await process.stderr.receive(1 << 20)).decode()
    assert "noise from print()" in errors and "noise written to fd 1" in errors


async def test_a_wire_that_cannot_be_polled_is_served_by_the_sdk_transport(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"  # a regular file: no pipe transport can write it

    def answered() -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in out.read_bytes().splitlines()]

    with out.open("wb") as stdout:
        async with await anyio.open_process(gateway_argv(tmp_path), stdout=stdout, cwd=REPO_ROOT) as process:
            assert process.stdin is not None
            await process.stdin.send(HELLO + ECHO)
            await wait_until(lambda: len(answered()) == 2, timeout=60)
            await stop(process)
    first, second = answered()
    assert first["id"] == 1 and first["result"]["serverInfo"]["name"] == "mcp-gateway"
    assert second["result"]["structuredContent"] == {"text": "misbehave: hi"}


async def test_stdin_from_dev_null_is_an_immediate_end(tmp_path: Path) -> None:
    # epoll refuses /dev/null: the SDK's transport reads it, sees EOF, and the gateway exits.
    async with await anyio.open_process(
        gateway_argv(tmp_path), stdin=subprocess.DEVNULL, cwd=REPO_ROOT
    ) as process:
        with anyio.fail_after(60):
            assert await process.wait() == 0


async def test_the_wire_is_left_blocking_for_whoever_shares_it(tmp_path: Path) -> None:
    # The loop makes the descriptors non-blocking, and a pipe's or terminal's open file is shared
    # with the parent: a shell whose terminal stayed non-blocking would fail its next read.
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    try:
        async with await anyio.open_process(
            gateway_argv(tmp_path), stdin=stdin_read, stdout=stdout_write, cwd=REPO_ROOT
        ) as process:
            os.write(stdin_write, HELLO)
            with anyio.fail_after(60):
                first = await anyio.to_thread.run_sync(os.read, stdout_read, 1 << 16)
            assert json.loads(first.splitlines()[0])["id"] == 1
            os.close(stdin_write)
            stdin_write = -1
            with anyio.fail_after(30):
                assert await process.wait() == 0
        assert os.get_blocking(stdin_read) and os.get_blocking(stdout_write)
    finally:
        for fd in (stdin_read, stdin_write, stdout_read, stdout_write):
            if fd >= 0:
                os.close(fd)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_gateway_and_everything_it_started(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # Its backends run in their own process groups: only the gateway's teardown reaches them (and
    # here the backend's own child too, which outlives a backend that is merely closed).
    argv = gateway_argv(tmp_path, servers={"mb": misbehave("--spawn-child")})
    async with await anyio.open_process(argv, cwd=REPO_ROOT) as process:
        gateway = psutil.Process(process.pid)
        await wait_until(lambda: len(gateway.children(recursive=True)) >= 2, timeout=60)
        descendants = gateway.children(recursive=True)
        process.send_signal(signum)
        with anyio.fail_after(30):
            assert await process.wait() == 0
        assert process.stderr is not None
        errors = (await process.stderr.receive(1 << 20)).decode()
    _gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == []
    assert "Traceback" not in errors and f"{signal.Signals(signum).name}: shutting down" in errors


def test_a_middleware_config_error_is_reported_plainly(tmp_path: Path) -> None:
    # Middleware options are checked when the chain is built, after the wire is claimed.
    masking = {"use": "masking", "options": {"salt": "${env:GATEWAY_TEST_SURELY_UNSET}"}}
    argv = gateway_argv(tmp_path, middleware=[masking])
    done = subprocess.run(argv, stdin=subprocess.PIPE, capture_output=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 2
    assert done.stdout == b""
    errors = done.stderr.decode()
    assert "Traceback" not in errors and "GATEWAY_TEST_SURELY_UNSET is not set" in errors
    assert "middleware[0] (masking).options.salt" in errors


async def test_a_signal_gives_running_calls_the_drain_deadline_then_answers_them(tmp_path: Path) -> None:
    drain = 2.0
    argv = gateway_argv(tmp_path, listen={"drain_timeout": drain})
    slow = rpc(
        "tools/call",
        {"name": "mb__sleep", "arguments": {"seconds": 300}, "_meta": {"progressToken": 1}},
        rid=2,
    )
    async with await anyio.open_process(argv, cwd=REPO_ROOT) as process:
        assert process.stdin is not None and process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        await process.stdin.send(HELLO)
        await answers_until(stdout, 1)
        await process.stdin.send(line(slow))
        descendants = psutil.Process(process.pid).children(recursive=True)
        with anyio.fail_after(60):  # its first progress note: the call is running at the backend
            while (
                json.loads(await stdout.receive_until(b"\n", 1 << 20)).get("method")
                != "notifications/progress"
            ):
                pass
        began = anyio.current_time()
        process.send_signal(signal.SIGTERM)
        answer = (await answers_until(stdout, 2))[-1]
        waited = anyio.current_time() - began
        with anyio.fail_after(30):
            assert await process.wait() == 0
    assert answer["error"]["code"] == BACKEND_UNAVAILABLE and "shutting down" in answer["error"]["message"]
    assert drain * 0.9 <= waited < drain + 30
    _gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == []


async def test_initialize_does_not_wait_for_an_optional_server(tmp_path: Path) -> None:
    # A desktop client waits for `initialize` only so long: the required server is enough, the
    # optional one joins later with list_changed. `--start-when` holds it back until told.
    go = tmp_path / "slow-may-start"
    slow = misbehave("--name", "slow", "--start-when", str(go), required=False, startup_timeout=120)
    argv = gateway_argv(tmp_path, servers={"fast": misbehave(), "slow": slow})
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(REPO_ROOT))
    # Bounded well under the slow server's start-up limit (120 s): it never came up meanwhile.
    with anyio.fail_after(60):
        async with SdkClient(params, mode="legacy", message_handler=on_message) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "fast__echo" in names and not any(n.startswith("slow__") for n in names)
            assert not go.exists()
            # A forwarded call registers the connection for broadcasts (as any client makes one).
            await client.call_tool("fast__echo", {"text": "hi"})
            go.touch()
            await changed.wait()
            names = {t.name for t in (await client.list_tools()).tools}
            assert "slow__echo" in names
            echo = await client.call_tool("slow__echo", {"text": "late"})
            assert echo.structured_content == {"text": "slow: late"}


async def test_a_resolved_secret_is_masked_on_the_stdio_wire(tmp_path: Path) -> None:
    secret = "pewter-lagoon-whistle-fern"
    path = tmp_path / "gateway.yaml"
    server = misbehave("--echo-env", "TOKEN", env={"TOKEN": "${env:STDIO_TEST_SECRET}"})
    path.write_text(yaml.safe_dump({"servers": {"mb": server}}))
    argv = [sys.executable, "-m", "gateway", "serve", "--stdio", "--no-reload", "--config", str(path)]
    env = {**os.environ, "STDIO_TEST_SECRET": secret}
    async with await anyio.open_process(argv, cwd=REPO_ROOT, env=env) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        calls = [
            rpc("tools/call", {"name": "mb__env", "arguments": {"name": "TOKEN"}}, rid=2),
            rpc("tools/call", {"name": "mb__env", "arguments": {"name": "TOKEN", "error": True}}, rid=3),
        ]
        await process.stdin.send(HELLO + b"".join(map(line, calls)))
        stdout = BufferedByteReceiveStream(process.stdout)
        seen = await answers_until(stdout, 2) + await answers_until(stdout, 3)
        await stop(process)
        try:
            errors = (await process.stderr.receive(1 << 20)).decode()
        except anyio.EndOfStream:
            errors = ""  # nothing logged at all
    wire = json.dumps(seen)
    assert secret not in wire and secret not in errors
    assert seen[-2]["result"]["structuredContent"]["value"] == "[secret:STDIO_TEST_SECRET]"
    assert seen[-1]["error"]["message"] == "cannot use TOKEN=[secret:STDIO_TEST_SECRET]"
