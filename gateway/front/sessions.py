"""The 2025-11-25 sessions the exchange (`front.exchange`) may serve requests of.

A session is the SDK's: it is opened (`initialize`), kept and closed by the SDK's transport. The
exchange learns a session (the client's connection, and who authenticated it) from its
`notifications/initialized`, or else from the first request of it the SDK dispatches to the relay,
and from then on serves that session's relayed calls itself, for as long as the SDK still holds
the session, and only for the same identity.

A call of the exchange is not known to the SDK's session, so a `notifications/cancelled` naming
it is delivered here; so is the client's answer to a request the exchange sent it (a backend's
sampling, elicitation or roots question, asked on the stream of the call that caused it).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mcp.server.connection import Connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, RequestId
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import Scope

from gateway import _sdk
from gateway.front import Front

# Sessions the SDK has closed are forgotten when the next this many have been learned.
_PRUNE_EVERY = 256
_ASK_PREFIX = "gateway-"
# Puts a request to the client (id, method, params) on the stream of the call it belongs to.
Sender = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class Session:
    """One 2025-11-25 session as the exchange serves it: its connection, its calls in flight, and
    the requests the gateway has sent its client (a backend's questions) awaiting an answer."""

    __slots__ = ("_asks", "_calls", "_manager", "connection", "id")

    def __init__(
        self, session_id: str, connection: Connection, manager: StreamableHTTPSessionManager
    ) -> None:
        self.id = session_id
        self.connection = connection
        self._manager = manager
        self._calls: dict[Hashable, tuple[asyncio.Task[Any], Any]] = {}
        self._asks: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @contextmanager
    def calling(self, request_id: RequestId, exchange: Any) -> Iterator[None]:
        """While a call of the session runs: a `notifications/cancelled` for it can reach it, and
        the session is in use (the SDK does not expire it as idle)."""
        task = asyncio.current_task()
        assert task is not None
        key = coerce_request_id(request_id)  # "7" and 7 are one id, as in the SDK
        self._calls[key] = (task, exchange)
        try:
            with _sdk.session_busy(self._manager, self.id):
                yield
        finally:
            self._calls.pop(key, None)

    def streaming(self, stream: Hashable) -> Any | None:
        """The exchange whose call has the event stream `stream` (`Exchange.stream`), while the
        call runs (a session has a few calls in flight at most)."""
        return next((exchange for _, exchange in self._calls.values() if exchange.stream == stream), None)

    def cancel(self, params: Mapping[str, Any]) -> bool:
        """Cancel the call a `notifications/cancelled` (its `params`) names, if the exchange runs it."""
        request_id = cancelled_request_id_from_params(params)
        if request_id is None:
            return False
        found = self._calls.get(coerce_request_id(request_id))
        if found is None:
            return False
        task, exchange = found
        exchange.gone = True  # no answer is owed to a cancelled request
        task.cancel()
        return True

    async def ask(self, method: str, params: dict[str, Any], send: Sender) -> dict[str, Any]:
        """Send the client a request (`send` puts it on the stream of the call it belongs to) and
        wait for its answer. Bounded by the call: the call ending cancels the wait."""
        # Ids of our own kind: the SDK's session numbers the requests it sends, and the client's
        # answers to those must still reach it.
        request_id = f"{_ASK_PREFIX}{secrets.token_hex(8)}"
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._asks[request_id] = answer
        try:
            await send(request_id, method, params)
            return await answer
        finally:
            del self._asks[request_id]

    def answer(self, message: Mapping[str, Any]) -> bool:
        """Deliver the client's answer (a JSON-RPC response) to the request it names, if the hot
        path sent it."""
        request_id = message.get("id")
        waiting = self._asks.get(request_id) if isinstance(request_id, str) else None
        if waiting is None or waiting.done():
            return False
        error = message.get("error")
        result = message.get("result")
        if isinstance(error, dict):
            code, text = _int(error.get("code")), str(error.get("message", ""))
            waiting.set_exception(MCPError(code=code, message=text, data=error.get("data")))
        elif isinstance(result, dict):
            waiting.set_result(result)
        else:
            waiting.set_exception(MCPError(code=INVALID_REQUEST, message="the client's answer has no result"))
        return True


class Sessions:
    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self._manager = manager
        self._known: dict[str, Session] = {}
        self._learned = 0

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._known

    def learn(self, front: Front) -> None:
        """A relay listener: remember the session of a 2025-11-25 message the SDK dispatched."""
        request = front.request
        if request is None or front.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        connection = front.connection
        if session_id is None or connection is None or session_id in self._known:
            return
        self._known[session_id] = Session(session_id, connection, self._manager)
        self._learned += 1
        if self._learned % _PRUNE_EVERY == 0:
            for gone in [s for s in self._known if not _sdk.session_open(self._manager, s)]:
                del self._known[gone]

    def find(self, session_id: str, version: str | None, scope: Scope) -> Session | None:
        """The session, if the exchange may serve this request of it."""
        session = self._known.get(session_id)
        if session is None:
            return None
        if not _sdk.session_open(self._manager, session_id):
            del self._known[session_id]
            return None
        if version != session.connection.protocol_version or not _sdk.session_owned(
            self._manager, session_id, scope
        ):
            return None  # the SDK's transport answers what does not match, in its words
        return session


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else INTERNAL_ERROR
