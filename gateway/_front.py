"""The client request a call came from, as the relay sees it.

Two kinds of request reach the relay:

- `_sdk.SdkFront`: a request the `mcp` SDK's server dispatched (both protocol revisions, HTTP and
  stdio, anything that may need a back channel to the client);
- `_reply.Exchange`: a request the gateway's hot path (`_exchange`) serves itself (a 2026-07-28 POST,
  or a request of a 2025-11-25 session it learned).

Middlewares see it as `Call.context`; `protocol_version` and `request` are the attributes meant for
them (telemetry reads both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from mcp.server.connection import Connection
from starlette.requests import Request
from starlette.types import Scope

from gateway.middleware import Identity

# What a client may declare that lets a backend ask it something mid-call.
_ANSWERING_CAPABILITIES = ("sampling", "elicitation", "roots")


class Front(Protocol):
    method: str
    params: Mapping[str, Any] | None  # as the client sent them
    request_id: str | int | None
    protocol_version: str
    meta: Mapping[str, Any] | None  # the request's `_meta` (progress token, log level opt-in)

    @property
    def request(self) -> Request | None:
        """The HTTP request (headers, client address, `state.identity`); None over stdio."""

    @property
    def connection(self) -> Connection | None:
        """The client's session (2025-11-25); None for a 2026-07-28 request, which has none."""

    def can_answer(self) -> bool:
        """Whether the client declared a capability a backend could ask it to use."""

    def wants_progress(self) -> bool: ...

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None: ...

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        """A notification tied to this request (it rides the request's response stream)."""

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A server-to-client request on this request's stream."""


def can_answer(capabilities: Any) -> bool:
    """Whether declared capabilities (a request envelope's dict, or the SDK's model) include one a
    backend could ask the client to use."""
    if isinstance(capabilities, dict):
        return any(capabilities.get(k) is not None for k in _ANSWERING_CAPABILITIES)
    return any(getattr(capabilities, k, None) is not None for k in _ANSWERING_CAPABILITIES)


def scope_identity(scope: Scope) -> Identity | None:
    """The identity HTTP authentication attached to a request (`app._Authenticated`), if any."""
    found = scope.get("state", {}).get("identity")
    return found if isinstance(found, Identity) else None
