"""The official MCP conformance suite (@modelcontextprotocol/conformance), run against a server
directly (over streamable HTTP) and against the gateway fronting the same server over stdio with
`prefix: ""`. Whatever passes directly must pass through the gateway. The suite writes one
`checks.json` per scenario into `--output-dir`, which is what is compared, check by check.

Two servers, two cases:

- server-everything, the reference server most clients are tried against. The suite's scenarios
  are written for the suite's own test server (tools named `test_simple_text`, ...), so most of
  them fail against it both ways; only the ones that pass directly are compared.

  Two scenarios "pass" directly only because server-everything answers a call to a tool it does
  not have with an `isError` *result* ("Tool test_simple_text not found"), which those two lax
  checks accept. The gateway answers an unknown tool with the JSON-RPC error -32602 the
  specification prescribes (2025-11-25, server/tools, "Error Handling"), so those vacuous passes
  are left out of the comparison (see `_vacuous`).

- tests/conformance/fixture_server.py, which has every fixture the suite calls, so every scenario
  passes directly and the comparison covers the whole suite: through the gateway, every scenario
  the suite lists must pass.

- the same fixture under the 0.2.0-alpha suite (installed as `conformance-next`), once at
  `--spec-version 2026-07-28` and once at 2025-11-25, with the fixture behind the gateway over
  stdio and as a `url:` backend. Every scenario passes directly; through the gateway, the ones the
  gateway cannot yet do are listed with their reason in
  tests/conformance/expected-failures-<revision>.yaml, which must stay exact both ways (a listed
  scenario that stops falling short is an error too, so the lists only shrink).

Each case takes a few seconds: the suite's scenarios are quick and Node starts twice.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import yaml
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tests import _infra
from tests._support import START_TIMEOUT, config, free_port, serve

pytestmark = [pytest.mark.anyio, pytest.mark.node]

LOOPBACK_PRELOAD = Path(__file__).parent / "conformance" / "loopback.cjs"
FIXTURE_SERVER = Path(__file__).parent / "conformance" / "fixture_server.py"
# One run of the whole suite takes 2-3 s here; bounded generously for a loaded CI machine.
SUITE_TIMEOUT = 150.0
STOP_TIMEOUT = 10.0
# Scenario directories are named `server-<scenario>-<ISO timestamp with : and . replaced by ->`.
_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$")
_STARTED = re.compile(r"^=== Running scenario: (?P<scenario>\S+) ===$", re.MULTILINE)
_TOOL_MISSING = re.compile(r"\bTool \S+ not found\b")
# `conformance list --server` prints `  - <scenario> [<spec versions>]`.
_LISTED = re.compile(r"^\s*- (?P<scenario>\S+) \[", re.MULTILINE)
# Scenarios that need no test_* tool/resource/prompt, so server-everything passes them directly.
CORE_SCENARIOS = {"server-initialize", "ping", "tools-list", "resources-list", "prompts-list"}


# --- the suite's results -----------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The suite's own verdict: no check failed (INFO and WARNING checks do not fail)."""
        return not any(c.get("status") == "FAILURE" for c in self.checks)

    def succeeded(self) -> set[str]:
        """Ids of the checks that succeeded (and did not also fail, for ids that occur twice)."""
        ok = {c["id"] for c in self.checks if c.get("status") == "SUCCESS"}
        return ok - {c["id"] for c in self.checks if c.get("status") == "FAILURE"}

    def not_applicable(self) -> set[str]:
        """Ids of the checks the suite only reported (INFO) or skipped: what it says when a server
        takes an option the specification leaves open (say, a JSON answer rather than SSE)."""
        said = {c["id"] for c in self.checks if c.get("status") in ("INFO", "SKIPPED")}
        return said - {c["id"] for c in self.checks if c.get("status") in ("SUCCESS", "WARNING", "FAILURE")}

    def failures(self) -> list[str]:
        return [
            f"{c['id']}: {c.get('errorMessage') or c.get('description')}"
            for c in self.checks
            if c.get("status") == "FAILURE"
        ]

    def summary(self) -> str:
        statuses = [c.get("status") for c in self.checks]
        ok, failed = statuses.count("SUCCESS"), statuses.count("FAILURE")
        return f"{'PASS' if self.passed else 'FAIL'} ({ok} ok, {failed} failed)"


def _vacuous(scenario: Scenario) -> bool:
    """Passed only because the backend said, as a tool *result*, that the scenario's tool is missing."""
    for check in scenario.checks:
        result = (check.get("details") or {}).get("result") or {}
        texts = [c.get("text", "") for c in result.get("content") or [] if isinstance(c, dict)]
        if result.get("isError") and any(_TOOL_MISSING.search(t) for t in texts):
            return True
    return False


