"""Assemble the middleware chain from `gateway.yaml`, once, in one place.

Built-ins and plugins are named the same way: a built-in's short name is only an alias for its
`"module:attr"`. The chain fails closed: a middleware whose own code raises anything but a
deliberate refusal (`GatewayError`) or a backend's own error turns the call into a JSON-RPC
internal error naming it; the raw result it was handling never reaches the client. What comes out
of `call_next` is not the middleware's doing: it passes through untouched, and anything but a
deliberate error is made one where the chain ends (`_end`), so no middleware is blamed for it.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from gateway.config._loader import Problem, options_model, validation_problems
from gateway.config.models import MiddlewareSpec
from gateway.config.secrets import Secrets
from gateway.errors import ChainFailure, ConfigError, GatewayError
from gateway.middleware.base import Call, CallNext, Middleware, Result
from gateway.middleware.masking import Masking
from gateway.middleware.telemetry import Telemetry

logger = logging.getLogger(__name__)

BUILTINS = {
    "auth": "gateway.middleware.auth:Auth",
    "ratelimit": "gateway.middleware.ratelimit:RateLimit",
    "masking": "gateway.middleware.masking:Masking",
    "telemetry": "gateway.middleware.telemetry:Telemetry",
    "audit": "gateway.middleware.audit:Audit",
    "pinning": "gateway.middleware.pinning:Pinning",
}


def load(target: str) -> Callable[..., Middleware]:
    """Import `"module:attr"` (or a built-in's short name)."""
    path = BUILTINS.get(target, target)
    module_name, sep, attr = path.partition(":")
    if not sep or not attr:
        close = difflib.get_close_matches(target, list(BUILTINS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"{target!r} is neither a built-in nor 'module:attr' ({hint}built-ins: {', '.join(BUILTINS)})"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc} (is it installed, on PYTHONPATH?)") from None
    try:
        factory: Callable[..., Middleware] = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return factory


def instantiate(
    specs: Sequence[MiddlewareSpec], *, source: str = "<config>", secrets: Secrets | None = None
) -> list[Middleware]:
    """Create every configured middleware, reporting all configuration problems at once.

    Constructors only validate and prepare (no connection, no file opened for writing): what needs
    I/O happens in `lifespan()`. So this is also how a config is checked without running it.
    References in options resolve against `secrets` (the gateway's; by default, `secrets:`'s
    defaults)."""
    instances, problems = create(specs, secrets or Secrets())
    if problems:
        raise ConfigError([str(replace(p, source=source)) for p in problems])
    return instances


def create(specs: Sequence[MiddlewareSpec], secrets: Secrets) -> tuple[list[Middleware], list[Problem]]:
    """The middlewares of `specs`, and every problem met creating them (keyed, not yet located).
    References in their options resolve against `secrets`, and are registered with it."""
    instances: list[Middleware] = []
    problems: list[Problem] = []
    for index, spec in enumerate(specs):
        label = f"middleware[{index}] ({spec.use})"
        try:
            factory = load(spec.use)
        except ValueError as exc:
            problems.append(Problem(f"{label}.use", str(exc), ("middleware", index, "use")))
            continue
        try:
            with secrets.expanding():
                instances.append(factory(**spec.options))
        except ValidationError as exc:
            model = options_model(factory, exc.title)
            where = ("middleware", index, "options")
            problems += validation_problems(exc, model, prefix=where, label=f"{label}.options")
        except Exception as exc:  # a plugin's own check: any exception is its refusal of the options
            problems.append(Problem(label, str(exc) or type(exc).__name__, ("middleware", index)))
    # The values masking masks are counted by the telemetry of the same chain (either may be
    # absent): connected where both are made, for a start and for every reload alike.
    counters = [m.metrics.record_masked for m in instances if isinstance(m, Telemetry)]
    for middleware in instances:
        if isinstance(middleware, Masking):
            middleware.count_with(counters)
    return instances, problems


def build_chain(middlewares: Sequence[Middleware], terminal: CallNext) -> CallNext:
    """Compose `middlewares` around `terminal`, the first listed outermost."""
    handler = _end(terminal)
    for middleware in reversed(middlewares):
        handler = _link(middleware, handler)
    return handler


def _end(terminal: CallNext) -> CallNext:
    """`terminal`, letting out only deliberate errors.

    Whatever else it raises (a bug in the relay, a transport error nobody translated) becomes an
    internal error here, once, so that every link can tell its own failure from what came out of
    `call_next`: below a link, nothing but `GatewayError` and `MCPError` is ever raised."""

    async def end(call: Call) -> Result:
        try:
            return await terminal(call)
        except (GatewayError, MCPError):
            raise
        except Exception as exc:
            logger.exception("relaying %s failed", call.method)
            raise GatewayError("Internal gateway error") from exc

    return end


def _link(middleware: Middleware, call_next: CallNext) -> CallNext:
    name = type(middleware).__name__

    async def run(call: Call) -> Result:
        try:
            return await middleware(call, call_next)
        except (GatewayError, MCPError):
            raise  # a deliberate refusal, or a backend's own error passing through
        except Exception as exc:
            # `call_next` raises nothing else (see `_end`): this is the middleware's own failure.
            logger.exception("middleware %s failed on %s; failing closed", name, call.method)
            raise ChainFailure(f"request refused: middleware {name} failed") from exc

    return run


def extras(middlewares: Sequence[Middleware], attribute: str) -> list[Any]:
    """The optional extras (`routes`, `lifespan`, `authenticate`) the middlewares provide."""
    return [getattr(m, attribute) for m in middlewares if hasattr(m, attribute)]
