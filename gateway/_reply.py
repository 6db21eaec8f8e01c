"""One request the hot path serves (`_exchange`): the `_front.Front` the relay sees, and the answer.

The answer is JSON unless a notification for the request (progress, a log line) comes first,
which commits the response to SSE; so does a call that outlasts the keep-alive interval (it gets
SSE comment pings until it ends).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import INVALID_REQUEST, JSONRPCError, JSONRPCNotification, JSONRPCRequest
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import Send

from gateway import _sdk
from gateway._front import can_answer
from gateway._rewrite import Result

if TYPE_CHECKING:
    from gateway._sessions import Session


class Exchange:
    """One request served by the hot path: a 2026-07-28 request, or one of a 2025-11-25 session."""

    def __init__(
        self,
        request: Request,
        req: JSONRPCRequest,
        protocol_version: str,
        send: Send,
        capabilities: Any,
        session: Session | None = None,
    ) -> None:
        self.request = request
        self.capabilities = capabilities  # what the client declared (dict or the SDK's model)
        self.session = session
        # The 2025-11-25 session's; a 2026-07-28 client has none.
        self.connection = session.connection if session is not None else None
        self.method = req.method
        self.params: Mapping[str, Any] | None = req.params
        self.request_id: str | int | None = req.id
        self._id = req.id
        self.protocol_version = protocol_version
        meta = (req.params or {}).get("_meta")
        self.meta: Mapping[str, Any] | None = meta if isinstance(meta, Mapping) else None
        self._progress_token = progress_token_from_params(req.params)  # as the SDK reads it
        self.gone = False  # the client hung up (2026-07-28) or cancelled the request (2025-11-25)
        self._send = send
        self._streaming = False
        self._closed = False
        self._lock: asyncio.Lock | None = None  # made on the first notification: most calls have none

    def can_answer(self) -> bool:
        return can_answer(self.capabilities)

    def wants_progress(self) -> bool:
        return self._progress_token is not None

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None:
        params: dict[str, Any] = {"progressToken": self._progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)

    def _guard(self) -> asyncio.Lock:
        """The lock ordering what is sent; made on the first need (most calls send one answer)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        async with self._guard():
            if self._closed:
                return  # the reply went out already; nothing may follow it
            await self._commit_sse()
            event = _sdk.sse_event(JSONRPCNotification(jsonrpc="2.0", method=method, params=params))
            await self._send({"type": "http.response.body", "body": event, "more_body": True})

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request to the client on this request's stream; its answer comes in a POST of the
        session (`Session.answer`). A 2026-07-28 client is never sent one: the relay turns a
        backend's question into an input round for it instead."""
        if self.session is None:
            raise MCPError(code=INVALID_REQUEST, message=f"{method} cannot be sent to this client")
        return await self.session.ask(method, params, self._send_request)

    async def _send_request(self, request_id: str, method: str, params: dict[str, Any]) -> None:
        async with self._guard():
            if self._closed:
                raise MCPError(code=INVALID_REQUEST, message="the client's request has ended")
            await self._commit_sse()
            request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            event = _sdk.sse_frame(json.dumps(request, separators=(",", ":")).encode())
            await self._send({"type": "http.response.body", "body": event, "more_body": True})

    async def keepalive(self) -> None:
        """SSE comment pings while a silent call runs long, so no proxy times the stream out."""
        while True:
            async with self._guard():
                if self._closed:
                    return
                await self._commit_sse()
                ping = {"type": "http.response.body", "body": b": ping\r\n\r\n", "more_body": True}
                await self._send(ping)
            await asyncio.sleep(_sdk.SSE_PING_INTERVAL)

    async def reply(self, reply: Result | JSONRPCError) -> None:
        """The answer: a result (the dict) or the error; JSON, or the last event of an SSE stream."""
        if self._lock is None:
            self._closed = True
            await self._write_json(reply)
            return
        async with self._lock:
            self._closed = True
            if self._streaming:
                if isinstance(reply, JSONRPCError):
                    event = _sdk.sse_event(reply)
                else:  # the same bytes as the SDK's event, without a model round trip of the result
                    event = _sdk.sse_frame(_sdk.result_json(self._id, reply))
                await self._send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                await self._write_json(reply)

    async def abandon(self) -> None:
        """End the response without an answer (the client cancelled the request)."""
        async with self._guard():
            if self._closed:
                return
            self._closed = True
            await self._commit_sse()
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _commit_sse(self) -> None:
        if not self._streaming:
            self._streaming = True
            await self._send({"type": "http.response.start", "status": 200, "headers": _sdk.SSE_HEADERS})

    async def _write_json(self, reply: Result | JSONRPCError) -> None:
        if isinstance(reply, JSONRPCError):
            status, body = _sdk.error_json(reply)
            if self.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                status = 200  # the handshake era's transport answers errors with 200 too
        else:
            status, body = 200, _sdk.result_json(self._id, reply)
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})
