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
