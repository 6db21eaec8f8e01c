"""Per-server call statistics for the admin API: counts, error rate, latency percentiles.

`CallStats.record(server, seconds, ok)` is a plain, non-blocking callable meant to be hooked where
backend calls finish (see the admin package docs). Percentiles are over the last `window` calls of
each server (nearest-rank), so they follow the server's recent behaviour at bounded memory.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Server:
    calls: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=deque)


class CallStats:
    def __init__(self, window: int = 1024) -> None:
        self.window = window
        self._servers: dict[str, _Server] = {}

    def record(self, server: str, seconds: float, ok: bool) -> None:
        stats = self._servers.get(server)
        if stats is None:
            stats = self._servers[server] = _Server(latencies=deque(maxlen=self.window))
        stats.calls += 1
        if not ok:
            stats.errors += 1
        stats.latencies.append(max(0.0, seconds))

    def forget(self, server: str) -> None:
        self._servers.pop(server, None)

    def snapshot(self, server: str) -> dict[str, Any]:
        stats = self._servers.get(server) or _Server()
        ordered = sorted(stats.latencies)
        return {
            "total": stats.calls,
            "errors": stats.errors,
            "error_rate": round(stats.errors / stats.calls, 4) if stats.calls else 0.0,
            "p50_ms": _percentile_ms(ordered, 0.50),
            "p95_ms": _percentile_ms(ordered, 0.95),
        }


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return round(ordered[rank - 1] * 1000, 3)
