"""The client request a call came from, as the relay sees it.

Two kinds of request reach the relay:

- `_sdk.SdkFront`: a request the `mcp` SDK's server dispatched (both protocol revisions, HTTP and
  stdio, anything that may need a back channel to the client);
- `_exchange.Exchange`: a 2026-07-28 POST the gateway's hot path serves itself.

Middlewares see it as `Call.context`; `protocol_version` and `request` are the attributes meant for
them (telemetry reads both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from mcp.server.connection import Connection
from starlette.requests import Request


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
