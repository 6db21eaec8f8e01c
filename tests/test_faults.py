"""The fault suite: one real gateway process, a healthy backend beside backends that misbehave.

Each case provokes one fault (tests/servers/misbehave.py) while a client keeps calling the healthy
backend, and checks that every call to the faulty one ends with the right JSON-RPC error within
its `timeout` (+ `ANSWER_SLACK`), that the healthy one saw no error at all, and, at the end, that
the gateway stayed within `RSS_BOUND`, kept its log short, and exits on SIGTERM within
`SHUTDOWN_BOUND` leaving no process behind.

One gateway serves every case (starting one per case would cost more than the cases). The floods
at start are over before the cases run; the server that never answers `initialize` keeps failing
while they run, and its case (last) waits for its circuit to open, bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import psutil
import pytest
import yaml
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.backends.lifecycle import STABLE_AFTER
from gateway.errors import BACKEND_UNAVAILABLE
from tests._infra import REPO_ROOT
from tests._support import START_TIMEOUT, free_port, misbehave, text_of, time_server
from tests.admin._helpers import ADMIN_KEY, hashed

TIMEOUT = 5.0  # every faulty server's `timeout`
ANSWER_SLACK = 1.0  # a call to a faulty server ends within TIMEOUT + this
# SIGTERM to exit: the drain deadline, then the teardown of backends that must be killed (end of
# stdin, SIGTERM, SIGKILL: `_process.EXIT_GRACE` + `TERM_GRACE`) and the answers' grace; within the
# 10 s Docker and systemd give before SIGKILL.
DRAIN_TIMEOUT = 2.0
SHUTDOWN_BOUND = DRAIN_TIMEOUT + 8.0
RSS_BOUND = 400 * 2**20  # with 100 MB of garbage and one 50 MB line on the backends' stdout
FLOOD_MB, HUGE_MB, STDERR_LINES = 100, 50, 200_000
# The garbage printed by the server that never answers `initialize`, per attempt (4 KiB lines).
MUTE_FLOOD_MB = 2
# Lines the gateway may log about unparseable output in the whole run: a line plus a count per
# window and session, where one per garbage line would be tens of thousands.
MAX_GARBAGE_LOG_LINES = 40
# The handshake that never comes takes longer than a run the supervisor calls stable, measured
# from launch (the bug): each attempt must still count as a failure.
MUTE_STARTUP = STABLE_AFTER + 0.5
MUTE_MAX_RESTARTS = 1
# Its attempts: the handshake timeout, the stop of a server that ignores EOF, the backoff.
MUTE_FAILED_WITHIN = (MUTE_MAX_RESTARTS + 1) * (MUTE_STARTUP + 10) + 20

SERVERS: dict[str, dict[str, Any]] = {
    "healthy": time_server(),
    "stuck": misbehave(timeout=TIMEOUT, backoff=[0.2, 1.0]),
    "errs": misbehave(timeout=TIMEOUT),
    "crashy": misbehave(timeout=TIMEOUT, backoff=[0.2, 1.0]),
    "flood": misbehave("--flood-stdout", str(FLOOD_MB), timeout=TIMEOUT, startup_timeout=START_TIMEOUT),
    "huge": misbehave("--huge-line", str(HUGE_MB), timeout=TIMEOUT, startup_timeout=START_TIMEOUT),
    "chatty": misbehave("--flood-stderr", str(STDERR_LINES), timeout=TIMEOUT, startup_timeout=START_TIMEOUT),
    "mute": misbehave(
        "--hang-at-start",
        "--flood-stdout",
        str(MUTE_FLOOD_MB),
        startup_timeout=MUTE_STARTUP,
        max_restarts=MUTE_MAX_RESTARTS,
        backoff=[0.1, 0.2],
    ),
}


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    max_rss: int = 0
    pids: set[int] = field(default_factory=set)  # every backend process seen

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def states(self) -> dict[str, str]:
        servers = httpx.get(f"{self.base}/readyz", timeout=10).json()["servers"]
        return {name: info["state"] for name, info in servers.items()}

    async def wait_in_flight(self, server: str, calls: int, within: float) -> None:
        """Until `calls` calls are in flight at `server`, as the admin API reports it."""
        auth = {"authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=f"{self.base}/admin", headers=auth, timeout=within) as http:
            with anyio.fail_after(within):
                # Another process's state, with no event that reaches this test: polled.
                while (await http.get(f"/servers/{server}?events=0&logs=0")).json()["in_flight"] < calls:  # noqa: ASYNC110
                    await anyio.sleep(0.02)

    async def wait_state(self, server: str, state: str, within: float) -> None:
        # Polled every 0.2 s: a state held more briefly than that may be missed.
        with anyio.fail_after(within):
            # Another process's state: polled on its /readyz, there is no event to await.
            while (await anyio.to_thread.run_sync(self.states))[server] != state:  # noqa: ASYNC110
                await anyio.sleep(0.2)


def _watch(gw: Gateway, stop: threading.Event) -> None:
    """Sample the gateway's RSS and its backends' pids until `stop`."""
    proc = psutil.Process(gw.proc.pid)
    while not stop.wait(0.05):
        try:
            gw.max_rss = max(gw.max_rss, proc.memory_info().rss)
            gw.pids.update(p.pid for p in proc.children(recursive=True))
        except psutil.NoSuchProcess:
            return


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("faults")
    cfg = tmp / "gateway.yaml"
    # The admin API (events in memory) shows what only the gateway knows: calls in flight.
    admin = {"api_keys": [hashed(ADMIN_KEY)], "events": {"path": ":memory:"}}
    listen = {"drain_timeout": DRAIN_TIMEOUT}
    cfg.write_text(yaml.safe_dump({"listen": listen, "servers": SERVERS, "admin": admin}))
    port = free_port()
    log = tmp / "gateway.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )
    gw = Gateway(proc, f"http://127.0.0.1:{port}", log)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(gw, stop), daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        # The start-up floods are over before the timed cases run: on a small loaded machine their
        # parsing would otherwise be in every timing. (Memory is watched from the start.)
        up = set(SERVERS) - {"mute"}
        while True:
            assert proc.poll() is None, f"gateway exited: {log.read_text()[-2000:]}"
            try:
                if all(gw.states()[name] == "running" for name in up):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"gateway not up: {log.read_text()[-2000:]}"
            time.sleep(0.1)
        yield gw
    finally:
        stop.set()
        watcher.join(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for pid in gw.pids:  # whatever a failed run left
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


async def _with_healthy_traffic(gw: Gateway, case: Callable[[SdkClient], Awaitable[None]]) -> None:
    """Run `case` while another client calls the healthy backend; it must see no error at all."""
    errors: list[BaseException] = []
    calls = 0
    done = anyio.Event()

    async def healthy() -> None:
        nonlocal calls
        async with SdkClient(gw.url, mode="legacy") as client:
            while not done.is_set():
                try:
                    with anyio.fail_after(TIMEOUT + ANSWER_SLACK):
                        result = await client.call_tool("healthy__get_current_time", {"timezone": "UTC"})
                    if result.is_error:
                        errors.append(AssertionError(str(result.content)))
                except (MCPError, TimeoutError) as exc:
                    errors.append(exc)
                calls += 1
                await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(healthy)
        try:
            async with SdkClient(gw.url, mode="legacy") as client:
                await case(client)
        finally:
            done.set()
    assert errors == [], f"the healthy backend saw errors: {errors}"
    assert calls > 0


async def _timed(call: Awaitable[Any]) -> tuple[float, Any]:
    """(seconds taken, the result or the MCPError) of one call, bounded well past its own bound."""
    began = time.monotonic()
    try:
        with anyio.fail_after(4 * (TIMEOUT + ANSWER_SLACK)):
            outcome: Any = await call
    except MCPError as exc:
        outcome = exc
    except TimeoutError:
        outcome = TimeoutError("no answer at all")
    return time.monotonic() - began, outcome


def _assert_error(taken: float, outcome: Any, codes: set[int]) -> None:
    assert isinstance(outcome, MCPError), f"not a JSON-RPC error: {outcome!r}"
    assert outcome.code in codes, f"{outcome.code} {outcome.message}"
    assert taken <= TIMEOUT + ANSWER_SLACK, f"answered after {taken:.1f}s: {outcome.message}"


async def _stuck_calls(
    gw: Gateway, client: SdkClient, results: list[tuple[float, Any]], sent: anyio.Event | None = None
) -> None:
    """The server blocks (stdin unread) in a first call; then ten more, 60 KB each, fill its stdin.
    `results` gets each call's (seconds, outcome), the blocking one first; `sent` is set once
    all are on their way."""
    started = gw.log.with_name(f"blocked-{time.monotonic_ns()}")
    results.extend([(0.0, None)] * 11)

    async def call(i: int) -> None:
        if i == 0:
            args = {"seconds": 60, "started": str(started)}
            results[0] = await _timed(client.call_tool("stuck__stop_reading", args))
        else:
            results[i] = await _timed(client.call_tool("stuck__echo", {"text": "x" * 60_000}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 0)
        with anyio.fail_after(TIMEOUT):  # the file is the server's word that it is blocked
            while not started.exists():  # noqa: ASYNC110 - another process's doing: polled
                await anyio.sleep(0.02)
        for i in range(1, 11):
            tg.start_soon(call, i)
        if sent is not None:
            sent.set()


async def _stops_reading(gw: Gateway, client: SdkClient) -> None:
    before = await _pid(client, "stuck")
    assert before is not None
    results: list[tuple[float, Any]] = []
    await _stuck_calls(gw, client, results)
    _assert_error(*results[0], {types.REQUEST_TIMEOUT})
    for taken, outcome in results[1:]:
        _assert_error(taken, outcome, {types.REQUEST_TIMEOUT, BACKEND_UNAVAILABLE})
    # A server that stopped reading with calls waiting is replaced (a timeout after its stdin
    # filled up), and serves again.
    with anyio.fail_after(TIMEOUT + ANSWER_SLACK + START_TIMEOUT):
        while (await _pid(client, "stuck")) in (None, before):  # noqa: ASYNC110 - another process
            await anyio.sleep(0.2)


async def _pid(client: SdkClient, server: str) -> int | None:
    """The server's pid, or None while it does not answer."""
    try:
        with anyio.fail_after(TIMEOUT + ANSWER_SLACK):
            result = await client.call_tool(f"{server}__pid", {})
    except (MCPError, TimeoutError):
        return None
    assert result.structured_content is not None
    pid: int = result.structured_content["pid"]
    return pid


