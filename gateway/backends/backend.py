"""A supervised backend: one declared server, its session(s), and its restart loop.

`Backend.run()` keeps the backend's session alive for as long as the fleet runs: it launches, waits
for the transport to end, and restarts with exponential backoff according to `restart:`. Calls go
through `Backend.request()`, which picks the shared session or the caller's own one
(`session: per-client`), and remembers which caller is waiting so that a backend's requests back to
the client (sampling, elicitation, roots) reach the client whose call caused them.
"""

from __future__ import annotations

import enum
import itertools
import logging
import random
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST

from gateway.backends._logbuffer import LogBuffer
from gateway.backends.session import BackendSession, Forwarded, TransportFactory
from gateway.backends.stdio import stdio_transport
from gateway.catalogue import BackendListing
from gateway.config.models import ServerSpec, StdioServer
from gateway.errors import BackendUnavailable, GatewayError

logger = logging.getLogger(__name__)

# Restart backoff: first retry after 0.5 s, doubling to 30 s, with ±20% jitter so a fleet that
# crashed together does not restart in lockstep.
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_MAX_RESTARTS = 5  # consecutive failures before the backend is left `failed`


class State(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"


class Caller(Protocol):
    """The client request a backend call was made for (implemented by the front relay)."""

    @property
    def key(self) -> Hashable:
        """Identifies the client connection (per-client sessions, routing of requests back)."""

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a server-to-client request to this caller and return its result."""


class FleetEvents(Protocol):
    def listing_changed(self, backend: Backend) -> None: ...

    async def backend_notification(
        self, backend: Backend, method: str, params: Mapping[str, Any]
    ) -> None: ...

    def state_changed(self, backend: Backend, old: State, new: State, reason: str) -> None: ...


@dataclass
class _Held:
    session: BackendSession
    release: anyio.Event


@dataclass
class _InFlight:
    caller: Caller
    session: BackendSession


def transport_for(name: str, spec: ServerSpec, log: LogBuffer) -> TransportFactory:
    if isinstance(spec, StdioServer):
        return stdio_transport(name, spec, log)
    raise GatewayError(f"servers.{name}: type {spec.type!r} is not supported by this gateway build")


class Backend:
    def __init__(self, name: str, spec: ServerSpec, events: FleetEvents) -> None:
        self.name = name
        self.spec = spec
        self.events = events
        self.log = LogBuffer(name)
        self.state = State.STOPPED
        self.last_error: str | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self.listing = BackendListing()
        self.first_attempt = anyio.Event()
        self._shared: BackendSession | None = None
        self._per_client: dict[Hashable, _Held] = {}
        self._inflight: dict[int, _InFlight] = {}
        self._ids = itertools.count()
        self._tg: anyio.abc.TaskGroup | None = None
        forward_roots = spec.session == "per-client"
        self._forwarded = Forwarded(roots=forward_roots)

    @property
    def per_client(self) -> bool:
        return self.spec.session == "per-client"

    @property
    def available(self) -> bool:
        return self.state is State.RUNNING

    def capabilities_have(self, name: str) -> bool:
        session = self._shared
        return session is not None and getattr(session.capabilities, name, None) is not None

    def _set_state(self, new: State, reason: str = "") -> None:
        old, self.state = self.state, new
        if old is not new:
            self.events.state_changed(self, old, new, reason)

    def _new_session(self) -> BackendSession:
        return BackendSession(
            self.name,
            transport_for(self.name, self.spec, self.log),
            self,
            startup_timeout=self.spec.startup_timeout,
            forwarded=self._forwarded,
        )

    async def run(self) -> None:
        """Keep the backend up until cancelled. Never raises for a backend failure."""
        # Sessions must be closed by the task that opened them (their task groups are bound to
        # it), so per-client sessions live in tasks of this group rather than in request handlers.
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await self._supervise()
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    async def _supervise(self) -> None:
        failures = 0
        try:
            while True:
                self._set_state(State.STARTING, "restart" if self.restarts else "start")
                crashed = False
                try:
                    async with self._new_session() as session:
                        self._shared = session
                        self.listing = session.listing
                        self.started_at = time.time()
                        failures = 0
                        self.last_error = None
                        self._set_state(State.RUNNING, "handshake complete")
                        self.first_attempt.set()
                        self.events.listing_changed(self)
                        await session.closed.wait()
                        crashed = True
                except GatewayError as exc:
                    self.last_error = exc.message
                    logger.warning("%s; %s", exc.message, self._tail())
                except Exception as exc:
                    # A bug or an unforeseen failure in one backend must not end the fleet.
                    self.last_error = f"unexpected error: {type(exc).__name__}"
                    logger.exception("server %s failed unexpectedly", self.name)
                finally:
                    self._shared = None
                    self.started_at = None
                self.first_attempt.set()
                self.listing = BackendListing()
                self.events.listing_changed(self)
                if crashed:
                    self.last_error = "the server exited"
                    logger.warning("server %s exited; %s", self.name, self._tail())
                failures += 1
                if self.spec.restart == "never" or failures > _MAX_RESTARTS:
                    self._set_state(State.FAILED, self.last_error or "")
                    return
                self.restarts += 1
                delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
                self._set_state(State.BACKOFF, f"{self.last_error}; retry in {delay:.1f}s")
                await anyio.sleep(delay)
        finally:
            for held in list(self._per_client.values()):
                held.release.set()
            if self.state is not State.FAILED:
                self._set_state(State.STOPPED, "shutdown")

    def _tail(self) -> str:
        lines = [line.text for line in list(self.log.lines)[-3:]]
        return "last stderr: " + " | ".join(lines) if lines else "no stderr output"

    async def _session_for(self, caller: Caller | None) -> BackendSession:
        if not self.available:
            reason = f" ({self.last_error})" if self.last_error else ""
            raise BackendUnavailable(self.name, f"server {self.name!r} is {self.state.value}{reason}")
        if not self.per_client or caller is None:
            assert self._shared is not None
            return self._shared
        held = self._per_client.get(caller.key)
        if held is not None and not held.session.closed.is_set():
            return held.session
        assert self._tg is not None
        session: BackendSession = await self._tg.start(self._hold_session, caller.key)
        return session

    async def _hold_session(
        self, key: Hashable, *, task_status: anyio.abc.TaskStatus[BackendSession]
    ) -> None:
        release = anyio.Event()
        async with self._new_session() as session:
            held = _Held(session, release)
            self._per_client[key] = held
            task_status.started(session)
            async with anyio.create_task_group() as tg:

                async def until_closed() -> None:
                    await session.closed.wait()
                    release.set()

                tg.start_soon(until_closed)
                await release.wait()
                tg.cancel_scope.cancel()
        if self._per_client.get(key) is held:
            del self._per_client[key]

    async def release(self, key: Hashable) -> None:
        """The client connection `key` went away: end its own backend session."""
        held = self._per_client.get(key)
        if held is not None:
            held.release.set()

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        caller: Caller | None = None,
        *,
        on_progress: ProgressFnT | None = None,
    ) -> dict[str, Any]:
        session = await self._session_for(caller)
        if caller is None:
            return await session.request(method, params, timeout=self.spec.timeout, on_progress=on_progress)
        token = next(self._ids)
        self._inflight[token] = _InFlight(caller, session)
        try:
            return await session.request(method, params, timeout=self.spec.timeout, on_progress=on_progress)
        finally:
            del self._inflight[token]

    # -- SessionHooks: what the backend sends us -------------------------------------------------

    async def on_request(
        self, session: BackendSession, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        caller = self._caller_for(session)
        if caller is None:
            raise MCPError(
                code=INVALID_REQUEST,
                message=f"{method} needs the client whose call caused it, and none (or several) are waiting "
                f"on {self.name!r}; set `session: per-client` on this server to relay it unambiguously",
            )
        return await caller.ask(method, params)

    def _caller_for(self, session: BackendSession) -> Caller | None:
        # Over stdio a server-to-client request names no request of ours, so the caller is the one
        # client connection with calls in flight on this session (always unique for per-client).
        callers = [f.caller for f in self._inflight.values() if f.session is session]
        keys = {c.key for c in callers}
        return callers[-1] if len(keys) == 1 else None

    async def on_notification(self, session: BackendSession, method: str, params: Mapping[str, Any]) -> None:
        if method.endswith("/list_changed") and session is self._shared:
            try:
                self.listing = await session.fetch_listing()
            except (GatewayError, MCPError) as exc:
                logger.warning("server %s announced a list change but listing failed: %s", self.name, exc)
                return
            self.events.listing_changed(self)
            return
        await self.events.backend_notification(self, method, params)

    def callers(self) -> list[Caller]:
        return [f.caller for f in self._inflight.values()]