def _conformance_env(home: Path) -> dict[str, str]:
    env = _infra.node22_env()
    env["HOME"] = str(home)
    return env


async def run_suite(
    url: str, workdir: Path, *, cli: list[str] | None = None, args: tuple[str, ...] = ()
) -> dict[str, Scenario]:
    """`conformance server --suite all` against `url`; every scenario's checks, by scenario name.

    `cli` is the suite to run (default the pinned 0.1.16); `args` go after `--suite all`."""
    out = workdir / "results"
    cli = cli or _infra.conformance_cli()
    argv = [*cli, "server", "--url", url, "--suite", "all", *args, "--output-dir", str(out)]
    with anyio.fail_after(SUITE_TIMEOUT):  # a cancelled run_process kills the suite
        done = await anyio.run_process(argv, env=_conformance_env(workdir), cwd=workdir, check=False)
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    (workdir / "stdout.txt").write_text(stdout)
    (workdir / "stderr.txt").write_text(stderr)
    started = _STARTED.findall(stdout)
    assert started, f"the suite ran no scenario (exit {done.returncode}):\n{stdout}\n{stderr}"

    scenarios = {name: Scenario(name) for name in started}
    for result_dir in out.iterdir() if out.is_dir() else []:
        match = _RESULT_DIR.match(result_dir.name)
        if match and match["scenario"] in scenarios:
            scenarios[match["scenario"]].checks = json.loads((result_dir / "checks.json").read_text())
    for scenario in scenarios.values():
        if not scenario.checks:  # the suite crashed in it, and saved nothing: its message is on stderr
            message = f"no checks.json; suite stderr: {stderr.strip()[-2000:]}"
            scenario.checks = [{"id": scenario.name, "status": "FAILURE", "errorMessage": message}]
    return scenarios


async def listed_scenarios(
    workdir: Path, *, cli: list[str] | None = None, args: tuple[str, ...] = ()
) -> set[str]:
    """The server scenarios the installed suite knows, so that a run cut short cannot pass as complete."""
    argv = [*(cli or _infra.conformance_cli()), "list", "--server", *args]
    with anyio.fail_after(SUITE_TIMEOUT):
        done = await anyio.run_process(argv, env=_conformance_env(workdir), cwd=workdir)
    listed = set(_LISTED.findall(done.stdout.decode()))
    assert listed, f"`conformance list --server` listed nothing:\n{done.stdout.decode()}"
    return listed


def _shortfall(direct: Scenario, gateway: Scenario) -> str | None:
    """How a scenario does worse through the gateway than directly (fails, or loses a check that
    succeeded, even to a mere WARNING), or None. A check the suite finds not applicable through the
    gateway is not lost: the gateway took another option the specification allows."""
    lost = sorted(direct.succeeded() - gateway.succeeded() - gateway.not_applicable())
    if (direct.passed and not gateway.passed) or lost:
        return (
            f"{direct.name}: checks that succeed directly but not through the gateway: {lost}; "
            f"gateway failures: {gateway.failures()}"
        )
    return None


def _regressions(direct: dict[str, Scenario], through: dict[str, Scenario], *, skip: set[str]) -> list[str]:
    """Scenarios that pass directly but not through the gateway, or lose a check that succeeded."""
    found = (
        _shortfall(scenario, through[scenario.name])
        for scenario in direct.values()
        if scenario.name not in skip
    )
    return [shortfall for shortfall in found if shortfall is not None]


def _print_table(direct: dict[str, Scenario], through: dict[str, Scenario], notes: dict[str, str]) -> None:
    """Both runs side by side, for the log of a failing (or curious) run: `pytest -s` shows it."""
    width = max(map(len, direct))
    print(f"\n{'scenario':<{width}}  {'direct':<22}  gateway")
    for name, scenario in direct.items():
        other = through.get(name)
        note = f"  ({notes[name]})" if name in notes else ""
        print(f"{name:<{width}}  {scenario.summary():<22}  {other.summary() if other else 'NOT RUN'}{note}")


# --- servers over streamable HTTP, on loopback only ---------------------------------------------


def _listening(pid: int) -> list[str]:
    return [
        f"{conn.laddr.ip}:{conn.laddr.port}"
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]


