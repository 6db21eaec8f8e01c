"""Which gateway process owns a backend, and the sweep of processes whose owner is gone.

A gateway process is named by its instance id ``<host>:<pid>:<start>``, where ``<start>`` is the
process's start time in clock ticks after boot (``/proc/<pid>/stat`` field 22; ``-`` where there
is no /proc), so a recycled pid is not mistaken for the owner. Containers carry it as a label
(`_docker_owner`); local processes carry it in their environment as ``MCP_GATEWAY_OWNER``, which
every process they spawn inherits.

A gateway that is killed (SIGKILL, OOM, power loss) cannot tear its backends down. Its direct
children die with it where the platform can arrange that (Linux: a parent-death signal, see
`_process`), but what they spawned is reparented and lives on. The first time a gateway process
launches a local backend it kills every process whose marker names a gateway that is *provably
dead*: it ran on this host (same hostname) and no process with that pid and start time exists now.
When in doubt, keep: processes of live gateways, of other hosts (a shared /proc is unlikely, a
copied environment is not) and with markers we cannot parse are left alone.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
from contextlib import suppress

logger = logging.getLogger(__name__)

ENV_OWNER = "MCP_GATEWAY_OWNER"
UNKNOWN_START = "-"


def process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot; None when no such process; "-" without /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else _probe_without_proc(pid)
    except OSError:
        return UNKNOWN_START
    # The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else UNKNOWN_START


def _probe_without_proc(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # EPERM: it exists, owned by someone else
        pass
    return UNKNOWN_START


def instance_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{process_start(pid) or UNKNOWN_START}"


def current_instance() -> str:
    """This process's instance id (another after a fork: the child is another owner)."""
    return _instance_of(os.getpid())


@functools.cache
def _instance_of(pid: int) -> str:
    return instance_id(pid)  # reads /proc once per process


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
    return UNKNOWN_START not in (now, start) and now != start


@functools.cache
def sweep_processes_once() -> tuple[int, ...]:
    """`sweep_processes`, the first time this process asks (thread-safe enough: a second concurrent
    sweep finds nothing more to kill). Blocking: run it in a thread."""
    return sweep_processes()


def sweep_processes() -> tuple[int, ...]:
    """SIGKILL every process (and its process group) whose marker names a dead gateway; their pids.

    The group goes too: a backend's helpers share its group even when one of them cleared its
    environment. Nothing is found without /proc (and nothing is needed where children cannot
    outlive us unnoticed by the next sweep: the marker is what is searched)."""
    if not os.path.isdir("/proc/self"):
        return ()
    me, own_group = current_instance(), os.getpgrp()
    needle = b"\0" + ENV_OWNER.encode() + b"="
    verdicts: dict[str, bool] = {}
    killed: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        owner = _marker(entry.name, needle)
        if owner is None or owner == me:
            continue
        if owner not in verdicts:
            verdicts[owner] = owner_is_dead(owner)
        if not verdicts[owner]:
            continue
        pid = int(entry.name)
        if pid == os.getpid():  # launched by a gateway that died since: not ours to end
            continue
        with suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    if killed:
        logger.info(
            "killed %d process(es) left behind by dead gateways: %s", len(killed), ", ".join(map(str, killed))
        )
    return tuple(killed)


def _marker(pid: str, needle: bytes) -> str | None:
    """The owner a process's environment names, if any (None also when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = b"\0" + f.read()
    except OSError:  # gone already, or another user's
        return None
    at = environ.find(needle)
    if at < 0:
        return None
    start = at + len(needle)
    end = environ.find(b"\0", start)
    return environ[start : end if end >= 0 else len(environ)].decode(errors="replace")
