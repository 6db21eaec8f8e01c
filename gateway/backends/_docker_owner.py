"""Which gateway process owns a container, and the sweep of containers whose owner is gone.

Every container the gateway starts carries three labels:

- ``io.mcp-gateway.managed=true``: started by an MCP gateway;
- ``io.mcp-gateway.instance=<host>:<pid>:<start>``: the gateway process that owns it (its
  instance id, as `_owner` defines it; local processes carry the same id in their environment);
- ``io.mcp-gateway.server=<name>``: the server in that gateway's config.

A gateway that is killed (SIGKILL, OOM, power loss) cannot remove its containers. The first time a
gateway process starts a Docker backend, it removes every managed container whose owner is
*provably dead*: the owner ran on this host (same hostname) and no process with that pid and
start time exists now. When in doubt, keep: containers of live gateways (concurrently running test
gateways included), of gateways on other hosts sharing the engine, and with labels we cannot parse
are left alone. Assumption: gateways sharing a hostname share a pid namespace (true on one host;
gateways in containers get their container id as hostname).
"""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
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
    "owner_is_dead",
    "process_start",
    "sweep",
    "sweep_once",
]


def labels(server: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_INSTANCE: current_instance(), LABEL_SERVER: server}


_swept = False
_sweep_lock = threading.Lock()


def sweep_once(api: Any) -> list[str]:
    """Remove leftovers of dead gateways, the first time this process asks; blocking (run in a thread)."""
    global _swept
    with _sweep_lock:
        if _swept:
            return []
        removed = sweep(api)
        _swept = True
        return removed


def sweep(api: Any) -> list[str]:
    """Remove every managed container whose owner is dead; returns their names. Blocking."""
    import docker.errors  # type: ignore[import-untyped]

    removed = []
    for container in api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        owner = (container.get("Labels") or {}).get(LABEL_INSTANCE, "")
        if owner == current_instance() or not owner_is_dead(owner):
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
