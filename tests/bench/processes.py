"""The servers under test as processes: each in its own process group, started and stopped within
bounds, with what they cost (CPU time, resident memory).

`BenchContext` is what a scenario gets: the settings, a work directory, and servers to start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped, unused-ignore]
import yaml

from tests._infra import REPO_ROOT
from tests._support import free_port, gateway_command, wait_http_ready
from tests.bench.results import BenchSettings, MetricValue

LOOPBACK = "127.0.0.1"


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class ProcessManager:
    """Starts subprocesses in new sessions and kills whole groups (plus strays) on stop."""

    def __init__(self, workdir: Path, stop_timeout: float) -> None:
        self.workdir = workdir
        self.stop_timeout = stop_timeout
        self._procs: list[ManagedProcess] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        log_path = self.workdir / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        mp = ManagedProcess(name=name, popen=popen, log_path=log_path, log_file=log_file)
        self._procs.append(mp)
        return mp

    def stop(self, mp: ManagedProcess) -> None:
        if mp in self._procs:
            self._procs.remove(mp)
        # Backends may have left the group (setsid): remember every descendant before killing,
        # and (as child subreaper) catch the orphans it re-parents to us while it shuts down.
        try:
            descendants = psutil.Process(mp.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        ours_before = {p.pid for p in _own_children()}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if mp.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(mp.pid, sig)
            try:
                mp.popen.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(mp.pid, signal.SIGKILL)  # leftovers still in the group
        kill_processes(descendants, self.stop_timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            mp.popen.wait(timeout=self.stop_timeout)
        orphans = [p for p in _own_children() if p.pid not in ours_before and p.pid != mp.pid]
        kill_processes(orphans, self.stop_timeout)
        mp.log_file.close()

    def stop_all(self) -> None:
        for mp in list(reversed(self._procs)):
            self.stop(mp)


def kill_processes(procs: Sequence[psutil.Process], timeout: float) -> None:
    alive: list[psutil.Process] = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running():
                p.terminate()
                alive.append(p)
    _gone, alive = psutil.wait_procs(alive, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=timeout)


def _own_children() -> list[psutil.Process]:
    try:
        return list(psutil.Process().children(recursive=False))
    except psutil.Error:
        return []


def reap_own_children(timeout: float) -> None:
    """Last resort: anything this bench process started (e.g. stdio backends) and left running."""
    with contextlib.suppress(psutil.Error):
        kill_processes(psutil.Process().children(recursive=True), timeout)


def become_child_subreaper() -> bool:
    """Linux: orphans of our servers' backends re-parent to us, so they can be found and killed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def cpu_seconds(server_pid: int | None) -> dict[str, float]:
    """CPU time used so far by the client (this process), the server and its backends."""

    def used(p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    me = psutil.Process()
    out = {"client": used(me), "server": 0.0, "backends": 0.0}
    owner = me
    if server_pid is not None:
        with contextlib.suppress(psutil.Error):
            owner = psutil.Process(server_pid)
            out["server"] = used(owner)
    for child in owner.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out["backends"] += used(child)
    return out


def cpu_per_call(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) * 1000.0 / max(calls, 1), 3) for k in before}


def rss_metrics(pid: int, prefix: str) -> dict[str, MetricValue]:
    """RSS of the process itself and, separately, of all its descendants (MiB)."""
    try:
        proc = psutil.Process(pid)
        own = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.Error as exc:
        return {f"{prefix}_rss_error": str(exc)}
    child_rss = 0
    for c in children:
        with contextlib.suppress(psutil.Error):
            child_rss += c.memory_info().rss
    return {
        f"{prefix}_rss_mib": round(own / 2**20, 1),
        f"{prefix}_children_rss_mib": round(child_rss / 2**20, 1),
        f"{prefix}_children": len(children),
    }


@dataclass
class RunningServer:
    process: ManagedProcess
    base_url: str
    ready_s: float
    config: Path | None = None  # a gateway's gateway.yaml

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"


@dataclass
class BenchContext:
    settings: BenchSettings
    procs: ProcessManager
    workdir: Path
    log: Callable[[str], None]

    def write_yaml(self, name: str, data: dict[str, Any]) -> Path:
        path = self.workdir / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    @contextlib.asynccontextmanager
    async def http_server(
        self, name: str, argv: list[str], port: int, ready_path: str = "/readyz"
    ) -> AsyncIterator[RunningServer]:
        """Start an HTTP server subprocess, wait (bounded) for ``ready_path`` -> 200, stop it after."""
        base_url = f"http://{LOOPBACK}:{port}"
        t0 = time.perf_counter()
        mp = self.procs.spawn(name, argv)
        try:
            await wait_ready(mp, base_url + ready_path, self.settings.ready_timeout)
            ready_s = time.perf_counter() - t0
            self.log(f"  {name}: ready in {ready_s:.2f}s on {base_url} (pid {mp.pid})")
            yield RunningServer(process=mp, base_url=base_url, ready_s=ready_s)
        finally:
            self.procs.stop(mp)

    @contextlib.asynccontextmanager
    async def gateway_server(self, name: str, config: dict[str, Any]) -> AsyncIterator[RunningServer]:
        """Run ``python -m gateway serve`` with ``config`` (a dict written as YAML)."""
        cfg = self.write_yaml(f"{name}.yaml", config)
        port = free_port()
        async with self.http_server(name, gateway_command(cfg, port), port) as srv:
            srv.config = cfg
            yield srv


async def wait_ready(mp: ManagedProcess, url: str, limit_s: float) -> None:
    """`wait_http_ready` on `mp`, whose log tail explains a failure."""

    def exited() -> str | None:
        rc = mp.popen.poll()
        return None if rc is None else f"{mp.name} exited with code {rc} before ready"

    try:
        await wait_http_ready(url, timeout=limit_s, exited=exited)
    except (RuntimeError, TimeoutError) as exc:
        detail = str(exc) if isinstance(exc, RuntimeError) else f"{mp.name} {exc}"
        raise type(exc)(f"{detail}; log tail:\n{mp.log_tail()}") from None
