"""Built-in `telemetry` middleware: an OpenTelemetry span per request and Prometheus metrics.

Spans follow the OpenTelemetry MCP semantic conventions: SERVER kind, named
`{mcp.method.name} {gen_ai.tool.name | gen_ai.prompt.name}`, with `mcp.method.name`,
`jsonrpc.request.id`, `gen_ai.operation.name` (`execute_tool`), `mcp.session.id`,
`mcp.protocol.version`, `mcp.resource.uri`, `error.type`, `rpc.response.status_code`, plus the
gateway's `mcp.server.name` (the backend), `mcp.gateway.backend_name` (the backend's own name for
a namespaced tool) and `mcp.gateway.outcome` (ok, tool_error, rate_limited, denied, error,
cancelled: also the `outcome` metric label). The caller's trace context is taken from the
request's `_meta` (`traceparent`/`tracestate`, SEP-414) or else its HTTP headers, and the span's
context goes on to the backend in the forwarded `params._meta`.

Options (`gateway.yaml`)::

    - use: telemetry
      options:
        service_name: mcp-gateway       # resource service.name (metrics; traces when exporting)
        otlp_endpoint: http://127.0.0.1:4318   # export spans over OTLP/HTTP (else: the global provider)
        sample_ratio: 1.0               # with otlp_endpoint: parent-based ratio sampling
        identity_label: false           # label calls (metric `identity`, span `user.id`)
        metrics_path: /metrics          # null: no metrics route
        metrics_auth: true              # unset: credentials needed when the auth middleware is on
        metrics_role: metrics           # who may scrape (or an admin key); unset: the admin role

Identities reach metrics and spans only when `identity_label` is on, and then only as the
identity's `labels["name"]` (or its name): never a credential. Metric names: see `_metrics`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from mcp.shared.exceptions import MCPError
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import __version__
from gateway.errors import DENIED, RATE_LIMITED, GatewayError
from gateway.middleware._metrics import Metrics
from gateway.middleware.base import Call, CallNext, Identity, Result

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from gateway.fleet import Fleet

__all__ = ["Telemetry", "TelemetryOptions"]

_SCOPE = "mcp-gateway"

# Error codes a server answers for a request it could not serve: per the MCP conventions, not
# errors of the server (no `error.type`, span status unset).
_CLIENT_ERRORS = frozenset({-32700, -32600, -32601, -32602, -32002})
_OUTCOMES = {RATE_LIMITED: "rate_limited", DENIED: "denied"}
_RESOURCE_METHODS = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})


class TelemetryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_name: str = Field(default="mcp-gateway", min_length=1)
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    identity_label: bool = False
    metrics_path: str | None = Field(default="/metrics", pattern=r"^/")
    metrics_auth: bool | None = Field(
        default=None,
        description="Whether a scrape needs credentials (an admin key, or an identity with "
        "`metrics_role`). Unset: whenever the gateway authenticates callers (the auth middleware).",
    )
    metrics_role: str | None = Field(
        default=None, min_length=1, description="The role that may scrape; unset: the admin API's role."
    )

    @field_validator("sample_ratio")
    @classmethod
    def _sampling_needs_own_provider(cls, value: float, info: ValidationInfo) -> float:
        if value != 1.0 and not info.data.get("otlp_endpoint"):
            raise ValueError(
                "sample_ratio applies to the provider built for otlp_endpoint; set the global "
                "TracerProvider's sampler where it is created (e.g. OTEL_TRACES_SAMPLER_ARG)"
            )
        return value


class Telemetry:
    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None, **options: Any) -> None:
        self.options = TelemetryOptions(**options)
        if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
            raise ValueError("tracer_provider must be an OpenTelemetry TracerProvider (set it in code)")
        if tracer_provider is not None and self.options.otlp_endpoint:
            raise ValueError("otlp_endpoint builds its own TracerProvider; do not pass one as well")
        # None: the global provider, resolved at each span (it may be set after we are built).
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self.metrics = Metrics(self.options.service_name)
        self._identity_label = self.options.identity_label
        if self.options.metrics_path:
            self.routes: list[BaseRoute] = [Route(self.options.metrics_path, self._scrape, methods=["GET"])]
        # Read by the app when it mounts `routes` (`gateway.app`): the counters tell who calls what.
        self.routes_need_credentials = self.options.metrics_auth
        self.routes_role = self.options.metrics_role

    # -- extras ---------------------------------------------------------------------------------

    def attach(self, fleet: Fleet) -> None:
        self.metrics.fleet = fleet

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        provider = self._otlp_provider() if self.options.otlp_endpoint else None
        if provider is not None:
            self._tracer = provider.get_tracer(_SCOPE, __version__)
        try:
            yield
        finally:
            if provider is not None:
                self._tracer = trace.NoOpTracer()
                # The exporter blocks while it posts the last batch (the collector may even be
                # served by this event loop): flush from a thread, and finish it despite cancellation.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(provider.shutdown)

    async def _scrape(self, request: Request) -> Response:
        body = self.metrics.render()
        fleet = self.metrics.fleet
        if fleet is not None:  # labels are names (tools, identities): masked should one be a secret
            body = fleet.secrets.mask_bytes(body)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def _otlp_provider(self) -> SdkTracerProvider:
        # Imported on use: gateways that do not export over OTLP never load protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        endpoint = self.options.otlp_endpoint or ""
        if urlsplit(endpoint).path in ("", "/"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"  # a collector's base URL, as OTEL_*_ENDPOINT
        provider = TracerProvider(
            resource=Resource.create({"service.name": self.options.service_name}),
            sampler=ParentBased(TraceIdRatioBased(self.options.sample_ratio)),
            shutdown_on_exit=False,  # shut down with the gateway, in lifespan()
        )
        # Headers (collector credentials) come from OTEL_EXPORTER_OTLP_HEADERS, never from config.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
        return provider

    # -- the middleware -------------------------------------------------------------------------

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.kind != "request":
            return await call_next(call)  # backend log lines are not requests: no span, no count
        ctx = call.context
        request = getattr(ctx, "request", None)
        headers: Mapping[str, str] | None = getattr(request, "headers", None)
        method = call.method
        target = call.name if method in ("tools/call", "prompts/get") and call.name else ""
        identity = _label(call.identity) if self._identity_label else ""
        attributes = self._attributes(call, ctx, request, headers, target, identity)
        metrics = self.metrics
        outcome = "ok"
        metrics.in_flight += 1
        start = time.perf_counter()
        # start_span + attach rather than start_as_current_span: its two context-manager layers
        # cost more than the rest of the span's bookkeeping.
        span = self._tracer.start_span(
            f"{method} {target}" if target else method,
            context=_parent(call.params.get("_meta"), headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        token = context_api.attach(trace.set_span_in_context(span))
        try:
            if call.server is not None:
                _inject(call)
            result = await call_next(call)
            if result.get("isError") is True:
                outcome = "tool_error"
                span.set_attribute("error.type", "tool_error")
                span.set_status(StatusCode.ERROR)
            return result
        except (GatewayError, MCPError) as exc:
            outcome = _OUTCOMES.get(exc.code, "error")
            code = str(exc.code)
            span.set_attribute("rpc.response.status_code", code)
            if exc.code not in _CLIENT_ERRORS:
                span.set_attribute("error.type", code)
                fleet = self.metrics.fleet
                # A backend's error message may quote a resolved secret; spans leave the gateway.
                span.set_status(StatusCode.ERROR, fleet.secrets.mask(exc.message) if fleet else exc.message)
            raise
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            outcome = "cancelled" if cancelled else "error"
            span.set_attribute("error.type", "cancelled" if cancelled else type(exc).__qualname__)
            span.set_status(StatusCode.ERROR)
            raise
        finally:
            metrics.in_flight -= 1
            metrics.record_call(
                (method, call.server or "", target, outcome, identity), time.perf_counter() - start
            )
            span.set_attribute("mcp.gateway.outcome", outcome)
            context_api.detach(token)
            span.end()

    @staticmethod
    def _attributes(
        call: Call, ctx: Any, request: Any, headers: Mapping[str, str] | None, target: str, identity: str
    ) -> dict[str, Any]:
        method = call.method
        attributes: dict[str, Any] = {"mcp.method.name": method}
        if call.request_id is not None:
            attributes["jsonrpc.request.id"] = str(call.request_id)
        if method == "tools/call":
            attributes["gen_ai.operation.name"] = "execute_tool"
            attributes["gen_ai.tool.name"] = target
        elif method == "prompts/get":
            attributes["gen_ai.prompt.name"] = target
        elif method in _RESOURCE_METHODS and call.name:
            attributes["mcp.resource.uri"] = call.name
        if call.server is not None:
            attributes["mcp.server.name"] = call.server
            if call.original and call.original != call.name:
                attributes["mcp.gateway.backend_name"] = call.original
        version = getattr(ctx, "protocol_version", None)
        if version:
            attributes["mcp.protocol.version"] = version
        if headers is not None:
            attributes["network.transport"] = "tcp"
            attributes["network.protocol.name"] = "http"
            session = headers.get("mcp-session-id")
            if session:
                attributes["mcp.session.id"] = session
            client = getattr(request, "client", None)
            if client is not None:
                attributes["client.address"] = client.host
                attributes["client.port"] = client.port
        elif ctx is not None:
            attributes["network.transport"] = "pipe"  # no HTTP request: the stdio transport
        if identity:
            attributes["user.id"] = identity
        return attributes


def _label(identity: Identity) -> str:
    return identity.labels.get("name") or identity.name


def _parent(meta: Any, headers: Mapping[str, str] | None) -> Context | None:
    """The caller's trace context: `_meta` first (per message), then the HTTP request's headers."""
    if isinstance(meta, Mapping) and "traceparent" in meta:
        carrier: Mapping[str, Any] = meta
    elif headers is not None and "traceparent" in headers:
        carrier = headers
    else:
        return None  # ambient context (e.g. an instrumented ASGI server's span)
    try:
        context = extract(carrier)
    except (TypeError, ValueError):
        return None
    # A malformed traceparent: start a new trace rather than an orphan with a broken parent.
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _inject(call: Call) -> None:
    """Put the current span's context into the `_meta` the backend receives (a new dict: the
    client's `_meta` object is not ours to change)."""
    meta = call.params.get("_meta")
    carrier: dict[str, Any] = dict(meta) if isinstance(meta, Mapping) else {}
    inject(carrier)
    if carrier:
        call.params["_meta"] = carrier
