"""JSON-RPC over a container's attach connection: stdin out, multiplexed stdout/stderr in.

With `tty=False` the engine multiplexes the container's stdout and stderr on the attach
connection as frames: an 8-byte header (`>BxxxL`: stream 1 stdout / 2 stderr, payload size) and
the payload. Frames are not lines - a line may span frames and a frame may hold many lines - so
each stream is split into lines on its own, as its bytes arrive (a frame is never held whole).
stdout lines are JSON-RPC messages, handled exactly as a local process's (`_pipes`: the relay's
own calls resolved in the data callback, a garbage line costs that line only); stderr lines go to
the backend's LogBuffer.

Our half-close of the connection (`write_eof`) reaches the server as EOF on its stdin, because the
container is created with StdinOnce: the MCP stdio shutdown signal.

The end of the connection is the container's end (`output_ended`).
"""

from __future__ import annotations

import asyncio
import struct
from typing import cast

from gateway.backends._logbuffer import LineReader, LogBuffer
from gateway.backends._pipes import MessagePipes

_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2


class AttachedPipes(MessagePipes, asyncio.Protocol):
    """The protocol of one attach connection (`loop.connect_accepted_socket`)."""

    def __init__(self, max_line: int, log: LogBuffer, stall_after: float | None = None) -> None:
        super().__init__(max_line, stall_after)
        self._log = log
        self._stderr = LineReader(log)
        self._transport: asyncio.Transport | None = None
        self._header = b""  # a frame header still arriving
        self._kind = 0  # the stream of the frame being read
        self._left = 0  # payload bytes of that frame still to come
        self._listening = True
        self.output_ended = asyncio.Event()  # the connection ended: the container exited

    # -- protocol callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size:
            if self._left == 0:
                take = min(_HEADER.size - len(self._header), size - pos)
                self._header += data[pos : pos + take]
                pos += take
                if len(self._header) == _HEADER.size:
                    self._kind, self._left = _HEADER.unpack(self._header)
                    self._header = b""
                continue
            take = min(self._left, size - pos)
            chunk = data[pos : pos + take]
            pos += take
            self._left -= take
            if self._kind == _STDERR:
                self._stderr.data_received(chunk)
            elif self._kind == _STDOUT and self._listening:
                self._received(chunk)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stderr.connection_lost(None)
        self.output_ended.set()
        self._stdin_lost()  # one connection carries both directions
        self._ended()

    # -- for the container's owner ------------------------------------------------------------------

    def stop_listening(self) -> None:
        """Teardown: nobody reads stdout any more; drop it, but keep reading to see the end."""
        self._listening = False
        self._drop_queued()
        self.direct.close()

    # -- MessagePipes --------------------------------------------------------------------------------

    def _stdin(self) -> asyncio.WriteTransport | None:
        return self._transport

    def _stdout(self) -> asyncio.ReadTransport:
        assert self._transport is not None
        return self._transport

    def _on_stalled(self, reason: str) -> None:
        self._log.exit_detail = f"stopped by the gateway: it {reason}"

    def _close_stdin(self, stdin: asyncio.WriteTransport) -> None:
        stdin.write_eof()  # after what is buffered; the server reads EOF, we keep reading
