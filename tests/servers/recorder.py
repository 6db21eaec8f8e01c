#!/usr/bin/env python3
"""recorder: a stdio MCP server that answers every tool call with what it received.

Run as ``python tests/servers/recorder.py``. Speaks both revisions (the SDK's lowlevel ``Server``:
the 2025-11-25 handshake and 2026-07-28 ``server/discover``). For the tests of tool overrides,
which must show what the backend was sent, not what the client asked.

tools
    ``search(query, region, limit?, units?)``, ``lookup(id)``
        structuredContent ``{"tool": <the name it was called by>, "arguments": <as received>}``,
        the text the same JSON; nothing is checked
    ``received()``  structuredContent ``{"calls": [...]}``: every call before this one, as above
    ``forget(tool)``  removes ``tool`` from the list and announces the change (2025-11-25: on the
                      session; 2026-07-28: on `subscriptions/listen` streams)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ToolsListChanged


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.changes = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.changes)
        string = {"type": "string"}
        self.tools: dict[str, types.Tool] = {
            t.name: t
            for t in [
                types.Tool(
                    name="search",
                    title="Search",
                    description="Search the records.",
                    input_schema=_object(
                        {
                            "query": {**string, "description": "What to look for."},
                            "region": {**string, "description": "Where the records live."},
                            "limit": {"type": "integer", "minimum": 1},
                            "units": string,
                        },
                        ["query", "region"],
                    ),
                ),
                types.Tool(
                    name="lookup",
                    description="Look a record up by id.",
                    input_schema=_object({"id": string}, ["id"]),
                ),
                types.Tool(
                    name="received", description="The calls received so far.", input_schema=_object({}, [])
                ),
                types.Tool(
                    name="forget",
                    description="Remove a tool from the list and announce the change.",
                    input_schema=_object({"tool": string}, ["tool"]),
                ),
            ]
        }

    def input_schema(self, name: str) -> dict[str, Any] | None:
        tool = self.tools.get(name)
        return None if tool is None else tool.input_schema

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(self.tools.values()))

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, arguments = params.name, params.arguments
        if name not in self.tools:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")
        if name == "received":
            structured: dict[str, Any] = {"calls": list(self.calls)}
        elif name == "forget":
            self.tools.pop(str((arguments or {}).get("tool")), None)
            await ctx.session.send_tool_list_changed()
            await self.changes.publish(ToolsListChanged())
            structured = {"tools": sorted(self.tools)}
        else:
            structured = {"tool": name, "arguments": arguments}
            self.calls.append(structured)
        text = types.TextContent(type="text", text=json.dumps(structured))
        return types.CallToolResult(content=[text], structured_content=structured)


async def serve() -> None:
    app = Recorder()
    server: Server[Any] = Server(
        "recorder",
        version="1",
        get_tool_input_schema=app.input_schema,
        on_list_tools=app.list_tools,
        on_call_tool=app.call_tool,
        on_subscriptions_listen=app.listen,
    )
    options = server.create_initialization_options(NotificationOptions(tools_changed=True))
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, options)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve)
    # Skip interpreter finalization (tearing down the SDK's classes takes a while): a server should
    # be gone as soon as stdin closes.
    sys.stdout.flush()
    os._exit(0)
