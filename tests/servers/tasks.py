#!/usr/bin/env python3
"""tasks: an MCP server with the tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663).

Run as ``python tests/servers/tasks.py [--name NAME] [--http PORT]``: over stdio, or streamable
HTTP on 127.0.0.1:PORT (path ``/mcp``). The SDK's lowlevel ``Server`` answers both the 2025-11-25
``initialize`` handshake and the 2026-07-28 ``server/discover``; the extension is advertised under
``capabilities.extensions`` in both.

tools (the fixtures the conformance suite's ``tasks-*`` scenarios name)
    ``greet(name)``                 sync only: "Hello, <name>!"
    ``slow_compute(seconds, label)`` task-supporting: sleeps, then "computed <label>"; a
                                    ``tasks/cancel`` while it sleeps settles it ``cancelled``
    ``failing_job()``               task required: completes with ``isError: true`` (a tool error)
    ``protocol_error_job()``        task-supporting: settles ``failed`` with a JSON-RPC error
    ``confirm_delete(filename)``    task-supporting: parks ``input_required`` with one
                                    ``elicitation/create`` until ``tasks/update`` answers it
    ``multi_input()``               task-supporting: parks with two elicitations at once; they may
                                    be answered one ``tasks/update`` at a time
    ``pid()``                       sync: this process's pid (tests restart the server)
    ``listening()``                 sync: the ``taskIds`` of each open listen stream (tests see
                                    which streams a client of this server holds open)

A ``tools/call`` creates a task only when the request declares the extension, per request (its
``_meta`` ``io.modelcontextprotocol/clientCapabilities``) or for the session (``initialize``);
otherwise a task-supporting tool runs synchronously, and a task-required one is refused with
-32021. ``tasks/get`` answers the detailed task (a completed task inlines its result),
``tasks/update`` delivers ``inputResponses``, ``tasks/cancel`` cancels; both acks are empty.
``tasks/list`` and ``tasks/result`` do not exist in the extension: -32601, as for any unknown
method. Each status change is also sent as ``notifications/tasks`` (the detailed task): on the
2025-11-25 session the task was created in, and at 2026-07-28 on every ``subscriptions/listen``
stream whose filter names the task under ``taskIds`` (acknowledged with the ids it knows; the core
kinds asked for are echoed, and never happen: its lists do not change).

Why a middleware and not `MCPServer(extensions=...)`: the SDK sieves a ``tools/call`` result
through the 2025-11-25 ``CallToolResult`` on a handshake-era connection, so a task-creating result
(``resultType: "task"``) could never leave over ``initialize``, which is how the gateway opens its
backends today. A middleware that answers the call itself owns its result envelope.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

import anyio
import anyio.abc
import mcp_types as types
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict

TASKS = "io.modelcontextprotocol/tasks"
CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
MISSING_CAPABILITY = -32021
TTL_MS = 10 * 60 * 1000
POLL_MS = 100
TERMINAL = frozenset({"completed", "failed", "cancelled"})

# name -> task support ("forbidden": never a task).
TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "greet": ("forbidden", {"name": {"type": "string"}}),
    "slow_compute": ("optional", {"seconds": {"type": "number"}, "label": {"type": "string"}}),
    "failing_job": ("required", {}),
    "protocol_error_job": ("optional", {}),
    "confirm_delete": ("optional", {"filename": {"type": "string"}}),
    "multi_input": ("optional", {}),
    "pid": ("forbidden", {}),
    "listening": ("forbidden", {}),
}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _elicit(message: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def _text(text: str, *, error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if error:
        result["isError"] = True
    return result


@dataclass
class Job:
    task_id: str
    session: ServerSession | None  # a 2025-11-25 session, to send status notifications on
    status: str = "working"
    created_at: str = field(default_factory=_now)
    last_updated_at: str = ""
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    input_requests: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    answered: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def task(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.last_updated_at or self.created_at,
            "ttlMs": TTL_MS,
            "pollIntervalMs": POLL_MS,
        }

    def detailed(self) -> dict[str, Any]:
        task = self.task()
        if self.status == "completed":
            task["result"] = self.result
        elif self.status == "failed":
            task["error"] = self.error
        elif self.status == "input_required":
            task["inputRequests"] = dict(self.input_requests)
        return task


class TaskStatus(types.Notification[dict[str, Any], Literal["notifications/tasks"]]):
    method: Literal["notifications/tasks"] = "notifications/tasks"


def _dump(result: HandlerResult) -> Mapping[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return result or {}


class TaskIdParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    taskId: str  # the wire names


class UpdateParams(TaskIdParams):
    inputResponses: dict[str, Any]


class Tasks:
    """The extension: the task store, the `tools/call` interception and the `tasks/*` methods."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        self._jobs: dict[str, Job] = {}
        # each open listen stream asking for tasks -> the ids it was acknowledged for
        self._streams: dict[MemoryObjectSendStream[dict[str, Any]], list[str]] = {}

    # -- tools/call -----------------------------------------------------------------------------

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "initialize":
            # The SDK drops `extensions` from a 2025-11-25 `initialize` result; the extension is
            # declared there all the same (SEP-2663 negotiates over either revision).
            result = dict(_dump(await call_next(ctx)))
            capabilities = dict(result.get("capabilities") or {})
            capabilities["extensions"] = {TASKS: {}}
            return {**result, "capabilities": capabilities}
        if ctx.method != "tools/call":
            return await call_next(ctx)
        params = ctx.params or {}
        support = TOOLS.get(str(params.get("name")), ("forbidden", {}))[0]
        if support == "forbidden":
            return await call_next(ctx)
        if not _declared(ctx):
            if support == "required":
                raise MCPError(
                    code=MISSING_CAPABILITY,
                    message=f"{params.get('name')} runs as a task: declare the {TASKS} extension",
                    data={"requiredCapabilities": {"extensions": {TASKS: {}}}},
                )
            return await call_next(ctx)
        legacy = ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS
        job = Job(task_id=str(uuid.uuid4()), session=ctx.session if legacy else None)
        self._jobs[job.task_id] = job  # stored before the answer: an immediate tasks/get finds it
        self._tg.start_soon(self._run, job, str(params.get("name")), dict(params.get("arguments") or {}))
        return {**job.task(), "resultType": "task"}

    async def _run(self, job: Job, name: str, arguments: dict[str, Any]) -> None:
        with job.scope:
            try:
                if name == "slow_compute":
                    await anyio.sleep(float(arguments.get("seconds", 1)))
                    await self._settle(
                        job, "completed", result=_text(f"computed {arguments.get('label', '')}")
                    )
                elif name == "failing_job":
                    await anyio.sleep(0.2)
                    await self._settle(job, "completed", result=_text("the job failed", error=True))
                elif name == "protocol_error_job":
                    await self._settle(job, "failed", error={"code": -32603, "message": "the job broke"})
                elif name == "multi_input":
                    job.input_requests.update(first=_elicit("First?"), second=_elicit("Second?"))
                    await self._set(job, "input_required")
                    await job.answered.wait()
                    actions = [(job.answers.get(k) or {}).get("action") for k in ("first", "second")]
                    await self._settle(job, "completed", result=_text(" ".join(map(str, actions))))
                elif name == "confirm_delete":
                    filename = str(arguments.get("filename", ""))
                    job.input_requests["confirm"] = _elicit(f"Delete {filename}?")
                    await self._set(job, "input_required")
                    await job.answered.wait()
                    answer = job.answers.get("confirm") or {}
                    deleted = answer.get("action") == "accept" and (answer.get("content") or {}).get("ok")
                    await self._settle(
                        job, "completed", result=_text(f"{'deleted' if deleted else 'kept'} {filename}")
                    )
            except Exception as exc:  # a tool that breaks fails its task, not the server
                await self._settle(job, "failed", error={"code": -32603, "message": str(exc)})
        if job.scope.cancelled_caught:
            await self._set(job, "cancelled")

    async def _settle(self, job: Job, status: str, **outcome: Any) -> None:
        job.result, job.error = outcome.get("result"), outcome.get("error")
        await self._set(job, status)

    async def _set(self, job: Job, status: str) -> None:
        if job.status in TERMINAL:
            return
        job.status, job.last_updated_at = status, _now()
        if job.session is not None:
            notification = TaskStatus(params=job.detailed())
            try:
                await job.session.send_notification(cast(types.ServerNotification, notification))
            except Exception:  # the session is gone: polling still works
                job.session = None
        for stream, task_ids in list(self._streams.items()):
            if job.task_id in task_ids:
                with suppress(anyio.WouldBlock, anyio.ClosedResourceError):  # a reader that stopped
                    stream.send_nowait(job.detailed())

    # -- subscriptions/listen (2026-07-28) ------------------------------------------------------

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        asked = (params.notifications.model_extra or {}).get("taskIds") or []
        task_ids = [t for t in dict.fromkeys(asked) if isinstance(t, str) and t in self._jobs]
        honored = params.notifications.model_dump(by_alias=True, exclude_none=True)
        honored["taskIds"] = task_ids
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: ctx.request_id}
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](64)
        self._streams[send] = task_ids
        try:
            ack = types.SubscriptionsAcknowledgedNotification(
                params=types.SubscriptionsAcknowledgedNotificationParams(
                    notifications=types.SubscriptionFilter.model_validate(honored), _meta=meta
                )
            )
            await ctx.session.send_notification(ack, related_request_id=ctx.request_id)
            async for task in receive:
                status = TaskStatus(params={**task, "_meta": meta})
                await ctx.session.send_notification(
                    cast(types.ServerNotification, status), related_request_id=ctx.request_id
                )
        finally:
            del self._streams[send]
            send.close()
            receive.close()
        return types.SubscriptionsListenResult(_meta=meta)

    def listening(self) -> list[list[str]]:
        return [task_ids for task_ids in self._streams.values() if task_ids]

    # -- tasks/* --------------------------------------------------------------------------------

    def _job(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> Job:
        if not _declared(ctx):
            raise MCPError(
                code=MISSING_CAPABILITY,
                message=f"tasks/* needs the {TASKS} extension",
                data={"requiredCapabilities": {"extensions": {TASKS: {}}}},
            )
        job = self._jobs.get(task_id)
        if job is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown task: {task_id}")
        return job

    async def get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        return {**self._job(ctx, params.taskId).detailed(), "resultType": "complete"}

    async def update(self, ctx: ServerRequestContext[Any, Any], params: UpdateParams) -> dict[str, Any]:
        job = self._job(ctx, params.taskId)
        for key, answer in params.inputResponses.items():
            if key in job.input_requests:  # unknown keys are ignored
                job.answers[key] = answer
                del job.input_requests[key]
        if job.status == "input_required" and not job.input_requests:
            await self._set(job, "working")
            job.answered.set()
        return {"resultType": "complete"}

    async def cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        job = self._job(ctx, params.taskId)
        if job.status not in TERMINAL:  # cancelling a finished task is a no-op, not an error
            job.scope.cancel()
        return {"resultType": "complete"}


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether the request (its `_meta`) or the session (its `initialize`) declares the extension."""
    meta = (ctx.params or {}).get("_meta")
    declared = meta.get(CAPABILITIES_META) if isinstance(meta, Mapping) else None
    extensions = declared.get("extensions") if isinstance(declared, Mapping) else None
    if isinstance(extensions, Mapping) and TASKS in extensions:
        return True
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and TASKS in (capabilities.extensions or {})


def build(name: str, tasks: Tasks) -> Server[Any]:
    server: Server[Any] = Server(name)
    server.extensions = {TASKS: {}}

    async def list_tools(ctx: ServerRequestContext[Any, Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=tool, input_schema={"type": "object", "properties": props})
                for tool, (_, props) in TOOLS.items()
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return types.CallToolResult.model_validate(await run_sync(params))

    async def run_sync(params: types.CallToolRequestParams) -> dict[str, Any]:
        arguments = params.arguments or {}
        if params.name == "greet":
            return _text(f"Hello, {arguments.get('name', '')}!")
        if params.name == "pid":
            return {**_text(str(os.getpid())), "structuredContent": {"pid": os.getpid()}}
        if params.name == "listening":
            streams = tasks.listening()
            return {**_text(str(streams)), "structuredContent": {"streams": streams}}
        if params.name == "slow_compute":  # no task asked for: the same work, synchronously
            await anyio.sleep(float(arguments.get("seconds", 1)))
            return _text(f"computed {arguments.get('label', '')}")
        if params.name == "confirm_delete":
            return _text(f"kept {arguments.get('filename', '')}")
        if params.name == "multi_input":
            return _text("None None")
        if params.name == "protocol_error_job":
            raise MCPError(code=-32603, message="the job broke")
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")

    server.add_request_handler("tools/list", types.PaginatedRequestParams, list_tools)
    server.add_request_handler("tools/call", types.CallToolRequestParams, call_tool)
    server.add_request_handler("tasks/get", TaskIdParams, tasks.get)
    server.add_request_handler("tasks/update", UpdateParams, tasks.update)
    server.add_request_handler("tasks/cancel", TaskIdParams, tasks.cancel)
    server.add_request_handler("subscriptions/listen", types.SubscriptionsListenRequestParams, tasks.listen)
    server.middleware = [tasks]
    return server


async def serve(args: argparse.Namespace) -> None:
    async with anyio.create_task_group() as tg:
        server = build(args.name, Tasks(tg))
        if args.http:
            import uvicorn

            config = uvicorn.Config(
                server.streamable_http_app(), host="127.0.0.1", port=args.http, log_level="warning"
            )
            await uvicorn.Server(config).serve()
        else:
            from mcp.server.stdio import stdio_server

            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
        tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="tasks", description="An MCP server with the tasks extension.")
    p.add_argument("--name", default="tasks", help="serverInfo name")
    p.add_argument(
        "--http", type=int, default=0, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT"
    )
    anyio.run(serve, p.parse_args(argv))


if __name__ == "__main__":
    main()
