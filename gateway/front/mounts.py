"""Every MCP endpoint's HTTP stack, by path, following reloads.

Each endpoint (`gateway.endpoints`) is served by a stack of its own: the SDK's server (its
`serverInfo` name and instructions), its session manager (a 2025-11-25 session belongs to the
endpoint it was opened on) and the exchange; the relay and the fleet behind them are shared.
`Mounts` runs each stack's session manager while it is mounted, mounts the stacks of endpoints a
reload adds (served once the reload returns) and unmounts those it removes (their path then
answers 404, and their sessions end).

`Admitting` is the endpoint's own `auth:` rule: an identity the endpoint does not admit is
refused with HTTP 403 before anything of the request is read, as an unauthenticated one is with
401.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.endpoints import Endpoint
from gateway.front import scope_identity
from gateway.relay import Relay

logger = logging.getLogger(__name__)


class Admitting:
    """Refuses (403) an identity that `endpoint`'s `auth:` does not admit; read per request, so a
    reload's new rules apply to the next request."""

    def __init__(self, app: ASGIApp, relay: Relay, key: str) -> None:
        self.app = app
        self.relay = relay
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.relay.fleet.endpoints.get(self.key)
        if endpoint is not None:
            identity = scope_identity(scope) or self.relay.default_identity
            if not endpoint.admits(identity):
                logger.info("endpoint %s refused %s", endpoint.path, identity.name)
                description = f"{identity.name} may not use the endpoint {endpoint.path}"
                response = JSONResponse(
                    {"error": "insufficient_scope", "error_description": description},
                    status_code=403,
                    # The name stays out of the header: a JWT subject need not be Latin-1.
                    headers={
                        "WWW-Authenticate": 'Bearer error="insufficient_scope"',
                        "Cache-Control": "no-store",
                    },
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass
class Mounted:
    """One endpoint's stack: the ASGI app at its path, and what runs while it is mounted (its
    session manager's `run()`)."""

    endpoint: Endpoint
    app: ASGIApp
    running: Callable[[], AbstractAsyncContextManager[None]]
    # Run when the gateway drains: each ends what its clients hold open without a call.
    closing: list[Callable[[], None]] = field(default_factory=list)
    _stop: anyio.Event = field(default_factory=anyio.Event)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self.running():
            task_status.started()
            await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


def _stack_of(endpoint: Endpoint) -> tuple[str, str | None, str | None]:
    """What a stack is built from: a change of it needs a new stack (a new server object)."""
    return endpoint.path, endpoint.name, endpoint.instructions


class Mounts:
    """The endpoints' stacks by path (`paths`: the MCP paths, with and without a trailing slash).
    `build` makes an endpoint's stack."""

    def __init__(self, build: Callable[[Endpoint], Mounted]) -> None:
        self._build = build
        self.paths: dict[str, Mounted] = {}
        self._by_key: dict[str, Mounted] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mounted = self.paths.get(scope["path"])
        if mounted is None:  # unmounted between the app's check and here (a reload)
            await JSONResponse({"error": "not_found"}, status_code=404)(scope, receive, send)
            return
        await mounted.app(scope, receive, send)

    def mount_all(self, endpoints: Mapping[str, Endpoint]) -> None:
        """The stacks at start (their managers run once `running()` is entered)."""
        for key, endpoint in endpoints.items():
            self._add(key, self._build(endpoint))

    def _add(self, key: str, mounted: Mounted) -> None:
        self._by_key[key] = mounted
        path = mounted.endpoint.path
        self.paths[path] = self.paths[path + "/"] = mounted

    def _drop(self, key: str) -> Mounted:
        mounted = self._by_key.pop(key)
        path = mounted.endpoint.path
        self.paths.pop(path, None)
        self.paths.pop(path + "/", None)
        return mounted

    def close(self) -> None:
        """The gateway drains: every mounted stack's `closing` hooks (a drain hook of its own, so
        that an unmounted stack is not kept alive by the drain's list)."""
        for mounted in list(self._by_key.values()):
            for close in mounted.closing:
                close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            for mounted in self._by_key.values():
                await tg.start(mounted.run)
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                for mounted in self._by_key.values():
                    mounted.stop()

    async def sync(self, endpoints: Mapping[str, Endpoint]) -> None:
        """Match the mounted stacks to `endpoints` (after a reload): new ones mounted and running
        before this returns, removed ones unmounted and stopped, those whose path, name or
        instructions changed replaced (their sessions end). A selection or `auth:` change needs
        nothing here: the relay and `Admitting` read them per request."""
        for key in [k for k in self._by_key if k not in endpoints]:
            self._drop(key).stop()
        for key, endpoint in endpoints.items():
            current = self._by_key.get(key)
            if current is not None and _stack_of(current.endpoint) == _stack_of(endpoint):
                current.endpoint = endpoint
                continue
            if current is not None:
                self._drop(key).stop()
            mounted = self._build(endpoint)
            if self._tg is not None:
                await self._tg.start(mounted.run)
            self._add(key, mounted)
