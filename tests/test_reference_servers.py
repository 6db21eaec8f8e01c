"""One gateway in front of a realistic fleet of the real reference servers, used by real clients.

The fleet: `mcp-server-time` and `mcp-server-git` (PyPI; they speak 2026-07-28 and 2025-11-25) and
`server-memory` and `server-filesystem` (npm; 2025-11-25 only), each on its own stdio process shared
by every client. Checked through the gateway, from a 2025-11-25 client, a 2026-07-28 client and
`fastmcp.Client`: the merged catalogue, real work on each backend (git history, a knowledge graph
persisted to disk, files written and read back, a path outside the sandbox refused exactly as the
server refuses it), 20 concurrent clients without a single extra process, and nothing left running
after shutdown.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import mcp_types as types
import psutil
import pytest
from fastmcp import Client as FastMCPClient
from mcp import Client as SdkClient
from mcp.client.stdio import StdioServerParameters

from tests import _infra
from tests._support import VENV_BIN, Running, config, fastmcp_client, process_tree, serve, time_server

pytestmark = [pytest.mark.anyio, pytest.mark.node]

KINDS = ["legacy", "2026-07-28", "fastmcp"]

GIT_TOOLS = {
    "git_status", "git_diff_unstaged", "git_diff_staged", "git_diff", "git_commit", "git_add",
    "git_reset", "git_log", "git_create_branch", "git_checkout", "git_show", "git_branch",
}  # fmt: skip
MEMORY_TOOLS = {
    "create_entities", "create_relations", "add_observations", "delete_entities", "delete_observations",
    "delete_relations", "read_graph", "search_nodes", "open_nodes",
}  # fmt: skip
TIME_TOOLS = {"get_current_time", "convert_time"}
# Tools any server-filesystem release has; the full list is compared against the server itself.
FILESYSTEM_CORE = {"write_file", "list_directory", "list_allowed_directories"}

# A word of each backend's command line, to pick the backends out of the process tree.
BACKEND_MARKERS = ("mcp-server-time", "mcp-server-git", "server-memory", "server-filesystem")

# Bounds for every wait: generous for a loaded 2-core machine, never unbounded.
CALL_TIMEOUT = 30.0
LOAD_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope, so the fleet below is started once for the whole module


# --- the fleet --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    root: Path
    repo: Path
    files: Path  # the only directory server-filesystem may touch
    memory_file: Path
    commits: tuple[tuple[str, str], ...]  # (sha, message), oldest first


GIT_IDENTITY = (
    "-c",
    "user.name=Ada Lovelace",
    "-c",
    "user.email=ada@example.org",
    "-c",
    "commit.gpgsign=false",
)


def _git(repo: Path, *args: str) -> str:
    argv = ["git", "-C", str(repo), *GIT_IDENTITY, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def make_sandbox(root: Path) -> Sandbox:
    """A git repository with two commits and an untracked file, a directory for files, a memory file path."""
    _infra.require("git")
    root = root.resolve()  # server-filesystem compares real paths
    repo, files = root / "repo", root / "files"
    repo.mkdir()
    files.mkdir()
    _git(repo, "init", "-q")
    (repo / "README.md").write_text("# engine\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "Describe the analytical engine")
    (repo / "notes.md").write_text("Note G: Bernoulli numbers\n")
    _git(repo, "add", "notes.md")
    _git(repo, "commit", "-q", "-m", "Add Note G")
    (repo / "scratch.txt").write_text("untracked\n")
    commits = tuple(
        (sha, _git(repo, "log", "-1", "--format=%s", sha))
        for sha in _git(repo, "rev-list", "--reverse", "HEAD").split()
    )
    (root / "outside.txt").write_text("not for the filesystem server\n")
    return Sandbox(root=root, repo=repo, files=files, memory_file=root / "memory.jsonl", commits=commits)


def _stdio(argv: list[str], **extra: Any) -> dict[str, Any]:
    return {"command": argv[0], "args": argv[1:], **extra}


def commands(box: Sandbox) -> dict[str, list[str]]:
    """argv of each backend, by the namespace it gets in the gateway."""
    return {
        "time": [str(VENV_BIN / "mcp-server-time"), "--local-timezone", "UTC"],
        "git": [str(VENV_BIN / "mcp-server-git"), "--repository", str(box.repo)],
        "memory": _infra.npm_server_command("server-memory"),
        "fs": _infra.npm_server_command("server-filesystem", str(box.files)),
    }


def memory_env(box: Sandbox) -> dict[str, str]:
    return {"MEMORY_FILE_PATH": str(box.memory_file)}


def fleet_config(box: Sandbox) -> Any:
    argv = commands(box)
    return config(
        {
            "time": time_server(),
            "git": _stdio(argv["git"]),
            "memory": _stdio(argv["memory"], env=memory_env(box)),
            "fs": _stdio(argv["fs"]),
        }
    )


@dataclass(frozen=True)
class Fleet:
    gw: Running
    box: Sandbox


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    box = make_sandbox(tmp_path_factory.mktemp("fleet"))
    async with serve(fleet_config(box)) as gw:
        yield Fleet(gw=gw, box=box)


# --- one face for the three kinds of client ---------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    is_error: bool
    text: str
    structured: dict[str, Any] | None


class Caller(Protocol):
    async def tool_names(self) -> list[str]: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> Outcome: ...


def _text(content: list[Any]) -> str:
    return "\n".join(c.text for c in content if isinstance(c, types.TextContent))


class SdkCaller:
    def __init__(self, client: SdkClient) -> None:
        self.client = client

    async def tool_names(self) -> list[str]:
        names: list[str] = []
        cursor: str | None = None
        while True:
            with anyio.fail_after(CALL_TIMEOUT):
                page = await self.client.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
            if cursor is None:
                return names

    async def call(self, name: str, arguments: dict[str, Any]) -> Outcome:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await self.client.call_tool(name, arguments)
        return Outcome(bool(result.is_error), _text(result.content), result.structured_content)


class FastMCPCaller:
    def __init__(self, client: FastMCPClient[Any]) -> None:
        self.client = client

    async def tool_names(self) -> list[str]:
        with anyio.fail_after(CALL_TIMEOUT):
            return [t.name for t in await self.client.list_tools()]

    async def call(self, name: str, arguments: dict[str, Any]) -> Outcome:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await self.client.call_tool(name, arguments, raise_on_error=False)
        return Outcome(bool(result.is_error), _text(result.content), result.structured_content)


@asynccontextmanager
async def connect(kind: str, url: str) -> AsyncIterator[Caller]:
    """A real client of `kind` ("legacy", "2026-07-28" or "fastmcp") connected to the gateway."""
    if kind == "fastmcp":
        async with fastmcp_client(url) as fast:
            yield FastMCPCaller(fast)
    else:
        async with SdkClient(url, mode=kind) as sdk:
            assert sdk.protocol_version == ("2025-11-25" if kind == "legacy" else "2026-07-28")
            yield SdkCaller(sdk)


async def ok(caller: Caller, name: str, arguments: dict[str, Any]) -> Outcome:
    outcome = await caller.call(name, arguments)
    assert not outcome.is_error, f"{name} failed: {outcome.text}"
    return outcome


# --- the catalogue ----------------------------------------------------------------------------


async def direct_tools(argv: list[str], env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """A server's tool definitions, asked of the server itself over stdio."""
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    with anyio.fail_after(CALL_TIMEOUT):
        async with SdkClient(params, mode="legacy") as client:
            return {t.name: t.model_dump(exclude_none=True) for t in (await client.list_tools()).tools}


