"""Launch a stdio MCP server as a child process, and make sure nothing of it outlives us.

Discipline:
- the child gets only the environment it is given (the caller builds an allowlist);
- it runs in a new session, so it and everything it spawns share one process group;
- teardown is shielded from cancellation and bounded: close stdin and let the server exit on its
  own, then SIGTERM the group, then SIGKILL it. The group is signalled even when the server exited
  cleanly, because a grandchild it left behind (npx's node, a helper it forked) would leak.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress

import anyio
import anyio.abc
import mcp_types as types
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

from gateway.backends._logbuffer import LogBuffer, read_pipe_into

# A well-behaved server exits soon after its stdin closes (the MCP stdio shutdown sequence).
EXIT_GRACE = 2.0
# After SIGTERM to the group, time to clean up before SIGKILL.
TERM_GRACE = 2.0
# Time to read a dead process's last stderr lines before giving up on the pipe.
STDERR_DRAIN = 0.5
_POLL = 0.01
# Messages buffered each way: enough to keep concurrent calls flowing, small enough to push back.
_BUFFER = 32

Streams = tuple[
    anyio.abc.ObjectReceiveStream[SessionMessage | Exception], anyio.abc.ObjectSendStream[SessionMessage]
]


@asynccontextmanager
async def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, log: LogBuffer
) -> AsyncIterator[tuple[Streams, anyio.abc.Process]]:
    """Start `argv`; yield its message streams and the process. Raises OSError if it cannot start."""
    read_fd, write_fd = os.pipe()
    pipe, stderr_reader = await read_pipe_into(read_fd, log)
    try:
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=write_fd,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        pipe.close()
        # Name the command: the error from the spawn does not always carry it.
        raise FileNotFoundError(errno.ENOENT, "command not found", argv[0]) from None
    except BaseException:
        pipe.close()
        raise
    finally:
        os.close(write_fd)  # the child has its own copy; ours must close or EOF never comes

    to_session, from_child = anyio.create_memory_object_stream[SessionMessage | Exception](_BUFFER)
    to_child, from_session = anyio.create_memory_object_stream[SessionMessage](_BUFFER)

    async def read_stdout() -> None:
        assert process.stdout is not None
        partial = b""
        async with to_session:
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError):
                async for chunk in process.stdout:
                    *lines, partial = (partial + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            await to_session.send(_parse(line))

    async def write_stdin() -> None:
        assert process.stdin is not None
        async with from_session:
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                async for message in from_session:
                    lines = [_dump(message)]
                    # Under load, messages queue up: one write (one syscall, one wake-up of the
                    # child) for all of them instead of one each.
                    with suppress(anyio.WouldBlock, anyio.EndOfStream):
                        while len(lines) < _BUFFER:
                            lines.append(_dump(from_session.receive_nowait()))
                    await process.stdin.send(b"".join(lines))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_stdout)
        tg.start_soon(write_stdin)
        try:
            yield (from_child, to_child), process
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process)
                with anyio.move_on_after(STDERR_DRAIN):
                    await stderr_reader.done.wait()
                pipe.close()
            tg.cancel_scope.cancel()


def _dump(message: SessionMessage) -> bytes:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # garbage on stdout costs that line only
        return exc


async def _exited(process: anyio.abc.Process, within: float) -> None:
    # Polled, not `process.wait()`: on asyncio that also waits for the pipes to reach EOF, which a
    # grandchild holding them open would delay past the grace period.
    with anyio.move_on_after(within):
        while process.returncode is None:  # noqa: ASYNC110
            await anyio.sleep(_POLL)


async def _stop(process: anyio.abc.Process) -> None:
    if process.stdin is not None:
        with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    await _exited(process, EXIT_GRACE)
    # SIGTERM then SIGKILL the whole group; a no-op when it is already empty.
    await terminate_posix_process_tree(process, TERM_GRACE)
    await _exited(process, TERM_GRACE)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.aclose()
