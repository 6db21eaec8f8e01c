"""What a middleware sees and returns.

A middleware is a small class with one entry point::

    class Stamp:
        def __init__(self, **options): ...
        async def __call__(self, call: Call, call_next: CallNext) -> Result:
            call.params.setdefault("_meta", {})["x-stamped"] = True   # rewrite the request
            result = await call_next(call)                            # or deny: raise Denied(...)
            return result                                             # or rewrite the result

Every client request (`tools/list`, `tools/call`, `resources/read`, ...) and every notification a
backend sends to clients (`notifications/message`, kind "notification") passes through it.
Optional extras a middleware may define:
- `routes`: Starlette routes to mount beside the MCP endpoint (e.g. `/metrics`); with
  `routes_need_credentials` (True; None: when the chain authenticates callers) they admit only an
  admin key or an identity with `routes_role` (None: the admin API's role);
- `lifespan()`: an async context manager entered while the gateway runs;
- `attach(fleet)`: called once with the `Fleet` (backend states, log buffers, catalogue);
- `authenticate(request)`: HTTP authentication of the MCP endpoint, returning an `Identity` or a
  Starlette `Response` (the refusal, e.g. a 401) — the first middleware that has it is used;
- `local_identity()`: the `Identity` of whoever launched the gateway over stdio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Result = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling. `labels` are the only identity data that may reach metrics.

    `name` is unique only per `authenticator` (the configured check that vouched for it: `api_keys`,
    `jwt.0`, ...) and `issuer` (a JWT's `iss`): the three together are the principal a 2025-11-25
    session is bound to."""

    name: str
    roles: frozenset[str] = frozenset()
    source: str = "anonymous"
    labels: Mapping[str, str] = field(default_factory=dict)
    authenticator: str = ""
    issuer: str | None = None


ANONYMOUS = Identity("anonymous")


@dataclass(slots=True)
class Call:
    method: str
    params: dict[str, Any]  # as the client sent them; rewrites here reach the backend
    identity: Identity = ANONYMOUS
    kind: Literal["request", "notification"] = "request"
    name: str | None = None  # the public (namespaced) tool or prompt name, or resource URI
    server: str | None = None  # the backend that serves it (None for merged lists)
    original: str | None = None  # the backend's own name or URI
    request_id: str | int | None = None
    state: dict[str, Any] = field(default_factory=dict)  # scratch space shared along the chain
    context: Any = field(default=None, repr=False)  # the client request (`gateway.front.Front`)


CallNext = Callable[[Call], Awaitable[Result]]


class Middleware(Protocol):
    async def __call__(self, call: Call, call_next: CallNext) -> Result: ...
