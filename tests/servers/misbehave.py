#!/usr/bin/env python3
"""misbehave: a small stdio MCP server that fails on request, for the gateway's tests.

Run as ``python tests/servers/misbehave.py [--mode MODE] [options]``.

Normal operation serves, through the SDK's lowlevel ``Server`` (so both the
2025-11-25 ``initialize`` handshake and 2026-07-28 ``server/discover`` work):

tools
    ``echo(text)``      text "<name>: <text>" + structuredContent {"text": same}; has an outputSchema
    ``add(a, b)``       text of the sum
    ``fail()``          a result with isError true
    ``sleep(seconds)``  progress every 0.1 s when the caller sent a progressToken; cancellable
    ``crash()``         os._exit(3) right away, no response
    ``hang()``          never answers (until cancelled)
    ``log(level, message)``  emits notifications/message, then returns "logged"
    ``change_tools()``  adds tool ``extra`` and sends notifications/tools/list_changed (on the
                        2026-07-28 wire: to `subscriptions/listen` streams)
    ``pid()``           text os.getpid(); structuredContent {"pid", "childPid"}
    ``env(name)``       structuredContent {"name", "value"} (value null when unset); text the value
                        with ``error: true``, a JSON-RPC error (internal error) whose message and data
                        quote the value instead
    ``stop_reading(seconds, started?)``  blocks the whole server (stdin unread) for that long, then
                        answers; creates the file ``started`` (if given) once blocked
    ``raise_error(code, message, data?)``  answers with that JSON-RPC error (code, message, data as given)
    ``quit_keeping_stdout()``  exits (code 4, no answer), leaving a ``sleep 60`` grandchild that
                        holds stdout open (but not stdin): the server is gone, its stdout is not
    ``ask(kinds)``      (only with ``--ask``) asks the client, in turn, for each of ``kinds``
                        ("sampling", "elicitation", "elicitation-url", "roots") mid-call;
                        structuredContent {"answers": [...]}, each {"kind", "seconds"} and either
                        "result" or "error" {"code", "message", "data"}; the text is the same JSON
    ``log_later(seconds, message)``  (only with ``--log-later``) returns at once; ``seconds`` later
                        sends a "warning" notifications/message with ``message``, outside any call
    ``touch(uri)``      (only with ``--touch``) announces that the resource ``uri`` changed: to this
                        process's `resources/subscribe` subscribers (2025-11-25) and its
                        `subscriptions/listen` streams (2026-07-28); structuredContent {"pid",
                        "subscribed"} (whether anyone was subscribed to ``uri``), the text the same JSON
resources
    ``misbehave://static/hello`` (text) and the template ``misbehave://item/{id}``
prompts
    ``greet(name)``

Misbehaviours (combinable; ``--mode X`` is the same as ``--X`` and may repeat):

--crash-at-start      print a line to stderr, exit 2 before reading stdin
--hang-at-start       read and discard stdin forever, never answer (not even on EOF)
--garbage             non-JSON lines on stdout at start and before every message the server writes
--stderr-chatter N    N lines on stderr at start, one of them carrying a fake AWS key
--exit-after S        exit with code 1 after S seconds
--exit-clean-after S  exit with code 0 after S seconds
--ignore-sigterm      SIGTERM is caught and ignored (only SIGKILL stops the process)
--spawn-child         start ``sleep 1000`` in the same process group (its pid is in ``pid()``)
--ignore-stdin-eof    when stdin ends, stay alive (sleep) instead of exiting: only a signal ends it
--flood-stdout MB     MB megabytes of non-JSON lines (4 KiB each) on stdout at start
--huge-line MB        one non-JSON line of MB megabytes on stdout at start
--flood-stderr N      N lines on stderr at start (a burst, as fast as the pipe takes them)
--name NAME           serverInfo.name and the echo prefix
--start-when PATH     serve only once PATH exists (a slow start the test ends when it wants)
--ask                 also serve the tool ``ask`` (off by default: the tool list stays as tests count it)
--log-later           also serve the tool ``log_later`` (off by default, like ``--ask``)
--touch               also serve the tool ``touch`` and `resources/(un)subscribe` (off by default, so
                      the tool list and the declared capabilities stay as tests count them)
--echo-env NAME       print NAME=<value> of this environment variable on stderr at start and right
                      before ``crash()`` exits (may repeat): a server that leaks what it was handed

Everything that happens before the protocol starts is done before the (slow,
~0.7 s) SDK import, so start-up failures are immediate.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import mcp_types as types
    from mcp.server.context import ServerRequestContext

FAKE_SECRET = "AKIAIOSFODNN7EXAMPLE"
MODES = ("normal", "crash-at-start", "hang-at-start", "garbage")
GARBAGE_LINES = (
    "garbage: this line is not JSON",
    '{"half": "a JSON object that never ends',
    "\x1b[31mWARNING\x1b[0m a banner printed on stdout by mistake",
    '{"hello": "valid JSON, but not JSON-RPC"}',
    "",
)


def eprint(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="misbehave", description="A stdio MCP server that misbehaves on request."
    )
    p.add_argument("--mode", action="append", choices=MODES, default=[], help="same as the flag of that name")
    p.add_argument("--name", default="misbehave", help="serverInfo name and echo prefix")
    p.add_argument("--crash-at-start", action="store_true", help="print to stderr and exit 2 at once")
    p.add_argument("--hang-at-start", action="store_true", help="never answer initialize")
    p.add_argument("--garbage", action="store_true", help="interleave non-JSON lines on stdout")
    p.add_argument("--stderr-chatter", type=int, default=0, metavar="N", help="N stderr lines at start")
    p.add_argument("--exit-after", type=float, default=None, metavar="SECONDS", help="exit 1 after SECONDS")
    p.add_argument(
        "--exit-clean-after", type=float, default=None, metavar="SECONDS", help="exit 0 after SECONDS"
    )
    p.add_argument("--ignore-sigterm", action="store_true", help="catch and ignore SIGTERM")
    p.add_argument("--spawn-child", action="store_true", help="start a `sleep 1000` grandchild")
    p.add_argument("--ignore-stdin-eof", action="store_true", help="keep running after stdin ends")
    p.add_argument("--ask", action="store_true", help="also serve the tool `ask`")
    p.add_argument("--touch", action="store_true", help="also serve `touch` and resource subscriptions")
    p.add_argument("--log-later", action="store_true", help="also serve the tool `log_later`")
    p.add_argument("--start-when", metavar="PATH", help="wait until PATH exists, then serve")
    p.add_argument(
        "--echo-env", action="append", default=[], metavar="NAME", help="print NAME=value on stderr"
    )
    p.add_argument("--flood-stdout", type=float, default=0, metavar="MB", help="MB of garbage lines at start")
    p.add_argument("--huge-line", type=float, default=0, metavar="MB", help="one garbage line of MB at start")
    p.add_argument("--flood-stderr", type=int, default=0, metavar="N", help="N stderr lines at start")
    args = p.parse_args(argv)
    for mode in args.mode:
        if mode != "normal":
            setattr(args, mode.replace("-", "_"), True)
    return args


# --------------------------------------------------------------------------- pre-protocol behaviours


def _ignore_sigterm(signum: int, frame: object) -> None:
    eprint(f"misbehave[{os.getpid()}]: ignoring SIGTERM")


def _exit_later(seconds: float, code: int = 1) -> None:
    def fire() -> None:
        eprint(f"misbehave[{os.getpid()}]: exit timer of {seconds}s reached, exiting {code}")
        os._exit(code)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


def _echo_env(names: Sequence[str], when: str) -> None:
    for name in names:
        eprint(f"misbehave[{os.getpid()}]: {when}: {name}={os.environ.get(name)}")


def _hang_forever() -> None:
    """Swallow whatever arrives on stdin and never write a byte to stdout."""
    eprint(f"misbehave[{os.getpid()}]: hanging, will never answer")
    stdin = sys.stdin.buffer
    while stdin.readline():
        pass
    while True:  # EOF changes nothing: a hung server does not notice
        time.sleep(3600)


_garbage: Iterator[str] = itertools.cycle(GARBAGE_LINES)


class _GarblingWriter(io.TextIOWrapper):
    """stdout for the SDK's stdio transport that writes a garbage line before every message."""

    def __init__(self, buffer: IO[bytes], garbage: Iterator[str]) -> None:
        super().__init__(buffer, encoding="utf-8", line_buffering=False)
        self._garbage = garbage

    def write(self, s: str) -> int:
        super().write(next(self._garbage) + "\n")
        return super().write(s)


