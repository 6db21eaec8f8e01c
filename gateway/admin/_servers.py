"""What the admin API says about a backend, and how it drives one (start/stop/restart, register)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
from pydantic import ValidationError

from gateway import naming
from gateway.admin._errors import ApiError, timeout
from gateway.admin._record import iso
from gateway.admin._redact import redact
from gateway.admin._sse import log_line
from gateway.admin.stats import CallStats
from gateway.backends import Backend, Event, State
from gateway.config._loader import validation_problems
from gateway.config.models import GatewayConfig, ServerSpec, namespace_of
from gateway.config.secrets import Secrets
from gateway.config.validation import reference_problems
from gateway.fleet import Fleet

# However long a server may take by its config, an admin request does not wait longer than this.
MAX_WAIT = 600.0

_HEALTH = {
    State.RUNNING: "healthy",
    State.STARTING: "starting",
    State.STOPPING: "stopping",
    State.STOPPED: "stopped",
    State.BACKOFF: "unhealthy",
    State.FAILED: "unhealthy",
}


def health(backend: Backend, fleet: Fleet, last_test: dict[str, Any] | None) -> dict[str, Any]:
    status = _HEALTH[backend.state]
    if backend.dormant and backend.state is State.STOPPED:
        status = "dormant"  # stopped on purpose (lazy, idle); the next call wakes it
    health_failure = next(
        (e for e in reversed(fleet.events) if e.server == backend.name and e.category == "health"), None
    )
    return {
        "status": status,
        "ok": status in ("healthy", "dormant"),
        "last_error": backend.last_error,
        "last_health_failure": None if health_failure is None else iso(health_failure.time),
        "last_test": last_test,
    }


def summary(
    name: str, backend: Backend, fleet: Fleet, stats: CallStats, last_test: dict[str, Any] | None
) -> dict[str, Any]:
    started = backend.started_at
    return {
        "name": name,
        "type": backend.spec.type,
        "state": backend.state.value,
        "available": backend.available,
        "required": backend.spec.required,
        "health": health(backend, fleet, last_test),
        "started_at": None if started is None else iso(started),
        "uptime_seconds": None if started is None else round(max(0.0, time.time() - started), 3),
        "restarts": backend.restarts,
        "protocol_version": backend.protocol_version,
        "tools": sum(1 for route in fleet.catalogue.tool_routes.values() if route.server == name),
        "in_flight": backend.in_flight,
        "calls": stats.snapshot(name),
    }


def catalogue(name: str, backend: Backend, fleet: Fleet) -> dict[str, Any]:
    """The backend's own listing with its public names; `exposed` false for filtered-out tools;
    `collisions` the contested names it keeps or was renamed out of."""
    ns = namespace_of(name, backend.spec)
    exposed = {r.name for r in fleet.catalogue.tool_routes.values() if r.server == name}
    # Renames are decided over every known backend, down ones included: `known` has them all.
    names = fleet.catalogue.known or fleet.catalogue
    listing = backend.listing
    return {
        "namespace": ns,
        "tools": [
            {
                "name": names.public_name("tool", name, ns, t["name"]),
                "original": t["name"],
                "title": t.get("title"),
                "description": t.get("description"),
                "exposed": t["name"] in exposed,
            }
            for t in listing.tools
        ],
        "prompts": [names.public_name("prompt", name, ns, p["name"]) for p in listing.prompts],
        "resources": [names.public_name("resource", name, ns, r["uri"]) for r in listing.resources],
        "templates": [naming.public_uri(ns, t["uriTemplate"]) for t in listing.templates],
        "collisions": collisions(fleet, name),
    }


def collisions(fleet: Fleet, server: str | None = None) -> list[dict[str, str]]:
    """The catalogue's name collisions (those `server` is in, if given)."""
    return [c.as_dict() for c in fleet.catalogue.collisions if server is None or server in (c.kept, c.server)]


def detail(
    name: str,
    backend: Backend,
    fleet: Fleet,
    stats: CallStats,
    last_test: dict[str, Any] | None,
    events: list[dict[str, Any]],
    log_tail: int,
) -> dict[str, Any]:
    lines = backend.log.tail(log_tail)
    return {
        **summary(name, backend, fleet, stats, last_test),
        "dormant": backend.dormant,
        "config": redact(backend.spec.model_dump(mode="json")),
        "process": {"pid": backend.log.pid, "exit_code": backend.log.exit_code},
        "catalogue": catalogue(name, backend, fleet),
        "events": events,
        "logs": [log_line(line) for line in lines],
    }


