"""The `mcp` SDK's low-level server, wired to the relay.

Over HTTP it serves what is not a relayed call (`exchange` serves those): the SDK's transport opens
and ends 2025-11-25 sessions and their GET streams, answers `initialize`, `server/discover` and
`ping`, refuses what is malformed in its own words, and hands the handlers below
`logging/setLevel`, `subscriptions/listen`, completions and resource subscriptions. Over stdio
(`stdio`) the SDK's runner carries every message, into the same `Relay.dispatch`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import mcp_types as types
from mcp.server.caching import CACHEABLE_METHODS, CacheableMethod, CacheHint
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from gateway import __version__
from gateway._rewrite import Result, finish
from gateway._sdk import Ctx, SdkFront
from gateway.endpoints import DEFAULT, Endpoint
from gateway.errors import ShuttingDown, as_mcp_error
from gateway.front import Front
from gateway.front.listen import TaskListen
from gateway.relay import Relay
from gateway.tasks import TaskRequestParams

Handler = Callable[[Ctx, Any], Awaitable[Result]]


class GatewayServer(Server[Any]):
    """The SDK's low-level server, announcing list changes (the gateway always may have some),
    and the extensions its backends bring (`offered`, asked whenever capabilities are shown)."""

    offered: Callable[[], dict[str, dict[str, Any]]] = dict

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        offered = {**(extensions if extensions is not None else self.extensions), **self.offered()}
        return super().get_capabilities(
            notification_options,
            experimental_capabilities,
            offered or None,
            protocol_version=protocol_version,
        )

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


def build_server(
    relay: Relay,
    on_front: Callable[[Front], None] | None = None,
    endpoint: Endpoint | None = None,
    closing: list[Callable[[], None]] | None = None,
) -> GatewayServer:
    """The SDK's server over `relay`, for `endpoint` (default: the default endpoint): its name and
    instructions, and its requests reach the relay as that endpoint's. `on_front` hears of every
    request the SDK dispatches and of `notifications/initialized` (the exchange learns 2025-11-25
    sessions from them). `closing`: where to put what ends its listen streams when the gateway
    drains (default: the drain's own hooks; an endpoint's stack runs its own while mounted)."""
    if endpoint is None:
        endpoint = relay.fleet.endpoints[DEFAULT]
    key = endpoint.key

    def input_schema(name: str) -> Mapping[str, Any] | None:
        # Only schemas that mark `x-mcp-header` properties can refuse an Mcp-Param-* header. Read
        # from the catalogue of the moment: it is replaced whenever a backend's listing changes.
        schema: Mapping[str, Any] | None = relay.fleet.catalogue.header_schemas.get(name)
        return schema

    server = GatewayServer(
        endpoint.name,
        version=__version__,
        instructions=endpoint.instructions,
        # 2026-07-28 list results must carry freshness hints: the relay sets them from the
        # backends' own (`Fleet.cache_hint`); this is what a list without one would say.
        cache_hints=dict.fromkeys(
            cast("Iterable[CacheableMethod]", CACHEABLE_METHODS), CacheHint(ttl_ms=0, scope="private")
        ),
        # Without it, every 2026-07-28 call with arguments would run a full tools/list to check
        # the Mcp-Param headers.
        get_tool_input_schema=input_schema,
    )
    server.offered = relay.extensions
    clients = relay.fleet.clients
    listener = TaskListen(
        clients.bus_for(key), relay.tasks, lambda front: relay.identity_of(front).name, clients.watch
    )
    # Each listen stream ends with its final result.
    (relay.drain.on_close if closing is None else closing).append(listener.close)

    def seen(ctx: Ctx) -> SdkFront:
        front = SdkFront(ctx, key)
        if on_front is not None:
            on_front(front)
        return front

    async def dispatch(ctx: Ctx, params: Any) -> Result:
        return await relay.dispatch(seen(ctx))

    async def dispatch_task(ctx: Ctx, params: TaskRequestParams) -> Result:
        # SEP-2663 names the task in Mcp-Name, checked as the SDK checks its own name-bearing
        # methods (whose table is closed to extensions).
        front = seen(ctx)
        request = front.request
        named = None if request is None else decode_header_value(request.headers.get(MCP_NAME_HEADER))
        modern_http = request is not None and front.protocol_version in MODERN_PROTOCOL_VERSIONS
        if modern_http and named != params.task_id:
            message = f"{MCP_NAME_HEADER} header does not match the request body's 'taskId' parameter"
            raise MCPError(code=types.HEADER_MISMATCH, message=message)
        return await relay.dispatch(front)

    async def opened(ctx: Ctx, params: types.NotificationParams) -> None:
        seen(ctx)  # a 2025-11-25 session is initialized: learned before its first request

    async def set_logging_level(ctx: Ctx, params: types.SetLevelRequestParams) -> Result:
        await relay.set_logging_level(params.level)
        return finish(ctx.protocol_version, {})

    async def listen(ctx: Ctx, params: types.SubscriptionsListenRequestParams) -> Any:
        if relay.drain.closing:
            raise as_mcp_error(ShuttingDown())
        front = SdkFront(ctx, key)
        async with relay.listening(front, params.notifications.resource_subscriptions or ()) as own:
            return await listener(ctx, params, front, own)

    # Registered one by one (not as constructor arguments) because the handlers return the
    # backends' raw JSON; the advertised capabilities follow from what is registered here.
    handlers: dict[str, tuple[type[BaseModel], Handler]] = {
        "tools/list": (types.PaginatedRequestParams, dispatch),
        "tools/call": (types.CallToolRequestParams, dispatch),
        "prompts/list": (types.PaginatedRequestParams, dispatch),
        "prompts/get": (types.GetPromptRequestParams, dispatch),
        "resources/list": (types.PaginatedRequestParams, dispatch),
        "resources/templates/list": (types.PaginatedRequestParams, dispatch),
        "resources/read": (types.ReadResourceRequestParams, dispatch),
        "resources/subscribe": (types.SubscribeRequestParams, dispatch),
        "resources/unsubscribe": (types.UnsubscribeRequestParams, dispatch),
        "completion/complete": (types.CompleteRequestParams, dispatch),
        "logging/setLevel": (types.SetLevelRequestParams, set_logging_level),
        "subscriptions/listen": (types.SubscriptionsListenRequestParams, listen),
        # The tasks extension's (`gateway.tasks`): rare polls, so the SDK's transport carries them.
        "tasks/get": (TaskRequestParams, dispatch_task),
        "tasks/update": (TaskRequestParams, dispatch_task),
        "tasks/cancel": (TaskRequestParams, dispatch_task),
    }
    for method, (params_type, handler) in handlers.items():
        server.add_request_handler(method, params_type, handler)
    server.add_notification_handler("notifications/initialized", types.NotificationParams, opened)
    # The SDK's own per-request OpenTelemetry middleware costs ~10% of a relayed call; the
    # gateway's telemetry middleware records its own spans.
    server.middleware = []
    return server
