"""``python -m tests.bench``: the command line, the run, and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import tests.bench
from tests._support import TIME_SERVER
from tests.bench.processes import BenchContext, ProcessManager, become_child_subreaper, reap_own_children
from tests.bench.report import as_json, environment, loadavg, print_table, summarize
from tests.bench.results import BenchSettings, ScenarioResult
from tests.bench.scenarios import SCENARIOS, Scenario


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = BenchSettings()
    names = [s.name for s in SCENARIOS]
    description = (tests.bench.__doc__ or "").split("\n\n")[0]
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=description)
    p.add_argument("--calls", type=int, default=d.calls, help="sequential calls (default %(default)s)")
    p.add_argument(
        "--warmup", type=int, default=d.warmup, help="sequential warm-up calls (default %(default)s)"
    )
    p.add_argument("--clients", type=int, default=d.clients, help="concurrent clients, 0 to skip")
    p.add_argument(
        "--calls-per-client", type=int, default=d.calls_per_client, help="calls per concurrent client"
    )
    p.add_argument("--client-warmup", type=int, default=d.client_warmup, help="untimed calls per client")
    p.add_argument("--ready-timeout", type=float, default=d.ready_timeout, help="seconds to wait for /readyz")
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated scenarios from {','.join(names)} (default: all default ones)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with server logs")
    args = p.parse_args(argv)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            p.error(f"unknown scenario(s) {unknown}; choose from {names}")
        args.selected = [s for s in SCENARIOS if s.name in wanted]
    else:
        args.selected = [s for s in SCENARIOS if s.default]
    return args


async def run_bench(ctx: BenchContext, selected: Sequence[Scenario]) -> dict[str, ScenarioResult]:
    results: dict[str, ScenarioResult] = {}
    for sc in selected:
        ctx.log(f"[{sc.name}] {sc.title}")
        try:
            results[sc.name] = await sc.run(ctx)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ExceptionGroup):
                detail += "".join(f"\n  {type(e).__name__}: {e}" for e in exc.exceptions)
            ctx.log(f"  {sc.name} FAILED: {detail}")
            results[sc.name] = ScenarioResult(sc.name, sc.title, error=detail)
    return results


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # only outside the event loop; inside it, SIGTERM cancels the main task


async def _run_cancellable(ctx: BenchContext, selected: Sequence[Scenario]) -> dict[str, ScenarioResult]:
    """Like Ctrl-C under asyncio.run, SIGTERM cancels the main task so every context unwinds."""
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_bench(ctx, selected)


@contextlib.contextmanager
def bench_workdir(keep: bool) -> Iterator[Path]:
    if keep:
        yield Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    else:
        with tempfile.TemporaryDirectory(prefix="mcp-bench-") as d:
            yield Path(d)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for flag in ("calls", "warmup", "clients", "calls_per_client", "client_warmup"):
        if getattr(args, flag) < 0:
            raise SystemExit(f"--{flag.replace('_', '-')} must be >= 0")
    if args.calls < 1:
        raise SystemExit("--calls must be >= 1")
    if not Path(TIME_SERVER).exists():
        raise SystemExit(f"{TIME_SERVER} not found: pip install mcp-server-time into this venv")

    settings = BenchSettings(
        calls=args.calls,
        warmup=args.warmup,
        clients=args.clients,
        calls_per_client=args.calls_per_client,
        client_warmup=args.client_warmup,
        ready_timeout=args.ready_timeout,
    )
    quiet = bool(args.json)

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    # Ctrl-C must work even if SIGINT was inherited as ignored (e.g. started with `&` from a script).
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    become_child_subreaper()
    with bench_workdir(args.keep_logs) as workdir:
        procs = ProcessManager(workdir, settings.stop_timeout)
        ctx = BenchContext(settings, procs, workdir, log)
        load_before = loadavg()
        try:
            results = asyncio.run(_run_cancellable(ctx, args.selected))
        except (KeyboardInterrupt, asyncio.CancelledError):
            log("interrupted; stopping servers")
            return 130
        finally:
            # Cleanup is bounded (stop_timeout per wait); do not let a second signal cut it short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            procs.stop_all()
            reap_own_children(settings.stop_timeout)
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            if args.keep_logs:
                log(f"logs kept in {workdir}")

    header = environment(settings, load_before)
    summary = summarize(results, settings.clients)
    if args.json:
        print(json.dumps(as_json(settings, header, results, summary), indent=2))
    else:
        print_table(results, summary, header)
    return 1 if any(r.error for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
