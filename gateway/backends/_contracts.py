"""What a backend needs from around it: the caller of a request, the fleet's ears, a transport.

Kept apart from `backend.py` so the supervisor reads on its own; `Backend` implements none of these,
it uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gateway.backends._logbuffer import LogBuffer
from gateway.backends.lifecycle import Event
from gateway.backends.stdio import StdioTransport
from gateway.backends.transport import Transport
from gateway.config.models import DockerServer, ServerSpec, StdioServer
from gateway.config.secrets import Secrets

if TYPE_CHECKING:
    from gateway.backends.backend import Backend


class Caller(Protocol):
    """The client request a backend call was made for (implemented by the front relay)."""

    @property
    def key(self) -> Hashable:
        """Identifies the client connection (per-client sessions, routing of requests back)."""

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a server-to-client request to this caller and return its result."""


class FleetEvents(Protocol):
    def listing_changed(self, backend: Backend) -> None: ...

    async def backend_notification(
        self, backend: Backend, method: str, params: Mapping[str, Any], owner: Hashable | None = None
    ) -> None:
        """`owner`: the client whose per-client session sent it (None: the shared session)."""

    def backend_event(self, backend: Backend, event: Event) -> None: ...

    call_listeners: list[Callable[[str, float, bool], None]]
    secrets: Secrets  # what the transports resolve with: registered there, and masked by it


def transport_for(name: str, spec: ServerSpec, log: LogBuffer, secrets: Secrets) -> Transport:
    """Each backend kind contributes only its transport; imported on use (docker, httpx stay cold).

    The transport resolves the spec's references with `secrets`, the gateway's, which the log
    masks with too (`log.secrets`): whatever a server is handed is masked in what it prints."""
    if isinstance(spec, StdioServer):
        return StdioTransport(name, spec, log, secrets)
    if isinstance(spec, DockerServer):
        from gateway.backends.docker import DockerTransport

        return DockerTransport(name, spec, log, secrets)
    from gateway.backends.http import HttpTransport

    return HttpTransport(name, spec, log, secrets)
