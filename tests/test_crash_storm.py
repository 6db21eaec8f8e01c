"""A crash storm: hundreds of concurrent calls from several clients while backends are SIGKILLed
over and over. Every call is answered (a result or a JSON-RPC error, none hanging), the fleet
recovers, and when the gateway stops nothing is left: no process, no zombie.

A real gateway process, real clients (the `mcp` SDK's, both protocol revisions) over HTTP, and our
misbehaving server as the backends: local processes, each with a grandchild, killed by the pid
their `pid()` reports; or containers, whose server process is killed by its pid on this host.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import docker  # type: ignore[import-untyped]
import psutil
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.backends import _docker_owner
from tests._gateway_process import GatewayProcess, gateway_process, marked_processes, zombies_of
from tests._support import misbehave, wait_until
from tests.backends.test_docker import docker_misbehave, images  # noqa: F401 - a fixture used below

pytestmark = pytest.mark.anyio

CALLS_AT_ONCE = 50  # per client; four clients
MIN_CALLS = 200
# Bounds for a loaded 2-core machine: an answer (the backend's `timeout` is 30 s), a restart.
CALL_BOUND = 45.0
RESTART_BOUND = 60.0


# Restarted at once, without end: the storm is the point, not the circuit breaker.
RESTART = {"restart": "always", "max_restarts": 10_000, "backoff": [0.05, 0.2], "timeout": 30}

Kill = Callable[[GatewayProcess, str, dict[str, Any]], Awaitable[list[int]]]


async def _kill_process(gw: GatewayProcess, name: str, pids: dict[str, Any]) -> list[int]:
    os.kill(pids["pid"], signal.SIGKILL)
    return [pids["pid"], pids["childPid"]]


async def _kill_container(gw: GatewayProcess, name: str, pids: dict[str, Any]) -> list[int]:
    """SIGKILL the server process of `name`'s container, found by its host pid (its `pid()` is the
    container's own numbering); the container's init then ends the container."""
    found = await anyio.to_thread.run_sync(_containers, gw, name)
    assert len(found) == 1, found
    info = found[0]
    server = psutil.Process(info["State"]["Pid"]).children()[0]  # docker's init runs the server
    server.kill()
    return [server.pid]


def _containers(gw: GatewayProcess, name: str | None = None) -> list[dict[str, Any]]:
    """The containers (inspected) the gateway process `gw` owns: all, or the running one of `name`."""
    labels = [f"{_docker_owner.LABEL_INSTANCE}={_docker_owner.instance_id(gw.pid)}"]
    if name is not None:
        labels.append(f"{_docker_owner.LABEL_SERVER}={name}")
    with contextlib.closing(docker.from_env(timeout=30)) as client:
        found = client.api.containers(all=True, filters={"label": labels})
        return [
            client.api.inspect_container(c["Id"]) for c in found if name is None or c["State"] == "running"
        ]


STDIO = ({f"mb{i}": misbehave("--spawn-child", **RESTART) for i in range(1, 5)}, 6, _kill_process)  # 24
DOCKER = ({f"dk{i}": docker_misbehave(**RESTART) for i in range(1, 5)}, 2, _kill_container)


async def test_every_call_is_answered_through_a_storm_of_process_kills(tmp_path: Path) -> None:
    await _storm(tmp_path, *STDIO)


@pytest.mark.docker
@pytest.mark.usefixtures("images")
async def test_every_call_is_answered_through_a_storm_of_container_kills(tmp_path: Path) -> None:
    # Fewer kills: a container takes 5-10 s to come back on a loaded machine; the storm of 20+
    # kills is the process variant's.
    await _storm(tmp_path, *DOCKER)


async def _storm(tmp_path: Path, servers: dict[str, Any], kills_each: int, kill: Kill) -> None:
    backends = list(servers)
    cfg = {"servers": servers}
    outcomes: Counter[str] = Counter()
    landed: Counter[str] = Counter()  # per backend: the storm's calls it answered
    killed: list[int] = []  # the pids of what was killed, and of what died with it
    kills = 0
    done = anyio.Event()

    async with gateway_process(tmp_path, cfg) as gw:

        async def storm_reaches(name: str) -> None:
            """Until one more of the storm's calls has come back from `name`, as it is now."""
            before = landed[name]
            await wait_until(lambda: landed[name] > before, timeout=CALL_BOUND)

        async def kill_repeatedly(name: str) -> None:
            async with SdkClient(gw.url) as client:
                for _ in range(kills_each):
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
                    await storm_reaches(name)  # calls land on the restarted backend before it dies
                    nonlocal kills
                    killed.extend(await kill(gw, name, result.structured_content))
                    kills += 1

        async def storm(mode: str) -> None:
            tools = itertools.cycle(
                [(f"{b}__sleep", {"seconds": 0.5}) for b in backends]
                + [(f"{backends[0]}__echo", {"text": "x"})]
            )
            async with SdkClient(gw.url, mode=mode) as client:

                async def one(tool: str, arguments: dict[str, object]) -> None:
                    with anyio.fail_after(CALL_BOUND):
                        try:
                            result = await client.call_tool(tool, arguments)
                            outcomes["error result" if result.is_error else "result"] += 1
                            if not result.is_error:
                                landed[tool.partition("__")[0]] += 1
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
                for name in backends:
                    killers.start_soon(kill_repeatedly, name)
            done.set()

        assert kills == kills_each * len(backends)
        assert sum(outcomes.values()) >= MIN_CALLS and outcomes["result"] > 0, outcomes
        # The fleet is whole again, and every killed backend (and its grandchild) was reaped.
        await wait_until(
            lambda: gw.log_text().count("-> running") >= len(backends) * (kills_each + 1),
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
    if kill is _kill_container:
        assert await anyio.to_thread.run_sync(_containers, gw) == []