def _flood(args: argparse.Namespace) -> None:
    """--flood-stderr, --flood-stdout and --huge-line: all written before the protocol starts."""
    if args.flood_stderr:
        line = b"misbehave: flooding stderr " + b"." * 72 + b"\n"
        for done in range(0, args.flood_stderr, 1000):
            sys.stderr.buffer.write(line * min(1000, args.flood_stderr - done))
        sys.stderr.buffer.flush()
    out = sys.stdout.buffer
    if args.flood_stdout:
        line = b"garbage: " + b"x" * 4086 + b"\n"  # 4 KiB
        for _ in range(int(args.flood_stdout * 2**20) // len(line)):
            out.write(line)
    if args.huge_line:
        chunk = b"y" * 2**20
        out.write(b'{"huge": "')
        for _ in range(int(args.huge_line)):
            out.write(chunk)
        out.write(b'"\n')
    out.flush()


# --------------------------------------------------------------------------- the MCP server


class Misbehave:
    """Tool, resource and prompt handlers; all state is per process."""

    def __init__(
        self,
        name: str,
        child_pid: int | None,
        echo_env: Sequence[str] = (),
        *,
        ask: bool = False,
        touch: bool = False,
        log_later: bool = False,
    ) -> None:
        import mcp_types as types

        self.name = name
        self.child_pid = child_pid
        self.echo_env = echo_env
        self.wire_stdout: int | None = None  # a copy of the protocol's stdout, once serving
        self.extra_enabled = False
        self.log_level: str = "debug"  # set by logging/setLevel
        # 2026-07-28 clients learn list changes on `subscriptions/listen` streams fed by this bus.
        from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler

        self.changes = InMemorySubscriptionBus()
        self.listen_handler = ListenHandler(self.changes)
        obj: dict[str, Any] = {"type": "object"}
        self.tools: dict[str, types.Tool] = {
            t.name: t
            for t in [
                types.Tool(
                    name="echo",
                    description="Echo the text back, prefixed with the server name.",
                    input_schema={**obj, "properties": {"text": {"type": "string"}}, "required": ["text"]},
                    output_schema={**obj, "properties": {"text": {"type": "string"}}, "required": ["text"]},
                ),
                types.Tool(
                    name="add",
                    description="Add two numbers.",
                    input_schema={
                        **obj,
                        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                        "required": ["a", "b"],
                    },
                ),
                types.Tool(name="fail", description="Always returns isError.", input_schema=obj),
                types.Tool(
                    name="sleep",
                    description="Sleep, reporting progress every 0.1 s; honours cancellation.",
                    input_schema={
                        **obj,
                        "properties": {"seconds": {"type": "number"}},
                        "required": ["seconds"],
                    },
                ),
                types.Tool(
                    name="crash", description="Exit the server process at once (code 3).", input_schema=obj
                ),
                types.Tool(name="hang", description="Never answer.", input_schema=obj),
                types.Tool(
                    name="log",
                    description="Send a notifications/message log entry, then return.",
                    input_schema={
                        **obj,
                        "properties": {
                            "level": {
                                "type": "string",
                                "enum": [
                                    "debug",
                                    "info",
                                    "notice",
                                    "warning",
                                    "error",
                                    "critical",
                                    "alert",
                                    "emergency",
                                ],
                            },
                            "message": {"type": "string"},
                        },
                        "required": ["level", "message"],
                    },
                ),
                types.Tool(
                    name="change_tools",
                    description="Add the tool `extra` and send notifications/tools/list_changed.",
                    input_schema=obj,
                ),
                types.Tool(
                    name="pid",
                    description="The server's process id (and its spawned child's, if any).",
                    input_schema=obj,
                    output_schema={
                        **obj,
                        "properties": {"pid": {"type": "integer"}, "childPid": {"type": ["integer", "null"]}},
                        "required": ["pid", "childPid"],
                    },
                ),
                types.Tool(
                    name="env",
                    description="The value of one environment variable of the server process.",
                    input_schema={
                        **obj,
                        "properties": {"name": {"type": "string"}, "error": {"type": "boolean"}},
                        "required": ["name"],
                    },
                    output_schema={
                        **obj,
                        "properties": {"name": {"type": "string"}, "value": {"type": ["string", "null"]}},
                        "required": ["name", "value"],
                    },
                ),
            ]
        }
        self.tools["stop_reading"] = types.Tool(
            name="stop_reading",
            description="Block the whole server (stdin unread) for `seconds`, then answer.",
            input_schema={
                **obj,
                "properties": {"seconds": {"type": "number"}, "started": {"type": "string"}},
                "required": ["seconds"],
            },
        )
        self.tools["quit_keeping_stdout"] = types.Tool(
            name="quit_keeping_stdout",
            description="Exit, leaving a grandchild that holds stdout (not stdin) open.",
            input_schema=obj,
        )
        self.tools["raise_error"] = types.Tool(
            name="raise_error",
            description="Answer with this JSON-RPC error.",
            input_schema={
                **obj,
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
                "required": ["code", "message"],
            },
        )
        ask_tool = types.Tool(
            name="ask",
            description="Ask the client for sampling, elicitation or roots mid-call; report what came back.",
            input_schema={
                **obj,
                "properties": {
                    "kinds": {
                        "type": "array",
                        "items": {"enum": ["sampling", "elicitation", "elicitation-url", "roots"]},
                    }
                },
                "required": ["kinds"],
            },
        )
        if ask:
            self.tools["ask"] = ask_tool
        if touch:
            self.tools["touch"] = types.Tool(
                name="touch",
                description="Announce that the resource `uri` changed; say who was subscribed.",
                input_schema={**obj, "properties": {"uri": {"type": "string"}}, "required": ["uri"]},
            )
        if log_later:
            self.tools["log_later"] = types.Tool(
                name="log_later",
                description="Return at once; `seconds` later, send a log message outside any call.",
                input_schema={
                    **obj,
                    "properties": {"seconds": {"type": "number"}, "message": {"type": "string"}},
                    "required": ["seconds", "message"],
                },
            )
        self.later: set[Any] = set()  # the pending `log_later` tasks (kept: the loop holds them weakly)
        self.subscribed: set[str] = set()  # URIs subscribed with `resources/subscribe` (2025-11-25)
        self.listening: list[frozenset[str]] = []  # the URIs of each open listen stream (2026-07-28)
        self.extra_tool = types.Tool(
            name="extra", description="Appears after change_tools().", input_schema=obj
        )

    # ------------------------------------------------------------------ helpers

    def visible_tools(self) -> list[types.Tool]:
        tools = list(self.tools.values())
        if self.extra_enabled:
            tools.append(self.extra_tool)
        return tools

    def input_schema(self, name: str) -> dict[str, Any] | None:
        tool = next((t for t in self.visible_tools() if t.name == name), None)
        return None if tool is None else tool.input_schema

    @staticmethod
    def text(
        value: str, *, structured: dict[str, Any] | None = None, error: bool = False
    ) -> types.CallToolResult:
        import mcp_types as types

        return types.CallToolResult(
            content=[types.TextContent(type="text", text=value)],
            structured_content=structured,
            is_error=error,
        )

    # ------------------------------------------------------------------ handlers

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        import mcp_types as types

        return types.ListToolsResult(tools=self.visible_tools())

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        import anyio
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        name = params.name
        args = params.arguments or {}
        if name not in self.tools and not (name == "extra" and self.extra_enabled):
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")

        def arg(key: str, kind: type[str] | type[float]) -> Any:
            value = args.get(key)
            ok = isinstance(value, str) if kind is str else isinstance(value, int | float)
            if not ok or isinstance(value, bool):
                raise _BadArgument(
                    f"{name}: argument {key!r} must be a {'string' if kind is str else 'number'}"
                )
            return value

        try:
            if name == "echo":
                out = f"{self.name}: {arg('text', str)}"
                return self.text(out, structured={"text": out})
            if name == "add":
                return self.text(str(arg("a", float) + arg("b", float)))
            if name == "fail":
                return self.text("deliberate failure", error=True)
            if name == "sleep":
                seconds = float(arg("seconds", float))
                start = anyio.current_time()
                try:
                    while (elapsed := anyio.current_time() - start) < seconds:
                        await ctx.session.report_progress(
                            round(elapsed, 3), seconds, f"slept {elapsed:.1f}s of {seconds}s"
                        )
                        await anyio.sleep(min(0.1, seconds - elapsed))
                except anyio.get_cancelled_exc_class():
                    eprint(f"misbehave[{os.getpid()}]: sleep cancelled")
                    raise
                await ctx.session.report_progress(seconds, seconds, "done")
                return self.text(f"slept {seconds}s")
            if name == "stop_reading":
                seconds = float(arg("seconds", float))
                eprint(f"misbehave[{os.getpid()}]: not reading stdin for {seconds}s")
                if isinstance(args.get("started"), str):  # a file to create once blocked, for tests
                    os.close(os.open(args["started"], os.O_CREAT | os.O_WRONLY, 0o600))
                time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point: nothing reads stdin
                return self.text(f"read nothing for {seconds}s")
            if name == "raise_error":
                raise MCPError(int(arg("code", float)), arg("message", str), args.get("data"))
            if name == "quit_keeping_stdout":
                # The wire itself: the SDK moves fd 1 elsewhere while it serves.
                wire = os.dup(1) if self.wire_stdout is None else self.wire_stdout
                subprocess.Popen(  # noqa: ASYNC220 - the server is about to exit anyway
                    ["sleep", "60"], stdin=subprocess.DEVNULL, stdout=wire, stderr=subprocess.DEVNULL
                )
                eprint(f"misbehave[{os.getpid()}]: exiting 4, a grandchild keeps stdout open")
                os._exit(4)
            if name == "ask":
                answers = [await self.ask(ctx, kind) for kind in args.get("kinds") or []]
                return self.text(json.dumps({"answers": answers}), structured={"answers": answers})
            if name == "crash":
                _echo_env(self.echo_env, "crashing")
                eprint(f"misbehave[{os.getpid()}]: crash() called, exiting 3")
                os._exit(3)
            if name == "hang":
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    eprint(f"misbehave[{os.getpid()}]: hang cancelled")
                    raise
            if name == "log":
                level = arg("level", str)
                if level not in _LEVELS:
                    raise _BadArgument(f"log: unknown level {level!r}")
                level = cast("types.LoggingLevel", level)
                message = arg("message", str)
                if _LEVELS.index(level) >= _LEVELS.index(self.log_level):
                    # Deprecated at 2026-07-28 (where the SDK only sends it if the request opted in).
                    await ctx.session.send_log_message(
                        level, message, logger=self.name, related_request_id=ctx.request_id
                    )
                return self.text("logged")
            if name == "change_tools":
                if not self.extra_enabled:
                    self.extra_enabled = True
                    await ctx.session.send_tool_list_changed()
                    from mcp.shared.subscriptions import ToolsListChanged

                    await self.changes.publish(ToolsListChanged())
                return self.text("added tool extra")
            if name == "extra":
                return self.text(f"{self.name}: extra")
            if name == "log_later":
                import asyncio

                seconds, message, session = arg("seconds", float), arg("message", str), ctx.session

                async def later() -> None:
                    await asyncio.sleep(seconds)
                    await session.send_log_message("warning", message, logger=self.name)

                task = asyncio.get_running_loop().create_task(later())
                self.later.add(task)
                task.add_done_callback(self.later.discard)
                return self.text("later")
            if name == "touch":
                uri = arg("uri", str)
                subscribed = uri in self.subscribed or any(uri in uris for uris in self.listening)
                if uri in self.subscribed:
                    await ctx.session.send_resource_updated(uri)
                from mcp.shared.subscriptions import ResourceUpdated

                await self.changes.publish(ResourceUpdated(uri=uri))  # listen streams filter by URI
                state = {"pid": os.getpid(), "subscribed": subscribed}
                return self.text(json.dumps(state), structured=state)
            if name == "pid":
                pid = os.getpid()
                return self.text(str(pid), structured={"pid": pid, "childPid": self.child_pid})
            if name == "env":
                key = arg("name", str)
                value = os.environ.get(key)
                if args.get("error") is True:
                    data = {"name": key, "value": value}
                    raise MCPError(types.INTERNAL_ERROR, f"cannot use {key}={value}", data)
                return self.text(value if value is not None else "", structured={"name": key, "value": value})
        except _BadArgument as exc:
            return self.text(str(exc), error=True)
        raise AssertionError(f"unhandled tool {name}")  # pragma: no cover

    async def ask(self, ctx: ServerRequestContext[Any], kind: str) -> dict[str, Any]:
        """One request to the client (tied to the call), and what came of it."""
        import anyio
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        start = anyio.current_time()
        answer: dict[str, Any] = {"kind": kind}
        try:
            result: Any
            if kind == "sampling":
                message = types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text="2+2?")
                )
                result = await ctx.session.create_message(
                    [message], max_tokens=10, related_request_id=ctx.request_id
                )
            elif kind == "elicitation":
                schema: Any = {"type": "object", "properties": {"name": {"type": "string"}}}
                result = await ctx.session.elicit_form("Your name?", schema, ctx.request_id)
            elif kind == "elicitation-url":
                result = await ctx.session.elicit_url(
                    "Sign in", "https://example.com/login", "login-1", ctx.request_id
                )
            else:
                result = await ctx.session.list_roots()
            answer["result"] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        except MCPError as exc:
            answer["error"] = {"code": exc.code, "message": exc.message, "data": exc.error.data}
        answer["seconds"] = round(anyio.current_time() - start, 3)
        return answer

    async def set_level(
        self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        import mcp_types as types

        self.log_level = params.level
        return types.EmptyResult()

    async def subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        import mcp_types as types

        self.subscribed.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        import mcp_types as types

        self.subscribed.discard(str(params.uri))
        return types.EmptyResult()

    async def listen(
        self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """The SDK's listen handler, noting each open stream's resource subscriptions (`touch`)."""
        uris = frozenset(params.notifications.resource_subscriptions or ())
        self.listening.append(uris)
        try:
            return await self.listen_handler(ctx, params)
        finally:
            self.listening.remove(uris)

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        import mcp_types as types

        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    name="hello",
                    uri="misbehave://static/hello",
                    mime_type="text/plain",
                    description="A greeting.",
                )
            ]
        )

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        import mcp_types as types

        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    name="item",
                    uri_template="misbehave://item/{id}",
                    mime_type="text/plain",
                    description="An item.",
                )
            ]
        )

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        uri = str(params.uri)
        if uri == "misbehave://static/hello":
            text = f"hello from {self.name}"
        elif uri.startswith("misbehave://item/") and len(uri) > len("misbehave://item/"):
            text = f"item {uri.removeprefix('misbehave://item/')} from {self.name}"
        else:
            raise MCPError(types.INVALID_PARAMS, f"Resource not found: {uri}", {"uri": uri})
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="text/plain", text=text)]
        )

    async def list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        import mcp_types as types

        return types.ListPromptsResult(
            prompts=[
                types.Prompt(
                    name="greet",
                    description="Greet someone.",
                    arguments=[types.PromptArgument(name="name", description="Who to greet", required=True)],
                )
            ]
        )

    async def get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        if params.name != "greet":
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
        who = (params.arguments or {}).get("name")
        if not who:
            raise MCPError(types.INVALID_PARAMS, "greet: argument 'name' is required")
        return types.GetPromptResult(
            description="A greeting",
            messages=[
                types.PromptMessage(
                    role="user", content=types.TextContent(type="text", text=f"Hello, {who}! ({self.name})")
                )
            ],
        )


