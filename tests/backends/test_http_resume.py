"""A URL backend that closes a call's SSE stream mid-call (`tests/servers/polling.py`, on the
`mcp` SDK: the conformance suite's `server-sse-polling` behaviour) is resumed by the gateway with
`Last-Event-ID`: the call is answered in about the server's own time, not at the gateway's timeout."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client as SdkClient

from tests._support import config, serve, serve_asgi, text_of
from tests.servers import polling

pytestmark = pytest.mark.anyio

TIMEOUT = 60.0  # the backend's call timeout at the gateway: what a hanging call would wait for


async def test_a_backend_closing_its_stream_mid_call_is_resumed_not_waited_out() -> None:
    backend, events = polling.app(retry_ms=100)
    async with serve_asgi(backend) as base:
        # Resumption is 2025-11-25's (2026-07-28 has none): the backend is spoken to in that revision.
        cfg = config({"poll": {"url": f"{base}/mcp", "timeout": TIMEOUT, "protocol": "2025-11-25"}})
        async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
            reports: list[str | None] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                reports.append(message)

            began = anyio.current_time()
            with anyio.fail_after(TIMEOUT / 2):
                result = await client.call_tool(
                    "poll__poll",
                    {"seconds": 0.5},
                    read_timeout_seconds=TIMEOUT,
                    progress_callback=on_progress,
                )
            assert text_of(result) == "polled after 0.5s"
            assert anyio.current_time() - began < TIMEOUT / 2
            assert events.replays >= 1  # the gateway came back for the rest, with Last-Event-ID
            assert reports == ["started", "worked"]  # what came after the close reached the client too
            # The backend session is whole: the next call is answered as usual.
            assert text_of(await client.call_tool("poll__echo", {"text": "after"})) == "polling: after"
