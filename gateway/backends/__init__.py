"""Backends: how the gateway reaches each declared server.

`Backend` supervises one server; `BackendSession` is one live MCP session to it; each backend kind
(stdio here) only contributes a transport: an async context manager yielding the message streams.
"""

from gateway.backends._contracts import Caller, FleetEvents
from gateway.backends.backend import Backend
from gateway.backends.lifecycle import Event, State
from gateway.backends.session import BackendSession

__all__ = ["Backend", "BackendSession", "Caller", "Event", "FleetEvents", "State"]
