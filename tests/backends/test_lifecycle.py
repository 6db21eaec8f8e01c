"""Supervision: the state machine, health checks, idleness, laziness, the circuit breaker, and
nothing left behind under load and crashes."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.backends import Backend, State
from gateway.backends.lifecycle import Event, IllegalTransition
from gateway.errors import BACKEND_UNAVAILABLE, BackendUnavailable
from gateway.fleet import Fleet
from tests._support import HERE, config, misbehave, process_tree, serve, text_of, wait_until

pytestmark = pytest.mark.anyio
TINY = str(HERE / "servers" / "tiny.py")


def tiny(name: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [TINY, name], **extra}


wait_for = functools.partial(wait_until, timeout=30, interval=0.02)


def up(backend: Backend, restarted_from: int = -1) -> Callable[[], bool]:
    """For `wait_for`: `backend` is available, after more than `restarted_from` restarts."""
    return lambda: backend.restarts > restarted_from and backend.available


def test_illegal_transitions_are_refused() -> None:
    assert Event.transition("x", State.STOPPED, State.STARTING, "start", "lifecycle").severity == "info"
    assert Event.transition("x", State.STARTING, State.FAILED, "boom", "lifecycle").severity == "error"
    with pytest.raises(IllegalTransition):
        Event.transition("x", State.STOPPED, State.RUNNING, "", "lifecycle")
    with pytest.raises(IllegalTransition):
        Event.transition("x", State.FAILED, State.RUNNING, "", "lifecycle")


async def test_every_transition_is_an_event_with_severity_and_category() -> None:
    fleet = Fleet(config({"mb": misbehave()}))
    async with fleet.running():
        await wait_for(lambda: fleet.backends["mb"].available)
        await fleet.backends["mb"].restart()
        await wait_for(lambda: fleet.backends["mb"].available)
    moves = [(e.old, e.new) for e in fleet.events]
    assert moves[:2] == [("stopped", "starting"), ("starting", "running")]
    assert ("running", "stopping") in moves and ("stopping", "stopped") in moves
    assert all(e.server == "mb" and e.severity in ("info", "warning", "error") for e in fleet.events)
    assert {e.category for e in fleet.events} <= {"lifecycle", "admin", "health"}


async def test_fifty_backends_start_concurrently() -> None:
    cfg = config({f"t{i}": tiny(f"t{i}") for i in range(50)})
    fleet = Fleet(cfg)
    began = time.monotonic()
    async with fleet.running():
        with anyio.fail_after(60):
            await fleet.wait_started()
        elapsed = time.monotonic() - began
        assert all(b.available for b in fleet.backends.values())
        assert len(fleet.catalogue.tools) == 50
    # One tiny server starts in well under 0.2 s; fifty in sequence would take several seconds.
    assert elapsed < 8, elapsed


async def test_failed_health_checks_restart_a_frozen_backend() -> None:
    spec = misbehave(health={"interval": 0.3, "timeout": 0.3, "failures": 2})
    fleet = Fleet(config({"mb": spec}))
    async with fleet.running():
        backend = fleet.backends["mb"]
        await wait_for(lambda: backend.available)
        pid = backend.log.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive but deaf: only a health check can notice
        await wait_for(lambda: backend.restarts == 1 and backend.available)
        assert backend.log.pid != pid
        assert any(e.category == "health" for e in fleet.events)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_idle_backend_stops_stays_listed_and_wakes_on_the_next_call() -> None:
    cfg = config({"mb": misbehave(idle_timeout=0.5)})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        backend = gw.fleet.backends["mb"]
        first = await client.call_tool("mb__pid", {})
        await wait_for(lambda: backend.state is State.STOPPED)
        assert backend.dormant and "mb__pid" in {t.name for t in (await client.list_tools()).tools}
        second = await client.call_tool("mb__pid", {})
        assert first.structured_content and second.structured_content
        assert first.structured_content["pid"] != second.structured_content["pid"]


async def test_lazy_backend_learns_its_catalogue_then_sleeps_until_called() -> None:
    cfg = config({"mb": misbehave(lazy=True)})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        backend = gw.fleet.backends["mb"]
        await wait_for(lambda: backend.state is State.STOPPED and backend.dormant)
        assert backend.log.pid is None
        assert "mb__echo" in {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("mb__echo", {"text": "wake"})
        assert text_of(result) == "misbehave: wake"
        assert backend.available


async def test_circuit_opens_after_max_restarts_and_an_admin_start_closes_it() -> None:
    cfg = config({"dead": misbehave("--crash-at-start", max_restarts=2), "t": tiny("t")})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        backend = gw.fleet.backends["dead"]
        await wait_for(lambda: backend.state is State.FAILED)
        assert backend.restarts == 2
        assert sum(1 for e in gw.fleet.events if e.server == "dead" and e.new == "starting") == 3
        with pytest.raises(MCPError):
            await client.call_tool("dead__echo", {"text": "x"})  # not listed any more: unknown
        with pytest.raises(BackendUnavailable) as err:
            await backend.request("tools/call", {"name": "echo"})  # fails fast: the circuit is open
        assert err.value.code == BACKEND_UNAVAILABLE and "admin must start it" in err.value.message
        backend.start()
        await wait_for(lambda: backend.state is not State.FAILED)
        await wait_for(lambda: backend.state is State.FAILED)
        assert backend.restarts == 4


async def test_no_leaks_after_load_crashes_and_shutdown() -> None:
    before = set(process_tree())
    cfg = config(
        {f"mb{i}": misbehave("--spawn-child", max_restarts=50, backoff=[0.05, 0.2]) for i in range(3)}
        | {"t": tiny("t")}
    )
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        seen: set[int] = set()

        async def one(i: int) -> None:
            result = await client.call_tool(f"mb{i % 3}__pid", {})
            assert result.structured_content is not None
            seen.add(result.structured_content["childPid"])

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(one, i)
            for crash in range(20):
                name = f"mb{crash % 3}"
                backend = gw.fleet.backends[name]
                await wait_for(up(backend))
                restarts = backend.restarts
                with pytest.raises(MCPError):
                    await client.call_tool(f"{name}__crash", {})
                await wait_for(up(backend, restarts))
                await one(crash)
        assert len(seen) >= 3
    leftover = [p for p in process_tree() if p not in before]
    alive = [
        p for p in leftover if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], alive
    zombies = [p for p in leftover if psutil.pid_exists(p)]
    assert zombies == [], f"unreaped children: {zombies}"
    assert not any(psutil.pid_exists(p) for p in seen), "grandchildren survived"


async def test_autostart_false_waits_for_an_admin_start() -> None:
    fleet = Fleet(config({"manual": misbehave(autostart=False), "t": tiny("t")}))
    async with fleet.running():
        await wait_for(lambda: fleet.backends["t"].available)
        manual = fleet.backends["manual"]
        assert manual.state is State.STOPPED and "manual__echo" not in {
            t["name"] for t in fleet.catalogue.tools
        }
        manual.start()
        await wait_for(lambda: manual.available)
        assert "manual__echo" in {t["name"] for t in fleet.catalogue.tools}


async def test_restart_always_restarts_a_clean_exit_and_on_failure_does_not() -> None:
    # tiny exits with code 0 when its stdin closes; closing it from outside is a clean exit.
    fleet = Fleet(config({"always": tiny("a", restart="always"), "once": tiny("o", restart="on-failure")}))
    async with fleet.running():
        for name in ("always", "once"):
            await wait_for(up(fleet.backends[name]))
            pid = fleet.backends[name].log.pid
            assert pid is not None
            os.kill(pid, signal.SIGTERM)  # tiny dies of SIGTERM: not code 0
        await wait_for(lambda: fleet.backends["always"].restarts == 1 and fleet.backends["always"].available)
        await wait_for(lambda: fleet.backends["once"].restarts == 1 and fleet.backends["once"].available)


async def test_on_failure_stops_after_a_clean_exit_and_restarts_after_a_failing_one() -> None:
    cfg = config(
        {
            "clean": misbehave("--exit-clean-after", "3", restart="on-failure"),
            "fails": misbehave("--exit-after", "3", restart="on-failure"),
        }
    )
    fleet = Fleet(cfg)
    async with fleet.running():
        clean, fails = fleet.backends["clean"], fleet.backends["fails"]
        await wait_for(lambda: clean.state is State.STOPPED and clean.log.exit_code == 0)
        await wait_for(lambda: fails.restarts >= 1)
        assert clean.restarts == 0 and not clean.available
        assert clean.last_error == "the server exited with code 0"
        moves = [(e.old, e.new) for e in fleet.events if e.server == "clean"]
        assert ("running", "stopping") in moves and ("stopping", "stopped") in moves
        assert all(new != "backoff" for _, new in moves)
        assert fails.log.exit_code == 1 or fails.available