class _BadArgument(Exception):
    pass


_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


async def serve(args: argparse.Namespace, child_pid: int | None) -> None:
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import NotificationOptions, Server
    from mcp.server.stdio import stdio_server
    from mcp.shared.exceptions import MCPDeprecationWarning

    app = Misbehave(
        args.name, child_pid, args.echo_env, ask=args.ask, touch=args.touch, log_later=args.log_later
    )
    # Taken before the SDK claims fd 1 (it points fd 1 at stderr while it serves).
    app.wire_stdout = os.dup(1)
    server: Server[Any] = Server(
        args.name,
        version="0.1.0",
        instructions="A test server that misbehaves on request.",
        get_tool_input_schema=app.input_schema,
        on_list_tools=app.list_tools,
        on_call_tool=app.call_tool,
        on_list_resources=app.list_resources,
        on_list_resource_templates=app.list_resource_templates,
        on_read_resource=app.read_resource,
        on_list_prompts=app.list_prompts,
        on_get_prompt=app.get_prompt,
        on_subscriptions_listen=app.listen,
    )
    # Registered this way (not on_set_logging_level=) to skip the SDK's deprecation warning;
    # it still makes the server declare the logging capability on the handshake era.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, app.set_level)
    if args.touch:  # declares `resources.subscribe` on the handshake era
        server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, app.subscribe)
        server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, app.unsubscribe)
    options = server.create_initialization_options(NotificationOptions(tools_changed=True))

    stdout: anyio.AsyncFile[str] | None = None
    if args.garbage:
        # An explicit stdout also stops the SDK from diverting fd 1 to stderr, so it stays the wire.
        stdout = anyio.wrap_file(_GarblingWriter(sys.stdout.buffer, _garbage))
    warnings.simplefilter("ignore", MCPDeprecationWarning)  # send_log_message; stderr stays ours
    async with stdio_server(stdout=stdout) as (read_stream, write_stream):
        await server.run(read_stream, write_stream, options)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pid = os.getpid()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, _ignore_sigterm)
    for i in range(args.stderr_chatter):
        if i == args.stderr_chatter // 2:
            eprint(f"misbehave[{pid}]: chatter {i}: using AWS_ACCESS_KEY_ID={FAKE_SECRET}")
        else:
            eprint(f"misbehave[{pid}]: chatter {i}: nothing to see here")
    _echo_env(args.echo_env, "starting")
    if args.crash_at_start:
        eprint(f"misbehave[{pid}]: --crash-at-start: exiting 2 before reading anything")
        return 2
    child_pid: int | None = None
    if args.spawn_child:
        child = subprocess.Popen(
            ["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        child_pid = child.pid
        eprint(f"misbehave[{pid}]: spawned child sleep pid={child_pid}")
    if args.exit_after is not None:
        _exit_later(args.exit_after)
    if args.exit_clean_after is not None:
        _exit_later(args.exit_clean_after, 0)
    if args.garbage:
        sys.stdout.write("misbehave: garbage before the first response\n" + next(_garbage) + "\n")
        sys.stdout.flush()
    _flood(args)
    if args.hang_at_start:
        _hang_forever()
    if args.start_when is not None:
        eprint(f"misbehave[{pid}]: waiting for {args.start_when} before serving")
        while not os.path.exists(args.start_when):
            time.sleep(0.05)

    import anyio

    try:
        anyio.run(serve, args, child_pid)
    except KeyboardInterrupt:
        return 130
    if args.ignore_stdin_eof:
        with contextlib.suppress(OSError):  # stderr's reader may be gone: that must not end us either
            eprint(f"misbehave[{pid}]: stdin ended; staying alive")
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    code = main()
    # Skip interpreter finalization: tearing down the SDK's thousands of pydantic classes takes
    # 0.2-0.4 s (more on a busy machine), and a server should be gone as soon as stdin closes.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