async def test_catalogue_holds_every_servers_tools_under_its_namespace(fleet: Fleet) -> None:
    async with SdkClient(fleet.gw.url, mode="legacy") as client:
        with anyio.fail_after(CALL_TIMEOUT):
            listed = (await client.list_tools()).tools
    names = [t.name for t in listed]
    assert len(names) == len(set(names)), "a tool name appears twice"
    by_ns: dict[str, set[str]] = {}
    for name in names:
        ns, sep, local = name.partition("__")
        assert sep and local, f"{name!r} has no namespace"
        by_ns.setdefault(ns, set()).add(local)
    assert set(by_ns) == {"time", "git", "memory", "fs"}
    assert by_ns["git"] == GIT_TOOLS
    assert by_ns["memory"] == MEMORY_TOOLS
    assert by_ns["time"] == TIME_TOOLS
    assert by_ns["fs"] >= FILESYSTEM_CORE
    assert {"read_text_file", "read_file"} & by_ns["fs"]

    # Each definition is the server's own, renamed and otherwise untouched; nothing added or lost.
    # (Direct processes get a sandbox of their own: the fleet's memory file must not be shared.)
    scratch = fleet.box.root / "direct"
    scratch.mkdir(exist_ok=True)
    env = {"MEMORY_FILE_PATH": str(scratch / "memory.jsonl")}
    gateway = {t.name: t.model_dump(exclude_none=True) for t in listed}
    expected: dict[str, dict[str, Any]] = {}

    async def ask(ns: str, argv: list[str]) -> None:
        for local, definition in (await direct_tools(argv, env if ns == "memory" else None)).items():
            expected[f"{ns}__{local}"] = {**definition, "name": f"{ns}__{local}"}

    async with anyio.create_task_group() as tg:
        for ns, argv in commands(fleet.box).items():
            tg.start_soon(ask, ns, argv)
    assert gateway == expected

    # The other two kinds of client see the same catalogue.
    for kind in ("2026-07-28", "fastmcp"):
        async with connect(kind, fleet.gw.url) as other:
            assert sorted(await other.tool_names()) == sorted(names), kind


