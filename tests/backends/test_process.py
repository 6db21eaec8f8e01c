"""What outlives a gateway process that is killed: nothing, once a new gateway has started.

Real gateway processes (`python -m gateway serve`) with real misbehaving backends: one that does
not exit when its stdin ends, each with a grandchild that never reads stdin at all.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import psutil
import pytest

from gateway.backends import _owner
from tests._gateway_process import gateway_process, marked_processes
from tests._support import misbehave, wait_until

pytestmark = pytest.mark.anyio

# Bounds for a loaded 2-core machine: the kernel's work, not the gateway's, but never unbounded.
DEATH_TIMEOUT = 30.0


async def test_a_killed_gateways_children_die_and_the_next_gateway_reaps_its_grandchildren(
    tmp_path: Path,
) -> None:
    servers = {
        "deaf": misbehave("--ignore-stdin-eof", "--ignore-sigterm", "--spawn-child"),
        "plain": misbehave("--spawn-child"),
    }
    async with gateway_process(tmp_path, {"servers": servers}, name="first") as first:
        await wait_until(lambda: len(first.descendants()) >= 4, timeout=DEATH_TIMEOUT)
        children = psutil.Process(first.pid).children()
        grandchildren = [g for c in children for g in c.children(recursive=True)]
        assert len(children) == 2 and len(grandchildren) == 2
        first.process.send_signal(signal.SIGKILL)
        await first.wait(DEATH_TIMEOUT)

    # The direct children die with the gateway, even the one that ignores end-of-stdin and SIGTERM.
    _gone, alive = psutil.wait_procs(children, timeout=DEATH_TIMEOUT)
    assert alive == [], f"children outlived the gateway: {alive}"
    # Their own children are out of the kernel's reach until a gateway looks for them: by the
    # marker they inherited.
    for proc in grandchildren:
        assert proc.environ()[_owner.ENV_OWNER].startswith(f"{socket.gethostname()}:{first.pid}:")

    async with gateway_process(tmp_path, {"servers": servers}, name="second") as second:
        _gone, alive = psutil.wait_procs(grandchildren, timeout=DEATH_TIMEOUT)
        assert alive == [], f"the second gateway left the first one's grandchildren: {alive}"
        assert marked_processes(first.pid) == []
        assert "left behind by dead gateways" in second.log_text()
        mine = second.descendants()
        assert len(mine) >= 4  # its own backends were left alone
        second.process.send_signal(signal.SIGTERM)
        await second.wait(DEATH_TIMEOUT)
    _gone, alive = psutil.wait_procs(mine, timeout=DEATH_TIMEOUT)
    assert alive == [] and marked_processes(first.pid, second.pid) == []
