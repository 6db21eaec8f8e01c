"""`mcp-gateway host -- CMD ARGS`: one stdio MCP server, run once, served over streamable HTTP.

N gateway replicas that each launch a stdio server run N copies of it; with `host`, the server
runs once, as its own service, and the replicas reach it as a `url:` backend. It is the gateway
itself, not a second server: the config is a one-server fleet with `prefix: ""` (names unchanged),
so the server gets the same supervision (restarts, health checks), secret handling, drain on
SIGTERM, /healthz and /readyz as under `serve`.

Only the replicas should reach it. `--api-key-env VAR` turns the `auth` middleware on with one
API key, the value of `$VAR` (stored as its SHA-256 only, as `auth` requires): the replicas send
it as `X-API-Key` or `Authorization: Bearer` (`headers:` / `bearer_token:` of their `url:`
backend, from a secret reference). `--config FILE` takes everything else (`listen`, `middleware`
with a full `auth`, `admin`, `secrets`) from a gateway.yaml without `servers:`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config._loader import Document, read_document
from gateway.config.validation import Validated
from gateway.errors import ConfigError
from gateway.middleware.chain import extras

logger = logging.getLogger("gateway")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# Who the replicas are, to `auth` (the identity's name and its `key` metric label).
REPLICA_IDENTITY = "replica"


def parse_listen(value: str) -> dict[str, Any]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (the config's host) -> the `listen:` keys it sets."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError([f"--listen {value!r}: expected HOST:PORT (e.g. 0.0.0.0:8080 or [::]:8080)"])
    host = host.removeprefix("[").removesuffix("]")
    return {"port": int(port), **({"host": host} if host else {})}


def default_name(command: str) -> str:
    """A server name from its command: `/usr/bin/mcp-server-time` -> `mcp-server-time`."""
    return _NOT_A_NAME.sub("-", Path(command).name).strip("-._") or "server"


def host_document(
    command: Sequence[str],
    *,
    name: str | None = None,
    config: str | None = None,
    listen: str | None = None,
    api_key_env: str | None = None,
    allowed_hosts: Sequence[str] = (),
    env: Sequence[str] = (),
    inherit_env: Sequence[str] = (),
) -> Document:
    """The config `host` serves, as a document `validate_document` checks like any other."""
    if not command:
        raise ConfigError(["no server to host: give its command after `--`, e.g. `-- mcp-server-time`"])
    if config is not None:
        document = read_document(config)
        if not isinstance(document.data, dict):
            raise ConfigError([f"{config}: expected a mapping of gateway.yaml keys"])
        if document.data.get("servers") or document.desktop:
            raise ConfigError(
                [f"{config}: `host` serves the command after `--` only; remove `servers:` from this file"]
            )
    else:
        document = Document(source="<mcp-gateway host>", data={})
    data: dict[str, Any] = dict(document.data)
    server = name or default_name(command[0])
    variables = {}
    for entry in env:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ConfigError([f"--env {key or entry!r}: expected NAME=VALUE (VALUE may be ${{env:NAME}})"])
        variables[key] = value
    spec: dict[str, Any] = {"type": "stdio", "command": command[0], "args": list(command[1:]), "prefix": ""}
    if variables:
        spec["env"] = variables
    if inherit_env:
        spec["inherit_env"] = list(inherit_env)
    data["servers"] = {server: spec}
    if listen is not None or allowed_hosts:
        # Into the config, not only the bound socket: what the app knows of its address is true.
        address = dict(data.get("listen") or {})
        address.update(parse_listen(listen) if listen is not None else {})
        address["allowed_hosts"] = [*address.get("allowed_hosts", []), *allowed_hosts]
        data["listen"] = address
    if api_key_env is not None:
        middleware = list(data.get("middleware") or [])
        if any(isinstance(m, dict) and m.get("use") == "auth" for m in middleware):
            raise ConfigError(
                [f"--api-key-env {api_key_env}: {config} configures `auth` already; use one or the other"]
            )
        key = os.environ.get(api_key_env, "")
        if not key.strip():
            raise ConfigError([f"--api-key-env {api_key_env}: the variable is unset or empty"])
        digest = "sha256:" + hashlib.sha256(key.strip().encode()).hexdigest()
        # First: nothing else runs for a caller that is not a replica.
        auth = {"use": "auth", "options": {"api_keys": [{"name": REPLICA_IDENTITY, "key": digest}]}}
        data["middleware"] = [auth, *middleware]
    return Document(document.source, data, document.lines, desktop=False)


def warn_if_open(validated: Validated) -> None:
    """Say so when the host listens past loopback and nothing authenticates its callers."""
    host = validated.config.listen.host
    if host not in _LOOPBACK and not extras(validated.middlewares, "authenticate"):
        logger.warning(
            "host: listening on %s without authentication: anyone who reaches the port can use the "
            "server; give --api-key-env (or `auth` in --config)",
            host,
        )
