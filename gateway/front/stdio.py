"""`mcp-gateway serve --stdio`: the same aggregate, over stdin/stdout, for clients that launch it."""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import signal
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from typing import BinaryIO

import anyio
from mcp.server.stdio import stdio_server

from gateway import _sdk
from gateway._gateway import Gateway
from gateway.backends._pipes import MessagePipes, StdinMessages, StdoutMessages
from gateway.backends._process import MAX_LINE
from gateway.backends.session import Streams
from gateway.config.secrets import Secrets
from gateway.config.validation import validate_file
from gateway.front.sdk import build_server
from gateway.logs import masking_secrets
from gateway.relay import Relay

logger = logging.getLogger(__name__)

# Time for the client to take our last answers when the wire closes.
WIRE_FLUSH = 2.0


async def serve_stdio(path: str, watch: bool = True) -> None:
    """Serve the config at `path` until the client closes stdin, or SIGTERM/SIGINT: either way
    everything started is torn down (uvicorn does this over HTTP; here nobody else would). A signal
    drains first, as over HTTP (`_drain`): running calls get until `listen.drain_timeout`, then a
    JSON-RPC error; a second signal stops waiting. When stdin closes there is nobody left to answer:
    it stops at once. An invalid config raises `ConfigError` before anything starts."""
    # The wire first: from here on, whatever the process prints (a plugin, a library) misses it.
    wire, restore = _sdk.claim_stdio()
    try:
        validated = validate_file(path)  # the middlewares are created here: after the claim
        # The gateway's secrets: where `secret_ref:` values come from, and every value resolved.
        known = Secrets(validated.config.secrets)
        parts = Gateway.assemble(
            validated.config, validated.middlewares, known, config_path=path if watch else None, local=True
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, parts.relay, tg.cancel_scope)
            with masking_secrets(known):
                await _serve(parts, watch, _wire(*wire, restore))
            tg.cancel_scope.cancel()
    finally:
        restore()


async def _stop_on_signal(relay: Relay, scope: anyio.CancelScope) -> None:
    hurry = anyio.Event()

    async def drain_then_stop() -> None:
        await relay.drain.run(relay.fleet.config.listen.drain_timeout, hurry)
        scope.cancel()

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            async for signum in signals:
                if relay.drain.closing:
                    logger.info("%s: ending running calls now", signal.Signals(signum).name)
                    hurry.set()
                    continue
                logger.info("%s: shutting down", signal.Signals(signum).name)
                tg.start_soon(drain_then_stop)


async def _serve(parts: Gateway, watch: bool, wire: AbstractAsyncContextManager[Streams]) -> None:
    fleet, relay = parts.fleet, parts.relay
    async with wire as (read, write), AsyncExitStack() as stack:
        server = build_server(relay)
        await stack.enter_async_context(parts.reloader.running(watch=watch))
        await stack.enter_async_context(fleet.running())
        await stack.enter_async_context(relay.inputs.running())
        # A desktop client gives up on a server that is slow to answer `initialize`: answer once
        # the required backends have made their first attempt. The others join when they are up,
        # announced with list_changed, as over HTTP.
        await fleet.wait_started(required_only=True)
        await server.run(read, write, server.create_initialization_options())


@asynccontextmanager
async def _wire(stdin: BinaryIO, stdout: BinaryIO, restore: Callable[[], None]) -> AsyncIterator[Streams]:
    """The client's messages over our stdin and stdout, read and written on the event loop's own
    callbacks (the SDK's `stdio_server` makes a trip to a worker thread for every line read and
    two for every line written: half of what the gateway added to a call). A wire that cannot be
    polled (a regular file, /dev/null) is handed back (`restore`) to `stdio_server`."""
    pipes = await _WirePipes.connect(stdin, stdout)
    if pipes is None:
        restore()
        async with stdio_server() as streams:
            yield streams
        return
    try:
        yield StdoutMessages(pipes), StdinMessages(pipes)
    finally:
        with anyio.CancelScope(shield=True):
            await pipes.aclose()


def _pollable(fd: int, events: int) -> bool:
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        return False
    with selectors.DefaultSelector() as probe:  # epoll refuses some devices (/dev/null)
        try:
            probe.register(fd, events)
        except (OSError, ValueError):
            return False
    return True


class _WirePipes(MessagePipes, asyncio.Protocol):
    """The client's end of the line machinery the backends' pipes use: the peer is the client, so
    its stdin is our stdout, and its stdout our stdin. The protocol of the read pipe."""

    def __init__(self, blocking: list[tuple[int, bool]]) -> None:
        super().__init__(MAX_LINE)
        self._reader: asyncio.ReadTransport | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._blocking = blocking
        self.writer_closed = asyncio.Event()

    @classmethod
    async def connect(cls, stdin: BinaryIO, stdout: BinaryIO) -> _WirePipes | None:
        """Both ends on the event loop, or None (and both untouched) if either cannot be."""
        fds = stdin.fileno(), stdout.fileno()
        if not (_pollable(fds[0], selectors.EVENT_READ) and _pollable(fds[1], selectors.EVENT_WRITE)):
            return None
        # The loop makes them non-blocking; the descriptions may be shared (a terminal): restored.
        blocking = [(fd, os.get_blocking(fd)) for fd in fds]
        loop = asyncio.get_running_loop()
        pipes = cls(blocking)
        try:
            pipes._reader, _ = await loop.connect_read_pipe(lambda: pipes, stdin)
            pipes._writer, _ = await loop.connect_write_pipe(lambda: _Writer(pipes), stdout)
        except BaseException:
            if pipes._reader is not None:
                pipes._reader.close()
            pipes._restore_blocking()
            raise
        return pipes

    async def aclose(self) -> None:
        self.close_stdin()  # what is still batched is written first
        if self._reader is not None:
            self._reader.close()
        with anyio.move_on_after(WIRE_FLUSH):
            await self.writer_closed.wait()
        if self._writer is not None and not self.writer_closed.is_set():
            self._writer.abort()
        self._restore_blocking()

    def _restore_blocking(self) -> None:
        for fd, blocking in self._blocking:
            with suppress(OSError):
                os.set_blocking(fd, blocking)

    def data_received(self, data: bytes) -> None:
        self._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()

    def _stdin(self) -> asyncio.WriteTransport | None:
        return self._writer

    def _stdout(self) -> asyncio.ReadTransport:
        assert self._reader is not None
        return self._reader


class _Writer(asyncio.BaseProtocol):
    def __init__(self, pipes: _WirePipes) -> None:
        self._pipes = pipes

    def pause_writing(self) -> None:
        self._pipes.pause_writing()

    def resume_writing(self) -> None:
        self._pipes.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipes.writer_lost()
        self._pipes.writer_closed.set()
