"""The benchmark command still runs and prints the numbers the README and the closing notes quote.

Its figures are not asserted (speed is measured by running it, not by tests); what is asserted is
that every path it compares answers, with no error, and that the decomposition it prints adds up.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._infra import require

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "tests.bench", "--only", "direct,gateway,proxy,rounds", "--json",
        "--calls", "20", "--warmup", "2", "--clients", "3", "--calls-per-client", "5",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_the_benchmark_command_measures_every_path(report: dict[str, Any]) -> None:
    for name in ("direct", "gateway", "proxy"):
        scenario = report["scenarios"][name]
        assert scenario["error"] is None, scenario["error"]
        for load in scenario["loads"]:
            assert load["errors"] == 0 and load["p50_ms"] > 0, load
            assert set(load["cpu_ms_per_call"]) == {"client", "server", "backends"}
    metrics = report["scenarios"]["gateway"]["metrics"]
    for path in ("raw", "direct", "floor", "gateway", "gateway_stdio"):
        assert metrics[f"interleaved_{path}_errors"] == 0
        assert metrics[f"interleaved_{path}_p50_ms"] > 0
    summary = report["summary"]
    assert any(key.startswith("added p50 latency vs direct, fastmcp.Client") for key in summary)
    assert any("throughput ratio" in key for key in summary)


def test_the_benchmark_measures_input_rounds_on_a_2026_07_28_backend(report: dict[str, Any]) -> None:
    """Each endpoint's first call is checked to carry its answer (the round tool's, the elicited
    name), so an error-free load means every call went through, round and all."""
    scenario = report["scenarios"]["rounds"]
    assert scenario["error"] is None, scenario["error"]
    loads = {load["mode"]: load for load in scenario["loads"]}
    assert set(loads) == {"direct", "direct+in", "gateway", "gateway+in", "gw2025+in"}
    for load in loads.values():
        assert load["errors"] == 0 and load["calls"] > 0 and load["p50_ms"] > 0, load
    assert any(key.startswith("2026-07-28 backend, p50 added by the gateway") for key in report["summary"])


def test_the_benchmark_measures_the_typescript_sdk_client_too(report: dict[str, Any]) -> None:
    require("ts-client")
    metrics = report["scenarios"]["gateway"]["metrics"]
    assert str(metrics["ts_client"]).startswith("@modelcontextprotocol/client "), metrics["ts_client"]
    for path in ("direct", "floor", "gateway", "gateway_2025"):
        assert metrics[f"ts_{path}_errors"] == 0
        assert metrics[f"ts_{path}_p50_ms"] > 0
    assert any("TypeScript SDK client" in key for key in report["summary"])


def test_the_benchmark_measures_replicas_behind_haproxy() -> None:
    """`--only replicas`: one process directly and 1, 2, 3 replicas behind HAProxy all answer,
    taking turns and under concurrent clients, and the summary compares them."""
    require("redis")
    require("haproxy")
    argv = [
        sys.executable, "-m", "tests.bench", "--only", "replicas", "--json",
        "--calls", "10", "--warmup", "2", "--clients", "3", "--calls-per-client", "5",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    scenario = report["scenarios"]["replicas"]
    assert scenario["error"] is None, scenario["error"]
    modes = {load["mode"] for load in scenario["loads"]}
    assert modes == {"turns direct", "turns lb1", "turns lb3", "direct x3", "lb1 x3", "lb2 x3", "lb3 x3"}
    for load in scenario["loads"]:
        assert load["errors"] == 0 and load["p50_ms"] > 0, load
    assert all(scenario["metrics"][f"lb{n}_per_replica_vs_single"] > 0 for n in (1, 2, 3))
    assert any(key.startswith("replicas: p50 added") for key in report["summary"])
    assert any(key.startswith("replicas: calls/s") for key in report["summary"])


def test_nothing_in_the_product_exists_only_for_the_benchmark() -> None:
    import gateway.masking

    assert not [p for p in (ROOT / "gateway").rglob("*.py") if "bench" in p.stem]
    assert not {"benchmark_masking", "realistic_text"} & set(dir(gateway.masking))


def test_the_benchmark_imports_no_test_module() -> None:
    """It shares helpers with the tests (tests/_support.py, tests/_infra.py), not their tests."""
    imported: set[str] = set()
    for path in (ROOT / "tests" / "bench").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert imported, "no benchmark modules found"
    assert not [m for m in imported if m.rsplit(".", 1)[-1].startswith("test_")]


def test_tool_search_meets_its_quality_and_size_targets() -> None:
    """Recall and list size do not depend on the machine's speed: the targets are asserted (the
    latencies are only reported)."""
    for server in ("server-everything", "server-memory", "server-filesystem"):
        require(server)
    argv = [sys.executable, "-m", "tests.bench", "--only", "search", "--json"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    scenario = json.loads(done.stdout)["scenarios"]["search"]
    assert scenario["error"] is None, scenario["error"]
    metrics = scenario["metrics"]
    assert metrics["tools"] >= 1000 and metrics["queries"] >= 50
    assert metrics["recall_at_5"] >= 0.9, metrics["misses"]
    assert metrics["search_list_pct"] < 2
    assert metrics["search_p50_ms"] > 0 and metrics["index_search_p50_ms"] > 0
