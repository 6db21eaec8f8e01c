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

from gateway.backends import _direct as _DIRECT
from gateway.backends._direct import DirectCalls

pytestmark = pytest.mark.anyio


async def test_lines_that_are_not_our_answers_are_left_to_the_sdk() -> None:
    sent, written = anyio.create_memory_object_stream[bytes](10)
    calls = DirectCalls(sent.send_nowait)
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


async def test_a_backend_error_is_raised_as_is_and_a_closed_pipe_fails_every_waiting_call() -> None:
    sent, written = anyio.create_memory_object_stream[bytes](10)
    calls = DirectCalls(sent.send_nowait)
    errors: list[Exception] = []

    async def call() -> None:
        try:
            await calls.request("tools/call", {"name": "t"}, timeout=5)
        except (MCPError, anyio.BrokenResourceError) as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
        with anyio.fail_after(5):
            first = json.loads(await written.receive())["id"]
            for _ in range(2):
                await written.receive()
        # The backend's own error, even with a code the SDK also uses for its own failures.
        error = {"code": CONNECTION_CLOSED, "message": "bad", "data": {"why": "d"}}
        assert calls.resolve(json.dumps({"jsonrpc": "2.0", "id": first, "error": error}).encode())
        calls.close()
    backend = [e for e in errors if isinstance(e, MCPError)]
    assert [(e.code, e.message, e.data) for e in backend] == [(CONNECTION_CLOSED, "bad", {"why": "d"})]
    assert len([e for e in errors if isinstance(e, anyio.BrokenResourceError)]) == 2
    with pytest.raises(anyio.BrokenResourceError):
        await calls.request("tools/call", {}, timeout=5)


async def test_a_timeout_is_the_calls_own_and_its_cancel_notice_never_waits_for_room() -> None:
    written: list[bytes] = []
    room = [True]
    calls = DirectCalls(written.append, lambda: room[0])
    with anyio.fail_after(5):
        with pytest.raises(TimeoutError):
            await calls.request("tools/call", {"name": "t"}, timeout=0.05)
        assert [json.loads(line)["method"] for line in written] == ["tools/call", "notifications/cancelled"]
        room[0] = False  # the backend stopped reading: the notice is dropped, the call still ends on time
        with pytest.raises(TimeoutError):
            await calls.request("tools/call", {"name": "t"}, timeout=0.05)
    assert [json.loads(line)["method"] for line in written[2:]] == ["tools/call"]


async def test_a_client_slow_to_take_news_holds_the_pipe_a_bounded_time() -> None:
    """Progress and log lines are delivered before the next line is read (so they reach the client
    before the answer): a client that takes none of them must not stop the backend's answers."""
    sent, written = anyio.create_memory_object_stream[bytes](10)
    calls = DirectCalls(sent.send_nowait)
    stuck = anyio.Event()  # never set: the client takes nothing

    async def slow_progress(progress: float, total: float | None, message: str | None) -> None:
        await stuck.wait()

    async def slow_log(params: dict[str, Any]) -> None:
        await stuck.wait()

    calls.on_log = slow_log
    async with anyio.create_task_group() as tg:
        call = calls.request("tools/call", {"name": "t"}, timeout=30, on_progress=slow_progress)
        tg.start_soon(lambda: call)
        with anyio.fail_after(5):
            token = json.loads(await written.receive())["params"]["_meta"]["progressToken"]
        news = [
            {"method": "notifications/progress", "params": {"progressToken": token, "progress": 1}},
            {"method": "notifications/message", "params": {"level": "info", "data": "x"}},
        ]
        for message in news:
            began = anyio.current_time()
            with anyio.fail_after(_DIRECT.DELIVERY_BOUND * 5):
                assert await calls.take(json.dumps({"jsonrpc": "2.0", **message}).encode()) is True
            assert anyio.current_time() - began >= _DIRECT.DELIVERY_BOUND * 0.9  # it did wait, then gave up
        tg.cancel_scope.cancel()
