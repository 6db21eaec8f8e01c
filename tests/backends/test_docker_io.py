"""A container's attach connection (`gateway/backends/_docker_io.py`), frame by frame.

The engine is exercised end to end in test_docker.py; here the engine's side of a real socket pair
writes what the engine may but our test images do not: frame headers cut anywhere, many frames in
one read, empty frames, stderr between the halves of a stdout line, a garbage line.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from mcp_types import JSONRPCResponse

from gateway.backends._docker_io import AttachedPipes
from gateway.backends._logbuffer import LogBuffer
from gateway.backends._pipes import StdinMessages, StdoutMessages

pytestmark = pytest.mark.anyio


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(payload)) + payload


@asynccontextmanager
async def attached(
    log: LogBuffer, stall_after: float | None = None
) -> AsyncIterator[tuple[AttachedPipes, socket.socket]]:
    ours, engine = socket.socketpair()
    ours.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, pipes = await loop.connect_accepted_socket(
        lambda: AttachedPipes(1 << 20, log, stall_after), ours
    )
    try:
        yield pipes, engine
    finally:
        transport.abort()
        engine.close()


async def test_frames_cut_anywhere_give_whole_lines_and_stderr_goes_to_the_log() -> None:
    log = LogBuffer("box")
    first = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"n": 1}}).encode()
    second = json.dumps({"jsonrpc": "2.0", "id": 2, "result": {"n": 2}}).encode()
    wire = (
        frame(1, first[:10])
        + frame(2, b"warming up\n")
        + frame(1, b"")
        + frame(1, first[10:] + b"\nnot json\n" + second[:5])
        + frame(1, second[5:] + b"\n")
        + frame(2, b"half a line")
    )
    async with attached(log) as (pipes, engine):
        for start in range(0, len(wire), 7):  # headers and payloads split across reads
            engine.sendall(wire[start : start + 7])
        engine.shutdown(socket.SHUT_WR)
        stdout = StdoutMessages(pipes)
        with anyio.fail_after(5):
            got = [await stdout.receive() for _ in range(3)]
            await pipes.output_ended.wait()
        with pytest.raises(anyio.EndOfStream), anyio.fail_after(5):
            await stdout.receive()
    assert isinstance(got[1], ValueError)  # the garbage line, in its place
    answers = [m.message for m in (got[0], got[2]) if not isinstance(m, Exception)]
    assert [a.id for a in answers if isinstance(a, JSONRPCResponse)] == [1, 2]
    assert [line.text for line in log.lines] == ["warming up", "half a line"]


async def test_calls_go_out_as_lines_and_closing_stdin_half_closes() -> None:
    async with attached(LogBuffer("box")) as (pipes, engine):
        stdin = StdinMessages(pipes)
        answers: list[dict[str, object]] = []

        async def call() -> None:
            answers.append(await stdin.direct.request("tools/call", {"name": "t"}, timeout=5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(5):
                line = (await anyio.to_thread.run_sync(engine.recv, 65536)).rstrip(b"\n")
            request = json.loads(line)
            assert request["method"] == "tools/call" and request["params"] == {"name": "t"}
            reply = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {"ok": True}})
            engine.sendall(frame(1, reply.encode() + b"\n"))
        assert answers == [{"ok": True}]
        pipes.close_stdin()
        with anyio.fail_after(5):
            assert await anyio.to_thread.run_sync(engine.recv, 65536) == b""  # EOF: the server's stdin ended
        engine.sendall(frame(2, b"still here\n"))  # the other direction stays open
        pipes.stop_listening()
        engine.close()
        with anyio.fail_after(5):
            await pipes.output_ended.wait()


async def test_a_container_that_stops_reading_is_given_up_on_within_its_timeout() -> None:
    """The engine's side never reads: calls fill the connection, and once nothing has been read
    for `stall_after` every waiting call fails, later ones at once, and the stream ends."""
    log = LogBuffer("box")
    stall_after = 0.5
    async with attached(log, stall_after) as (pipes, _engine):
        stdin, stdout = StdinMessages(pipes), StdoutMessages(pipes)
        failures: list[str] = []

        async def call() -> None:
            try:
                await stdin.direct.request("tools/call", {"name": "t", "blob": "x" * 2**16}, timeout=60)
            except anyio.BrokenResourceError as exc:
                failures.append(str(exc))

        ended = anyio.Event()

        async def read() -> None:  # the session's receive loop
            with pytest.raises(anyio.EndOfStream):
                await stdout.receive()
            ended.set()

        with anyio.fail_after(stall_after + 10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                for _ in range(100):  # 6.4 MB: more than the socket's buffers take
                    tg.start_soon(call)
        assert ended.is_set()
        assert len(failures) == 100
        assert "stopped reading its stdin" in failures[0]
        assert "stopped reading its stdin" in (log.exit_detail or "")
        with pytest.raises(anyio.BrokenResourceError):
            await stdin.direct.request("tools/call", {"name": "t"}, timeout=60)
