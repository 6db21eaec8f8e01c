#!/usr/bin/env python3
"""floor: a zero-work MCP server over streamable HTTP, for the benchmark.

Run as ``python tests/servers/floor.py PORT -- BACKEND_COMMAND [ARGS...]``.

At start it asks the real backend (over stdio) for its tool list and one `tools/call` result, then
serves those recorded answers on ``http://127.0.0.1:PORT/mcp`` from a bare ASGI app on uvicorn
(2026-07-28 requests only, no validation, no backend). A client calling it pays for the HTTP
transport and nothing else: the benchmark uses it to tell that cost apart from the gateway's.
``GET /readyz`` answers 200.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvicorn
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

SERVER_INFO = {"io.modelcontextprotocol/serverInfo": {"name": "floor", "version": "0"}}


async def record(command: list[str], tool: str, arguments: dict[str, Any]) -> tuple[Any, Any]:
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        result = await session.call_tool(tool, arguments)
    return (
        tools.model_dump(by_alias=True, mode="json", exclude_none=True),
        result.model_dump(by_alias=True, mode="json", exclude_none=True),
    )


def app_for(tools: dict[str, Any], called: dict[str, Any]) -> Any:
    answers = {
        "server/discover": {
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {"listChanged": True}},
            "ttlMs": 0,
            "cacheScope": "private",
        },
        "tools/list": {**tools, "ttlMs": 0, "cacheScope": "private"},
        "tools/call": called,
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/readyz":
            status, out = 200, b"ok"
        else:
            request = json.loads(body)
            if "id" not in request:
                status, out = 202, b""
            else:
                result = {
                    **answers.get(request["method"], {}),
                    "resultType": "complete",
                    "_meta": SERVER_INFO,
                }
                status, out = (
                    200,
                    json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode(),
                )
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def main() -> None:
    port, command = int(sys.argv[1]), sys.argv[sys.argv.index("--") + 1 :]
    tools, called = asyncio.run(record(command, "get_current_time", {"timezone": "UTC"}))
    uvicorn.run(
        app_for(tools, called),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
