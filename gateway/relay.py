"""The front MCP server: every client request is answered from the catalogue or relayed to the
backend that owns the name, with the namespace taken off on the way in and put back on the way out.

Results are relayed as the backend's raw JSON (structuredContent, _meta, annotations, isError and
anything newer pass through untouched); only names and resource URIs are rewritten.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar, cast

import mcp_types as types
from mcp.server.caching import CACHEABLE_METHODS, CacheableMethod, CacheHint
from mcp.server.connection import allowed_log_levels
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import ListenHandler
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from gateway import __version__, _sdk
from gateway._inputs import InputBridge, InputCaller
from gateway.backends import Backend
from gateway.catalogue import Route
from gateway.errors import GatewayError, as_mcp_error
from gateway.fleet import Fleet

logger = logging.getLogger(__name__)

Ctx = ServerRequestContext[Any, Any]
Result = dict[str, Any]
Handler = Callable[[Ctx, Any], Awaitable[Result]]
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])

# Keys of the 2026-07-28 request envelope describe the client's connection to the gateway, not ours
# to the backend; the backend session stamps its own.
_ENVELOPE_PREFIX = "io.modelcontextprotocol/"
# A 2026-07-28 retry carries these for the gateway's own input rounds; the backend never sees them.
_INPUT_ROUND_KEYS = ("inputResponses", "requestState")
# The methods whose 2026-07-28 results may be `input_required`.
_INPUT_METHODS = ("tools/call", "prompts/get", "resources/read")


class GatewayServer(Server[Any]):
    """The SDK's low-level server, announcing list changes (the gateway always may have some)."""

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


def _translated(handler: _F) -> _F:
    """Our exceptions leave a handler as the JSON-RPC error `to_jsonrpc_error` chooses."""

    @functools.wraps(handler)
    async def wrapper(*args: Any) -> Any:
        try:
            return await handler(*args)
        except GatewayError as exc:
            raise as_mcp_error(exc) from None

    return wrapper  # type: ignore[return-value]


class _Caller:
    """A client request, as a backend sees it: who to ask when the backend asks back."""

    __slots__ = ("ctx", "key")

    def __init__(self, ctx: Ctx, key: Hashable) -> None:
        self.ctx = ctx
        self.key = key

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await _sdk.ask_client(self.ctx, method, params)


def _finish(ctx: Ctx, result: Result) -> Result:
    # 2026-07-28 results must say they are complete; backends reached over the handshake era
    # never do, and 2025-11-25 clients must not see the field (the SDK's per-version sieve drops it).
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        result.setdefault("resultType", "complete")
    return result


def _may_answer(ctx: Ctx) -> bool:
    """Whether the client declared any capability a backend could ask it to use."""
    caps = ctx.session.client_capabilities
    return caps is not None and (caps.sampling or caps.elicitation or caps.roots) is not None


def _progress_to(ctx: Ctx) -> ProgressFnT | None:
    meta = ctx.params.get("_meta") if ctx.params else None
    if not isinstance(meta, Mapping) or meta.get("progressToken") is None:
        return None
    report = ctx.session.report_progress

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        await report(progress, total, message)

    return on_progress


def _forward_params(raw: Mapping[str, Any] | None, **replace: Any) -> dict[str, Any]:
    params = {k: v for k, v in (raw or {}).items() if k not in _INPUT_ROUND_KEYS}
    params.update(replace)
    meta = params.get("_meta")
    if meta:
        kept = {k: v for k, v in meta.items() if k != "progressToken" and not k.startswith(_ENVELOPE_PREFIX)}
        if kept:
            params["_meta"] = kept
        else:
            del params["_meta"]
    return params


