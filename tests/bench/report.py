"""What a run prints: the environment header, a table of loads, each scenario's metrics, and the
summary lines comparing scenarios; or all of it as one JSON document (``--json``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import asdict
from typing import Any

from tests.bench.results import BenchSettings, ScenarioResult


def loadavg() -> float | None:
    """Other work on the machine skews every number; the 1-minute load average shows it."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def environment(settings: BenchSettings, load_before: float | None) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "fastmcp": _dist_version("fastmcp"),
        "mcp": _dist_version("mcp"),
        "loadavg_1m_at_start": load_before,
        "calls": settings.calls,
        "warmup": settings.warmup,
        "clients": settings.clients,
        "calls_per_client": settings.calls_per_client,
    }


def summarize(results: dict[str, ScenarioResult], clients: int) -> dict[str, str]:
    lines: dict[str, str] = {}

    def p50(name: str, mode: str) -> float | None:
        r = results.get(name)
        ld = r.load(mode) if r else None
        return ld.pct(50) if ld else None

    def cps(name: str, mode: str) -> float | None:
        r = results.get(name)
        ld = r.load(mode) if r else None
        return ld.calls_per_s if ld and ld.ok_calls else None

    direct = p50("direct", "sequential")
    parts = []
    for name, mode, label in (
        ("gateway", "sequential", "gateway"),
        ("gateway", "seq stdio", "gateway over stdio"),
        ("proxy", "sequential", "proxy"),
    ):
        other = p50(name, mode)
        if name in results:
            if direct is not None and other is not None:
                parts.append(f"{label} {other - direct:+.2f} ms ({other:.2f} vs {direct:.2f})")
            else:
                parts.append(f"{label} n/a")
    if parts:
        lines["added p50 latency vs direct (separate sequential runs)"] = "; ".join(parts)
    m = results["gateway"].metrics if "gateway" in results else {}
    t = {k: m.get(f"interleaved_{k}_p50_ms") for k in ("raw", "direct", "floor", "gateway")}
    if all(isinstance(v, float) for v in t.values()):
        raw, direct, floor, gw = (float(t[k] or 0) for k in ("raw", "direct", "floor", "gateway"))
        over_stdio = m.get("interleaved_gateway_stdio_p50_ms")
        stdio = f"; over stdio {float(over_stdio) - direct:+.2f} ms ({over_stdio:.2f})" if over_stdio else ""
        lines["added p50 latency vs direct, fastmcp.Client (calls taking turns, same run)"] = (
            f"gateway over HTTP {gw - direct:+.2f} ms ({gw:.2f} vs {direct:.2f}){stdio}"
        )
        lines["  of which"] = (
            f"HTTP instead of stdio {floor - (direct - raw):+.2f} ms (a zero-work HTTP MCP server answers "
            f"in {floor:.2f} ms; the stdio client's own share of a direct call is {direct - raw:.2f} ms), "
            f"the gateway's own work {gw - floor - raw:+.2f} ms (over the bare backend round trip, "
            f"{raw:.2f} ms)"
        )

    ts = {k: m.get(f"ts_{k}_p50_ms") for k in ("direct", "floor", "gateway", "gateway_2025")}
    if all(isinstance(v, float) for v in ts.values()):
        direct, floor, gw, gw25 = (float(ts[k] or 0) for k in ("direct", "floor", "gateway", "gateway_2025"))
        lines["added p50 latency vs direct, TypeScript SDK client (calls taking turns)"] = (
            f"gateway {gw - direct:+.2f} ms ({gw:.2f} vs {direct:.2f}), in a 2025-11-25 session "
            f"{gw25 - direct:+.2f} ms ({gw25:.2f}); a zero-work HTTP MCP server answers in {floor:.2f} ms"
        )

    r = results["rounds"].metrics if "rounds" in results else {}
    rounds = {k: r.get(f"rounds_{k}_p50_ms") for k in ("direct", "direct+in", "gateway", "gateway+in")}
    if all(isinstance(v, float) for v in rounds.values()):
        plain, asked, gw_plain, gw_asked = (float(v or 0) for v in rounds.values())
        lines["2026-07-28 backend, p50 added by the gateway (calls taking turns)"] = (
            f"plain call {gw_plain - plain:+.2f} ms ({gw_plain:.2f} vs {plain:.2f}), call with an input "
            f"round {gw_asked - asked:+.2f} ms ({gw_asked:.2f} vs {asked:.2f}); the round itself costs "
            f"{asked - plain:+.2f} ms directly, {gw_asked - gw_plain:+.2f} ms through the gateway"
        )
        legacy = r.get("rounds_gw2025+in_p50_ms")
        if isinstance(legacy, float):
            lines[
                "  the same round for a client in a 2025-11-25 session (an elicitation/create mid-call)"
            ] = f"{legacy:.2f} ms through the gateway"

    lines.update(_replicas_summary(results))

    gw_cps, px_cps = cps("gateway", "concurrent"), cps("proxy", "concurrent")
    if "gateway" in results and "proxy" in results:
        ratio = "n/a"
        if gw_cps and px_cps:
            ratio = f"{gw_cps / px_cps:.2f}x ({gw_cps:.0f} vs {px_cps:.0f} calls/s)"
        lines[f"gateway/FastMCP-proxy throughput ratio at {clients} clients"] = ratio
    return lines


