"""Requests a backend session sends over a stdio pipe itself, beside the SDK's dispatcher.

The SDK's dispatcher is general: typed messages, a span, a timeout clock, a memory stream and a
hop between tasks for every response. A relayed call needs none of that (its params are JSON
already, and so is the result the client gets), and on a small call it costs as much as the rest
of the gateway. So the relay's own requests are written here as JSON lines, and the pipe reader
hands their responses (and progress) straight to the waiting caller. Everything else on the
pipe (the backend's own requests, notifications, answers to the SDK's requests) still goes to
the dispatcher.

Ids come from their own range, far above the dispatcher's counter, so the two never collide.

What fails a call here is what the gateway itself saw, raised as Python's own exceptions
(`TimeoutError` for the call's timer, `anyio.BrokenResourceError` for a pipe that ended), never as
an `MCPError`: an `MCPError` is always the backend's own answer, whatever its code, so the session
can pass it through unchanged.

A call never waits to write: its line goes into the pipe's buffer at once and the call's timer
covers everything after. A backend that stops reading is not waited on here; the pipe notices it
(`_pipes`), ends the session, and every waiting call fails then.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import anyio
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

_FIRST_ID = 1 << 40  # the dispatcher counts from 0; JSON numbers stay exact below 2**53
_COMPACT = (",", ":")
# Bytes a line must hold to be worth parsing: an answer; or progress or a log line.
_ANSWER = (b'"result"', b'"error"')
_ANSWER_OR_NEWS = (*_ANSWER, b"notifications/progress", b"notifications/message")
_LOG = "notifications/message"
# A log line or a progress note is delivered before the next line is read; a client slow to take
# it may hold the backend's other answers this long at most (then the note is dropped).
DELIVERY_BOUND = 1.0


class _Waiter:
    __slots__ = ("future", "on_progress")

    def __init__(self, future: asyncio.Future[dict[str, Any]], on_progress: ProgressFnT | None) -> None:
        self.future = future
        self.on_progress = on_progress


class DirectCalls:
    """`write` puts a line in the pipe's buffer without waiting (raising `anyio.BrokenResourceError`
    once the pipe is gone); `writable` says whether the backend keeps up with what is buffered."""

    def __init__(self, write: Callable[[bytes], None], writable: Callable[[], bool] = lambda: True) -> None:
        self._write = write
        self._writable = writable
        self._ids = itertools.count(_FIRST_ID)
        self._waiting: dict[int, _Waiter] = {}
        self._closed = False
        # Where the backend's log lines go (the session's hook); set by the session.
        self.on_log: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        timeout: float,
        on_progress: ProgressFnT | None = None,
    ) -> dict[str, Any]:
        """The backend's raw result, or its own error as `MCPError`.

        Raises `TimeoutError` after `timeout` (the backend is told to cancel, if its pipe has
        room) and `anyio.BrokenResourceError` when the pipe is gone or ends before the answer.
        `params` becomes the request's (the session hands over its own copy)."""
        if self._closed:
            raise anyio.BrokenResourceError
        rid = next(self._ids)
        out = params
        if on_progress is not None:
            out["_meta"] = {**(out.get("_meta") or {}), "progressToken": rid}
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if out:
            message["params"] = out
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), on_progress)
        self._waiting[rid] = waiter
        # A timer on the future rather than a cancel scope: it is a quarter of the cost per call.
        timer = loop.call_later(timeout, _expire, waiter.future)
        try:
            self._write(_line(message))
            return await waiter.future
        except TimeoutError:
            self._cancel(rid, f"timed out after {timeout:g}s")
            raise
        except anyio.get_cancelled_exc_class():
            self._cancel(rid, "caller cancelled")
            raise
        finally:
            timer.cancel()
            self._waiting.pop(rid, None)

    def resolve(self, line: bytes) -> bool:
        """Resolve the caller `line` answers, if it is a response to one of ours (no progress)."""
        message = self._decode(line, _ANSWER)
        return message is not None and "method" not in message and self._answer(message)

    def _decode(self, line: bytes, needles: tuple[bytes, ...]) -> dict[str, Any] | None:
        """`line` as a JSON object, if calls wait and it holds one of `needles` (a cheap pre-test)."""
        if not self._waiting or not any(n in line for n in needles):
            return None
        try:
            message = json.loads(line)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def _answer(self, message: dict[str, Any]) -> bool:
        waiter = self._waiter(message.get("id"))
        if waiter is None:
            return False
        if not waiter.future.done():
            error = message.get("error")
            if isinstance(error, dict):
                code, text = error.get("code", 0), error.get("message", "")
                waiter.future.set_exception(MCPError(code=code, message=text, data=error.get("data")))
            else:
                result = message.get("result")
                waiter.future.set_result(result if isinstance(result, dict) else {})
        return True

    async def take(self, line: bytes) -> bool:
        """Deliver `line` if it is a response to (or progress of) one of ours; False otherwise."""
        message = self._decode(line, _ANSWER_OR_NEWS)
        if message is None:
            return False
        if "method" in message:
            params = message.get("params")
            if not isinstance(params, dict):
                return False
            if message["method"] == _LOG and self.on_log is not None:
                # Delivered here, in order, while calls wait: a call's log lines reach its client
                # before its answer does (handed to the SDK, they would race it).
                with anyio.move_on_after(DELIVERY_BOUND):
                    await self.on_log(params)
                return True
            if message["method"] != "notifications/progress":
                return False
            waiter = self._waiter(params.get("progressToken"))
            if waiter is None or waiter.on_progress is None:
                return False
            progress, total, note = params.get("progress", 0), params.get("total"), params.get("message")
            with anyio.move_on_after(DELIVERY_BOUND):
                await waiter.on_progress(progress, total, note)
            return True
        return self._answer(message)

    def _waiter(self, rid: Any) -> _Waiter | None:
        # Only ours are ints from our range; anything else (a string, a list in a garbage line) is not.
        return self._waiting.get(rid) if type(rid) is int else None

    def close(self, reason: str | None = None) -> None:
        """The pipe ended: every waiting call fails now, and later ones at once.

        `reason`, when the gateway ended it, words the failure (after the server's name)."""
        self._closed = True
        for waiter in self._waiting.values():
            if not waiter.future.done():
                waiter.future.set_exception(anyio.BrokenResourceError(*filter(None, [reason])))

    def _cancel(self, rid: int, reason: str) -> None:
        # A courtesy: dropped when the backend is gone, and when it is not reading (queued behind
        # what it has not read, the notice would arrive late or never, and never waiting for room
        # is what keeps a call's end bounded).
        if self._closed or not self._writable():
            return
        params = {"requestId": rid, "reason": reason}
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
        with suppress(anyio.BrokenResourceError):
            self._write(_line(note))


def _expire(future: asyncio.Future[dict[str, Any]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=_COMPACT).encode() + b"\n"
