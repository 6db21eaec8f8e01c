"""A supervised backend: one declared server, its session(s), and its lifecycle.

`Backend.run()` lives as long as the fleet. It keeps the backend in the state an operator wants
(`start()`, `stop()`, `restart()`; `autostart`, `lazy`, `idle_timeout` in config): it launches the
server, watches it (transport end, health pings, idleness), and restarts it after a failure with
exponential backoff according to `restart:` until `max_restarts` failures in a row open the
circuit (`failed`). Every state change is an `Event` (see `lifecycle`).

Calls go through `Backend.request()`, which picks the shared session or the caller's own one
(`session: per-client`), waits (bounded) for a backend that is starting, wakes a dormant one, and
remembers which caller is waiting so that a backend's requests back to the client (sampling,
elicitation, roots) reach the client whose call caused them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST, MISSING_REQUIRED_CLIENT_CAPABILITY

from gateway.backends import _watchers
from gateway.backends._callers import InFlight
from gateway.backends._contracts import Caller, FleetEvents, transport_for
from gateway.backends._logbuffer import LogBuffer
from gateway.backends._per_client import PerClientSessions
from gateway.backends._watchers import Ended
from gateway.backends.lifecycle import STABLE_AFTER, Event, State, backoff_delay
from gateway.backends.session import BackendSession, Forwarded
from gateway.catalogue import BackendListing
from gateway.config.models import ServerSpec
from gateway.errors import BackendUnavailable, GatewayError

logger = logging.getLogger(__name__)


class Backend:
    def __init__(self, name: str, spec: ServerSpec, events: FleetEvents) -> None:
        self.name = name
        self.spec = spec
        self.events = events
        self.log = LogBuffer(name, secrets=events.secrets)
        self.state = State.STOPPED
        self.last_error: str | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self.last_used = time.monotonic()
        self.listing = BackendListing()
        self.first_attempt = anyio.Event()
        # Dormant: stopped on purpose (lazy, idle) but still listed; the next call wakes it.
        self.dormant = False
        self._want = spec.autostart or spec.lazy
        self._learning = spec.lazy  # a lazy backend starts once, to learn its catalogue, then sleeps
        self._wake = anyio.Event()
        self._changed = anyio.Event()
        self._run_scope: anyio.CancelScope | None = None
        self._shared: BackendSession | None = None
        self._per_client = PerClientSessions(self._new_session)
        self._inflight = InFlight()
        self._tg: anyio.abc.TaskGroup | None = None
        self._up_since: float | None = None  # monotonic, from the current session's handshake
        self.transport = transport_for(name, spec, self.log, events.secrets)
        # Roots are declared when someone can answer them: a per-client session's client, or the
        # gateway itself with the configured ones.
        self._forwarded = Forwarded(roots=spec.session == "per-client" or bool(spec.roots))
        self._roots = {"roots": [{"uri": uri} for uri in spec.roots]}

    @property
    def per_client(self) -> bool:
        return self.spec.session == "per-client"

    @property
    def available(self) -> bool:
        return self.state is State.RUNNING

    @property
    def listed(self) -> bool:
        """Whether the backend's tools belong in the catalogue now."""
        return self.state is State.RUNNING or self.dormant

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def protocol_version(self) -> str | None:
        """The revision the running (shared) session speaks, found at its start; None when down."""
        session = self._shared
        return session.protocol_version if session is not None else None

    @property
    def speaks_rounds(self) -> bool:
        """Whether the backend asks its questions as `input_required` results (2026-07-28), not
        mid-call (the handshake era)."""
        session = self._shared
        return session is not None and session.modern

    @property
    def takes_log_level(self) -> bool:
        """Whether a client's `logging/setLevel` applies to this backend: one that declares logging,
        or one spoken to in 2026-07-28, whose logs the session opts in to per request."""
        session = self._shared
        return session is not None and (session.modern or session.capabilities.logging is not None)

    def capabilities_have(self, name: str) -> bool:
        session = self._shared
        return session is not None and getattr(session.capabilities, name, None) is not None

    def declares_extension(self, identifier: str) -> bool:
        """Whether the running backend declared the extension `identifier` (SEP-2133)."""
        session = self._shared
        return session is not None and identifier in (session.capabilities.extensions or {})

    def _set_state(self, new: State, reason: str = "", category: str = "lifecycle") -> None:
        old = self.state
        if old is new:
            return
        event = Event.transition(self.name, old, new, reason, category)
        self.state = new
        self._changed.set()
        self._changed = anyio.Event()
        self.events.backend_event(self, event)

    def _to_stopped(self, reason: str, category: str) -> None:
        self._set_state(State.STOPPING, reason, category)
        self._set_state(State.STOPPED, reason, category)

    def _new_session(self) -> BackendSession:
        return BackendSession(
            self.name,
            self.transport,
            self,
            startup_timeout=self.spec.startup_timeout,
            forwarded=self._forwarded,
            protocol=self.spec.protocol,
        )

    # -- control (admin API, lazy start, shutdown) --------------------------------------------

    def start(self) -> None:
        """Want the backend running (also closes an open circuit)."""
        self._want = True
        self._wake.set()

    async def stop(self, reason: str = "stopped by request") -> None:
        """Stop the backend and wait until it is stopped. Its tools leave the catalogue."""
        self._want = False
        self.dormant = False
        scope = self._run_scope
        if scope is not None:
            self._stop_reason = reason
            scope.cancel()
        elif self.state is State.FAILED:
            self._to_stopped(reason, "admin")
        self._wake.set()
        with anyio.fail_after(self.spec.startup_timeout + 15):  # bounded: teardown itself is bounded
            while self.state not in (State.STOPPED, State.FAILED):
                await self._changed.wait()
        self.events.listing_changed(self)

    async def restart(self) -> None:
        await self.stop("restart requested")
        self.start()

    # -- the supervisor --------------------------------------------------------------------------

    async def run(self) -> None:
        """The backend's life within the fleet. Never raises for a backend failure."""
        # Per-client sessions live in tasks of this group (see `_per_client`).
        self._stop_reason = "shutdown"
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                while True:
                    if not self._want:
                        self.first_attempt.set()
                        await self._wake.wait()
                        self._wake = anyio.Event()
                        continue
                    with anyio.CancelScope() as scope:
                        self._run_scope = scope
                        await self._supervise()
                    self._run_scope = None
                    if scope.cancel_called:
                        self._after_stop(self._stop_reason)
        finally:
            self._tg = None
            self._run_scope = None
            self._after_stop("shutdown")
            with anyio.CancelScope(shield=True):  # URL and docker backends own a client
                await self.transport.aclose()

    def _after_stop(self, reason: str) -> None:
        self._per_client.release_all()
        if self.state not in (State.STOPPED, State.STOPPING, State.FAILED):
            self._to_stopped(reason, "admin")
        elif self.state is State.STOPPING:
            self._set_state(State.STOPPED, reason, "admin")

    async def _supervise(self) -> None:
        """Run until the backend gives up (failed), goes dormant, or the scope is cancelled (stop)."""
        failures = 0
        while self._want:
            self._set_state(State.STARTING, "restart" if self.restarts else "start")
            self._up_since = None
            category = "lifecycle"
            clean_exit = False
            try:
                async with self._new_session() as session:
                    await self._serve(session)
            except Ended as ended:
                if not ended.failure:  # idle or lazy: stop, stay listed, wake on the next call
                    self._want = False
                    self.dormant = True
                    self._to_stopped(ended.reason, ended.category)
                    self.events.listing_changed(self)
                    return
                if ended.exited:  # teardown has run: the exit code is known now
                    ended.reason = self.log.exit_reason()
                    # A server the gateway stopped (it stopped reading) did not exit by itself.
                    clean_exit = self.log.exit_code == 0 and not self.log.exit_detail
                self.last_error, category = ended.reason, ended.category
                logger.warning("server %s: %s; %s", self.name, ended.reason, self.log.summary())
            except GatewayError as exc:
                # A start error may quote the server (a handshake's answer, a resolved URL).
                self.last_error = self.log.secrets.mask(exc.message)
                logger.warning("%s; %s", exc.message, self.log.summary())
            except Exception as exc:
                # A bug or an unforeseen failure in one backend must not end the fleet.
                self.last_error = f"unexpected error: {type(exc).__name__}"
                logger.exception("server %s failed unexpectedly", self.name)
            finally:
                self._shared = None
                self.started_at = None
                self.first_attempt.set()
            if not self.dormant:
                self.listing = BackendListing()
            self.events.listing_changed(self)
            if clean_exit and self.spec.restart == "on-failure":
                self._want = False
                self._to_stopped(self.log.exit_reason(), category)
                return
            # Counted from the handshake: time spent failing to start (a handshake that times out,
            # garbage instead of an answer) is no healthy run, however long it took.
            up = self._up_since
            stable = up is not None and time.monotonic() - up >= STABLE_AFTER
            failures = 1 if stable else failures + 1
            if self.spec.restart == "never" or failures > self.spec.max_restarts:
                self._want = False
                self.dormant = False
                self.events.listing_changed(self)
                self._set_state(State.FAILED, f"{self.last_error} (circuit open after {failures} failures)")
                return
            self.restarts += 1
            delay = 0.0 if stable else backoff_delay(failures, *self.spec.backoff)
            self._set_state(State.BACKOFF, f"{self.last_error}; retry in {delay:.1f}s", category)
            await anyio.sleep(delay)

    async def _serve(self, session: BackendSession) -> None:
        """The backend is up: publish it, then watch it until something ends the session."""
        self._shared = session
        self._up_since = time.monotonic()
        self.listing = session.listing
        self.started_at = time.time()
        self.last_used = time.monotonic()  # idleness counts from being up, not from being declared
        self.last_error = None
        self.dormant = False
        self._set_state(State.RUNNING, "handshake complete")
        self.first_attempt.set()
        self.events.listing_changed(self)
        if self._learning:
            self._learning = False
            raise Ended("lazy: catalogue learned, sleeping until the first call", failure=False)
        ended: list[Ended] = []
        async with anyio.create_task_group() as watch:

            def end(reason: Ended) -> None:
                ended.append(reason)
                watch.cancel_scope.cancel()

            watch.start_soon(_watchers.exit, self, session, end)
            if self.spec.health.enabled:
                watch.start_soon(_watchers.health, self, session, end)
            if self.spec.idle_timeout:
                watch.start_soon(_watchers.idle, self, self.spec.idle_timeout, end)
        if ended:
            raise ended[0]

    async def _ensure_running(self) -> None:
        """Wake a dormant backend and wait (bounded) for one that is starting."""
        if self.state is State.RUNNING:
            return
        if self.dormant and not self._want:
            self.start()
        deadline = anyio.current_time() + self.spec.startup_timeout
        while self._want and self.state in (State.STOPPED, State.STARTING):
            with anyio.move_on_at(deadline):
                await self._changed.wait()
            if anyio.current_time() >= deadline:
                break
        if not self.available:
            reason = f" ({self.last_error})" if self.last_error else ""
            if self.state is State.FAILED:
                reason += "; an admin must start it again"
            raise BackendUnavailable(self.name, f"server {self.name!r} is {self.state.value}{reason}")

    async def _session_for(self, caller: Caller | None) -> BackendSession:
        await self._ensure_running()
        if not self.per_client or caller is None:
            assert self._shared is not None
            return self._shared
        assert self._tg is not None
        return await self._per_client.get(caller.key, self._tg)

    async def release(self, key: Hashable) -> None:
        """The client connection `key` went away: end its own backend session."""
        self._per_client.release(key)

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        caller: Caller | None = None,
        *,
        on_progress: ProgressFnT | None = None,
        capabilities: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`capabilities`: what the client behind the call declared (2026-07-28 backends are told
        per request; None: the gateway's own declaration)."""
        self.last_used = time.monotonic()
        if caller is None:
            session = await self._session_for(caller)
            return await session.request(method, params, timeout=self.spec.timeout, on_progress=on_progress)
        # Tracked before its session is open: a per-client session may ask its client something
        # (roots) right after its handshake.
        with self._inflight.track(caller) as tracked:
            session = tracked.session = await self._session_for(caller)
            began, ok = time.perf_counter(), False
            try:
                result = await session.request(
                    method,
                    params,
                    timeout=self.spec.timeout,
                    on_progress=on_progress,
                    capabilities=capabilities,
                )
                ok = result.get("isError") is not True
                return result
            finally:
                self.last_used = time.monotonic()
                for listener in self.events.call_listeners:
                    listener(self.name, time.perf_counter() - began, ok)

    async def follow_tasks(self, task_ids: Sequence[str]) -> None:
        """Have the running backend report these tasks' status (`BackendSession.follow_tasks`).
        Tasks live at the shared session: a per-client session's are polled."""
        session = self._shared
        if session is not None and self.available and not self.per_client:
            await session.follow_tasks(task_ids, self.spec.timeout)

    # -- SessionHooks: what the backend sends us -------------------------------------------------

    async def on_request(
        self, session: BackendSession, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        if method == "roots/list" and self.spec.roots:
            return await self._roots_for(session, params)
        caller = self._inflight.caller_for(session)
        if caller is None:
            raise MCPError(
                code=INVALID_REQUEST,
                message=f"{method} needs the client whose call caused it, and none (or several) are waiting "
                f"on {self.name!r}; set `session: per-client` on this server to relay it unambiguously",
            )
        return await caller.ask(method, params)

    async def _roots_for(self, session: BackendSession, params: dict[str, Any]) -> dict[str, Any]:
        """The configured roots, unless a per-client session's client declared roots of its own.

        A shared session serves everyone, so no one client's roots are its roots; it asks at any
        moment (server-filesystem: right after the handshake), with no call in flight."""
        caller = None if session is self._shared else self._inflight.caller_for(session)
        if caller is None:
            return self._roots
        try:
            return await caller.ask("roots/list", params)
        except MCPError as exc:
            if exc.code != MISSING_REQUIRED_CLIENT_CAPABILITY:
                raise
            return self._roots

    async def on_notification(self, session: BackendSession, method: str, params: Mapping[str, Any]) -> None:
        if method.endswith("/list_changed") and session is self._shared:
            try:
                self.listing = await session.fetch_listing()
            except (GatewayError, MCPError) as exc:
                logger.warning("server %s announced a list change but listing failed: %s", self.name, exc)
                return
            self.events.listing_changed(self)
            return
        # A per-client session's news is its client's alone (its resource updates above all).
        await self.events.backend_notification(self, method, params, session.owner)

    def callers(self) -> list[Caller]:
        return self._inflight.callers()
