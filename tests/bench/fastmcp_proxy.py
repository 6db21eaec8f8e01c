"""FastMCP's own proxy over one kept-alive stdio backend: the benchmark's `proxy` baseline.

Run as ``python -m tests.bench.fastmcp_proxy PORT -- BACKEND_COMMAND [ARGS...]``; serves
``http://127.0.0.1:PORT/mcp``, and ``GET /readyz`` answers 200.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fastmcp.client.transports import StdioTransport
from fastmcp.server import create_proxy
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

LOOPBACK = "127.0.0.1"


def serve_fastmcp_proxy(port: int, backend: Sequence[str]) -> None:
    proxy = create_proxy(StdioTransport(backend[0], list(backend[1:])), name="fastmcp-proxy")

    @proxy.custom_route("/readyz", methods=["GET"])
    async def readyz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    proxy.run(transport="http", host=LOOPBACK, port=port, show_banner=False, log_level="WARNING")


def main(argv: Sequence[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m tests.bench.fastmcp_proxy PORT -- BACKEND_COMMAND [ARGS...]")
    serve_fastmcp_proxy(int(argv[0]), argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