# --- each backend, from each kind of client ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_git_log_and_status(fleet: Fleet, kind: str) -> None:
    repo = str(fleet.box.repo)
    async with connect(kind, fleet.gw.url) as client:
        log = await ok(client, "git__git_log", {"repo_path": repo})
        status = await ok(client, "git__git_status", {"repo_path": repo})
        outside = await client.call("git__git_status", {"repo_path": str(fleet.box.root)})
    (first_sha, _), (second_sha, _) = fleet.box.commits
    for sha, message in fleet.box.commits:
        assert sha in log.text and message in log.text
    assert log.text.index(second_sha) < log.text.index(first_sha), "newest commit first"
    assert "Ada Lovelace" in log.text
    assert "scratch.txt" in status.text and "Untracked" in status.text
    assert outside.is_error and "outside the allowed repository" in outside.text


@pytest.mark.parametrize("kind", KINDS)
async def test_memory_graph_is_built_searched_and_persisted(fleet: Fleet, kind: str) -> None:
    tag = kind.replace("-", "")
    ada, engine = f"Ada_{tag}", f"Engine_{tag}"
    async with connect(kind, fleet.gw.url) as client:
        created = await ok(
            client,
            "memory__create_entities",
            {
                "entities": [
                    {"name": ada, "entityType": "person", "observations": [f"wrote Note G ({tag})"]},
                    {"name": engine, "entityType": "machine", "observations": ["never built"]},
                ]
            },
        )
        await ok(
            client,
            "memory__create_relations",
            {"relations": [{"from": ada, "to": engine, "relationType": "programmed"}]},
        )
        graph = await ok(client, "memory__read_graph", {})
        found = await ok(client, "memory__search_nodes", {"query": f"Note G ({tag})"})
    assert created.structured is not None
    assert {e["name"] for e in created.structured["entities"]} == {ada, engine}
    assert graph.structured is not None
    assert {ada, engine} <= {e["name"] for e in graph.structured["entities"]}
    assert {"from": ada, "to": engine, "relationType": "programmed"} in graph.structured["relations"]
    assert found.structured is not None
    assert [e["name"] for e in found.structured["entities"]] == [ada]
    assert ada in found.text  # the text block carries the same JSON

    # server-memory writes its graph (JSON lines) to MEMORY_FILE_PATH, which the gateway passed on.
    on_disk = [json.loads(line) for line in fleet.box.memory_file.read_text().splitlines() if line.strip()]
    assert {
        "type": "entity",
        "name": ada,
        "entityType": "person",
        "observations": [f"wrote Note G ({tag})"],
    } in on_disk
    assert any(
        r.get("type") == "relation" and r.get("from") == ada and r.get("to") == engine for r in on_disk
    )


async def _read_tool(client: Caller) -> str:
    names = set(await client.tool_names())
    return "fs__read_text_file" if "fs__read_text_file" in names else "fs__read_file"


@pytest.mark.parametrize("kind", KINDS)
async def test_filesystem_round_trip_listing_and_sandbox(fleet: Fleet, kind: str) -> None:
    files = fleet.box.files
    path = files / f"poem-{kind}.txt"
    content = f"The engine weaves algebraic patterns\nas the loom weaves flowers ({kind}) — ü\n"
    async with connect(kind, fleet.gw.url) as client:
        await ok(client, "fs__write_file", {"path": str(path), "content": content})
        read = await ok(client, await _read_tool(client), {"path": str(path)})
        allowed = await ok(client, "fs__list_allowed_directories", {})
        listing = await ok(client, "fs__list_directory", {"path": str(files)})
        refused = await client.call(
            "fs__write_file", {"path": str(fleet.box.root / f"escape-{kind}.txt"), "content": "x"}
        )
    assert path.read_text() == content  # really written, by the server, where asked
    assert read.text == content
    assert str(files) in allowed.text.splitlines()
    assert f"[FILE] poem-{kind}.txt" in listing.text
    assert refused.is_error and "Access denied" in refused.text
    assert not (fleet.box.root / f"escape-{kind}.txt").exists()


