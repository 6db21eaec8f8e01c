"""`mcp-gateway`: serve a fleet, check a config, list the merged tools, host one server.

Exit codes scripts can rely on: 0 success; 1 a runtime failure (a backend failed in `check`,
the server could not start); 2 the command line or the config is wrong, or the listen address
cannot be bound (nothing was started; every problem is printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from gateway import __version__, logs
from gateway.config import GatewayConfig
from gateway.config.validation import Listen, Validated, validate_document, validate_file
from gateway.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-gateway", description="One MCP endpoint over a fleet of MCP servers."
    )
    parser.add_argument("--version", action="version", version=f"mcp-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", "-c", default="gateway.yaml", help="gateway.yaml, or a desktop mcpServers JSON"
        )
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        p.add_argument(
            "--log-format", default="text", choices=["text", "json"], help="json: one object per line"
        )
        return p

    serve = with_config(sub.add_parser("serve", help="start the fleet and serve the MCP endpoint"))
    serve.add_argument("--host", help="interface to bind (default from config, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from config, 8765; 0 picks a free one)")
    serve.add_argument("--stdio", action="store_true", help="serve over stdin/stdout instead of HTTP")
    serve.add_argument(
        "--no-reload", action="store_true", help="do not reload on config file changes or SIGHUP"
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="N gateway processes on one port (replicas: needs cluster.redis); default 1",
    )
    check = with_config(
        sub.add_parser("check", help="validate a config, start the fleet once, print the catalogue")
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--no-start", action="store_true", help="validate only; launch nothing")
    check.add_argument(
        "--stdio", action="store_true", help="check for `serve --stdio` (the listen address is not bound)"
    )
    tools = with_config(sub.add_parser("tools", help="list the namespaced tools of the fleet"))
    tools.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("schema", help="print the JSON Schema of gateway.yaml (for editors)")
    host = with_config(
        sub.add_parser(
            "host",
            help="serve one stdio MCP server over streamable HTTP, for replicas to reach as `url:`",
            usage="%(prog)s [options] -- CMD [ARGS...]",
        )
    )
    host.set_defaults(config=None)  # optional here: a gateway.yaml without `servers:`
    host.add_argument("--listen", help="HOST:PORT to bind (default from --config, 127.0.0.1:8765)")
    host.add_argument("--name", help="the server's name in logs, /readyz and the admin API")
    host.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require this API key (the value of $VAR) as X-API-Key or Authorization: Bearer",
    )
    host.add_argument(
        "--allowed-host", action="append", default=[], help="extra Host header accepted (e.g. time:*)"
    )
    host.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the server's environment; VALUE may be ${env:NAME} or ${file:PATH} (kept out of ps)",
    )
    host.add_argument(
        "--inherit-env", action="append", default=[], metavar="NAME", help="pass this variable through"
    )
    host.add_argument("server", nargs=argparse.REMAINDER, help="the stdio server's command line")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def schema() -> dict[str, Any]:
    document = GatewayConfig.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "mcp-gateway configuration (gateway.yaml)"
    return document


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(schema(), indent=2))
        return EXIT_OK
    logs.configure(args.log_level, json=args.log_format == "json")
    if args.command == "serve" and args.stdio and args.workers > 1:
        print(
            "mcp-gateway: --workers serves HTTP; over stdio there is one client and one process",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        if args.command == "serve" and args.stdio:
            from gateway.front.stdio import serve_stdio

            # Validated there, once the wire is claimed: what a plugin prints must miss it.
            anyio.run(serve_stdio, args.config, not args.no_reload)
            return EXIT_OK
        if args.command == "host":
            return _host(args)
        # `check` checks what `serve` would: the listen address too, unless told the config is
        # for `serve --stdio`.
        http = args.command == "serve" or (args.command == "check" and not args.stdio)
        listen = Listen(getattr(args, "host", None), getattr(args, "port", None)) if http else None
        validated = validate_file(args.config, listen=listen)
    except ConfigError as exc:
        print(f"mcp-gateway: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve" and args.workers > 1:
        return _serve_workers(validated, args)
    if args.command == "serve":
        return _serve(validated, args, config_path=args.config, watch=not args.no_reload)
    if validated.listener is not None:
        validated.listener.close()  # checked: the address is free
    return anyio.run(_inspect, validated.config, args)


def _host(args: argparse.Namespace) -> int:
    from gateway.host import host_document, warn_if_open

    command = args.server[1:] if args.server[:1] == ["--"] else args.server
    try:
        document = host_document(
            command,
            name=args.name,
            config=args.config,
            listen=args.listen,
            api_key_env=args.api_key_env,
            allowed_hosts=args.allowed_host,
            env=args.env,
            inherit_env=args.inherit_env,
        )
        # Everything `serve` checks, for the one-server config (its socket bound).
        validated = validate_document(document, listen=Listen())
    except ConfigError as exc:
        print(f"mcp-gateway: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    warn_if_open(validated)
    # The config is built from the command line: nothing to reload it from.
    return _serve(validated, args, config_path=None, watch=False)


def _serve(validated: Validated, args: argparse.Namespace, *, config_path: str | None, watch: bool) -> int:
    from gateway.app import build_app
    from gateway.front import _uvicorn

    config, listener = validated.config, validated.listener
    assert listener is not None
    app = build_app(config, config_path=config_path, watch=watch, middlewares=validated.middlewares)
    settings = _uvicorn.settings(
        app,
        config.listen,
        log_level=args.log_level,
        log_config=None,  # uvicorn's loggers propagate to the handler logs.configure installed
    )
    server = _uvicorn.Server(settings, app.state.drain)
    # uvicorn logs its address when it binds; handed a bound socket, it leaves that to the binder.
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    control = app.state.admin.control
    if control is not None and control.address is None:
        # What the cluster view shows (`cluster.address` wins). A wildcard says nothing about
        # where this replica is: its host name does (a pod's name, in Kubernetes).
        where = socket.gethostname() if host in ("0.0.0.0", "::") else shown
        control.address = f"{where}:{port}"
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port
    )
    try:
        # The socket bound while validating: the port cannot be lost between the check and now.
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # as uvicorn.run: a signal before its handlers
        pass
    finally:
        listener.close()
    # Never started: the fleet could not be set up; uvicorn said why.
    return EXIT_OK if server.started else EXIT_FAILURE


def _serve_workers(validated: Validated, args: argparse.Namespace) -> int:
    from gateway.front import _workers

    config, listener = validated.config, validated.listener
    assert listener is not None
    if config.cluster.redis is None:
        listener.close()
        print(
            f"mcp-gateway: --workers {args.workers} needs cluster.redis in {args.config}: each worker "
            "is a replica with its own memory, and replicas share sessions, rate limits, "
            "concurrency caps, events and audit only through Redis (README: Running several "
            "replicas); set cluster.redis, or serve with one worker",
            file=sys.stderr,
        )
        return EXIT_USAGE
    plan = _workers.plan(
        config,
        config_path=args.config,
        watch=not args.no_reload,
        log_level=args.log_level,
        log_json=args.log_format == "json",
    )
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d with %d workers (Press CTRL+C to quit)", shown, port, args.workers
    )
    try:
        started = _workers.run(plan, listener, args.workers)
    finally:
        listener.close()
    return EXIT_OK if started else EXIT_FAILURE


async def _inspect(config: GatewayConfig, args: argparse.Namespace) -> int:
    from gateway.fleet import Fleet

    if getattr(args, "no_start", False):
        print(f"{args.config}: valid ({len(config.servers)} servers)")
        return EXIT_OK
    fleet = Fleet(config)
    with logs.masking_secrets(fleet.secrets):
        async with fleet.running():
            await fleet.wait_started()
            catalogue = fleet.catalogue
            failed = {n: b.last_error for n, b in fleet.backends.items() if not b.available}
            states = {
                n: {"state": b.state.value, "error": b.last_error, "protocol_version": b.protocol_version}
                for n, b in fleet.backends.items()
            }
    # Overrides the backends' listings do not allow: warnings, the rest of the fleet is fine.
    for warning in catalogue.override_problems:
        print(f"warning: {fleet.secrets.mask(str(warning))}", file=sys.stderr)
    if args.command == "tools":
        rows: list[dict[str, Any]] = []
        for tool in catalogue.tools:
            route = catalogue.tool_routes[tool["name"]]
            row = {"name": tool["name"], "server": route.server, "original": route.name}
            if route.plan is not None:
                row["override"] = route.plan.summary()
            rows.append({**row, "description": tool.get("description")})
        rows = fleet.secrets.mask_json(rows)  # a description may quote what the server was handed
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                summary = (row["description"] or "").strip().split("\n")[0][:70]
                print(f"{row['name']:<48} {summary}")
                if row["name"] != row["original"] or "override" in row:
                    print(f"    {_overridden(row)}")
        return EXIT_FAILURE if failed else EXIT_OK
    report = {
        "config": args.config,
        "servers": states,
        "tools": [t["name"] for t in catalogue.tools],
        "prompts": [p["name"] for p in catalogue.prompts],
        "resources": [r["uri"] for r in catalogue.resources],
        "resource_templates": [t["uriTemplate"] for t in catalogue.templates],
        "collisions": [str(c) for c in catalogue.collisions],
        "override_problems": [str(p) for p in catalogue.override_problems],
    }
    report = fleet.secrets.mask_json(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.config}: valid, {len(config.servers)} servers")
        for name, info in report["servers"].items():
            revision = f" [{info['protocol_version']}]" if info["protocol_version"] else ""
            print(f"  {name}: {info['state']}{revision}" + (f" ({info['error']})" if info["error"] else ""))
        for kind in ("tools", "prompts", "resources", "resource_templates"):
            print(f"{kind} ({len(report[kind])}):")
            for item in report[kind]:
                print(f"  {item}")
        for problem in catalogue.collisions:
            print(f"error: {problem}")
    return EXIT_FAILURE if failed or catalogue.collisions else EXIT_OK


def _overridden(row: dict[str, Any]) -> str:
    """What `mcp-gateway tools` says of a tool its overrides renamed or changed."""
    said = f"overrides {row['server']}'s {row['original']}"
    override = row.get("override") or {}
    parts = []
    if override.get("hidden"):
        parts.append("hides " + ", ".join(override["hidden"]))
    if override.get("defaults"):
        parts.append("defaults " + ", ".join(f"{k}={json.dumps(v)}" for k, v in override["defaults"].items()))
    if override.get("tightened"):
        parts.append("checks " + ", ".join(override["tightened"]))
    return f"{said}: {'; '.join(parts)}" if parts else said
