"""`session: per-client`: each client connection's own backend session.

A session must be closed by the task that opened it (its task groups are bound to that task), so
each one lives in a task of the backend's supervisor task group, not in the request handler that
asked for it, until its client goes away (`release`), the backend stops (`release_all`) or the
session ends by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import anyio
import anyio.abc

from gateway.backends.session import BackendSession


@dataclass
class _Held:
    session: BackendSession
    release: anyio.Event


class PerClientSessions:
    def __init__(self, new_session: Callable[[], BackendSession]) -> None:
        self._new_session = new_session
        self._held: dict[Hashable, _Held] = {}

    async def get(self, key: Hashable, tg: anyio.abc.TaskGroup) -> BackendSession:
        """The session of client connection `key`, opened (in `tg`) if it has none alive."""
        held = self._held.get(key)
        if held is not None and not held.session.closed.is_set():
            return held.session
        session: BackendSession = await tg.start(self._hold, key)
        return session

    def release(self, key: Hashable) -> None:
        held = self._held.get(key)
        if held is not None:
            held.release.set()

    def release_all(self) -> None:
        for held in list(self._held.values()):
            held.release.set()

    async def _hold(self, key: Hashable, *, task_status: anyio.abc.TaskStatus[BackendSession]) -> None:
        release = anyio.Event()
        session = self._new_session()
        session.owner = key  # before its handshake: it may ask its client something right after
        async with session:
            held = _Held(session, release)
            self._held[key] = held
            task_status.started(session)
            async with anyio.create_task_group() as tg:

                async def until_closed() -> None:
                    await session.closed.wait()
                    release.set()

                tg.start_soon(until_closed)
                await release.wait()
                tg.cancel_scope.cancel()
        if self._held.get(key) is held:
            del self._held[key]
