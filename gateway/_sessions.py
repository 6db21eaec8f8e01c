"""The 2025-11-25 sessions the hot path (`_exchange`) may serve requests of.

A session is the SDK's: it is opened (`initialize`), kept and closed by the SDK's transport. The
hot path learns a session (the client's connection, and who authenticated it) from its
`notifications/initialized`, or else from the first request of it the SDK dispatches to the relay,
and from then on serves that session's relayed calls itself, for as long as the SDK still holds
the session, and only for the same identity.

A call of the hot path is not known to the SDK's session, so a `notifications/cancelled` naming
it is delivered here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mcp.server.connection import Connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp_types import RequestId
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import Scope

from gateway import _sdk
from gateway._front import Front

# Sessions the SDK has closed are forgotten when the next this many have been learned.
_PRUNE_EVERY = 256


class Sessions:
    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self._manager = manager
        self._known: dict[str, Connection] = {}
        self._learned = 0
        self._calls: dict[tuple[str, Hashable], tuple[asyncio.Task[Any], Any]] = {}

    def learn(self, front: Front) -> None:
        """A relay listener: remember the session of a 2025-11-25 message the SDK dispatched."""
        request = front.request
        if request is None or front.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        connection = front.connection
        if session_id is None or connection is None or session_id in self._known:
            return
        self._known[session_id] = connection
        self._learned += 1
        if self._learned % _PRUNE_EVERY == 0:
            for gone in [s for s in self._known if not _sdk.session_open(self._manager, s)]:
                del self._known[gone]

    def find(self, session_id: str, version: str | None, scope: Scope) -> Connection | None:
        """The session's connection, if the hot path may serve this request of it."""
        connection = self._known.get(session_id)
        if connection is None:
            return None
        if not _sdk.session_open(self._manager, session_id):
            del self._known[session_id]
            return None
        if version != connection.protocol_version or not _sdk.session_owned(self._manager, session_id, scope):
            return None  # the SDK's transport answers what does not match, in its words
        return connection

    @contextmanager
    def calling(self, session_id: str, request_id: RequestId, exchange: Any) -> Iterator[None]:
        """While a call of the session runs: a `notifications/cancelled` for it can reach it, and
        the session is in use (the SDK does not expire it as idle)."""
        task = asyncio.current_task()
        assert task is not None
        key = (session_id, coerce_request_id(request_id))  # "7" and 7 are one id, as in the SDK
        self._calls[key] = (task, exchange)
        try:
            with _sdk.session_busy(self._manager, session_id):
                yield
        finally:
            self._calls.pop(key, None)

    def cancel(self, session_id: str, params: Mapping[str, Any]) -> bool:
        """Cancel the call a `notifications/cancelled` (its `params`) names, if the hot path runs it."""
        request_id = cancelled_request_id_from_params(params)
        if request_id is None:
            return False
        found = self._calls.get((session_id, coerce_request_id(request_id)))
        if found is None:
            return False
        task, exchange = found
        exchange.gone = True  # no answer is owed to a cancelled request
        task.cancel()
        return True
