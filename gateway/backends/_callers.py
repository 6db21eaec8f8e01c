"""Which client request a backend's own request (sampling, elicitation, roots) belongs to.

Over stdio a server-to-client request names no request of ours, so the caller is the one client
connection with calls in flight on the session that asks. A per-client session belongs to one
client (its `owner`): its caller is that client's, tracked from before the session opened, since
such a session may ask (roots) right after its handshake, before the call that opened it is sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.backends._contracts import Caller
from gateway.backends.session import BackendSession


@dataclass
class _Call:
    caller: Caller
    session: BackendSession | None  # None until the call's session is open


class InFlight:
    """The calls a backend is answering, with the client request each came from."""

    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self._calls)

    @contextmanager
    def track(self, caller: Caller) -> Iterator[_Call]:
        """While `caller`'s call runs; set the yielded call's `session` once it is known."""
        token = next(self._ids)
        call = self._calls[token] = _Call(caller, None)
        try:
            yield call
        finally:
            del self._calls[token]

    def caller_for(self, session: BackendSession) -> Caller | None:
        """The one client connection waiting on `session`; None if none or several are."""
        if session.owner is not None:
            owned = [c.caller for c in self._calls.values() if c.caller.key == session.owner]
            return owned[-1] if owned else None
        callers = [c.caller for c in self._calls.values() if c.session is session]
        keys = {c.key for c in callers}
        return callers[-1] if len(keys) == 1 else None

    def callers(self) -> list[Caller]:
        return [c.caller for c in self._calls.values()]
