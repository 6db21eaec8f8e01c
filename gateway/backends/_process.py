"""Launch a stdio MCP server as a child process, and make sure nothing of it outlives us.

Discipline:
- the child gets only the environment it is given (the caller builds an allowlist);
- it runs in a new session, so it and everything it spawns share one process group;
- it dies with us: on Linux it is started through `setpriv --pdeathsig KILL` (util-linux), so the
  kernel kills it when the gateway dies, even by SIGKILL. The parent-death signal is not inherited,
  so it also carries the gateway's instance id (``MCP_GATEWAY_OWNER``, see `_owner`) in its
  environment, which what it spawns inherits; the first launch of a later gateway on this host
  kills whatever still carries the id of a dead one;
- teardown is shielded from cancellation and bounded: close stdin and let the server exit on its
  own, then SIGTERM the group, then SIGKILL it. The group is signalled even when the server exited
  cleanly, because a grandchild it left behind (npx's node, a helper it forked) would leak.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from mcp.os.posix.utilities import terminate_posix_process_tree

from gateway.backends._logbuffer import LogBuffer
from gateway.backends._owner import ENV_OWNER, current_instance, sweep_processes_once
from gateway.backends._pipes import ChildPipes, StdinMessages, StdoutMessages

# A well-behaved server exits soon after its stdin closes (the MCP stdio shutdown sequence).
EXIT_GRACE = 2.0
# After SIGTERM to the group, time to clean up before SIGKILL.
TERM_GRACE = 2.0
# Time to read a dead process's last stderr lines before giving up on the pipe.
STDERR_DRAIN = 0.5
_POLL = 0.01
# The longest message line read from a server; a longer one is dropped (that message only).
MAX_LINE = 64 * 2**20


class Child:
    """The running process: its pid, and its exit code once it has exited."""

    def __init__(self, transport: asyncio.SubprocessTransport) -> None:
        self._transport = transport

    @property
    def pid(self) -> int:
        return self._transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()


@asynccontextmanager
async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    log: LogBuffer,
    stall_after: float | None = None,
) -> AsyncIterator[tuple[tuple[StdoutMessages, StdinMessages], Child]]:
    """Start `argv`; yield its message streams and the process. Raises OSError if it cannot start.

    `stall_after`: give up on the server (end its streams) once it has read nothing of a full
    stdin for that long (see `_pipes`)."""
    loop = asyncio.get_running_loop()
    launcher = await anyio.to_thread.run_sync(_prepare)
    env = {**env, ENV_OWNER: current_instance()}
    # Looked up here, not by the exec: the wrapper would report a missing command as its own exit.
    command = _find(argv[0], env, cwd)
    try:
        transport, pipes = await loop.subprocess_exec(
            lambda: ChildPipes(MAX_LINE, log, stall_after),
            *launcher,
            command,
            *argv[1:],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        # Name the command: the error from the spawn does not always carry it.
        raise FileNotFoundError(errno.ENOENT, "command not found", argv[0]) from None
    child = Child(transport)
    try:
        yield (StdoutMessages(pipes), StdinMessages(pipes)), child
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(child, pipes)
            with anyio.move_on_after(STDERR_DRAIN):
                await pipes.stderr.done.wait()
            transport.close()  # the pipes; the group is gone by now


def _find(command: str, env: Mapping[str, str], cwd: str | None) -> str:
    """`command` as the exec would find it (on the child's PATH; a path with a slash, from `cwd`)."""
    if os.sep in command:
        path = os.path.join(cwd or "", command)
        if os.path.isfile(path):
            if not os.access(path, os.X_OK):
                raise PermissionError(errno.EACCES, "not executable", command)
            return path
    else:
        found = shutil.which(command, path=env.get("PATH", os.defpath))
        if found is not None:
            return found
    raise FileNotFoundError(errno.ENOENT, "command not found", command)


@functools.cache
def _die_with_us() -> tuple[str, ...]:
    """The argv prefix that makes the kernel SIGKILL the child when the gateway dies; empty where
    there is no such thing (the marker sweep is then the only net). Not `preexec_fn` calling
    prctl(2): code run between fork and exec is unsafe in a process with threads, as ours is.
    Blocking (it asks setpriv whether it knows the option, util-linux >= 2.33)."""
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    if setpriv is None:
        return ()
    try:
        usage = subprocess.run([setpriv, "--help"], capture_output=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if b"--pdeathsig" in usage else ()


def _prepare() -> tuple[str, ...]:
    sweep_processes_once()  # what a dead predecessor left behind, before we add our own
    return _die_with_us()


async def _exited(child: Child, within: float) -> None:
    # Polled, not awaited on the transport: that also waits for the pipes to reach EOF, which a
    # grandchild holding them open would delay past the grace period.
    with anyio.move_on_after(within):
        while child.returncode is None:  # noqa: ASYNC110
            await anyio.sleep(_POLL)


async def _stop(child: Child, pipes: ChildPipes) -> None:
    pipes.close_stdin()
    await _exited(child, EXIT_GRACE)
    # SIGTERM then SIGKILL the whole group; a no-op when it is already empty.
    await terminate_posix_process_tree(child, TERM_GRACE)  # type: ignore[arg-type]
    await _exited(child, TERM_GRACE)
