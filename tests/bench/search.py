"""Tool search mode, measured: quality over a query set, the size of the list a model sees, and
how long a search takes, on a catalogue of over 1,000 tools.

The catalogue is a real fleet behind the real gateway: the servers the tests run
(`mcp-server-time`, `mcp-server-git`, the npm filesystem, memory and everything servers) and
tests/servers/many_tools.py's generated SaaS and infrastructure tools (unprefixed) up to the count.
The queries and the tools each should find are kept in search_queries.yaml.

- recall@5: the share of queries with one of their expected tools among the first 5 results;
  MRR: the mean of 1/rank of the first expected tool within the first `LIMIT` (0 when absent).
- Tokens: the `tools/list` result's tools, as compact JSON, counted with the o200k_base encoding
  (`bpe-openai`: the same encoding as `tiktoken`'s, shipped inside the package, where `tiktoken`
  downloads its encodings at run time), the full list against what search mode lists.
- Latency: a `gateway_search_tools` call through the gateway over HTTP as a client sees it, and
  the index's own search in this process (the part that grows with the catalogue).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpe_openai
import yaml
from mcp import Client as SdkClient

from gateway.config.models import ToolSearchConfig
from gateway.search import SEARCH, ToolSearch
from tests._infra import missing, npm_server_command
from tests._support import MANY_TOOLS, VENV_BIN, time_server
from tests.bench.processes import BenchContext
from tests.bench.results import MetricValue, percentile

QUERIES = Path(__file__).with_name("search_queries.yaml")
GENERATED = 950  # with the real servers' 53 tools: 1,003
K = 5
LIMIT = 10
AFTER = 50
REPEATS = 20  # in-process searches per query, for a stable p50


@dataclass(frozen=True)
class Query:
    text: str
    expect: frozenset[str]


def load_queries(path: Path = QUERIES) -> list[Query]:
    data = yaml.safe_load(path.read_text())
    return [Query(q["query"], frozenset(q["expect"])) for q in data["queries"]]


def rank_of(query: Query, ranking: Sequence[str]) -> int | None:
    """1-based rank of the first expected tool in `ranking`, or None."""
    return next((i for i, name in enumerate(ranking, 1) if name in query.expect), None)


def quality(queries: Sequence[Query], rankings: Sequence[Sequence[str]]) -> tuple[float, float]:
    """(recall@K, MRR) of `rankings`, one per query."""
    ranks = [rank_of(q, r) for q, r in zip(queries, rankings, strict=True)]
    recall = sum(r is not None and r <= K for r in ranks) / len(queries)
    mrr = sum(1 / r for r in ranks if r is not None) / len(queries)
    return recall, mrr


def count_tokens(tools: list[dict[str, Any]]) -> int:
    encoding = bpe_openai.get_encoding("o200k_base")
    return len(encoding.encode(json.dumps({"tools": tools}, separators=(",", ":"), ensure_ascii=False)))


def fleet(workdir: Path) -> dict[str, Any]:
    """The benchmark's servers (as `servers:` of gateway.yaml), their working files in `workdir`."""
    absent = {name: why for name in ("server-everything", "server-memory", "server-filesystem")
              if (why := missing(name)) is not None}  # fmt: skip
    if absent:
        raise RuntimeError(f"the search benchmark needs the npm reference servers: {absent}")
    repo, files = workdir / "repo", workdir / "files"
    files.mkdir(exist_ok=True)
    if not repo.exists():
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run([*git, "init", "-q", str(repo)], check=True, timeout=60)
        subprocess.run(
            [*git, "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "init"], check=True, timeout=60
        )

    def stdio(argv: list[str], **extra: Any) -> dict[str, Any]:
        return {"type": "stdio", "command": argv[0], "args": argv[1:], **extra}

    return {
        "time": time_server(type="stdio"),
        "git": stdio([str(VENV_BIN / "mcp-server-git"), "--repository", str(repo)]),
        "filesystem": stdio(npm_server_command("server-filesystem", str(files))),
        "memory": stdio(
            npm_server_command("server-memory"), env={"MEMORY_FILE_PATH": str(workdir / "memory.json")}
        ),
        "everything": stdio(npm_server_command("server-everything")),
        "many": stdio([sys.executable, MANY_TOOLS, str(GENERATED)], prefix=""),
    }


async def _listed(client: SdkClient) -> list[dict[str, Any]]:
    """The tools a client lists, as the JSON the gateway sent."""
    result = await client.list_tools(cache_mode="bypass")
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in result.tools]


async def bench(ctx: BenchContext) -> dict[str, MetricValue]:
    queries = load_queries()
    servers = fleet(ctx.workdir)
    async with (
        ctx.gateway_server("search-off", {"servers": servers}) as srv,
        SdkClient(srv.mcp_url, mode="2026-07-28") as client,
    ):
        full = await _listed(client)
    ctx.log(f"  search: {len(full)} tools in the full list")
    config = {"servers": servers, "tool_search": {"after": AFTER, "limit": LIMIT}}
    rankings: list[list[str]] = []
    latencies: list[float] = []
    async with (
        ctx.gateway_server("search-on", config) as srv,
        SdkClient(srv.mcp_url, mode="2026-07-28") as client,
    ):
        shown = await _listed(client)
        started = time.perf_counter()
        await client.call_tool(SEARCH, {"query": "warm up"})  # builds the index
        first_ms = (time.perf_counter() - started) * 1000
        for _ in range(3):  # every query three times: the first round's latencies are the colder
            rankings = []
            for query in queries:
                started = time.perf_counter()
                result = await client.call_tool(SEARCH, {"query": query.text, "limit": LIMIT})
                latencies.append((time.perf_counter() - started) * 1000)
                if result.is_error or not isinstance(result.structured_content, dict):
                    raise RuntimeError(f"search failed for {query.text!r}: {result}")
                rankings.append([hit["name"] for hit in result.structured_content["tools"]])
    recall, mrr = quality(queries, rankings)
    # The index alone, in this process, over the same list.
    search = ToolSearch(ToolSearchConfig(after=AFTER, limit=LIMIT))
    search.view(full[:1]).index  # noqa: B018 - the libraries' import, not timed
    started = time.perf_counter()
    search.view(full).index  # noqa: B018 - built on first use: timed here
    build_ms = (time.perf_counter() - started) * 1000
    timings: list[float] = []
    for _ in range(REPEATS):
        for query in queries:
            started = time.perf_counter()
            search.hits(full, {"query": query.text, "limit": LIMIT})
            timings.append((time.perf_counter() - started) * 1000)
    full_tokens, shown_tokens = count_tokens(full), count_tokens(shown)
    misses = [q.text for q, r in zip(queries, rankings, strict=True) if (rank_of(q, r) or K + 1) > K]
    return {
        "tools": len(full),
        "queries": len(queries),
        "recall_at_5": round(recall, 3),
        "mrr": round(mrr, 3),
        "full_list_tokens": full_tokens,
        "search_list_tokens": shown_tokens,
        "search_list_pct": round(100 * shown_tokens / full_tokens, 2),
        "search_p50_ms": _rounded(percentile(latencies, 50)),
        "search_p95_ms": _rounded(percentile(latencies, 95)),
        "first_search_ms": round(first_ms, 1),
        "index_search_p50_ms": _rounded(percentile(timings, 50)),
        "index_build_ms": round(build_ms, 1),
        "index_search_mean_ms": round(statistics.fmean(timings), 3),
        "misses": "; ".join(misses) or "none",
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
