"""One gateway's parts and how they connect, for both fronts (`app.build_app`, `front.stdio.serve_stdio`).

Each part takes what it needs in its constructor. What one part tells another at run time (a
callback registered on the other's list) is wired here, and only here, so that who hears what is
read in one place; each front adds its own (HTTP: the exchange, the SDK's streams, the admin API,
the routes a middleware serves).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gateway.config.models import GatewayConfig
from gateway.config.secrets import Secrets
from gateway.fleet import Fleet
from gateway.middleware import Middleware
from gateway.relay import Relay
from gateway.reload import Reloader

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Gateway:
    secrets: Secrets  # where `secret_ref:` values come from, and every value resolved
    fleet: Fleet
    relay: Relay
    reloader: Reloader

    @classmethod
    def assemble(
        cls,
        config: GatewayConfig,
        middlewares: Sequence[Middleware],
        secrets: Secrets,
        *,
        fleet: Fleet | None = None,
        config_path: str | Path | None = None,
        local: bool = False,
    ) -> Gateway:
        """The parts over `config`: `middlewares` are the chain already created (their options'
        references resolved with `secrets`); `fleet`, one created beforehand (with `secrets`)."""
        assert fleet is None or fleet.secrets is secrets, "one Secrets per gateway"
        # A plugin may expand references its own way: its options' values are masked all the same.
        secrets.register_options(config.middleware)
        fleet = fleet or Fleet(config, secrets=secrets)
        relay = Relay(fleet, middlewares, local=local)
        reloader = Reloader(fleet, relay, config_path)
        # A client gone: the per-client backend sessions it held end with it.
        fleet.clients.on_disconnect.append(fleet.release_client)
        # Backends' notifications (logs, progress, list changes) reach clients through the relay.
        fleet.notification_hooks.append(relay.backend_notification)
        return cls(secrets, fleet, relay, reloader)


@contextmanager
def listening(listeners: list[T], callback: T) -> Iterator[None]:
    """`callback` on `listeners` for the span of the block (a subscription for as long as a part
    runs, e.g. the admin API's event store on the fleet's events)."""
    listeners.append(callback)
    try:
        yield
    finally:
        if callback in listeners:
            listeners.remove(callback)
