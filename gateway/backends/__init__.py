"""Backends: how the gateway reaches each declared server.

`Backend` supervises one server; `BackendSession` is one live MCP session to it; each backend kind
(`stdio`, `docker`, `http`) only contributes a `Transport` (`transport`): `connect()`, an async
context manager yielding the link's message streams, and its optional capabilities, declared.
"""

from gateway.backends._contracts import Caller, FleetEvents
from gateway.backends.backend import Backend
from gateway.backends.lifecycle import Event, State
from gateway.backends.session import BackendSession
from gateway.backends.transport import Link, Transport

__all__ = ["Backend", "BackendSession", "Caller", "Event", "FleetEvents", "Link", "State", "Transport"]
