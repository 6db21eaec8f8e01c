"""The telemetry middleware's metrics: OpenTelemetry instruments on a private MeterProvider, read
out as Prometheus text.

Every gateway gets its own MeterProvider and Prometheus registry (never the process-wide ones), so
two gateways in one process (tests, embedding) never mix or double-register their series.

Exported families (Prometheus names):

    mcp_gateway_calls_total{method,server,tool,outcome[,identity]}   counter
    mcp_gateway_call_duration_seconds{method,server,tool,outcome}    histogram, 0.5 ms .. 60 s
    mcp_gateway_calls_in_flight                                      gauge
    mcp_gateway_masked_total{detector,server}                        counter
    mcp_gateway_backend_up{server}                                   gauge, 1 when running
    mcp_gateway_backend_restarts_total{server}                       counter
    mcp_gateway_backend_in_flight{server}                            gauge
    mcp_gateway_client_sessions                                      gauge

`tool` is the public tool or prompt name ("" for lists, resources and completions), `server` the
backend ("" for merged lists), `identity` only with `identity_label: true`. Handshake-era clients
count as sessions; 2026-07-28 clients have none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from gateway import __version__

if TYPE_CHECKING:
    from gateway.backends import Backend
    from gateway.fleet import Fleet

_BackendValue = Callable[["Backend"], int]
_Callback = Callable[[CallbackOptions], Iterable[Observation]]

# Relayed calls on loopback take ~1 ms; a cached answer (lists) well under that.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

# method, server, tool, outcome, identity ("" when identities are not labelled)
CallKey = tuple[str, str, str, str, str]


class Metrics:
    def __init__(self, service_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        reader = PrometheusMetricReader(scope_info_enabled=False, registry=self.registry)
        self._provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": service_name}),
            # Prometheus text carries no exemplars; offering each measurement to a reservoir
            # would only cost time on every call.
            exemplar_filter=AlwaysOffExemplarFilter(),
            shutdown_on_exit=False,  # an atexit hook would keep every instance (and its fleet) alive
        )
        meter = self._provider.get_meter("mcp-gateway", __version__)
        self.fleet: Fleet | None = None
        # Calls are counted in a dict and observed at scrape time: an increment costs a fraction
        # of a synchronous Counter.add (which hashes its attributes on every call).
        self.calls: dict[CallKey, int] = {}
        self.in_flight = 0
        self._histogram_attributes: dict[CallKey, dict[str, str]] = {}
        self._duration = meter.create_histogram(
            "mcp_gateway.call.duration",
            unit="s",
            description="Time from a request entering the telemetry middleware to its answer.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self._masked = meter.create_counter(
            "mcp_gateway.masked", description="Values masked in results and logs, by detector."
        )
        meter.create_observable_counter(
            "mcp_gateway.calls", [self._observe_calls], description="Requests answered, by outcome."
        )
        meter.create_observable_gauge(
            "mcp_gateway.calls.in_flight",
            [lambda _: [Observation(self.in_flight)]],
            description="Requests inside the chain now.",
        )
        meter.create_observable_gauge(
            "mcp_gateway.backend.up",
            [self._per_backend(lambda b: int(b.available))],
            description="1 when the backend is running.",
        )
        meter.create_observable_counter(
            "mcp_gateway.backend.restarts",
            [self._per_backend(lambda b: b.restarts)],
            description="Restarts after a failure since the gateway started.",
        )
        meter.create_observable_gauge(
            "mcp_gateway.backend.in_flight",
            [self._per_backend(lambda b: b.in_flight)],
            description="Requests the backend is working on now.",
        )
        meter.create_observable_gauge(
            "mcp_gateway.client.sessions",
            [lambda _: [Observation(len(self.fleet.clients) if self.fleet else 0)]],
            description="Client connections the gateway is serving.",
        )

    def record_call(self, key: CallKey, seconds: float) -> None:
        self.calls[key] = self.calls.get(key, 0) + 1
        attributes = self._histogram_attributes.get(key)
        if attributes is None:
            # Identities stay off the histogram: 16 buckets per identity is too many series.
            method, server, tool, outcome, _ = key
            attributes = {"method": method, "server": server, "tool": tool, "outcome": outcome}
            self._histogram_attributes[key] = attributes
        self._duration.record(seconds, attributes)

    def record_masked(self, detector: str, server: str) -> None:
        self._masked.add(1, {"detector": detector, "server": server})

    def render(self) -> bytes:
        """The Prometheus text exposition of every instrument (runs the observable callbacks)."""
        return generate_latest(self.registry)

    def _observe_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        for (method, server, tool, outcome, identity), count in list(self.calls.items()):
            labels = {"method": method, "server": server, "tool": tool, "outcome": outcome}
            if identity:
                labels["identity"] = identity
            yield Observation(count, labels)

    def _per_backend(self, value: _BackendValue) -> _Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if self.fleet is None:
                return []
            return [Observation(value(b), {"server": name}) for name, b in self.fleet.backends.items()]

        return observe