# -- driving a backend -------------------------------------------------------------------------


async def settle(fleet: Fleet, backend: Backend, done: Callable[[], bool], timeout: float) -> bool:
    """Wait (bounded) until `done()`, re-checking on each of the backend's state events."""
    changed = anyio.Event()

    def listener(event: Event) -> None:
        if event.server == backend.name:
            changed.set()

    fleet.event_listeners.append(listener)
    try:
        with anyio.move_on_after(timeout):
            while not done():
                await changed.wait()
                changed = anyio.Event()
    finally:
        fleet.event_listeners.remove(listener)
    return done()


def started(backend: Backend) -> bool:
    return backend.state in (State.RUNNING, State.FAILED) or backend.dormant


def outcome(name: str, action: str, backend: Backend, ok: bool, began: float) -> dict[str, Any]:
    return {
        "server": name,
        "action": action,
        "ok": ok,
        "state": backend.state.value,
        "error": None if ok else (backend.last_error or f"server is {backend.state.value}"),
        "duration_ms": round((time.perf_counter() - began) * 1000, 3),
    }


def failed(name: str, action: str, state: str | None, error: str) -> dict[str, Any]:
    return {"server": name, "action": action, "ok": False, "state": state, "error": error, "duration_ms": 0.0}


async def act(fleet: Fleet, name: str, backend: Backend, action: str, wait: bool) -> dict[str, Any]:
    """start | stop | restart; with `wait`, until the backend settled (bounded by its start-up timeout)."""
    began = time.perf_counter()
    limit = min(backend.spec.startup_timeout + 5, MAX_WAIT)
    if action == "stop":
        try:
            await backend.stop("stopped by admin")
        except TimeoutError:
            raise timeout(name) from None
        return outcome(name, action, backend, backend.state in (State.STOPPED, State.FAILED), began)
    if action == "restart":
        try:
            await backend.restart()
        except TimeoutError:
            raise timeout(name) from None
    else:
        backend.start()
    if not wait:
        return outcome(name, action, backend, True, began)
    await settle(fleet, backend, lambda: started(backend), limit)
    return outcome(name, action, backend, backend.available or backend.dormant, began)


# -- runtime registration ----------------------------------------------------------------------


def validate_registration(body: Any, fleet: Fleet) -> tuple[str, ServerSpec]:
    """The `{"name", "spec"}` body checked exactly as gateway.yaml's `servers:` entries are."""
    if not isinstance(body, dict) or set(body) - {"name", "spec"}:
        raise ApiError(422, "validation_failed", 'the body must be {"name": ..., "spec": {...}}')
    name, spec = body.get("name"), body.get("spec")
    if not isinstance(name, str) or not isinstance(spec, dict):
        raise ApiError(
            422,
            "validation_failed",
            '"name" must be a string and "spec" an object (a gateway.yaml servers entry)',
            {"errors": [{"key": "name" if not isinstance(name, str) else "spec", "message": "wrong type"}]},
        )
    # As a config file's entry is checked (gateway.config.validation): the model, then the secret
    # references its launch would resolve.
    data = {"servers": {name: spec}}
    try:
        parsed = GatewayConfig.model_validate(data)
        # Against the running gateway's `secrets:`; what they resolve to is dropped (as a check's).
        problems = reference_problems(data, Secrets(fleet.secrets.source))
    except ValidationError as exc:
        problems = validation_problems(exc, GatewayConfig)
    if problems:
        errors = [{"key": p.key, "message": p.message} for p in problems]
        raise ApiError(
            422,
            "validation_failed",
            "invalid server spec: " + "; ".join(f"{e['key']}: {e['message']}" for e in errors),
            {"errors": errors},
        ) from None
    if name in fleet.backends or name in fleet.config.servers:
        raise ApiError(409, "conflict", f"server {name!r} already exists", {"server": name})
    new = parsed.servers[name]
    ns = namespace_of(name, new)
    for other, spec_ in fleet.config.servers.items():
        if ns and namespace_of(other, spec_) == ns:
            message = (
                f"servers {other!r} and {name!r} would both use the namespace {ns!r}; "
                "set a different `prefix:`"
            )
            raise ApiError(
                422,
                "validation_failed",
                message,
                {"errors": [{"key": f"servers.{name}.prefix", "message": message}]},
            )
    return name, new
