"""A crash storm: hundreds of concurrent calls from several clients while backends are SIGKILLed
over and over. Every call is answered (a result or a JSON-RPC error, none hanging), the fleet
recovers, and when the gateway stops nothing is left: no process, no zombie.

A real gateway process, real clients (the `mcp` SDK's, both protocol revisions) over HTTP, and our
misbehaving server as the backends, each with a grandchild; kills use the pid its `pid()` reports.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections import Counter
from pathlib import Path

import anyio
import psutil
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from tests._gateway_process import gateway_process, marked_processes, zombies_of
from tests._support import misbehave, wait_until

pytestmark = pytest.mark.anyio

BACKENDS = ("mb1", "mb2", "mb3", "mb4")
KILLS_EACH = 6  # 24 in all
CALLS_AT_ONCE = 50  # per client; four clients
MIN_CALLS = 200
# Bounds for a loaded 2-core machine: an answer (the backend's `timeout` is 30 s), a restart.
CALL_BOUND = 45.0
RESTART_BOUND = 60.0


def _server() -> dict[str, object]:
    # Restarted at once, without end: the storm is the point, not the circuit breaker.
    return misbehave("--spawn-child", restart="always", max_restarts=10_000, backoff=[0.05, 0.2], timeout=30)


async def test_every_call_is_answered_through_a_storm_of_backend_kills(tmp_path: Path) -> None:
    cfg = {"servers": {name: _server() for name in BACKENDS}}
    outcomes: Counter[str] = Counter()
    killed: list[int] = []
    done = anyio.Event()

    async with gateway_process(tmp_path, cfg) as gw:

        async def kill_repeatedly(name: str) -> None:
            async with SdkClient(gw.url) as client:
                for _ in range(KILLS_EACH):
                    with anyio.fail_after(RESTART_BOUND):  # until it is back and says who it is
                        while True:
                            try:
                                result = await client.call_tool(f"{name}__pid", {})
                            except MCPError:
                                await anyio.sleep(0.05)
                                continue
                            if not result.is_error and result.structured_content:
                                break
                            await anyio.sleep(0.05)
                    pids = result.structured_content
                    os.kill(pids["pid"], signal.SIGKILL)
                    killed.extend([pids["pid"], pids["childPid"]])
                    await anyio.sleep(0.3)  # calls land on the restarted backend before the next kill

        async def storm(mode: str) -> None:
            tools = itertools.cycle(
                [(f"{b}__sleep", {"seconds": 0.5}) for b in BACKENDS] + [("mb1__echo", {"text": "x"})]
            )
            async with SdkClient(gw.url, mode=mode) as client:

                async def one(tool: str, arguments: dict[str, object]) -> None:
                    with anyio.fail_after(CALL_BOUND):
                        try:
                            result = await client.call_tool(tool, arguments)
                            outcomes["error result" if result.is_error else "result"] += 1
                        except MCPError as exc:
                            outcomes[f"JSON-RPC error {exc.code}"] += 1

                while not done.is_set() or sum(outcomes.values()) < MIN_CALLS:
                    async with anyio.create_task_group() as wave:
                        for _ in range(CALLS_AT_ONCE):
                            wave.start_soon(one, *next(tools))

        async with anyio.create_task_group() as tg:
            for mode in ("legacy", "legacy", "auto", "auto"):
                tg.start_soon(storm, mode)
            async with anyio.create_task_group() as killers:
                for name in BACKENDS:
                    killers.start_soon(kill_repeatedly, name)
            done.set()

        assert len(killed) == 2 * KILLS_EACH * len(BACKENDS)
        assert sum(outcomes.values()) >= MIN_CALLS and outcomes["result"] > 0, outcomes
        # The fleet is whole again, and every killed backend (and its grandchild) was reaped.
        await wait_until(
            lambda: gw.log_text().count("-> running") >= len(BACKENDS) * (KILLS_EACH + 1),
            timeout=RESTART_BOUND,
        )
        await wait_until(
            lambda: not [p for p in gw.descendants() if p.status() == psutil.STATUS_ZOMBIE], timeout=30
        )
        assert not [pid for pid in killed if psutil.pid_exists(pid) and pid not in zombies_of([pid])]
        fleet = gw.descendants()
        gw.process.send_signal(signal.SIGTERM)
        await gw.wait(60)
    _gone, alive = psutil.wait_procs(fleet, timeout=10)
    assert alive == [] and marked_processes(gw.pid) == [], alive
    assert zombies_of(killed + [p.pid for p in fleet]) == []
