"""The few places the gateway reaches below the `mcp` SDK's public surface, kept in one file.

The gateway relays raw JSON-RPC and needs the client connection behind a request; the SDK has no
public accessor for either yet. `pyproject.toml` pins the SDK's minor series these were read from.
"""

from __future__ import annotations

from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext


def connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection:
    connection: Connection = ctx.session._connection
    return connection


async def ask_client(
    ctx: ServerRequestContext[Any, Any], method: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Send a server-to-client request on the stream of the request `ctx` is handling."""
    result: dict[str, Any] = await ctx.session._request_outbound.send_raw_request(method, params)
    return result


async def notify_request(ctx: ServerRequestContext[Any, Any], method: str, params: dict[str, Any]) -> None:
    """Send a notification tied to the request `ctx` is handling (rides its response stream)."""
    await ctx.session._request_outbound.notify(method, params)
