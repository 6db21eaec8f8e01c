"""Launch a stdio MCP server as a child process, and make sure nothing of it outlives us.

Discipline:
- the child gets only the environment it is given (the caller builds an allowlist);
- it runs in a new session, so it and everything it spawns share one process group;
- teardown is shielded from cancellation and bounded: close stdin and let the server exit on its
  own, then SIGTERM the group, then SIGKILL it. The group is signalled even when the server exited
  cleanly, because a grandchild it left behind (npx's node, a helper it forked) would leak.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress

import anyio
import mcp_types as types
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

from gateway.backends._direct import DirectCalls
from gateway.backends._logbuffer import LogBuffer, read_pipe_into

# A well-behaved server exits soon after its stdin closes (the MCP stdio shutdown sequence).
EXIT_GRACE = 2.0
# After SIGTERM to the group, time to clean up before SIGKILL.
TERM_GRACE = 2.0
# Time to read a dead process's last stderr lines before giving up on the pipe.
STDERR_DRAIN = 0.5
_POLL = 0.01
# The longest message line read from a server; a longer one is dropped (that message only).
MAX_LINE = 64 * 2**20


@asynccontextmanager
async def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, log: LogBuffer
) -> AsyncIterator[tuple[tuple[StdoutMessages, StdinMessages], asyncio.subprocess.Process]]:
    """Start `argv`; yield its message streams and the process. Raises OSError if it cannot start."""
    read_fd, write_fd = os.pipe()
    pipe, stderr_reader = await read_pipe_into(read_fd, log)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=write_fd,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            limit=MAX_LINE,
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
    assert process.stdin is not None and process.stdout is not None
    stdin = StdinMessages(process.stdin)
    try:
        yield (StdoutMessages(process.stdout, stdin.direct), stdin), process
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)
            with anyio.move_on_after(STDERR_DRAIN):
                await stderr_reader.done.wait()
            pipe.close()


class StdoutMessages:
    """The child's stdout as a stream of messages, read by the session's own receive loop.

    No task sits between the pipe and the session: every hop between tasks costs a trip through
    the event loop per message, which is most of what relaying a small call costs.
    """

    def __init__(self, reader: asyncio.StreamReader, direct: DirectCalls) -> None:
        self._reader = reader
        self._direct = direct

    async def receive(self) -> SessionMessage | Exception:
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    return _parse(exc.partial)  # a last message without its newline
                self._direct.close()
                raise anyio.EndOfStream from None
            except asyncio.LimitOverrunError as exc:
                await self._skip_line(exc.consumed)
                return ValueError(f"message longer than {MAX_LINE} bytes dropped")
            except OSError:
                self._direct.close()
                raise anyio.EndOfStream from None
            if line.strip() and not await self._direct.take(line):
                return _parse(line)

    async def _skip_line(self, consumed: int) -> None:
        while True:
            await self._reader.readexactly(consumed)
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                consumed = exc.consumed

    def __aiter__(self) -> StdoutMessages:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        pass  # the pipe is the process's; `_stop` ends it

    async def __aenter__(self) -> StdoutMessages:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


class StdinMessages:
    """Messages to the child's stdin, written by the sending task itself.

    Messages sent in one turn of the event loop go out in one write (one syscall, one wake-up of
    the child), which is what keeps many concurrent calls cheap.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: list[bytes] = []
        self._closed = False
        self.direct = DirectCalls(self.send_line)

    async def send(self, message: SessionMessage) -> None:
        await self.send_line(_dump(message))

    async def send_line(self, line: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._writer.is_closing():
            raise anyio.BrokenResourceError
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(line)
        if self._writer.transport.get_write_buffer_size():
            try:
                await self._writer.drain()  # the child is not reading: push back on the sender
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise anyio.BrokenResourceError from exc

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._writer.is_closing():
            # A dead child's pipe is noticed by the reader (EOF), which ends the session.
            with suppress(OSError, RuntimeError):
                self._writer.write(data)

    async def aclose(self) -> None:
        self._closed = True  # stdin itself stays open until `_stop` closes it, after the last write

    async def __aenter__(self) -> StdinMessages:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _dump(message: SessionMessage) -> bytes:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # garbage on stdout costs that line only
        return exc


async def _exited(process: asyncio.subprocess.Process, within: float) -> None:
    # Polled, not `process.wait()`: on asyncio that also waits for the pipes to reach EOF, which a
    # grandchild holding them open would delay past the grace period.
    with anyio.move_on_after(within):
        while process.returncode is None:  # noqa: ASYNC110
            await anyio.sleep(_POLL)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        with suppress(OSError, RuntimeError):
            process.stdin.close()
    await _exited(process, EXIT_GRACE)
    # SIGTERM then SIGKILL the whole group; a no-op when it is already empty.
    await terminate_posix_process_tree(process, TERM_GRACE)  # type: ignore[arg-type]
    await _exited(process, TERM_GRACE)
