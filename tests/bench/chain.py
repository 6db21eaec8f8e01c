"""The middleware chain's own cost per call, in process: the full default chain (telemetry, auth,
ratelimit, masking, audit) around a terminal that answers at once, against an empty chain."""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

from gateway.config.models import MiddlewareSpec
from gateway.middleware import Call, Identity, Middleware, build_chain, instantiate

WARMUP = 200


def default_chain_specs(audit_db: Path) -> list[MiddlewareSpec]:
    key = "sha256:" + hashlib.sha256(b"bench-key").hexdigest()
    return [
        MiddlewareSpec(use="telemetry", options={"metrics_path": None}),
        MiddlewareSpec(
            use="auth",
            options={
                "api_keys": [{"name": "bench", "key": key, "roles": ["admin"]}],
                "rules": [{"roles": ["admin"]}],
            },
        ),
        MiddlewareSpec(
            use="ratelimit", options={"per_identity": "1000000/minute", "per_tool": "1000000/minute"}
        ),
        MiddlewareSpec(use="masking"),
        MiddlewareSpec(use="audit", options={"path": str(audit_db)}),
    ]


async def chain_cost(middlewares: list[Middleware], calls: int) -> float:
    """Median µs per call of `middlewares` around a terminal that answers at once (no I/O)."""
    result = {"content": [{"type": "text", "text": "2026-11-24T07:00:00+00:00 in UTC, nothing secret here"}]}

    async def terminal(call: Any) -> dict[str, Any]:
        return {"content": [dict(c) for c in result["content"]]}

    chain = build_chain(middlewares, terminal)
    identity = Identity("bench", frozenset({"admin"}), "api_key", {"key": "bench"})
    samples: list[float] = []
    for i in range(calls + WARMUP):
        call = Call(
            method="tools/call",
            params={"name": "time__get_current_time", "arguments": {"timezone": "UTC"}},
            identity=identity,
            name="time__get_current_time",
            server="time",
            original="get_current_time",
            request_id=i,
        )
        t0 = time.perf_counter()
        await chain(call)
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return samples[len(samples) // 2]


async def empty_and_full(audit_db: Path, calls: int) -> tuple[float, float]:
    """Median µs per call of an empty chain and of the full default one (its lifespans entered)."""
    middlewares = instantiate(default_chain_specs(audit_db))
    async with contextlib.AsyncExitStack() as stack:
        for middleware in middlewares:
            if hasattr(middleware, "lifespan"):
                await stack.enter_async_context(middleware.lifespan())
        empty = await chain_cost([], calls)
        full = await chain_cost(middlewares, calls)
    return empty, full