@asynccontextmanager
async def _process(
    argv: list[str], log: Path, *, env: dict[str, str] | None = None, pipe_stdout: bool = False
) -> AsyncIterator[Process]:
    """`argv` with its output in `log` (stdout piped instead, if asked); stopped, then killed, on exit."""
    with log.open("wb") as sink:
        stdout = subprocess.PIPE if pipe_stdout else sink
        process = await anyio.open_process(argv, env=env, stdin=None, stdout=stdout, stderr=sink)
        try:
            yield process
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                with anyio.move_on_after(STOP_TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()


@asynccontextmanager
async def everything_over_http(log: Path) -> AsyncIterator[str]:
    """server-everything in streamableHttp mode on a free loopback port; yields its /mcp URL."""
    node, *args = _infra.npm_server_command("server-everything", "streamableHttp")
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    argv = [node, "--require", str(LOOPBACK_PRELOAD), *args]
    async with _process(argv, log, env=env) as process:
        # It says nothing when it listens, so the port is polled.
        with anyio.fail_after(START_TIMEOUT):
            while True:
                if process.returncode is not None:
                    output = await anyio.Path(log).read_text()
                    pytest.fail(f"server-everything exited {process.returncode}:\n{output}")
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    await anyio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        # The preload did its job: nothing listens beyond loopback.
        assert _listening(process.pid) == [f"127.0.0.1:{port}"]
        yield f"http://127.0.0.1:{port}/mcp"


@asynccontextmanager
async def fixture_over_http(log: Path) -> AsyncIterator[str]:
    """The fixture server over streamable HTTP on a loopback port of its choosing; yields its /mcp URL."""
    argv = [sys.executable, str(FIXTURE_SERVER), "--http", "0"]
    async with _process(argv, log, pipe_stdout=True) as process:
        assert process.stdout is not None
        try:
            # Its first stdout line is the URL, written once the socket listens.
            with anyio.fail_after(START_TIMEOUT):
                line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 1024)
        except (anyio.IncompleteRead, anyio.DelimiterNotFound):
            output = await anyio.Path(log).read_text()
            pytest.fail(f"the fixture server announced no URL (exit {process.returncode}):\n{output}")
        url = line.decode().strip()
        port = url.removeprefix("http://127.0.0.1:").removesuffix("/mcp")
        assert _listening(process.pid) == [f"127.0.0.1:{port}"], url
        yield url


def everything_stdio(**extra: Any) -> dict[str, Any]:
    cmd = _infra.npm_server_command("server-everything")
    return {"command": cmd[0], "args": cmd[1:], **extra}


def fixture_stdio(**extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(FIXTURE_SERVER)], **extra}


# --- the tests ---------------------------------------------------------------------------------


@pytest.mark.timeout(2 * SUITE_TIMEOUT + 2 * START_TIMEOUT)
async def test_what_passes_directly_passes_through_the_gateway(tmp_path: Path) -> None:
    _infra.require("conformance")
    (direct_dir := tmp_path / "direct").mkdir()
    (gateway_dir := tmp_path / "gateway").mkdir()

    async with everything_over_http(tmp_path / "server-everything.log") as url:
        direct = await run_suite(url, direct_dir)
    async with serve(config({"everything": everything_stdio(prefix="")})) as gw:
        through = await run_suite(gw.url, gateway_dir)

    vacuous = {s.name for s in direct.values() if s.passed and _vacuous(s)}
    _print_table(direct, through, dict.fromkeys(vacuous, "vacuous direct pass: tool missing"))

    assert set(through) == set(direct), "both runs must cover the same scenarios"
    compared = {s.name for s in direct.values() if s.passed and not _vacuous(s)}
    # A broken direct run would make the comparison vacuous: these pass against any working server.
    assert compared >= CORE_SCENARIOS, f"scenarios passing directly: {sorted(compared)}"

    regressions = _regressions(direct, through, skip={s.name for s in direct.values() if _vacuous(s)})
    assert not regressions, "\n".join(regressions)

    # The suite's own DNS-rebinding scenario, which server-everything fails, passes at the gateway.
    assert through["dns-rebinding-protection"].passed, through["dns-rebinding-protection"].failures()


@pytest.mark.timeout(3 * SUITE_TIMEOUT + 2 * START_TIMEOUT)
async def test_the_whole_suite_passes_through_the_gateway(tmp_path: Path) -> None:
    _infra.require("conformance")
    (direct_dir := tmp_path / "direct").mkdir()
    (gateway_dir := tmp_path / "gateway").mkdir()

    listed: set[str] = set()

    async def list_scenarios() -> None:
        listed.update(await listed_scenarios(tmp_path))

    # Node takes over a second to start the suite's CLI: the listing runs alongside the runs.
    async with anyio.create_task_group() as tg:
        tg.start_soon(list_scenarios)
        async with fixture_over_http(tmp_path / "fixture-server.log") as url:
            direct = await run_suite(url, direct_dir)
        # The fixture is written for the handshake era (it asks the client with server-to-client
        # requests, and takes `resources/subscribe`): it answers `server/discover` only because its
        # SDK does. So it is pinned to that revision, as a user pins such a server.
        async with serve(config({"fixture": fixture_stdio(prefix="", protocol="2025-11-25")})) as gw:
            through = await run_suite(gw.url, gateway_dir)

    _print_table(direct, through, {})

    assert set(direct) == set(through) == listed, "both runs must cover every scenario the suite lists"
    regressions = _regressions(direct, through, skip=set())
    assert not regressions, "\n".join(regressions)

    # Beyond the comparison: every scenario passes through the gateway, including the one the gateway
    # answers itself (dns-rebinding-protection). One failing both ways means the fixture lacks it.
    failing = [
        f"{name}: {'' if direct[name].passed else '(fails directly too: extend the fixture server) '}"
        f"{scenario.failures()}"
        for name, scenario in through.items()
        if not scenario.passed
    ]
    assert not failing, "\n".join(failing)
    # A scenario passes when no check fails, even with no checks at all: this one must have run.
    rebinding = {"localhost-host-rebinding-rejected", "localhost-host-valid-accepted"}
    dns = through["dns-rebinding-protection"]
    assert dns.succeeded() >= rebinding, dns.checks


