"""Stdio backends: a local process speaking MCP on stdin/stdout.

The environment is an allowlist: the SDK's safe defaults (HOME, LOGNAME, PATH, SHELL, TERM, USER),
the names a server's `inherit_env` passes through, and its own `env` with secret references
resolved at launch. Launch and teardown discipline live in `_process`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.client.stdio import get_default_environment

from gateway.backends._logbuffer import LogBuffer
from gateway.backends._process import spawn
from gateway.backends.session import Streams, TransportFactory
from gateway.config import secrets
from gateway.config.models import StdioServer


def environment(name: str, spec: StdioServer) -> dict[str, str]:
    env = get_default_environment()
    for key in spec.inherit_env:
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(secrets.resolve_mapping(spec.env, where=f"servers.{name}.env"))
    return secrets.check_env_schema(name, env, spec.env_schema)


def stdio_transport(name: str, spec: StdioServer, log: LogBuffer) -> TransportFactory:
    @asynccontextmanager
    async def open_stdio() -> AsyncIterator[Streams]:
        argv = [
            secrets.resolve(spec.command, where=f"servers.{name}.command"),
            *(secrets.resolve(a, where=f"servers.{name}.args") for a in spec.args),
        ]
        async with spawn(argv, env=environment(name, spec), cwd=spec.cwd, log=log) as (streams, process):
            log.pid, log.exit_code = process.pid, None
            try:
                yield streams
            finally:
                log.pid = None
        log.exit_code = process.returncode

    return open_stdio
