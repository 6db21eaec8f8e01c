"""Which gateway process owns a container, and the sweep of containers whose owner is gone.

Every container the gateway starts carries three labels:

- ``io.mcp-gateway.managed=true``: started by an MCP gateway;
- ``io.mcp-gateway.instance=<host>:<pid>:<start>``: the gateway process that owns it (its
  instance id, as `_owner` defines it; local processes carry the same id in their environment);
- ``io.mcp-gateway.server=<name>``: the server in that gateway's config.

A gateway that is killed (SIGKILL, OOM, power loss) cannot remove its containers. A gateway
process removes every managed container whose owner is gone when it launches its first container,
then once per `LEASE` while any of its containers runs (a lease that had not expired at the first
look is judged again once it has), judged two ways:

- *Provably dead on this host*: the owner ran here (same hostname) and no process with that pid
  and start time exists now. Assumption: gateways sharing a hostname share a pid namespace (true
  on one host; gateways in containers get their container id as hostname).
- *Lease expired, on any host*: the engine says the container has not run for longer than `LEASE`
  (exited that long ago, or created that long ago and never started). The lease is the
  container's own attachment: the owner holds it open (stdin, StdinOnce) for the container's whole
  life, and when the owner dies the engine closes the container's stdin, the MCP stdio shutdown,
  so the server exits. A live owner never leaves a stopped container that long: it removes each
  one within seconds (`docker.py`'s bounded teardown), and a start (create, attach, start) is
  bounded by a few engine calls. So this holds with a shared remote engine (``DOCKER_HOST``),
  whatever host the dead owner ran on, and needs no clock but the engine's.

When in doubt, keep: running containers of gateways on other hosts (an owner cannot be judged from
here; one that died leaves a running container only if its server ignores the end of stdin), of
live gateways (concurrently running test gateways included), and containers with labels we cannot
parse are left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress
from datetime import datetime
from typing import Any

from gateway.backends._owner import current_instance, instance_id, owner_is_dead, process_start

logger = logging.getLogger(__name__)

LABEL_MANAGED = "io.mcp-gateway.managed"
LABEL_INSTANCE = "io.mcp-gateway.instance"
LABEL_SERVER = "io.mcp-gateway.server"
__all__ = [
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_SERVER",
    "current_instance",
    "instance_id",
    "labels",
    "next_sweep_in",
    "owner_is_dead",
    "process_start",
    "sweep",
    "sweep_if_due",
]

# Seconds a managed container may stay stopped (or created, never started) before any gateway on
# the engine may remove it. Well above what a live owner takes to remove one it stopped (exit
# grace, `docker stop`, status, removal: under 30 s) or to start one (three engine calls).
LEASE = 120.0


def labels(server: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_INSTANCE: current_instance(), LABEL_SERVER: server}


_next_sweep = 0.0  # monotonic time of this process's next sweep (0: at its first launch)
_sweep_lock = threading.Lock()


def sweep_if_due(api: Any) -> list[str]:
    """`sweep`, unless this process swept less than `LEASE` ago; blocking (run it in a thread)."""
    global _next_sweep
    with _sweep_lock:
        if time.monotonic() < _next_sweep:
            return []
        removed = sweep(api)
        _next_sweep = time.monotonic() + LEASE
        return removed


def next_sweep_in() -> float:
    """Seconds until `sweep_if_due` sweeps again (0: it would now)."""
    return max(0.0, _next_sweep - time.monotonic())


def sweep(api: Any, *, lease: float | None = None) -> list[str]:
    """Remove every managed container whose owner is dead or whose lease expired (`LEASE` unless
    `lease`); returns their names. Blocking."""
    import docker.errors  # type: ignore[import-untyped]

    lease = LEASE if lease is None else lease
    now: float | None = None
    removed = []
    for container in api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        owner = (container.get("Labels") or {}).get(LABEL_INSTANCE, "")
        if owner == current_instance():
            continue
        if not owner_is_dead(owner):
            if container.get("State") == "running" or not _parses(owner):
                continue
            if now is None:
                # The engine's clock, as its timestamps: the gateway's may be skewed from a remote one.
                now = _timestamp(api.info().get("SystemTime"))
            if now is None or not _lease_expired(api, container, now, lease):
                continue
        name = ",".join(n.lstrip("/") for n in container.get("Names") or []) or container["Id"][:12]
        # Gone already, or being removed by another gateway's sweep: either way not ours to report.
        with suppress(docker.errors.NotFound, docker.errors.APIError):
            api.remove_container(container["Id"], force=True, v=True)
            removed.append(name)
    if removed:
        logger.info(
            "removed %d container(s) left behind by dead gateways: %s", len(removed), ", ".join(removed)
        )
    return removed


def _parses(owner: str) -> bool:
    parts = owner.rsplit(":", 2)
    return len(parts) == 3 and parts[1].isdigit()


def _lease_expired(api: Any, container: dict[str, Any], now: float, lease: float) -> bool:
    """Whether the engine says `container` has not run for `lease` seconds (when in doubt: no)."""
    import docker.errors

    try:
        state = api.inspect_container(container["Id"]).get("State") or {}
    except docker.errors.NotFound:
        return False  # removed meanwhile (by its owner, or another sweep)
    if state.get("Running") or state.get("Restarting") or state.get("Paused"):
        return False
    # Never started: its creation is when the lease began; else its last exit.
    started = _timestamp(state.get("StartedAt"))
    since = (
        _timestamp(state.get("FinishedAt")) if started is not None else float(container.get("Created") or 0)
    )
    return since is not None and since > 0 and now - since > lease


def _timestamp(text: object) -> float | None:
    """The engine's RFC 3339 time (nanoseconds, `Z`) in seconds; None for its zero time or junk."""
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    head, dot, rest = text.rstrip("Z").partition(".")
    fraction = "." + rest[:6] if dot else ""
    try:
        return datetime.fromisoformat(f"{head}{fraction}+00:00").timestamp()
    except ValueError:
        return None
