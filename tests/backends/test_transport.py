"""The `Transport` interface: every backend kind declares its optional capabilities.

A capability a transport lacks is a declared `None`/`False`, never a missing member probed with
`getattr` (where a rename silently turned it off).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from gateway.backends._contracts import transport_for
from gateway.backends._direct import DirectCalls
from gateway.backends._logbuffer import LogBuffer
from gateway.backends.docker import DockerTransport
from gateway.backends.http import HttpTransport
from gateway.backends.session import BackendSession
from gateway.backends.stdio import StdioTransport
from gateway.backends.transport import Transport
from gateway.config.models import DockerServer, HttpServer, ServerSpec, StdioServer
from gateway.config.secrets import Secrets
from tests._support import START_TIMEOUT, misbehave

pytestmark = pytest.mark.anyio

STDIO = StdioServer.model_validate(misbehave())


def transport(spec: ServerSpec) -> Transport:
    return transport_for("t", spec, LogBuffer("t"), Secrets())


async def test_every_kind_declares_its_optional_capabilities() -> None:
    url = "http://127.0.0.1:9/mcp"  # never connected to: declaring needs no server
    plain = HttpServer(url=url)
    checked = HttpServer(url=url, health_check="/healthz")
    kinds: list[tuple[ServerSpec, type, bool]] = [
        (STDIO, StdioTransport, False),
        (DockerServer(image="x"), DockerTransport, False),
        (plain, HttpTransport, False),
        (checked, HttpTransport, True),
    ]
    for spec, kind, has_health_check in kinds:
        made = transport(spec)
        assert type(made) is kind
        assert made.expired is False
        assert (made.health_check is not None) is has_health_check, spec
        await made.aclose()  # always there; nothing was opened, so nothing to release
        await made.aclose()  # and idempotent


class _Hooks:
    async def on_notification(self, session: BackendSession, method: str, params: Mapping[str, Any]) -> None:
        return None

    async def on_request(
        self, session: BackendSession, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        raise AssertionError(f"unexpected {method}")


async def test_a_stdio_link_carries_the_pipes_direct_path() -> None:
    stdio = transport(STDIO)
    with anyio.fail_after(START_TIMEOUT):
        async with stdio.connect() as link:
            assert isinstance(link.direct, DirectCalls)
        # A session over it relays through that path once the handshake is done.
        async with BackendSession("t", stdio, _Hooks(), startup_timeout=START_TIMEOUT) as session:
            assert session._direct is not None
            result = await session.request(
                "tools/call", {"name": "echo", "arguments": {"text": "hi"}}, timeout=30
            )
            assert "hi" in str(result["content"])
            assert not stdio.expired  # a pipe never outlives its session