async def _own_errors(gw: Gateway, client: SdkClient) -> None:
    # The backend's own errors, with the codes the SDK also uses for its own timeout and closed
    # connection: they reach the client unchanged, message and data included, and at once.
    for code, data in [
        (-32000, {"retry": False, "detail": [1, 2]}),
        (-32001, {"why": "busy"}),
        (-32603, None),
    ]:
        args: dict[str, Any] = {"code": code, "message": f"backend says {code}"}
        if data is not None:
            args["data"] = data
        taken, outcome = await _timed(client.call_tool("errs__raise_error", args))
        _assert_error(taken, outcome, {code})
        assert taken < TIMEOUT, f"{code} took {taken:.1f}s"
        assert outcome.message == f"backend says {code}"
        assert outcome.data == data
    assert gw.states()["errs"] == "running"


async def _exits_mid_call(gw: Gateway, client: SdkClient) -> None:
    # Calls racing the crash reach a pipe that is dying or dead: each gets a result, the
    # backend's unavailability, or (once its tools left the catalogue) an unknown tool; never an
    # internal error.
    results: list[tuple[float, Any]] = []

    async def call(tool: str, args: dict[str, Any]) -> None:
        results.append(await _timed(client.call_tool(f"crashy__{tool}", args)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "echo", {"text": "before"})
        tg.start_soon(call, "crash", {})
        for i in range(20):
            tg.start_soon(call, "echo", {"text": str(i)})
    for taken, outcome in results:
        if isinstance(outcome, MCPError):
            _assert_error(taken, outcome, {BACKEND_UNAVAILABLE, types.INVALID_PARAMS})
        else:
            assert isinstance(outcome, types.CallToolResult) and outcome.is_error is not True, outcome
    assert any(isinstance(outcome, MCPError) for _, outcome in results)  # the crash call at least
    await gw.wait_state("crashy", "running", START_TIMEOUT)


def _serves_after_start_flood(server: str) -> Callable[[Gateway, SdkClient], Awaitable[None]]:
    async def case(gw: Gateway, client: SdkClient) -> None:
        await gw.wait_state(server, "running", START_TIMEOUT)
        with anyio.fail_after(TIMEOUT + ANSWER_SLACK):
            result = await client.call_tool(f"{server}__echo", {"text": "after the flood"})
        assert text_of(result) == "misbehave: after the flood"

    return case


async def _never_initializes(gw: Gateway, client: SdkClient) -> None:
    # Each attempt takes longer than a stable run: the circuit must open all the same.
    await gw.wait_state("mute", "failed", MUTE_FAILED_WITHIN)
    taken, outcome = await _timed(client.call_tool("mute__echo", {"text": "x"}))
    _assert_error(taken, outcome, {types.INVALID_PARAMS})  # never listed: no such tool


CASES: dict[str, Callable[[Gateway, SdkClient], Awaitable[None]]] = {
    "stops-reading-stdin": _stops_reading,
    "own-error-codes": _own_errors,
    "exits-mid-call": _exits_mid_call,
    "floods-stdout": _serves_after_start_flood("flood"),
    "one-huge-line": _serves_after_start_flood("huge"),
    "floods-stderr": _serves_after_start_flood("chatty"),
    "never-answers-initialize": _never_initializes,
}


@pytest.mark.anyio
@pytest.mark.parametrize("fault", list(CASES))
async def test_fault(gateway: Gateway, fault: str) -> None:
    assert gateway.proc.poll() is None, "the gateway died"
    await _with_healthy_traffic(gateway, lambda client: CASES[fault](gateway, client))


def test_after_the_faults_memory_and_log_stayed_bounded(gateway: Gateway) -> None:
    assert gateway.proc.poll() is None, "the gateway died"
    assert gateway.max_rss < RSS_BOUND, f"gateway RSS reached {gateway.max_rss / 2**20:.0f} MB"
    log = gateway.log.read_text(errors="replace")
    garbage = [line for line in log.splitlines() if "unparseable" in line]
    assert 0 < len(garbage) <= MAX_GARBAGE_LOG_LINES, f"{len(garbage)} lines about garbage"
    assert len(log) < 2**20, f"gateway log is {len(log)} bytes"
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.anyio
async def test_sigterm_with_calls_stuck_ends_the_gateway_and_its_backends(gateway: Gateway) -> None:
    """Last in this module: it ends the shared gateway, with calls stuck on a full stdin."""
    assert gateway.proc.poll() is None, "the gateway died"
    await gateway.wait_state("stuck", "running", START_TIMEOUT)
    backends = psutil.Process(gateway.proc.pid).children(recursive=True)
    gateway.pids.update(p.pid for p in backends)
    results: list[tuple[float, Any]] = []
    began = 0.0
    code: int | None = None
    async with anyio.create_task_group() as tg:
        # The calls end as the gateway ends (an error, or the connection closing under them).
        client = SdkClient(gateway.url, mode="legacy")
        async with client:
            sent = anyio.Event()
            tg.start_soon(_stuck_calls, gateway, client, results, sent)
            with anyio.fail_after(TIMEOUT):
                await sent.wait()
            # Stuck on the gateway's side of the pipe: all eleven in flight at the backend (polled:
            # another process's state), well before their timeout.
            await gateway.wait_in_flight("stuck", 11, within=TIMEOUT)
            began = time.monotonic()
            gateway.proc.send_signal(signal.SIGTERM)
            try:
                code = await anyio.to_thread.run_sync(lambda: gateway.proc.wait(timeout=SHUTDOWN_BOUND))
            except subprocess.TimeoutExpired:
                code = None
            finally:
                tg.cancel_scope.cancel()
    tail = gateway.log.read_text(errors="replace")[-2000:]
    assert code is not None, f"still running {SHUTDOWN_BOUND}s after SIGTERM: {tail}"
    assert code in (0, -signal.SIGTERM), code
    assert time.monotonic() - began <= SHUTDOWN_BOUND
    # Every backend process ever seen is gone (not even a zombie: its parent reaped it or died).
    left = []
    for pid in gateway.pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            left.append(psutil.Process(pid))
    _gone, alive = psutil.wait_procs(left, timeout=10)
    assert alive == [], f"left behind: {alive}"
    log = gateway.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert len([line for line in log.splitlines() if "unparseable" in line]) <= MAX_GARBAGE_LOG_LINES
