"""Stdio backends: a local process speaking MCP on stdin/stdout.

Process discipline comes from the `mcp` SDK's stdio transport, which we rely on rather than
re-implement: the child runs in its own process group; on shutdown stdin is closed, then the group
gets SIGTERM, then SIGKILL, each step bounded and shielded from cancellation. What we add: the
environment allowlist (the safe defaults plus names the config passes through), secret resolution
at launch, and stderr captured into a bounded per-backend buffer instead of the gateway's own.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client

from gateway.backends._logbuffer import LogBuffer, pump_pipe
from gateway.backends.session import Streams, TransportFactory
from gateway.config import secrets
from gateway.config.models import StdioServer

# Time to read a dead process's last stderr lines before giving up on the pipe.
_STDERR_DRAIN_TIMEOUT = 0.5


def environment(name: str, spec: StdioServer) -> dict[str, str]:
    env = get_default_environment()
    for key in spec.inherit_env:
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(secrets.resolve_mapping(spec.env, where=f"servers.{name}.env"))
    return env


def stdio_transport(name: str, spec: StdioServer, log: LogBuffer) -> TransportFactory:
    @asynccontextmanager
    async def open_stdio() -> AsyncIterator[Streams]:
        params = StdioServerParameters(
            command=secrets.resolve(spec.command, where=f"servers.{name}.command"),
            args=[secrets.resolve(a, where=f"servers.{name}.args") for a in spec.args],
            env=environment(name, spec),
            cwd=spec.cwd,
            encoding_error_handler="replace",
        )
        read_fd, write_fd = os.pipe()
        try:
            errlog = os.fdopen(write_fd, "w")
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        pumped = anyio.Event()

        async def pump() -> None:
            try:
                await pump_pipe(read_fd, log)
            finally:
                pumped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                with errlog:  # the child holds its own copy; ours must close or EOF never comes
                    cm = stdio_client(params, errlog=errlog)
                    streams = await cm.__aenter__()
                try:
                    yield streams
                finally:
                    await cm.__aexit__(None, None, None)
            finally:
                # Keep the last lines (a crash's traceback), but a grandchild that inherited stderr
                # must not hold shutdown.
                with anyio.move_on_after(_STDERR_DRAIN_TIMEOUT, shield=True):
                    await pumped.wait()
                tg.cancel_scope.cancel()

    return open_stdio
