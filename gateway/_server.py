"""The SDK's low-level server as the gateway runs it."""

from __future__ import annotations

import functools
from typing import Any

from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions


class GatewayServer(Server[Any]):
    """The SDK's low-level server, announcing list changes (the gateway always may have some)."""

    @functools.cached_property
    def _stamp(self) -> dict[str, Any]:
        stamp: dict[str, Any] = self.server_info.model_dump(by_alias=True, mode="json", exclude_none=True)
        return stamp

    @property
    def server_info_stamp(self) -> dict[str, Any]:
        # Stamped on every 2026-07-28 result. The SDK deep-copies its dump each time, so that nothing
        # nested is shared between responses; the gateway's identity is flat strings.
        return dict(self._stamp)

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(True, True, True),
            experimental_capabilities,
            extensions,
        )
