"""The official TypeScript SDK client, in both revisions, against 2026-07-28 backends: through the
gateway it gets what it gets from the backend directly, except for the namespace.

tests/node/ts-cases.mjs runs a fixed list of cases in one Node process per test (tools over all
pages; prompts, resources and templates listed; a plain tool, structured output, progress with log
messages, a prompt, a resource and a template read, a completion, an input round answered by its
elicitation handler) and prints what the client returned. Backends: our 2026-07-28-only server
(tests/servers/modern.py) as a stdio and as a `url:` backend, and `mcp-server-time` (both
revisions). A 2025-11-25 client cannot reach modern.py directly: through the gateway it must get
what a 2026-07-28 client gets directly, less the fields its revision does not have.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from tests._infra import NODE_DIR, require, server_node
from tests._support import TIME_ARGS, TIME_SERVER, config, modern, modern_http, serve, time_server

pytestmark = [pytest.mark.anyio, pytest.mark.node]

TS_CASES = NODE_DIR / "ts-cases.mjs"
LEGACY, MODERN = "2025-11-25", "2026-07-28"
PREFIX = "ns"
# Per request, inside Node; the whole run is bounded by RUN_TIMEOUT (Node start-up, a stdio spawn
# per connect, on a loaded 2-core machine).
REQUEST_TIMEOUT = 30.0
RUN_TIMEOUT = 180.0
# Result fields that name the server answering (the gateway or the backend), not the answer.
SERVER_INFO = "io.modelcontextprotocol/serverInfo"
# The listing cases, the field of each item that carries the namespace, and its separator.
NAMESPACED = (
    ("tools", "name", "__"),
    ("prompts", "name", "__"),
    ("resources", "uri", "+"),
    ("templates", "uriTemplate", "+"),
)
# Fields only a 2026-07-28 client sees; a 2025-11-25 client is compared without them.
MODERN_ONLY = ("resultType", "ttlMs", "cacheScope")


@dataclass(frozen=True)
class Backend:
    profile: str  # the cases ts-cases.mjs runs
    spec: Callable[[str | None], dict[str, Any]]  # its gateway config, given modern.py's URL
    direct: Callable[[str | None], dict[str, Any]]  # where the client reaches it directly
    revisions: tuple[str, ...]  # the revisions it speaks directly


BACKENDS = {
    # Direct clients reach the same server over HTTP.
    "modern-stdio": Backend("modern", lambda url: modern(), lambda url: {"url": url}, (MODERN,)),
    "modern-http": Backend("modern", lambda url: {"url": url}, lambda url: {"url": url}, (MODERN,)),
    "time": Backend(
        "time",
        lambda url: time_server(),
        lambda url: {"command": TIME_SERVER, "args": list(TIME_ARGS)},
        (LEGACY, MODERN),
    ),
}


async def run_cases(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ts-cases.mjs once over `runs`; each run's outcome by label (see the script)."""
    node = server_node()
    assert node is not None  # the test's require("ts-client")
    spec = {"timeoutMs": int(REQUEST_TIMEOUT * 1000), "runs": runs}
    with anyio.fail_after(RUN_TIMEOUT):
        done = await anyio.run_process([node, str(TS_CASES), json.dumps(spec)], cwd=NODE_DIR, check=False)
    stderr = done.stderr.decode(errors="replace")
    assert done.stdout, f"ts-cases.mjs printed nothing (exit {done.returncode}):\n{stderr}"
    report: dict[str, Any] = json.loads(done.stdout)["runs"]
    unreachable = {label: r["connectError"] for label, r in report.items() if "connectError" in r}
    assert not unreachable, f"the TypeScript client could not connect: {unreachable}\n{stderr}"
    assert done.returncode == 0, stderr
    return report


def _strip(value: Any, prefix: str) -> str:
    assert isinstance(value, str) and value.startswith(prefix), f"{value!r} lacks the namespace {prefix!r}"
    return value.removeprefix(prefix)


def without_namespace(cases: dict[str, Any]) -> dict[str, Any]:
    """`cases` as the backend names things: each listed name and URI, and each URI read, must
    carry the gateway's namespace (checked), which is then removed."""
    cases = json.loads(json.dumps(cases))  # a copy, edited in place below
    for kind, field, separator in NAMESPACED:
        items = cases.get(kind)
        for item in items if isinstance(items, list) else []:  # else an error, compared as it is
            item[field] = _strip(item[field], PREFIX + separator)
    for name in ("resource", "template"):
        for content in cases.get(name, {}).get("contents", []):
            content["uri"] = _strip(content["uri"], f"{PREFIX}+")
    return cases


def comparable(cases: dict[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """`cases` without what names the answering server (`_meta` serverInfo) and the `drop`ped
    result fields; listings sorted (their order is the merge's, not what is compared here)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: clean(v) for k, v in value.items() if k not in drop}
            meta = out.get("_meta")
            if isinstance(meta, dict):
                meta.pop(SERVER_INFO, None)
                if not meta:
                    del out["_meta"]
            return out
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    cleaned: dict[str, Any] = clean(cases)
    for kind, field, _ in NAMESPACED:
        if isinstance(cleaned.get(kind), list):
            cleaned[kind] = sorted(cleaned[kind], key=lambda item: item[field])
    return cleaned


def differences(got: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The cases whose outcomes differ, both sides shown."""
    return {
        case: {"through the gateway": got.get(case), "directly": expected.get(case)}
        for case in sorted(set(got) | set(expected))
        if got.get(case) != expected.get(case)
    }


@pytest.mark.parametrize("name", list(BACKENDS))
async def test_the_typescript_client_gets_through_the_gateway_what_it_gets_directly(name: str) -> None:
    require("ts-client")  # and a Node it runs on
    backend = BACKENDS[name]
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(modern_http()) if backend.profile == "modern" else None
        gw = await stack.enter_async_context(serve(config({"s": {**backend.spec(url), "prefix": PREFIX}})))
        assert gw.fleet.backends["s"].available, gw.fleet.backends["s"].last_error
        assert gw.fleet.backends["s"].protocol_version == MODERN
        common = {"profile": backend.profile}
        runs = [
            {**common, **backend.direct(url), "label": f"direct {rev}", "mode": rev, "prefix": ""}
            for rev in backend.revisions
        ] + [
            {**common, "url": gw.url, "label": f"gateway {rev}", "mode": rev, "prefix": PREFIX}
            for rev in (LEGACY, MODERN)
        ]
        report = await run_cases(runs)

    for run in runs:
        assert report[run["label"]]["revision"] == run["mode"], run["label"]
    for rev in (LEGACY, MODERN):
        through = report[f"gateway {rev}"]
        # A revision the backend does not speak directly: what a 2026-07-28 client gets there,
        # less the 2026-07-28 fields.
        direct_rev = rev if rev in backend.revisions else MODERN
        drop = MODERN_ONLY if direct_rev != rev else ()
        expected = comparable(report[f"direct {direct_rev}"]["cases"], drop=drop)
        got = comparable(without_namespace(through["cases"]), drop=drop)
        assert not differences(got, expected), json.dumps(differences(got, expected), indent=1)[:6000]
    # Each case did what it is for, so equal failures on both sides cannot pass.
    for label, run in report.items():
        failed = {case: out for case, out in run["cases"].items() if isinstance(out, dict) and "error" in out}
        assert not failed, f"{label}: {failed}"
