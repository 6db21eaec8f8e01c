"""Stdio backends: a local process speaking MCP on stdin/stdout.

The environment is an allowlist: the SDK's safe defaults (HOME, LOGNAME, PATH, SHELL, TERM, USER),
the names a server's `inherit_env` passes through, and its own `env` with secret references
resolved at launch. Launch and teardown discipline live in `_process`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from mcp.client.stdio import get_default_environment

from gateway.backends._logbuffer import LogBuffer
from gateway.backends._process import spawn
from gateway.backends.transport import Link, PipeTransport
from gateway.config.models import StdioServer
from gateway.config.secrets import Secrets, check_env_schema, has_reference

logger = logging.getLogger(__name__)


def base_environment(spec: StdioServer) -> dict[str, str]:
    """What a server's environment holds besides its own `env`: the SDK's safe defaults and the
    gateway variables it inherits."""
    env = get_default_environment()
    env.update((key, os.environ[key]) for key in spec.inherit_env if key in os.environ)
    return env


def environment(name: str, spec: StdioServer, secrets: Secrets) -> dict[str, str]:
    env = base_environment(spec)
    env.update(secrets.resolve_mapping(spec.env, where=f"servers.{name}.env"))
    return check_env_schema(name, env, spec.env_schema)


def executable(command: str, env: dict[str, str]) -> str:
    """`command` as found on the child's PATH, else beside the gateway's own interpreter.

    Servers installed with the gateway (`pip install mcp-gateway[demo]` puts `mcp-server-time` in
    the same virtualenv) must start even when that virtualenv is not activated.
    """
    if os.sep in command or shutil.which(command, path=env.get("PATH")):
        return command
    sibling = Path(sys.executable).parent / command
    return str(sibling) if sibling.is_file() and os.access(sibling, os.X_OK) else command


class StdioTransport(PipeTransport):
    """The transport of one stdio backend: a process per session, its stdin and stdout the link."""

    def __init__(self, name: str, spec: StdioServer, log: LogBuffer, secrets: Secrets) -> None:
        self.name = name
        self.spec = spec
        self.log = log
        self.secrets = secrets
        if any(has_reference(arg) for arg in spec.args):
            # Masking cannot reach a process's command line: /proc shows it to every local user.
            logger.warning(
                "servers.%s.args holds a secret reference: its value will be visible to every local user "
                "in `ps`; pass it in servers.%s.env instead",
                name,
                name,
            )

    def connect(self) -> AbstractAsyncContextManager[Link]:
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Link]:
        name, spec, log, secrets = self.name, self.spec, self.log, self.secrets
        env = environment(name, spec, secrets)
        argv = [
            executable(secrets.resolve(spec.command, where=f"servers.{name}.command"), env),
            *(secrets.resolve(a, where=f"servers.{name}.args") for a in spec.args),
        ]
        async with spawn(argv, env=env, cwd=spec.cwd, log=log, stall_after=spec.timeout) as (
            (stdout, stdin),
            process,
        ):
            log.pid, log.exit_code, log.exit_detail = process.pid, None, None
            try:
                yield Link(stdout, stdin, stdin.direct)
            finally:
                log.pid = None
        log.exit_code = process.returncode
