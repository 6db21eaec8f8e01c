"""What a Docker backend's container is created with: pure functions of its config, checked before
anything is created. See `gateway.backends.docker` for the policy they implement."""

from __future__ import annotations

import os
from typing import Any

import docker.types  # type: ignore[import-untyped]

from gateway.config import secrets
from gateway.config.models import DockerServer
from gateway.errors import BackendStartError

TMPFS_OPTIONS = "rw,nosuid,nodev,noexec,size=16m"
NOBODY = "65534:65534"


def no_secrets(name: str, spec: DockerServer) -> None:
    fields: list[tuple[str, str]] = [("image", spec.image), *(("args", a) for a in spec.args)]
    fields += [("volumes", v) for v in spec.volumes] + [("user", spec.user or "")]
    for key, value in fields:
        if secrets.has_reference(value):
            raise BackendStartError(
                name,
                f"{name}: servers.{name}.{key} holds a secret reference; only `env` may (a container's "
                "command line, image, volumes and user are visible to `docker ps`/`docker inspect`)",
            )


def mounts(name: str, volumes: list[str], cwd: str) -> list[Any]:
    """`"host:container[:ro|rw]"` as bind mounts; relative host paths are taken from `cwd`."""
    result = []
    for i, volume in enumerate(volumes):
        parts = volume.split(":")
        mode = parts[2] if len(parts) == 3 else "rw"
        if (
            len(parts) not in (2, 3)
            or not parts[0]
            or not parts[1].startswith("/")
            or mode not in ("ro", "rw")
        ):
            raise BackendStartError(
                name,
                f'{name}: servers.{name}.volumes[{i}] must be "host:container[:ro|rw]" with an absolute '
                f"container path, not {volume!r}",
            )
        host = os.path.normpath(os.path.join(cwd, os.path.expanduser(parts[0])))
        if not os.path.exists(host):
            raise BackendStartError(name, f"{name}: servers.{name}.volumes[{i}]: {host} does not exist")
        result.append(docker.types.Mount(parts[1], host, type="bind", read_only=mode == "ro"))
    return result


def container_user(spec: DockerServer, image_user: str) -> str:
    """The configured user, else the image's unless it is root, else nobody."""
    if spec.user is not None:
        return spec.user
    uid = image_user.split(":", 1)[0]
    return image_user if uid not in ("", "root", "0") else NOBODY


def host_config(name: str, spec: DockerServer, cwd: str) -> dict[str, Any]:
    """Keyword arguments of `APIClient.create_host_config` for `spec`."""
    res = spec.resources
    return {
        "network_mode": spec.network,
        "read_only": spec.read_only,
        "cap_drop": ["ALL"],
        "cap_add": list(spec.cap_add) or None,
        "security_opt": ["no-new-privileges"],
        "mem_limit": res.memory,
        "memswap_limit": res.memory,  # else the engine allows as much swap again (cgroup v1)
        "pids_limit": res.pids,
        "nano_cpus": int(res.cpus * 1e9),
        # Without an init, the server is PID 1: SIGTERM does nothing and orphans are never reaped.
        "init": True,
        "tmpfs": dict.fromkeys(spec.tmpfs, TMPFS_OPTIONS),
        "mounts": mounts(name, spec.volumes, cwd) or None,
    }


def describe_exit(state: dict[str, Any], memory: str) -> str:
    code = state.get("ExitCode")
    text = f"container exited with {code}"
    if state.get("OOMKilled"):
        if code == 137:
            text += f" (OOM-killed: it reached its memory limit of {memory})"
        else:  # the kernel killed one of its processes, not necessarily the server
            text += f" (a process in it was OOM-killed at its memory limit of {memory})"
    elif code == 137:
        text += " (killed by SIGKILL)"
    elif code == 143:
        text += " (terminated by SIGTERM)"
    if state.get("Error"):
        text += f": {state['Error']}"
    return text
