"""Where a client's request enters the gateway, and what the relay sees of it.

- `exchange`: the MCP endpoint over HTTP. Every relayed request (calls and listings, both
  revisions) is one `exchange.Exchange`; the rest goes to the SDK's transport (`sdk`).
- `sessions`: the 2025-11-25 sessions the exchange serves requests of.
- `events`: the SSE events a 2025-11-25 client may resume from (`Last-Event-ID`), kept for the
  SDK's transport and the exchange alike.
- `sdk`: the `mcp` SDK's server wired to the relay: over HTTP, what is not a relayed call
  (`initialize`, `server/discover`, the GET stream, `subscriptions/listen`, refusals); over stdio,
  everything (`stdio`). The tasks extension's `tasks/*` requests take this path too;
  `listen` serves the `subscriptions/listen` streams that ask for task status.
- `http`: the HTTP app around the endpoint (authentication, refusal while draining, probes);
  `guard` (Host and Origin), `envelope` (a body that is not one JSON-RPC message), `_uvicorn`
  (the server's deadlines and signals).

Both kinds of request reach `Relay.dispatch` as a `Front`; middlewares see it as `Call.context`,
where `protocol_version` and `request` are the attributes meant for them (telemetry reads both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from mcp.server.connection import Connection
from mcp_types import ClientCapabilities
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
    # Which endpoint the request came in on (`gateway.endpoints`: its key; DEFAULT over stdio).
    endpoint: str

    @property
    def request(self) -> Request | None:
        """The HTTP request (headers, client address, `state.identity`); None over stdio."""

    @property
    def identity(self) -> Identity | None:
        """Who HTTP authentication says sent the request (`http.Authenticated`); None over stdio
        or without authentication."""

    @property
    def connection(self) -> Connection | None:
        """The client's session (2025-11-25); None for a 2026-07-28 request, which has none."""

    def can_answer(self) -> bool:
        """Whether the client declared a capability a backend could ask it to use."""

    @property
    def client_capabilities(self) -> ClientCapabilities | None:
        """What the client declared (its `initialize`, or this request's envelope); None: nothing
        well-formed. Read when a backend asks the client something, never per call."""

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
