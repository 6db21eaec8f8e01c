"""What ends a running backend session: the transport closing, failed health checks, idleness.

Each watcher runs beside a live session and calls `end(Ended(...))` when its condition is met; the
supervisor then tears the session down and decides (restart policy) what happens next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from mcp.shared.exceptions import MCPError

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.backends.backend import Backend
    from gateway.backends.session import BackendSession

logger = logging.getLogger("gateway.backends.backend")


class Ended(Exception):
    """Why a running session ended, when it was not cancelled."""

    def __init__(
        self, reason: str, *, failure: bool, category: str = "lifecycle", exited: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure
        self.category = category
        # The server exited by itself: its exit code is known only after teardown, so the
        # supervisor words the reason and applies `restart: on-failure` then.
        self.exited = exited


End = Callable[[Ended], None]


async def exit(backend: Backend, session: BackendSession, end: End) -> None:
    await session.closed.wait()
    end(Ended("the server exited", failure=True, exited=True))


async def health(backend: Backend, session: BackendSession, end: End) -> None:
    health = backend.spec.health
    misses = 0
    # URL backends may name an HTTP health path; everything else answers MCP ping.
    http_check = backend.transport.health_check

    async def probe() -> None:
        if http_check is not None:
            await http_check()
        else:
            await session.ping(health.timeout)

    while True:
        await anyio.sleep(health.interval)
        try:
            with anyio.fail_after(health.timeout):
                await probe()
            misses = 0
        except (GatewayError, MCPError, OSError, TimeoutError) as exc:
            misses += 1
            logger.warning(
                "server %s: health check %d/%d failed: %s", backend.name, misses, health.failures, exc
            )
            if misses >= health.failures:
                end(Ended(f"{misses} health checks failed in a row", failure=True, category="health"))
                return


async def idle(backend: Backend, idle_timeout: float, end: End) -> None:
    while True:
        idle_for = time.monotonic() - backend.last_used
        if idle_for >= idle_timeout and not backend.in_flight:
            end(Ended(f"idle for {idle_timeout:g}s", failure=False))
            return
        await anyio.sleep(max(idle_timeout - idle_for, 0.05))