async def test_refusal_outside_the_sandbox_is_the_servers_own_answer(fleet: Fleet) -> None:
    """The gateway relays server-filesystem's refusal exactly: same isError result, not a protocol error."""
    arguments = {"path": str(fleet.box.root / "outside.txt")}
    argv = commands(fleet.box)["fs"]
    with anyio.fail_after(CALL_TIMEOUT):
        async with SdkClient(StdioServerParameters(command=argv[0], args=argv[1:]), mode="legacy") as direct:
            read_tool = (
                "read_text_file"
                if "read_text_file" in {t.name for t in (await direct.list_tools()).tools}
                else "read_file"
            )
            expected = await direct.call_tool(read_tool, arguments)
    assert expected.is_error is True  # what this server does: a tool error, not a JSON-RPC error
    async with SdkClient(fleet.gw.url, mode="legacy") as client:
        with anyio.fail_after(CALL_TIMEOUT):
            relayed = await client.call_tool(f"fs__{read_tool}", arguments)
    assert relayed.model_dump() == expected.model_dump()
    assert "not for the filesystem server" not in str(relayed.content)


async def test_time_from_every_kind_of_client(fleet: Fleet) -> None:
    for kind in KINDS:
        async with connect(kind, fleet.gw.url) as client:
            now = await ok(client, "time__get_current_time", {"timezone": "UTC"})
            converted = await ok(
                client,
                "time__convert_time",
                {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
            )
        assert now.structured is not None and now.structured["timezone"] == "UTC"
        assert converted.structured is not None and converted.structured["target"]["datetime"].endswith(
            "T21:00:00+09:00"
        )


# --- load and process hygiene -----------------------------------------------------------------

BABBAGE: dict[str, Any] = {
    "name": "Charles_Babbage",
    "entityType": "person",
    "observations": ["designed the Difference Engine"],
}


async def seed_memory(url: str) -> None:
    """One write before the load: server-memory rewrites its whole file on every write (load, modify,
    save), so concurrent writes lose each other even when sent to it directly; the load only reads."""
    async with connect("legacy", url) as client:
        await ok(client, "memory__create_entities", {"entities": [BABBAGE]})


async def mixed_session(kind: str, url: str, box: Sandbox, n: int) -> None:
    """A few calls across all four backends, as one client would make them."""
    async with connect(kind, url) as client:
        now = await ok(client, "time__get_current_time", {"timezone": "Europe/London"})
        assert now.structured is not None and now.structured["timezone"] == "Europe/London"
        log = await ok(client, "git__git_log", {"repo_path": str(box.repo), "max_count": 1})
        assert box.commits[-1][0] in log.text and box.commits[0][0] not in log.text
        found = await ok(client, "memory__search_nodes", {"query": "Difference Engine"})
        assert found.structured is not None and [e["name"] for e in found.structured["entities"]] == [
            BABBAGE["name"]
        ]
        opened = await ok(client, "memory__open_nodes", {"names": [BABBAGE["name"]]})
        assert opened.structured is not None and opened.structured["entities"] == [BABBAGE]
        path = box.files / "load" / f"{n}.txt"
        await ok(client, "fs__create_directory", {"path": str(path.parent)})
        await ok(client, "fs__write_file", {"path": str(path), "content": f"client {n} ({kind})"})
        read = await ok(client, await _read_tool(client), {"path": str(path)})
        assert read.text == f"client {n} ({kind})"
        status = await ok(client, "git__git_status", {"repo_path": str(box.repo)})
        assert "scratch.txt" in status.text


def _describe(procs: Iterable[psutil.Process]) -> list[str]:
    out = []
    for proc in sorted(procs, key=lambda p: p.pid):
        try:
            out.append(f"{proc.pid} [{proc.status()}]: {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            out.append(f"{proc.pid}: (gone)")
    return out


def children() -> set[psutil.Process]:
    """Direct children of this process: the gateway runs in it, so these are the backends it spawned."""
    return set(psutil.Process().children())


def tree() -> set[psutil.Process]:
    """Everything below this process (psutil.Process compares by pid and start time, not pid alone)."""
    procs = set()
    for pid in process_tree():
        with contextlib.suppress(psutil.NoSuchProcess):  # exited since it was listed
            procs.add(psutil.Process(pid))
    return procs


def is_git_helper(proc: psutil.Process) -> bool:
    """A process below mcp-server-git: GitPython runs `git` per call (and keeps a `git cat-file
    --batch` pair per Repo object). The backend's own business, not the gateway's."""
    try:
        return any("mcp-server-git" in " ".join(parent.cmdline()) for parent in proc.parents())
    except psutil.Error:
        return True  # already gone


def backend_processes(procs: Iterable[psutil.Process]) -> dict[str, psutil.Process]:
    found: dict[str, psutil.Process] = {}
    for proc in procs:
        cmdline = " ".join(proc.cmdline())
        for marker in BACKEND_MARKERS:
            if marker in cmdline:
                assert marker not in found, f"two {marker} processes: {_describe([found[marker], proc])}"
                found[marker] = proc
    return found


async def test_twenty_concurrent_clients_share_the_backend_processes(fleet: Fleet) -> None:
    await seed_memory(fleet.gw.url)
    await mixed_session("legacy", fleet.gw.url, fleet.box, -1)  # warm-up
    backends_before = children()
    assert set(backend_processes(backends_before)) == set(BACKEND_MARKERS), _describe(backends_before)
    assert len(backends_before) == len(BACKEND_MARKERS), _describe(backends_before)

    failures: list[BaseException] = []
    # Processes seen under the test during the load, besides the backends and git's helpers.
    unexpected: dict[psutil.Process, str] = {}

    async def one(n: int) -> None:
        try:
            await mixed_session(KINDS[n % len(KINDS)], fleet.gw.url, fleet.box, n)
        except Exception as exc:  # collect, so one failure does not cancel the other clients
            failures.append(exc)

    async def watch() -> None:
        while True:
            for proc in tree() - backends_before:
                if proc not in unexpected and not is_git_helper(proc):
                    unexpected[proc] = _describe([proc])[0]
            await anyio.sleep(0.02)

    start = anyio.current_time()
    with anyio.fail_after(LOAD_TIMEOUT):
        async with anyio.create_task_group() as outer:
            outer.start_soon(watch)
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(one, n)
            outer.cancel_scope.cancel()
    elapsed = anyio.current_time() - start
    assert not failures, f"{len(failures)} of 20 clients failed; first: {failures[0]!r}"
    print(f"\n20 concurrent clients x 9 calls (180 calls): {elapsed:.2f} s")

    # Every client's writes landed where asked.
    written = {p.name: p.read_text() for p in (fleet.box.files / "load").iterdir()}
    expected = {f"{n}.txt": f"client {n} ({KINDS[n % len(KINDS)]})" for n in range(20)}
    assert written == {"-1.txt": "client -1 (legacy)", **expected}
    # ... all through the same four backend processes: no process per call or per client, at any time.
    assert children() == backends_before, (
        f"before: {_describe(backends_before)}; now: {_describe(children())}"
    )
    assert not unexpected, f"processes started during the load: {list(unexpected.values())}"
    extra = {p for p in tree() - backends_before if not is_git_helper(p)}
    assert not extra, _describe(extra)


async def test_shutdown_leaves_no_process_behind(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path)
    before = tree()
    async with serve(fleet_config(box)) as gw:
        await seed_memory(gw.url)
        await mixed_session("legacy", gw.url, box, 0)  # every backend used, helpers included
        started = tree() - before
        backends = backend_processes(started)
        assert set(backends) == set(BACKEND_MARKERS), _describe(started)
        assert all(p.is_running() for p in backends.values())
    # The gateway stopped and reaped its own children before shutdown returned: no waiting here.
    assert not (tree() & started), f"still under the test after shutdown: {_describe(tree() & started)}"

    # Helpers the backends ran were orphaned when their parent exited; they must exit too (bounded wait).
    def alive() -> list[psutil.Process]:
        running = []
        for proc in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    running.append(proc)
        return running

    for _ in range(200):  # at most 10 s
        if not alive():
            break
        await anyio.sleep(0.05)
    assert not alive(), _describe(alive())
    # And the memory server had written its graph before it was stopped.
    assert BABBAGE["name"] in box.memory_file.read_text()