class Relay:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.inputs = InputBridge()
        fleet.notification_hooks.append(self._backend_log)

    def build_server(self) -> GatewayServer:
        server = GatewayServer(
            self.fleet.config.name,
            version=__version__,
            # 2026-07-28 list results must carry freshness hints. The catalogue can change at any
            # moment (a backend restarts), and lists differ per identity: never cache.
            cache_hints=dict.fromkeys(
                cast("Iterable[CacheableMethod]", CACHEABLE_METHODS), CacheHint(ttl_ms=0, scope="private")
            ),
            # Without it, every 2026-07-28 call with arguments would run a full tools/list to check
            # the Mcp-Param headers.
            get_tool_input_schema=self._input_schema,
        )
        # Registered one by one (not as constructor arguments) because the handlers return the
        # backends' raw JSON; the advertised capabilities follow from what is registered here.
        handlers: dict[str, tuple[type[BaseModel], Handler]] = {
            "tools/list": (types.PaginatedRequestParams, self.list_tools),
            "tools/call": (types.CallToolRequestParams, self.call_tool),
            "prompts/list": (types.PaginatedRequestParams, self.list_prompts),
            "prompts/get": (types.GetPromptRequestParams, self.get_prompt),
            "resources/list": (types.PaginatedRequestParams, self.list_resources),
            "resources/templates/list": (types.PaginatedRequestParams, self.list_resource_templates),
            "resources/read": (types.ReadResourceRequestParams, self.read_resource),
            "resources/subscribe": (types.SubscribeRequestParams, self.subscribe),
            "resources/unsubscribe": (types.UnsubscribeRequestParams, self.unsubscribe),
            "completion/complete": (types.CompleteRequestParams, self.complete),
            "logging/setLevel": (types.SetLevelRequestParams, self.set_logging_level),
            "subscriptions/listen": (
                types.SubscriptionsListenRequestParams,
                ListenHandler(self.fleet.clients.bus),  # type: ignore[dict-item]
            ),
        }
        for method, (params_type, handler) in handlers.items():
            server.add_request_handler(method, params_type, handler)
        # The SDK's own per-request OpenTelemetry middleware costs ~10% of a relayed call; the
        # gateway's telemetry middleware records its own spans.
        server.middleware = []
        return server

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        schema: Mapping[str, Any] | None = self.fleet.catalogue.input_schemas.get(name)
        return schema

    # -- helpers ----------------------------------------------------------------------------

    def _caller(self, ctx: Ctx) -> _Caller:
        return _Caller(ctx, self.fleet.clients.track(_sdk.connection_of(ctx)))

    def _backend(self, route: Route) -> Backend:
        return self.fleet.backends[route.server]

    def _rewrite_content(self, server: str, items: list[Any] | None) -> None:
        if not items or not self.fleet.catalogue.namespaces.get(server):
            return
        for item in items:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "resource_link" and isinstance(item.get("uri"), str):
                item["uri"] = self.fleet.catalogue.public_uri(server, item["uri"])
            elif (
                item.get("type") == "resource"
                and isinstance(res := item.get("resource"), dict)
                and isinstance(res.get("uri"), str)
            ):
                res["uri"] = self.fleet.catalogue.public_uri(server, res["uri"])

    async def _relay(self, ctx: Ctx, route: Route, method: str, params: dict[str, Any]) -> Result:
        backend = self._backend(route)
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and method in _INPUT_METHODS and _may_answer(ctx):
            return await self._relay_with_input_rounds(ctx, backend, method, params)
        result = await backend.request(method, params, self._caller(ctx), on_progress=_progress_to(ctx))
        return _finish(ctx, result)

    async def _relay_with_input_rounds(
        self, ctx: Ctx, backend: Backend, method: str, params: dict[str, Any]
    ) -> Result:
        raw = ctx.params or {}
        token = raw.get("requestState")
        if isinstance(token, str):
            deferred = self.inputs.resume(token, dict(raw.get("inputResponses") or {}), ctx)
        else:
            # 2026-07-28 clients have no session: they share one backend session per identity.
            key = ("stateless", None)

            async def progress(progress: float, total: float | None, message: str | None) -> None:
                await deferred.context.session.report_progress(progress, total, message)

            def call(caller: InputCaller) -> Awaitable[Result]:
                return backend.request(method, params, caller, on_progress=progress)

            deferred = self.inputs.start(key, ctx, call)
        result = await self.inputs.next_result(deferred)
        return _finish(ctx, result)

    # -- tools ------------------------------------------------------------------------------

    async def list_tools(self, ctx: Ctx, params: Any) -> Result:
        return _finish(ctx, {"tools": self.fleet.catalogue.tools})

    @_translated
    async def call_tool(self, ctx: Ctx, params: Any) -> Result:
        name = ctx.params["name"] if ctx.params else ""
        route = self.fleet.catalogue.tool_routes.get(name)
        if route is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
        result = await self._relay(ctx, route, "tools/call", _forward_params(ctx.params, name=route.name))
        self._rewrite_content(route.server, result.get("content"))
        return result

    # -- prompts ----------------------------------------------------------------------------

    async def list_prompts(self, ctx: Ctx, params: Any) -> Result:
        return _finish(ctx, {"prompts": self.fleet.catalogue.prompts})

    @_translated
    async def get_prompt(self, ctx: Ctx, params: Any) -> Result:
        name = ctx.params["name"] if ctx.params else ""
        route = self.fleet.catalogue.prompt_routes.get(name)
        if route is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {name}")
        result = await self._relay(ctx, route, "prompts/get", _forward_params(ctx.params, name=route.name))
        for message in result.get("messages") or []:
            if isinstance(message, dict):
                self._rewrite_content(route.server, [message.get("content")])
        return result

    # -- resources --------------------------------------------------------------------------

    async def list_resources(self, ctx: Ctx, params: Any) -> Result:
        return _finish(ctx, {"resources": self.fleet.catalogue.resources})

    async def list_resource_templates(self, ctx: Ctx, params: Any) -> Result:
        return _finish(ctx, {"resourceTemplates": self.fleet.catalogue.templates})

    def _route_uri(self, ctx: Ctx) -> tuple[str, Route]:
        uri = ctx.params["uri"] if ctx.params else ""
        route = self.fleet.catalogue.route_uri(uri)
        if route is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown resource: {uri}")
        return uri, route

    @_translated
    async def read_resource(self, ctx: Ctx, params: Any) -> Result:
        uri, route = self._route_uri(ctx)
        result = await self._relay(ctx, route, "resources/read", _forward_params(ctx.params, uri=route.name))
        if uri != route.name:
            for item in result.get("contents") or []:
                if isinstance(item, dict) and item.get("uri") == route.name:
                    item["uri"] = uri
                elif isinstance(item, dict) and isinstance(item.get("uri"), str):
                    item["uri"] = self.fleet.catalogue.public_uri(route.server, item["uri"])
        return result

    @_translated
    async def subscribe(self, ctx: Ctx, params: Any) -> Result:
        uri, route = self._route_uri(ctx)
        result = await self._relay(
            ctx, route, "resources/subscribe", _forward_params(ctx.params, uri=route.name)
        )
        self.fleet.clients.subscribe(self._caller(ctx).key, uri)
        return result

    @_translated
    async def unsubscribe(self, ctx: Ctx, params: Any) -> Result:
        uri, route = self._route_uri(ctx)
        self.fleet.clients.unsubscribe(self._caller(ctx).key, uri)
        return await self._relay(
            ctx, route, "resources/unsubscribe", _forward_params(ctx.params, uri=route.name)
        )

    # -- completions and logging ------------------------------------------------------------

    @_translated
    async def complete(self, ctx: Ctx, params: Any) -> Result:
        ref = dict((ctx.params or {}).get("ref") or {})
        if ref.get("type") == "ref/prompt":
            route = self.fleet.catalogue.prompt_routes.get(ref.get("name", ""))
            if route is None:
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {ref.get('name')}")
            ref["name"] = route.name
        else:
            found = self.fleet.catalogue.route_uri(ref.get("uri", ""))
            if found is None:
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown resource: {ref.get('uri')}")
            route = found
            ref["uri"] = route.name
        return await self._relay(ctx, route, "completion/complete", _forward_params(ctx.params, ref=ref))

    async def set_logging_level(self, ctx: Ctx, params: Any) -> Result:
        level = (ctx.params or {}).get("level")
        for backend in self.fleet.backends.values():
            if backend.available and backend.capabilities_have("logging"):
                try:
                    await backend.request("logging/setLevel", {"level": level})
                except (GatewayError, MCPError) as exc:
                    logger.info("server %s refused logging/setLevel: %s", backend.name, exc)
        return _finish(ctx, {})

    async def _backend_log(self, backend: Backend, method: str, params: Mapping[str, Any]) -> None:
        if method != "notifications/message":
            return
        params = dict(params)
        params["logger"] = f"{backend.name}/{params['logger']}" if params.get("logger") else backend.name
        callers = backend.callers()
        if callers:
            # The backend is working for these calls: tell their clients on the calls' streams.
            seen: set[Hashable] = set()
            for caller in callers:
                if caller.key in seen or not isinstance(caller, _Caller):
                    continue
                seen.add(caller.key)
                # 2026-07-28 clients opt in to logs per request, with a minimum level.
                if params.get("level") in allowed_log_levels(caller.ctx.protocol_version, caller.ctx.meta):
                    await _sdk.notify_request(caller.ctx, method, params)
            return
        await self.fleet.clients.broadcast(method, params)
