"""`POST /admin/servers/{name}/test`: open a fresh session to a backend and time each step.

The probe uses its own transport and log buffer (a second process or connection), never the
backend's live session, so it neither disturbs clients nor counts as the backend's traffic.
Server-to-client requests during the probe are refused: there is no client to ask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import anyio
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST

from gateway.admin._record import iso
from gateway.backends import Backend, BackendSession
from gateway.backends._contracts import transport_for
from gateway.backends._logbuffer import LogBuffer
from gateway.backends.session import Forwarded
from gateway.errors import GatewayError

logger = logging.getLogger("gateway.admin")
_STDERR_TAIL = 5
_MAX_PROBE = 600.0


class _NoClient:
    async def on_notification(self, session: BackendSession, method: str, params: Mapping[str, Any]) -> None:
        return None

    async def on_request(
        self, session: BackendSession, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        raise MCPError(code=INVALID_REQUEST, message="the admin connection test has no client to ask")


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


async def probe(backend: Backend) -> dict[str, Any]:
    spec = backend.spec
    log = LogBuffer(backend.name, size=50, secrets=backend.log.secrets)
    log.transform = backend.log.transform  # the same masking as the backend's own log
    transport = transport_for(backend.name, spec, log, backend.events.secrets)
    timings: dict[str, float] = {}
    stage = "connect_initialize"
    report: dict[str, Any] = {"server": backend.name, "time": iso(time.time())}
    began = time.perf_counter()
    try:
        # Each step has its own bound; this one only guards against a probe that never ends.
        with anyio.fail_after(min(spec.startup_timeout + 2 * spec.timeout + 15, _MAX_PROBE)):
            t = time.perf_counter()
            session = BackendSession(
                backend.name,
                transport,
                _NoClient(),
                startup_timeout=spec.startup_timeout,
                forwarded=Forwarded(roots=backend.per_client),
                protocol=spec.protocol,
            )
            async with session:
                timings["connect_initialize_ms"] = _ms(t)  # includes fetching the listing once
                info = session.server_info  # a 2026-07-28 server need not name itself
                report["server_info"] = {"name": info.name, "version": info.version} if info else None
                report["protocol_version"] = session.protocol_version
                report["tools"] = len(session.listing.tools)
                stage = "tools_list"
                t = time.perf_counter()
                await session.request("tools/list", None, timeout=spec.timeout)
                timings["tools_list_ms"] = _ms(t)
                stage = "ping"
                t = time.perf_counter()
                await session.ping(spec.timeout)
                timings["ping_ms"] = _ms(t)
                stage = "close"
                t = time.perf_counter()
            timings["close_ms"] = _ms(t)
        report.update(ok=True, stage=None, error=None)
    except (GatewayError, MCPError) as exc:
        report.update(ok=False, stage=stage, error=exc.message)
    except TimeoutError:
        report.update(ok=False, stage=stage, error=f"{stage} did not finish in time")
    except Exception as exc:
        logger.exception("admin test of server %s failed unexpectedly", backend.name)
        report.update(ok=False, stage=stage, error=f"unexpected error: {type(exc).__name__}")
    finally:
        with anyio.CancelScope(shield=True):  # URL and docker backends own a client
            await transport.aclose()
    timings["total_ms"] = _ms(began)
    report["timings"] = timings
    report["stderr"] = [line.text for line in log.tail(_STDERR_TAIL)]
    return report