# --- the 0.2.0-alpha suite, at each revision ----------------------------------------------------


def baseline_file(revision: str) -> Path:
    return Path(__file__).parent / "conformance" / f"expected-failures-{revision}.yaml"


def load_baseline(revision: str, backend: str) -> dict[str, str]:
    """The scenarios expected to fall short through the gateway at `revision` with a `backend` (stdio
    or http) fixture, each with its reason. A known failure must still fail, so the file only shrinks."""
    path = baseline_file(revision)
    data = yaml.safe_load(path.read_text()) or {}
    entries: dict[str, str] = data.get(backend) or {}
    unexplained = [
        name for name, reason in entries.items() if not isinstance(reason, str) or not reason.strip()
    ]
    assert not unexplained, f"{path.name}: entries without a reason: {unexplained}"
    return entries


@pytest.mark.timeout(3 * SUITE_TIMEOUT + 2 * START_TIMEOUT)
@pytest.mark.parametrize("backend", ["stdio", "http"])
@pytest.mark.parametrize("revision", ["2026-07-28", "2025-11-25"])
async def test_the_next_suite_passes_through_the_gateway(tmp_path: Path, revision: str, backend: str) -> None:
    """The fixture server directly (streamable HTTP), then through the gateway with the fixture as a
    stdio backend or as a `url:` backend, both runs of the 0.2.0-alpha suite at `--spec-version
    revision`: every scenario passes directly, and through the gateway all but the baselined ones,
    which must still fall short."""
    _infra.require(_infra.CONFORMANCE_NEXT)
    cli, args = _infra.conformance_next_cli(), ("--spec-version", revision)
    expected = load_baseline(revision, backend)
    # The fixture's 2025-11-25 tools ask mid-call and its resources use `resources/subscribe`, as
    # a server written for that revision does: spoken to in 2026-07-28 (what `auto` picks for any
    # server on the SDK) they cannot, so the 2025-11-25 run pins it, as README tells users to.
    pin = "auto" if revision == "2026-07-28" else "2025-11-25"
    baseline = baseline_file(revision).name
    (direct_dir := tmp_path / "direct").mkdir()
    (gateway_dir := tmp_path / "gateway").mkdir()

    listed: set[str] = set()

    async def list_scenarios() -> None:
        listed.update(await listed_scenarios(tmp_path, cli=cli, args=args))

    async with anyio.create_task_group() as tg:
        tg.start_soon(list_scenarios)
        async with fixture_over_http(tmp_path / "fixture-server.log") as url:
            direct = await run_suite(url, direct_dir, cli=cli, args=args)
            if backend == "http":
                async with serve(config({"fixture": {"url": url, "prefix": "", "protocol": pin}})) as gw:
                    through = await run_suite(gw.url, gateway_dir, cli=cli, args=args)
        if backend == "stdio":
            async with serve(config({"fixture": fixture_stdio(prefix="", protocol=pin)})) as gw:
                through = await run_suite(gw.url, gateway_dir, cli=cli, args=args)

    _print_table(direct, through, {name: f"baseline: {reason}" for name, reason in expected.items()})

    assert set(direct) == set(through) == listed, "both runs must cover every scenario the suite lists"
    unknown = sorted(set(expected) - listed)
    assert not unknown, f"{baseline} names scenarios the suite does not run: {unknown}"
    # The fixture is the reference: a scenario failing directly means it lacks something.
    failing_directly = [f"{name}: {s.failures()}" for name, s in direct.items() if not s.passed]
    assert not failing_directly, "extend tests/conformance/fixture_server.py:\n" + "\n".join(failing_directly)

    regressions = _regressions(direct, through, skip=set(expected))
    assert not regressions, "\n".join(regressions)
    # A baselined scenario that does as well as directly means the gateway learnt it: the entry must go.
    stale = sorted(name for name in expected if _shortfall(direct[name], through[name]) is None)
    assert not stale, f"these now pass through the gateway: remove them from {baseline}: {stale}"
