"""Everything a start checks, checked before anything starts, by one function for every command.

`serve`, `serve --stdio`, `check` (with or without `--no-start`), `tools` and a reload all call
`validate_file`, so a config one of them accepts is accepted by all, and each reports every
problem at once: the model (with line numbers and "did you mean"), the middleware options (the
middlewares are created: their constructors validate without I/O), the secret references a
backend or the admin store would resolve at launch, and, for a command that serves HTTP, the
listen address (bound here, before any backend starts, and handed to the server).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from gateway.config._loader import Document, Problem, config_problems, read_document
from gateway.config.models import (
    STATE_KEY_BYTES,
    GatewayConfig,
    HttpServer,
    ListenConfig,
    MiddlewareSpec,
    SecretsConfig,
    StdioServer,
)
from gateway.config.secrets import Secrets, check_env_schema
from gateway.errors import ConfigError, SecretError

if TYPE_CHECKING:
    from gateway.middleware import Middleware

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Listen:
    """Bind the listen address: the config's, or these overrides (the command line's)."""

    host: str | None = None
    port: int | None = None


@dataclass(slots=True)
class Validated:
    config: GatewayConfig
    middlewares: list[Middleware]
    # With `Listen`: the bound (not yet listening) socket, for the server to take over, so that
    # nothing can take the port between the check and the start. The caller closes it.
    listener: socket.socket | None = None


def validate_file(path: str | Path, *, listen: Listen | None = None) -> Validated:
    """The config at `path`, its middlewares and (with `listen`) its bound socket; `ConfigError`
    with every problem, each naming the file, line, key path and fix."""
    return validate_document(read_document(path), listen=listen)


def validate_document(document: Document, *, listen: Listen | None = None) -> Validated:
    config, problems = config_problems(document)
    data: Mapping[str, Any] = document.data
    # A part the model refused is reported already; the others are still checked, so that
    # every problem comes out at once, not one round per section.
    store = config.secrets if config else _part(SecretsConfig, data.get("secrets", {}))
    specs = config.middleware if config else _part(list[MiddlewareSpec], data.get("middleware", []))
    middlewares: list[Middleware] = []
    # References resolve against the config being checked, never the running one (a reload's
    # check must not touch the gateway's). What they resolve to is dropped with it.
    checking = Secrets(store)
    if specs:
        # Imported on use: the chain imports the config package, and the SDK (~0.4 s of a
        # `check`, which a config without middleware does without).
        from gateway.middleware.chain import create

        middlewares, found = create(specs, checking)
        problems += [document.locate(p) for p in found]
    if store is not None:
        problems += [document.locate(p) for p in reference_problems(data, checking)]
        if config is not None:
            problems += [document.locate(p) for p in env_schema_problems(config, checking)]
            problems += [document.locate(p) for p in state_key_problems(config, checking)]
    listener = None
    if listen is not None:
        address = config.listen if config else _part(ListenConfig, data.get("listen", {}))
        if address is not None:
            listener, problem = _bind(address, listen)
            if problem is not None:
                problems.append(document.locate(problem))
    if problems or config is None:
        if listener is not None:
            listener.close()
        # In file order: a reader fixes them top to bottom (those without a line last).
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        raise ConfigError([str(p) for p in problems])
    return Validated(config, middlewares, listener)


def _part(kind: type[T] | Any, value: Any) -> T | None:
    try:
        result: T = TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return None
    return result


def reference_problems(data: Mapping[str, Any], secrets: Secrets) -> list[Problem]:
    """Every `${env:...}`, `${file:...}` and `secret_ref:` a launch would resolve and could not.

    Values are resolved and dropped: only whether they resolve matters here. Disabled servers are
    skipped (nothing resolves their references until they are enabled, which validates again)."""
    problems = []
    for path, value in _references(data):
        where = ".".join(str(part) for part in path)
        try:
            secrets.resolve(value, where=where)
        except SecretError as exc:
            problems.append(Problem(where, exc.message.removeprefix(f"{where}: "), path))
    return problems


def state_key_problems(config: GatewayConfig, secrets: Secrets) -> list[Problem]:
    """`requestState` keys too short for the seal (`relay.state_seal` refuses them at start). A
    reference that does not resolve is `reference_problems`' to report."""
    problems = []
    for index, key in enumerate(config.state.keys):
        where = f"state.keys.{index}"
        with suppress(SecretError):
            if len(secrets.resolve(key, where=where).encode()) < STATE_KEY_BYTES:
                fix = 'python3 -c "import secrets; print(secrets.token_hex(32))"'
                message = f"shorter than {STATE_KEY_BYTES} bytes; use a random secret ({fix})"
                problems.append(Problem(where, message, ("state", "keys", index)))
    return problems


def env_schema_problems(config: GatewayConfig, secrets: Secrets) -> list[Problem]:
    """What a launch checks of the environment a server declares (`env_schema`): required
    variables set, values of their type. A reference that does not resolve is left out here
    (`reference_problems` reports it), so nothing is reported twice."""
    problems = []
    for name, spec in config.servers.items():
        if not spec.enabled or not spec.env_schema or isinstance(spec, HttpServer):
            continue  # an HTTP server's environment is not the gateway's to give
        env: dict[str, str] = {}
        if isinstance(spec, StdioServer):
            from gateway.backends.stdio import base_environment  # on use: it loads the SDK

            env = base_environment(spec)
        for var, value in spec.env.items():
            with suppress(SecretError):
                env[var] = secrets.resolve(value, where=f"servers.{name}.env.{var}")
        try:
            check_env_schema(name, env, spec.env_schema)
        except SecretError as exc:
            for text in exc.data["problems"]:
                key, _, message = text.partition(": ")
                problems.append(Problem(key, message, ("servers", name, "env_schema")))
    return problems


def _references(data: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    servers = data.get("servers")
    if isinstance(servers, Mapping):
        for name, spec in servers.items():
            if not isinstance(spec, Mapping) or spec.get("enabled") is False:
                continue
            for key in ("command", "bearer_token"):
                if isinstance(spec.get(key), str):
                    yield ("servers", name, key), spec[key]
            if isinstance(spec.get("args"), list):
                for index, arg in enumerate(spec["args"]):
                    if isinstance(arg, str):
                        yield ("servers", name, "args", index), arg
            for key in ("env", "headers"):
                if isinstance(spec.get(key), Mapping):
                    for var, value in spec[key].items():
                        if isinstance(value, str):
                            yield ("servers", name, key, var), value
    state = data.get("state")
    keys = state.get("keys") if isinstance(state, Mapping) else None
    if isinstance(keys, list):
        for index, key in enumerate(keys):
            if isinstance(key, str):
                yield ("state", "keys", index), key
    admin = data.get("admin")
    events = admin.get("events") if isinstance(admin, Mapping) else None
    if isinstance(events, Mapping) and isinstance(events.get("redis"), str):
        yield ("admin", "events", "redis"), events["redis"]


def _bind(address: ListenConfig, listen: Listen) -> tuple[socket.socket | None, Problem | None]:
    host = listen.host or address.host
    port = address.port if listen.port is None else listen.port
    # As uvicorn binds (its Config.bind_socket), so that handing the socket over changes nothing.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = exc.strerror or str(exc)
        fix = "stop what listens there, or choose another port"
        message = f"cannot listen on {shown}: {reason} ({fix})"
        if listen.port is not None:
            return None, Problem("--port", message)  # the command line's, not the file's
        return None, Problem("listen.port", message, ("listen", "port"))
    sock.set_inheritable(True)
    return sock, None
