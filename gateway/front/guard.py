"""DNS-rebinding protection for every route: the Host and Origin a request carries must be ours.

A browser page on another origin, or a rebinding DNS name that resolves to 127.0.0.1, reaches the
gateway with a foreign Host or Origin; it is refused before any route runs (/mcp, the probes,
/metrics, the admin API and its dashboard alike). The `mcp` SDK checks the MCP endpoint too, but
it matches a `:*` port pattern as a prefix (`127.0.0.1:*` admits `127.0.0.1:1.evil.example`);
here a value matches a pattern exactly, and `:*` stands for a port: digits only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("gateway")

_PORT = r":[0-9]{1,5}"


def _matcher(patterns: Iterable[str]) -> re.Pattern[str]:
    """One case-insensitive full-match regex for `patterns` (exact values; a `:*` suffix: any port)."""
    parts = [re.escape(p[:-2]) + _PORT if p.endswith(":*") else re.escape(p) for p in dict.fromkeys(patterns)]
    return re.compile("|".join(f"(?:{p})" for p in parts) or r"(?!)", re.IGNORECASE)


class HostGuard:
    """ASGI middleware: 421 for a Host, 403 for an Origin that is not allowed (the SDK's answers)."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str], origins: Iterable[str]) -> None:
        self.app = app
        self._hosts = _matcher(hosts)
        self._origins = _matcher(origins)

    def refusal(self, headers: Headers) -> Response | None:
        host = headers.get("host", "")
        if not self._hosts.fullmatch(host):
            logger.warning("refused a request for a foreign Host %r", host[:100])
            return Response("Invalid Host header", status_code=421)
        origin = headers.get("origin")
        if origin is not None and not self._origins.fullmatch(origin):
            logger.warning("refused a request from a foreign Origin %r", origin[:100])
            return Response("Invalid Origin header", status_code=403)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            refused = self.refusal(Headers(scope=scope))
            if refused is not None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)
