"""Live reload: `gateway.yaml` changes (file watch, SIGHUP, or the admin API) are applied as a diff.

A new file is validated first, exactly as at start-up (including the middleware options); an
invalid one is refused with the same errors and the running configuration stays. A valid one is
applied as a diff: new servers start, removed ones stop, changed ones restart; untouched servers
and the client sessions on them are not disturbed. A changed middleware list is built, started and
swapped in whole: calls already running finish on the chain they started on, new calls use the new
one. Listen address and `state:` (requestState keys) changes need a restart and are reported as such.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from gateway.config.validation import validate_file
from gateway.errors import ConfigError
from gateway.fleet import Fleet
from gateway.middleware import Middleware, extras
from gateway.relay import Relay

logger = logging.getLogger(__name__)

# Editors save in bursts (write, rename, chmod): wait for the file to settle before reading it.
_SETTLE = 0.2


class Reloader:
    def __init__(self, fleet: Fleet, relay: Relay, path: str | Path | None) -> None:
        self.fleet = fleet
        self.relay = relay
        self.path = Path(path) if path is not None else None
        self._lock = anyio.Lock()
        self._stack: AsyncExitStack | None = None
        self.on_swap: list[Callable[[Sequence[Middleware]], None]] = []
        # Run once a new config is applied to the fleet (the HTTP front mounts its endpoints).
        self.on_apply: list[Callable[[], Awaitable[None]]] = []

    @asynccontextmanager
    async def running(self, *, watch: bool) -> AsyncIterator[None]:
        """Start the current middlewares' lifespans; with `watch`, follow the file and SIGHUP."""
        self._stack = await self._start(self.relay.middlewares)
        try:
            async with anyio.create_task_group() as tg:
                if watch and self.path is not None:
                    tg.start_soon(self._watch_file)
                    tg.start_soon(self._watch_sighup)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await self._stack.aclose()

    async def _start(self, middlewares: Sequence[Middleware]) -> AsyncExitStack:
        stack = AsyncExitStack()
        try:
            # Attached first: what a middleware runs may depend on the fleet (audit's streams).
            for attach in extras(middlewares, "attach"):
                attach(self.fleet)
            for lifespan in extras(middlewares, "lifespan"):
                await stack.enter_async_context(lifespan())
        except BaseException:
            await stack.aclose()
            raise
        return stack

    async def reload(self, who: str = "reload") -> dict[str, Any]:
        """Validate and apply the config file. Raises `ConfigError`; the running config then stays."""
        if self.path is None:
            raise ConfigError(["the gateway was started without a config file; nothing to reload"])
        async with self._lock:
            # Checked as at start-up, everything at once (the listen address excepted: it needs a
            # restart); the running configuration stays if anything is wrong.
            validated = validate_file(self.path)
            new, old = validated.config, self.fleet.config
            if self.fleet.control is not None:
                new = self.fleet.control.extend(new)  # the cluster's registrations stay
            middlewares = validated.middlewares if new.middleware != old.middleware else None
            # The new `secrets:` from here on, unless applying fails (then the old one stays).
            with self.fleet.secrets.using(new.secrets):
                if middlewares is not None:
                    self.fleet.secrets.register_options(new.middleware)
                report: dict[str, Any] = {"servers": await self.fleet.apply(new), "middleware": "unchanged"}
            for applied in self.on_apply:
                await applied()
            if new.endpoints != old.endpoints:
                report["endpoints"] = sorted(self.fleet.endpoints[k].path for k in self.fleet.endpoints if k)
            if middlewares is not None:
                stack = await self._start(middlewares)
                self.relay.use(middlewares)
                for callback in self.on_swap:
                    callback(middlewares)
                previous, self._stack = self._stack, stack
                if previous is not None:
                    await previous.aclose()
                report["middleware"] = "replaced"
            restart = [
                key
                for key in ("listen", "admin", "state", "cluster")
                if getattr(new, key) != getattr(old, key)
            ]
            if restart:
                report["restart_required"] = restart
            logger.info("configuration reloaded by %s: %s", who, report)
            return report

    async def _reload_logged(self, who: str) -> None:
        try:
            await self.reload(who)
        except ConfigError as exc:
            logger.error("reload refused, the running configuration stays: %s", exc.message)

    async def _watch_file(self) -> None:
        from watchfiles import awatch

        assert self.path is not None
        name = self.path.name
        # Watch the directory: editors replace files by rename, which a file watch would lose. Only
        # our file counts: a log written next to it must not wake the gateway on every line.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        async for _ in awatch(
            self.path.parent,
            debounce=int(_SETTLE * 1000),
            recursive=False,
            watch_filter=lambda change, changed: Path(changed).name == name,
        ):
            await self._reload_logged("file change")

    async def _watch_sighup(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                await self._reload_logged("SIGHUP")
