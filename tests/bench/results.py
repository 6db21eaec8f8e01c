"""What a run is asked to do (`BenchSettings`) and what it measured (`LoadResult`, `ScenarioResult`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MetricValue = float | int | str | None


@dataclass(frozen=True)
class BenchSettings:
    calls: int = 500
    warmup: int = 50
    clients: int = 20
    calls_per_client: int = 100
    client_warmup: int = 5
    ready_timeout: float = 60.0
    call_timeout: float = 30.0
    stop_timeout: float = 5.0


@dataclass
class LoadResult:
    """One measured load pattern against one endpoint."""

    scenario: str
    mode: str  # "sequential" | "concurrent" | anything a later section defines
    clients: int
    calls: int
    errors: int
    wall_s: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    first_error: str | None = None
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)

    @property
    def ok_calls(self) -> int:
        return self.calls - self.errors

    @property
    def calls_per_s(self) -> float:
        return self.ok_calls / self.wall_s if self.wall_s > 0 else 0.0

    def pct(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "clients": self.clients,
            "calls": self.calls,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 4),
            "calls_per_s": round(self.calls_per_s, 1),
            "p50_ms": round_or_none(self.pct(50)),
            "p95_ms": round_or_none(self.pct(95)),
            "p99_ms": round_or_none(self.pct(99)),
            "max_ms": round_or_none(max(self.latencies_ms) if self.latencies_ms else None),
            "first_error": self.first_error,
            "cpu_ms_per_call": self.cpu_ms_per_call,
        }


@dataclass
class ScenarioResult:
    name: str
    title: str
    loads: list[LoadResult] = field(default_factory=list)
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    error: str | None = None

    def load(self, mode: str) -> LoadResult | None:
        return next((ld for ld in self.loads if ld.mode == mode), None)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100)."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def round_or_none(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)
