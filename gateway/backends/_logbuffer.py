"""A bounded per-backend buffer of stderr lines, and the line splitter that fills it."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config.secrets import SecretValues

logger = logging.getLogger("gateway.backend.stderr")

_MAX_LINE = 4096  # a runaway line (a binary blob on stderr) must not blow the buffer's memory bound


@dataclass(frozen=True, slots=True)
class LogLine:
    time: float
    server: str
    text: str


class LogBuffer:
    """The last `size` lines a backend wrote to stderr. `listeners` see each new line."""

    def __init__(self, server: str, size: int = 1000, *, secrets: SecretValues | None = None) -> None:
        self.server = server
        # The gateway's resolved secrets: a server handed its token may well print it, and every
        # reader of these lines (admin API, events, the exit summary in the log) must not see it.
        self.secrets = secrets if secrets is not None else SecretValues()
        self.lines: deque[LogLine] = deque(maxlen=size)
        self.listeners: list[Callable[[LogLine], None]] = []
        self.pid: int | None = None  # of the process writing to it, while there is one
        self.exit_code: int | None = None  # of the last process or container, once it ended
        self.exit_detail: str | None = None  # why it ended, when the transport knows (OOM-killed, ...)
        # Applied to every line before it is kept or shown (the masking middleware installs one).
        self.transform: Callable[[str], str] | None = None

    def append(self, text: str) -> None:
        text = self.secrets.mask(text[:_MAX_LINE])
        if self.transform is not None:
            text = self.transform(text)
        line = LogLine(time.time(), self.server, text)
        self.lines.append(line)
        logger.debug("%s: %s", self.server, line.text)
        for listener in list(self.listeners):
            listener(line)

    def exit_reason(self) -> str:
        """How the last process or container ended, as far as its transport knows."""
        detail = f" with code {self.exit_code}" if self.exit_code is not None else ""
        if self.exit_detail:
            detail += f" ({self.exit_detail})"
        return f"the server exited{detail}"

    def summary(self, n: int = 3) -> str:
        """The last `n` lines on one line, for a log message."""
        lines = [line.text for line in self.tail(n)]
        return "last stderr: " + " | ".join(lines) if lines else "no stderr output"

    def tail(self, n: int) -> list[LogLine]:
        """The last `n` lines, oldest first (none for `n <= 0`), without copying the whole buffer."""
        if n <= 0:
            return []
        out = list(itertools.islice(reversed(self.lines), n))
        out.reverse()
        return out


class RepeatedWarning:
    """A warning that may repeat without end, logged once per `window` seconds plus a count.

    A backend printing garbage on its protocol stream does it line after line (and again after
    each restart); a log line for each would flood the gateway's own log. The first occurrence is
    logged at once; the rest of its window are counted, and the count is logged with the next one
    after the window, or by `flush` (the session's end)."""

    def __init__(self, log: logging.Logger, summary: str, window: float = 10.0) -> None:
        self._log = log
        self._summary = summary  # "%d more ..." style: gets the count and the window
        self._window = window
        self._since: float | None = None
        self._held = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if self._since is not None and now - self._since < self._window:
            self._held += 1
            return
        self.flush()
        self._since = now
        self._log.warning(msg, *args)

    def flush(self) -> None:
        held, self._held = self._held, 0
        if held:
            self._log.warning(self._summary, held, self._window)


class LineReader(asyncio.Protocol):
    """Splits what a pipe delivers into lines, on the event loop's own callbacks (no task)."""

    def __init__(self, buffer: LogBuffer) -> None:
        self._buffer = buffer
        self._partial = b""
        self.done = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._buffer.append(line.decode("utf-8", "replace").rstrip("\r"))
        if len(self._partial) > _MAX_LINE:
            self._buffer.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:
            self._buffer.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        self.done.set()
