"""The admin REST API (`/admin`): operate servers, read the event log, reload the configuration.

Wiring (in `gateway.app.build_app`)::

    admin = admin_api(fleet, config.admin, reload=reloader.reload, authenticate=..., config_path=...)
    routes = [..., *admin.routes]                     # the /admin Mount, among the fixed routes
    await stack.enter_async_context(admin.running())  # in the lifespan, before fleet.running()

Runtime registrations are not persisted: they live until the gateway stops or a reload makes the
fleet match gateway.yaml again.

Only the config model is imported eagerly: `gateway.config.models` imports it, and the API itself
imports the fleet (which imports the config models).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gateway.admin.settings import AdminConfig, AdminKey, EventsConfig

if TYPE_CHECKING:
    from gateway.admin._auth import Authenticator
    from gateway.admin.api import AdminAPI, Reload
    from gateway.fleet import Fleet

__all__ = ["AdminConfig", "AdminKey", "EventsConfig", "admin_api"]


def admin_api(
    fleet: Fleet,
    config: AdminConfig | None = None,
    *,
    reload: Reload | None = None,
    authenticate: Authenticator | None = None,
    config_path: str | Path | None = None,
) -> AdminAPI:
    """The admin API over `fleet`: `.routes` to mount, `.running()` to enter while serving."""
    from gateway.admin.api import AdminAPI

    return AdminAPI(fleet, config, reload=reload, authenticate=authenticate, config_path=config_path)
