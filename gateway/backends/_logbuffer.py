"""A bounded per-backend buffer of stderr lines, and the pipe reader that fills it."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("gateway.backend.stderr")

_MAX_LINE = 4096  # a runaway line (a binary blob on stderr) must not blow the buffer's memory bound


@dataclass(frozen=True, slots=True)
class LogLine:
    time: float
    server: str
    text: str


class LogBuffer:
    """The last `size` lines a backend wrote to stderr. `listeners` see each new line."""

    def __init__(self, server: str, size: int = 1000) -> None:
        self.server = server
        self.lines: deque[LogLine] = deque(maxlen=size)
        self.listeners: list[Callable[[LogLine], None]] = []

    def append(self, text: str) -> None:
        line = LogLine(time.time(), self.server, text[:_MAX_LINE])
        self.lines.append(line)
        logger.debug("%s: %s", self.server, line.text)
        for listener in list(self.listeners):
            listener(line)


async def pump_pipe(fd: int, buffer: LogBuffer) -> None:
    """Read a pipe's lines into `buffer` until EOF. Owns (and closes) `fd`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # a line over the limit: drop what was buffered and go on
                continue
            if not raw:
                return
            buffer.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
    finally:
        transport.close()