def _replicas_summary(results: dict[str, ScenarioResult]) -> dict[str, str]:
    """The replicas section: what HAProxy and more processes add, and what each replica yields."""
    m = results["replicas"].metrics if "replicas" in results else {}
    lines: dict[str, str] = {}
    turns = {k: m.get(f"turns_{k}_p50_ms") for k in ("direct", "lb1", "lb3")}
    if all(isinstance(v, float) for v in turns.values()):
        one, lb1, lb3 = (float(v or 0) for v in turns.values())
        lines["replicas: p50 added over one process reached directly (calls taking turns)"] = (
            f"HAProxy + 1 replica {lb1 - one:+.2f} ms, HAProxy + 3 replicas {lb3 - one:+.2f} ms "
            f"({lb1:.2f}, {lb3:.2f} vs {one:.2f})"
        )
    single = m.get("direct_calls_per_s")
    if isinstance(single, float):
        parts = [f"one process directly {single:.0f}"]
        for n in (1, 2, 3):
            total, each = m.get(f"lb{n}_calls_per_s"), m.get(f"lb{n}_per_replica_vs_single")
            if isinstance(total, float):
                parts.append(f"{n} behind HAProxy {total:.0f} ({each}x of one process per replica)")
        lines["replicas: calls/s, concurrent clients"] = "; ".join(parts)
    return lines


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: dict[str, ScenarioResult], summary: dict[str, str], header: dict[str, Any]) -> None:
    print()
    print("  ".join(f"{k}={v}" for k, v in header.items()))
    cols = f"{'scenario':<10} {'mode':<11} {'clients':>7} {'calls':>6} {'errors':>6} "
    cols += f"{'calls/s':>9} {'p50 ms':>8} {'p95 ms':>8}  cpu ms/call client+server+backends"
    print(cols)
    print("-" * len(cols))
    for r in results.values():
        for ld in r.loads:
            print(
                f"{r.name:<10} {ld.mode:<11} {ld.clients:>7} {ld.calls:>6} {ld.errors:>6} "
                f"{ld.calls_per_s:>9.1f} {_fmt(ld.pct(50), '>8.2f')} {_fmt(ld.pct(95), '>8.2f')}  "
                + "+".join(f"{v:.2f}" for v in ld.cpu_ms_per_call.values())
            )
        if r.error:
            print(f"{r.name:<10} FAILED: {r.error.splitlines()[0] if r.error else ''}")
    print()
    for r in results.values():
        for ld in r.loads:
            if ld.first_error:
                print(f"{r.name} {ld.mode}: first error: {ld.first_error}")
        if r.metrics:
            print(f"{r.name}: " + ", ".join(f"{k}={v}" for k, v in r.metrics.items()))
        if r.error and "\n" in r.error:
            print(f"{r.name} error detail:\n{r.error}")
    for k, v in summary.items():
        print(f"{k}: {v}")


def as_json(
    settings: BenchSettings,
    header: dict[str, Any],
    results: dict[str, ScenarioResult],
    summary: dict[str, str],
) -> dict[str, Any]:
    return {
        "settings": asdict(settings),
        "environment": header,
        "scenarios": {
            name: {
                "title": r.title,
                "error": r.error,
                "loads": [ld.summary() for ld in r.loads],
                "metrics": r.metrics,
            }
            for name, r in results.items()
        },
        "summary": summary,
    }
