"""A server's stdin and stdout as MCP message streams, driven by the transports' own callbacks.

`MessagePipes` holds what does not depend on how the server is reached; `ChildPipes` is a local
process's pipes, and `_docker_io.AttachedPipes` a container's attach connection.

stdout is split into lines in the transport's data callback. A line answering one of the relay's
direct calls (`_direct`) resolves its caller right there, with no task in between (every hop
between tasks is a trip through the event loop, and on a small call those trips are most of what
the gateway adds). Every other line is queued, in order, for the SDK session's receive loop.

On stdin, the first message of a turn of the event loop is written at once and the rest of that
turn's messages together, at its end: one syscall and one wake-up of the child for a burst of
concurrent calls, no added wait for a lone one.

Nothing waits on stdin without a bound. A sender pushed back while the server's stdin is full is
released when the server reads, when the pipe ends, or when the server has read nothing for
`stall_after` seconds (its `timeout`): a server that wedged with requests waiting will answer none
of them, and the bytes it has not read cannot be taken back, so the pipe then ends its message
stream as a dead server's does, and the supervisor replaces the server (a failure that counts
against `max_restarts`). A timeout is the contract a call is given; a backend that has not read a
byte for a whole one is not serving anybody.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import anyio
from mcp.shared.message import SessionMessage

from gateway.backends._direct import DirectCalls
from gateway.backends._logbuffer import LineReader, LogBuffer
from gateway.backends._wire import LineSplitter, dump, parse

# After the server process exits, time for the last of its output to be read before its stream
# ends regardless (a grandchild it left may hold stdout open).
EXIT_DRAIN = 0.5

# Lines queued for the SDK's receive loop before stdout stops being read (the child then blocks
# on its writes instead of the gateway buffering without bound), and the level to resume at.
_QUEUE_HIGH = 1024
_QUEUE_LOW = 256


class MessagePipes:
    """Lines in from the server's stdout, lines out to its stdin, over asyncio transports.

    A subclass feeds stdout's bytes to `_received` and calls `_ended` when stdout ends, and says
    which transports carry stdin and stdout."""

    def __init__(self, max_line: int, stall_after: float | None = None) -> None:
        self.direct = DirectCalls(self.write_line, lambda: self._writable is None)
        self._stall_after = stall_after
        self._stall_timer: asyncio.TimerHandle | None = None
        self._broken = False  # stdin is gone (or given up on): writes fail at once
        self.stalled: str | None = None  # why the pipe gave up on a server that stopped reading
        self._splitter = LineSplitter(max_line)
        self._lines: deque[bytes | Exception] = deque()
        self._eof = False
        self.reading = False  # the session's receive loop is delivering a line of ours
        self._readable: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._batch: list[bytes] | None = None  # a turn's messages after the first, None between turns
        self._writable: asyncio.Future[None] | None = None  # while stdin's buffer is over its limit
        self._stdin_closed = False

    # -- for subclasses ---------------------------------------------------------------------------

    def _stdin(self) -> asyncio.WriteTransport | None:
        raise NotImplementedError

    def _stdout(self) -> asyncio.ReadTransport:
        raise NotImplementedError

    def _close_stdin(self, stdin: asyncio.WriteTransport) -> None:
        stdin.close()

    def _received(self, data: bytes) -> None:
        if self.stalled is not None:
            return  # the stream was ended for a wedged server: nobody reads it any more
        for item in self._splitter.feed(data):
            if isinstance(item, Exception) or self._lines or self.reading or not self.direct.resolve(item):
                # Behind queued lines, or one being delivered (a call's log line), even an
                # answer waits its turn.
                self._queue(item)

    def _ended(self) -> None:
        self._eof = True
        self._wake()

    def _stdin_lost(self) -> None:
        """stdin can take nothing more: release whoever waits for room, and fail later writes."""
        self._broken = True
        self._release()

    writer_lost = _stdin_lost  # for a write pipe with a protocol of its own (the gateway's stdio wire)

    def _drop_queued(self) -> None:
        """Nobody reads any more: drop what is queued, and read on (to see the end)."""
        self._lines.clear()
        if self._reading_paused:
            self._reading_paused = False
            self._stdout().resume_reading()

    # -- flow control (asyncio.BaseProtocol) -------------------------------------------------------

    def pause_writing(self) -> None:
        if self._writable is None:
            loop = asyncio.get_running_loop()
            self._writable = loop.create_future()
            if self._stall_after is not None:
                self._stall_timer = loop.call_later(self._stall_after, self._stalled)

    def resume_writing(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)  # the waiter sees `_broken` for itself
            self._writable = None

    def _stalled(self) -> None:
        self._stall_timer = None
        self.stalled = (
            f"stopped reading its stdin (nothing read for {self._stall_after:g}s with requests waiting)"
        )
        self._on_stalled(self.stalled)
        # Its message stream ends as a dead server's does: waiting calls fail now, and the session
        # ends, which the supervisor sees as the server's end (and tears the process down).
        self._drop_queued()
        self._stdin_lost()
        self._ended()

    def _on_stalled(self, reason: str) -> None:
        """For subclasses: record why the server is being given up on."""

    # -- what the streams use ---------------------------------------------------------------------

    async def next_line(self) -> bytes | Exception | None:
        """The next queued line (or a too-long-line error); None once stdout has ended."""
        while not self._lines:
            if self._eof:
                return None
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        item = self._lines.popleft()
        if self._reading_paused and len(self._lines) < _QUEUE_LOW:
            self._reading_paused = False
            self._stdout().resume_reading()
        return item

    @property
    def writable(self) -> bool:
        """Whether the server keeps up with what is written (stdin's buffer is under its limit)."""
        return self._writable is None and not self._broken

    def write_line(self, line: bytes) -> None:
        """Put `line` on stdin without waiting; `anyio.BrokenResourceError` once stdin is gone."""
        stdin = self._stdin()
        if self._stdin_closed or self._broken or stdin is None or stdin.is_closing():
            raise anyio.BrokenResourceError
        if self._batch is not None:
            self._batch.append(line)
        else:
            stdin.write(line)
            self._batch = []
            asyncio.get_running_loop().call_soon(self._flush)

    async def send_line(self, line: bytes) -> None:
        """`write_line`, then wait while the server is not reading: push back on senders.

        The wait is bounded: room, the pipe's end and (with `stall_after`) a stall all end it."""
        self.write_line(line)
        if self._writable is not None:
            await asyncio.shield(self._writable)
            if self._broken:
                raise anyio.BrokenResourceError

    def close_stdin(self) -> None:
        """The MCP stdio shutdown signal; what is still batched goes out first."""
        self._flush()
        self._stdin_closed = True
        stdin = self._stdin()
        if stdin is not None and not stdin.is_closing():
            self._close_stdin(stdin)

    # -- internals ----------------------------------------------------------------------------

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        stdin = self._stdin()
        if batch and stdin is not None and not stdin.is_closing():
            stdin.write(b"".join(batch))  # a dead child is noticed by the reader (EOF)

    def _queue(self, item: bytes | Exception) -> None:
        self._lines.append(item)
        self._wake()
        if not self._reading_paused and len(self._lines) > _QUEUE_HIGH:
            self._reading_paused = True
            self._stdout().pause_reading()

    def _wake(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)


class ChildPipes(MessagePipes, asyncio.SubprocessProtocol):
    """A local process's pipes: stdin and stdout carry messages, stderr lines go to its log."""

    def __init__(self, max_line: int, log: LogBuffer, stall_after: float | None = None) -> None:
        super().__init__(max_line, stall_after)
        self._transport: asyncio.SubprocessTransport | None = None
        self._log = log
        self.stderr = LineReader(log)  # `stderr.done`: the pipe reached EOF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed throughout: uvloop's transports do not derive from asyncio's classes.
        self._transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._received(data)
        elif fd == 2:
            self.stderr.data_received(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 0:
            self._stdin_lost()
        elif fd == 1:
            self._ended()
        elif fd == 2:
            self.stderr.connection_lost(exc)

    def process_exited(self) -> None:
        # The server is the process: once it exits, nothing more goes in, and its stream ends when
        # what it wrote has been read (`EXIT_DRAIN`), even if a grandchild holds stdout open
        # (else the session would live on, every call failing, and never be replaced).
        self._stdin_lost()
        asyncio.get_running_loop().call_later(EXIT_DRAIN, self._ended)

    def _on_stalled(self, reason: str) -> None:
        self._log.exit_detail = f"stopped by the gateway: it {reason}"

    def _stdin(self) -> asyncio.WriteTransport | None:
        assert self._transport is not None
        return cast("asyncio.WriteTransport | None", self._transport.get_pipe_transport(0))

    def _stdout(self) -> asyncio.ReadTransport:
        assert self._transport is not None
        return cast(asyncio.ReadTransport, self._transport.get_pipe_transport(1))


class StdoutMessages:
    """The server's stdout as the SDK session's read stream."""

    def __init__(self, pipes: MessagePipes) -> None:
        self._pipes = pipes

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await self._pipes.next_line()
            if item is None:
                self._pipes.direct.close(self._pipes.stalled)
                raise anyio.EndOfStream
            if isinstance(item, Exception):
                return item
            self._pipes.reading = True
            try:
                taken = await self._pipes.direct.take(item)
            finally:
                self._pipes.reading = False
            if not taken:
                return parse(item)

    def __aiter__(self) -> StdoutMessages:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        pass  # the pipe is the process's; teardown ends it

    async def __aenter__(self) -> StdoutMessages:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


class StdinMessages:
    """The server's stdin as the SDK session's write stream; `direct` shares the pipe."""

    def __init__(self, pipes: MessagePipes) -> None:
        self._pipes = pipes
        self.direct = pipes.direct
        self._closed = False

    async def send(self, message: SessionMessage) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        await self._pipes.send_line(dump(message))

    async def aclose(self) -> None:
        self._closed = True  # stdin itself stays open until teardown closes it, after the last write

    async def __aenter__(self) -> StdinMessages:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
