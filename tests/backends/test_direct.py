"""The relay's own requests on a stdio pipe (`gateway/backends/_direct.py`), line by line.

The end-to-end behaviour (answers, timeouts, crashes, oversized lines, concurrency) is tested
against real servers in test_stdio.py and test_resilience.py; this file feeds lines no real server
we have would write: answers that are not ours, and JSON whose ids are not even hashable.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from gateway.backends._direct import DirectCalls

pytestmark = pytest.mark.anyio


async def test_lines_that_are_not_our_answers_are_left_to_the_sdk() -> None:
    sent, written = anyio.create_memory_object_stream[bytes](10)
    calls = DirectCalls(sent.send)
    result: dict[str, Any] = {}

    async def call() -> None:
        result.update(await calls.request("tools/call", {"name": "t"}, timeout=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        with anyio.fail_after(5):
            rid = json.loads(await written.receive())["id"]
        junk = [
            b'{"jsonrpc": "2.0", "id": [1], "result": {}}',
            b'{"jsonrpc": "2.0", "id": {"a": 1}, "error": {"code": 1, "message": "x"}}',
            b'{"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": [1]}}',
            b'{"jsonrpc": "2.0", "id": "'
            + str(rid).encode()
            + b'", "result": {}}',  # a string id is not ours
            json.dumps({"jsonrpc": "2.0", "id": 7, "result": {}}).encode(),  # the SDK's own request
            b"[1, 2]",
            b"not json",
        ]
        for line in junk:
            assert calls.resolve(line) is False, line
            assert await calls.take(line) is False, line
        assert not result
        assert calls.resolve(json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"ok": 1}}).encode())
    assert result == {"ok": 1}


async def test_a_backend_error_is_raised_and_a_closed_pipe_fails_every_waiting_call() -> None:
    sent, written = anyio.create_memory_object_stream[bytes](10)
    calls = DirectCalls(sent.send)
    errors: list[MCPError] = []

    async def call() -> None:
        try:
            await calls.request("tools/call", {"name": "t"}, timeout=5)
        except MCPError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
        with anyio.fail_after(5):
            first = json.loads(await written.receive())["id"]
            for _ in range(2):
                await written.receive()
        answer = {"jsonrpc": "2.0", "id": first, "error": {"code": -32602, "message": "bad", "data": "d"}}
        assert calls.resolve(json.dumps(answer).encode())
        calls.close()
    closed = (CONNECTION_CLOSED, "Connection closed")
    assert sorted((e.code, e.message) for e in errors) == sorted([(-32602, "bad"), closed, closed])
    with pytest.raises(MCPError, match="Connection closed"):
        await calls.request("tools/call", {}, timeout=5)
