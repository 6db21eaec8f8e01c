"""The admin REST API (`/admin`): operate servers, read the event log, reload the configuration.

Wiring (in `gateway.app.build_app`)::

    admin = admin_api(fleet, config.admin, reload=reloader.reload, authenticate=..., config_path=...)
    routes = [..., *admin.routes]                     # the /admin Mount, among the fixed routes
    await stack.enter_async_context(admin.running())  # in the lifespan, before fleet.running()
    stack.enter_context(listening(fleet.event_listeners, admin.store.record_event))
    stack.enter_context(listening(fleet.call_listeners, admin.stats.record))

Runtime registrations are not persisted: they live until the gateway stops or a reload makes the
fleet match gateway.yaml again. With `cluster.redis` they are the cluster's (`gateway.control`):
kept in Redis, applied on every replica, kept by reloads.

Its configuration (`admin:` in gateway.yaml) is modelled in `gateway.config.admin`.
"""

from __future__ import annotations

from pathlib import Path

from gateway.admin._auth import Authenticator
from gateway.admin.api import AdminAPI, Pins, Reload
from gateway.config.admin import AdminConfig
from gateway.fleet import Fleet

__all__ = ["AdminAPI", "admin_api"]


def admin_api(
    fleet: Fleet,
    config: AdminConfig | None = None,
    *,
    reload: Reload | None = None,
    authenticate: Authenticator | None = None,
    config_path: str | Path | None = None,
    pins: Pins | None = None,
) -> AdminAPI:
    """The admin API over `fleet`: `.routes` to mount, `.running()` to enter while serving;
    `pins`, the pinning middleware of the current chain (for pin approvals)."""
    return AdminAPI(
        fleet, config, reload=reload, authenticate=authenticate, config_path=config_path, pins=pins
    )
