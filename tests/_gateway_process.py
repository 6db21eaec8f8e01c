"""The gateway as a user runs it: `python -m gateway serve` in its own process, for the tests of what
only a real process shows (signals, dying, what outlives it)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import yaml
from anyio.abc import Process

from tests._infra import REPO_ROOT
from tests._support import START_TIMEOUT, free_port, gateway_command, wait_http_ready

OWNER_VARIABLE = "MCP_GATEWAY_OWNER"


@dataclass
class GatewayProcess:
    process: Process
    base: str
    log: Path

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def pid(self) -> int:
        return self.process.pid

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children(recursive=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait(self, timeout: float) -> int:
        """The exit status, once the process has exited (fails after `timeout` seconds)."""
        with anyio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def gateway_process(
    tmp_path: Path, cfg: dict[str, Any], *, name: str = "gateway", options: Sequence[str] = ()
) -> AsyncIterator[GatewayProcess]:
    """Start `python -m gateway serve` on `cfg` (with more command-line `options`) and wait until
    /readyz says ready; on exit, kill whatever is still running of it (a test that stops it
    itself has nothing left to kill)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / f"{name}.log"
    port = free_port()
    with log.open("wb") as err:
        process = await anyio.open_process(
            gateway_command(path, port, "--no-reload", *options),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    running = GatewayProcess(process, f"http://127.0.0.1:{port}", log)

    def exited() -> str | None:
        return None if process.returncode is None else f"gateway exited at start:\n{running.log_text()}"

    try:
        await wait_http_ready(f"{running.base}/readyz", timeout=START_TIMEOUT, exited=exited)
        yield running
    finally:
        if process.returncode is None:
            left: list[psutil.Process] = []
            with suppress(psutil.NoSuchProcess):
                left = running.descendants()
            process.send_signal(signal.SIGKILL)
            with anyio.fail_after(30):
                await process.wait()
            for proc in left:
                with suppress(psutil.NoSuchProcess):
                    proc.kill()


def marked_processes(*gateway_pids: int) -> list[psutil.Process]:
    """Live processes whose owner marker names one of the gateway processes `gateway_pids`."""
    wanted = {str(pid) for pid in gateway_pids}
    found = []
    for proc in psutil.process_iter():
        with suppress(psutil.Error):
            owner = proc.environ().get(OWNER_VARIABLE, "").rsplit(":", 2)
            if len(owner) == 3 and owner[1] in wanted:
                found.append(proc)
    return found


def zombies_of(pids: list[int]) -> list[int]:
    """Which of `pids` exist as zombies (dead, never reaped)."""
    found = []
    for pid in pids:
        with suppress(psutil.Error):
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                found.append(pid)
    return found
