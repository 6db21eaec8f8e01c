"""JSON-RPC over a container's attach connection: stdin out, multiplexed stdout/stderr in.

With `tty=False` the engine multiplexes the container's stdout and stderr on the attach
connection as frames: an 8-byte header (`>BxxxL`: stream 1 stdout / 2 stderr, payload size) and
the payload. Frames are not lines - a line may span frames and a frame may hold many lines - so
each stream is split into lines on its own. stdout lines are JSON-RPC messages (a garbage line
costs that line only, as over a pipe); stderr lines go to the backend's LogBuffer.

Our half-close of the connection (`send_eof`) reaches the server as EOF on its stdin, because the
container is created with StdinOnce: the MCP stdio shutdown signal.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from contextlib import suppress

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.shared.message import SessionMessage

from gateway.backends import _process
from gateway.backends._logbuffer import LogBuffer, _LineReader
from gateway.backends._wire import LineSplitter, dump, parse

_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
_CLOSED = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    OSError,
)


class AttachedIO:
    """The two pumps between one attach connection and the session's memory streams."""

    def __init__(self, conn: anyio.abc.SocketStream, log: LogBuffer) -> None:
        self._conn = conn
        self._log = log
        self._input_scope = anyio.CancelScope()
        self._output_scope = anyio.CancelScope(shield=True)
        self.output_ended = anyio.Event()  # the container's stdout and stderr closed: it exited
        self.input_closed = anyio.Event()  # we sent EOF

    async def pump_output(
        self,
        to_session: anyio.abc.ObjectSendStream[SessionMessage | Exception],
        on_end: Callable[[], Awaitable[None]],
    ) -> None:
        """Demultiplex until the connection ends; then `on_end()`, then close `to_session`.

        Shielded: the container's output is read until it ends or `stop_output()`, also while the
        session around us is being cancelled, because its end is how teardown learns that the
        container exited. `on_end` runs before the session learns of the end, so whatever it
        records (the exit code) is there when the supervisor looks.
        """
        async with to_session:
            with self._output_scope:
                try:
                    await self._demultiplex(to_session)
                finally:
                    self.output_ended.set()
                await on_end()

    async def _demultiplex(self, to_session: anyio.abc.ObjectSendStream[SessionMessage | Exception]) -> None:
        stderr = _LineReader(self._log)
        frames = BufferedByteReceiveStream(self._conn)
        stdout = LineSplitter(_process.MAX_LINE)
        listening = True
        try:
            while True:
                kind, size = _HEADER.unpack(await frames.receive_exactly(_HEADER.size))
                payload = await frames.receive_exactly(size) if size else b""
                if kind == _STDERR:
                    stderr.data_received(payload)
                elif kind == _STDOUT and listening:
                    for item in stdout.feed(payload):
                        try:
                            await to_session.send(item if isinstance(item, Exception) else parse(item))
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                            # The session is gone; keep reading to see the container's end.
                            listening = False
                            break
        except _CLOSED:
            pass
        finally:
            stderr.connection_lost(None)

    def stop_output(self) -> None:
        self._output_scope.cancel()

    async def pump_input(self, from_session: anyio.abc.ObjectReceiveStream[SessionMessage]) -> None:
        """Write the session's messages as lines until it closes or `close_input()`; then send EOF."""
        try:
            with self._input_scope:
                async with from_session:
                    async for message in from_session:
                        await self._conn.send(dump(message))
        except _CLOSED:
            pass
        finally:
            with suppress(*_CLOSED):
                await self._conn.send_eof()
            self.input_closed.set()

    async def close_input(self, within: float) -> None:
        """Stop writing (an unsent message is dropped: we are shutting down) and half-close."""
        self._input_scope.cancel()
        with anyio.move_on_after(within, shield=True):
            await self.input_closed.wait()
