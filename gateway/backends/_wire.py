"""MCP messages as the newline-delimited JSON of the stdio transport (local processes, containers)."""

from __future__ import annotations

import mcp_types as types
from mcp.shared.message import SessionMessage


def dump(message: SessionMessage) -> bytes:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


def parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # garbage on stdout costs that line only
        return exc


class LineSplitter:
    """Splits a byte stream into its non-blank lines, dropping (once, as an error) any longer than `max_line`.

    A line over the limit is dropped whole: its bytes are discarded as they come, up to its newline,
    so memory stays bounded by `max_line` however long it is.
    """

    def __init__(self, max_line: int) -> None:
        self._max_line = max_line
        self._buffer = bytearray()
        self._skipping = False  # inside a line that was too long, until its newline

    def feed(self, data: bytes) -> list[bytes | Exception]:
        """The lines `data` completes, in order, and an error for each line dropped as too long."""
        items: list[bytes | Exception] = []
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end])
            start = end + 1
            if self._skipping:
                self._skipping = False
            elif line and not line.isspace():
                items.append(line)
        del buffer[:start]
        if len(buffer) > self._max_line:
            buffer.clear()
            if not self._skipping:
                self._skipping = True
                items.append(ValueError(f"message longer than {self._max_line} bytes dropped"))
        return items
