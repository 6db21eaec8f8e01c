"""Which gateway process owns a container, and the sweep of containers whose owner is gone.

Every container the gateway starts carries three labels:

- ``io.mcp-gateway.managed=true``: started by an MCP gateway;
- ``io.mcp-gateway.instance=<host>:<pid>:<start>``: the gateway process that owns it, where
  ``<start>`` is that process's start time in clock ticks after boot (``/proc/<pid>/stat`` field
  22; ``-`` where there is no /proc), so a recycled pid is not mistaken for the owner;
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
import os
import socket
import threading
from contextlib import suppress
from typing import Any

logger = logging.getLogger(__name__)

LABEL_MANAGED = "io.mcp-gateway.managed"
LABEL_INSTANCE = "io.mcp-gateway.instance"
LABEL_SERVER = "io.mcp-gateway.server"
_UNKNOWN_START = "-"


def process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot; None when no such process; "-" without /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else _probe_without_proc(pid)
    except OSError:
        return _UNKNOWN_START
    # The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else _UNKNOWN_START


def _probe_without_proc(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # EPERM: it exists, owned by someone else
        pass
    return _UNKNOWN_START


def instance_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{process_start(pid) or _UNKNOWN_START}"


_instance: tuple[int, str] | None = None


def current_instance() -> str:
    """This process's instance id (recomputed after a fork: the child is another owner)."""
    global _instance
    if _instance is None or _instance[0] != os.getpid():
        _instance = (os.getpid(), instance_id())
    return _instance[1]


def labels(server: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_INSTANCE: current_instance(), LABEL_SERVER: server}


def owner_is_dead(instance: str) -> bool:
    """True only when the owning gateway provably no longer runs (see the module doc)."""
    parts = instance.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid, start = parts[0], int(parts[1]), parts[2]
    if host != socket.gethostname():
        return False
    now = process_start(pid)
    if now is None:
        return True
    # The pid is in use: by the owner unless both start times are known and differ (pid reuse).
    return _UNKNOWN_START not in (now, start) and now != start


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
