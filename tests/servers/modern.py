#!/usr/bin/env python3
"""modern: an MCP server that speaks 2026-07-28 only, on the `mcp` SDK.

Run as ``python tests/servers/modern.py`` (stdio) or ``python tests/servers/modern.py --http PORT``
(streamable HTTP on ``http://127.0.0.1:PORT/mcp``). It answers `server/discover` and refuses the
2025-11-25 `initialize` handshake with "Method not found", as a server that never knew it does.

It exposes, for the gateway's tests: `tools/list` in pages of two (so pagination is exercised),
`echo`, `count` (progress and log messages), `weather` (structured output), `grow` (adds a tool
and announces the change on `subscriptions/listen`), `wait` and `cancellations` (how many waits
were cancelled), `touch` (a resource update), `ask` (an input round), `regional` (an
`x-mcp-header` argument), `envelope` (its own request's `_meta`), a prompt with a completion, a
resource and a resource template. An HTTP request's `Mcp-Method`/`Mcp-Name`/`Mcp-Param-*`
headers are recorded; `headers` returns them.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

import anyio
import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, Field
from starlette.requests import Request

PAGE = 2


class Weather(BaseModel):
    city: str
    celsius: float


def build() -> MCPServer:
    seen: list[dict[str, str]] = []
    mcp = MCPServer("modern", instructions="A 2026-07-28-only test server.")

    async def refuse_handshake(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "initialize":
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found", data="initialize")
        if isinstance(ctx.request, Request):
            wanted = ("mcp-method", "mcp-name")
            headers = ctx.request.headers.items()
            seen.append(
                {k: v for k, v in headers if k.lower() in wanted or k.lower().startswith("mcp-param-")}
            )
        return await call_next(ctx)

    mcp._lowlevel_server.middleware.insert(0, refuse_handshake)

    @mcp.tool()
    def echo(text: str) -> str:
        """Say it back."""
        return text

    @mcp.tool()
    async def count(n: int, ctx: Context) -> str:
        """Count to n, with progress and a log line per step."""
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i}")
            await ctx.info(f"counted {i}")
        return f"counted to {n}"

    cancelled: list[float] = []

    @mcp.tool()
    async def wait(seconds: float) -> str:
        """Sleep; a cancelled wait is counted (see `cancelled`)."""
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            cancelled.append(seconds)
            raise
        return "waited"

    @mcp.tool()
    def cancellations() -> int:
        """How many waits were cancelled."""
        return len(cancelled)

    @mcp.tool()
    def ask(ctx: Context) -> str | types.InputRequiredResult:
        """An input round: asks the client (elicitation), then answers with what it said."""
        answers = ctx.input_responses
        if not answers:
            form = types.ElicitRequestFormParams(
                message="Your name?",
                requested_schema={"type": "object", "properties": {"name": {"type": "string"}}},
            )
            return types.InputRequiredResult(
                input_requests={"who": types.ElicitRequest(params=form)}, request_state="round-1"
            )
        return f"answered: {answers}"

    @mcp.tool()
    def envelope(ctx: Context) -> dict[str, Any]:
        """The `_meta` of this very request (a progress token only as present or not: it is minted)."""
        meta = dict(ctx.request_context.meta or {})
        # The SDK parses the token into its own field name.
        if meta.pop("progress_token", None) is not None or meta.pop("progressToken", None) is not None:
            meta["progressToken"] = True
        return meta

    @mcp.tool()
    async def touch(uri: str, ctx: Context) -> str:
        """Announce that the resource `uri` changed (to listen streams subscribed to it)."""
        await ctx.notify_resource_updated(uri)
        return "touched"

    @mcp.tool()
    def regional(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        """An argument mirrored into the `Mcp-Param-Region` header, which the SDK checks over HTTP."""
        return f"served in {region}"

    @mcp.tool()
    def weather(city: str) -> Weather:
        """Structured output."""
        return Weather(city=city, celsius=21.5)

    @mcp.tool()
    def headers() -> list[dict[str, str]]:
        """The Mcp-Method / Mcp-Name headers of the HTTP requests seen so far."""
        return list(seen)

    @mcp.tool()
    async def grow(ctx: Context) -> str:
        """Add a tool `grown`, and announce the change."""

        def grown() -> str:
            return "grown"

        mcp.add_tool(grown, name="grown")
        await ctx.notify_tools_changed()
        return "grew"

    @mcp.prompt()
    def greet(name: str) -> str:
        """A greeting."""
        return f"Hello, {name}!"

    @mcp.completion()  # type: ignore[untyped-decorator, no-untyped-call]  # the SDK leaves it untyped
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion | None:
        names = ["alice", "albert", "bob"]
        return types.Completion(values=[n for n in names if n.startswith(argument.value)])

    @mcp.resource("modern://info", mime_type="text/plain")
    def info() -> str:
        return "modern info"

    @mcp.resource("modern://item/{item}")
    def item(item: str) -> str:
        return f"item {item}"

    async def list_tools_paged(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams
    ) -> types.ListToolsResult:
        tools = sorted(await mcp.list_tools(), key=lambda t: t.name)
        start = int(params.cursor or 0)
        end = start + PAGE
        more = str(end) if end < len(tools) else None
        return types.ListToolsResult(tools=tools[start:end], next_cursor=more)

    mcp._lowlevel_server.add_request_handler("tools/list", types.PaginatedRequestParams, list_tools_paged)
    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on this port")
    args = parser.parse_args()
    mcp = build()
    if args.http is None:
        mcp.run("stdio")
        return
    anyio.run(lambda: mcp.run_streamable_http_async(host="127.0.0.1", port=args.http))


if __name__ == "__main__":
    main()
