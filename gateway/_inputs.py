"""Backend requests to a 2026-07-28 client, as `input_required` rounds.

A handshake-era backend asks for sampling, elicitation or roots *during* a call, and waits. A
2026-07-28 client cannot be sent a request; instead the call's result is `input_required`, and the
client retries the same call with `inputResponses` and our `requestState`. So the backend call runs
as a `Deferred` that outlives the front request which started it: each front request (the first,
then every retry) waits until the backend either finishes or asks for something new.

`requestState` is an unguessable token naming a deferred call held here; an unknown or expired
token is refused. Deferred calls not resumed within `ttl` are cancelled at the backend.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

Result = dict[str, Any]
# Clients (the SDK's driver among them) answer within seconds; a human filling an elicitation
# form may take minutes.
DEFAULT_TTL = 600.0


@dataclass
class _Ask:
    method: str
    params: dict[str, Any]
    answered: anyio.Event = field(default_factory=anyio.Event)
    response: dict[str, Any] | None = None


@dataclass
class Deferred:
    token: str
    expires: float
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    asks: dict[str, _Ask] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None
    context: Any = None  # the front request currently waiting (progress goes there)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class InputCaller:
    """The `Caller` a backend sees for a 2026-07-28 client: asking means queueing an input request."""

    def __init__(self, deferred: Deferred, key: Hashable) -> None:
        self._deferred = deferred
        self._ids = itertools.count(1)
        self.key = key

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ask = _Ask(method, params)
        self._deferred.asks[f"{method.split('/')[0]}-{next(self._ids)}"] = ask
        self._deferred._notify()
        await ask.answered.wait()
        assert ask.response is not None
        return ask.response


class InputBridge:
    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self._calls: dict[str, Deferred] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    def __len__(self) -> int:
        return len(self._calls)

    def start(
        self, key: Hashable, context: Any, call: Callable[[InputCaller], Awaitable[Result]]
    ) -> Deferred:
        self._expire()
        assert self._tg is not None, "InputBridge.running() must be entered"
        deferred = Deferred(
            token=secrets.token_urlsafe(24), expires=time.monotonic() + self.ttl, context=context
        )
        caller = InputCaller(deferred, key)

        async def run() -> None:
            with deferred.scope:
                try:
                    deferred.result = await call(caller)
                except Exception as exc:
                    deferred.error = exc
            deferred.done = True
            deferred._notify()

        self._calls[deferred.token] = deferred
        self._tg.start_soon(run)
        return deferred

    def resume(self, token: str, responses: dict[str, Any], context: Any) -> Deferred:
        self._expire()
        deferred = self._calls.get(token)
        if deferred is None:
            raise MCPError(
                code=INVALID_PARAMS, message="Unknown or expired requestState; start the call again"
            )
        deferred.context = context
        deferred.expires = time.monotonic() + self.ttl
        for key, response in responses.items():
            ask = deferred.asks.get(key)
            if ask is not None and not ask.answered.is_set() and isinstance(response, dict):
                ask.response = response
                ask.answered.set()
        return deferred

    async def next_result(self, deferred: Deferred) -> Result:
        """The call's result, or the `input_required` result listing what the backend waits for."""
        while True:
            if deferred.done:
                self._calls.pop(deferred.token, None)
                if deferred.error is not None:
                    raise deferred.error
                assert deferred.result is not None
                return deferred.result
            waiting = {k: a for k, a in deferred.asks.items() if not a.answered.is_set()}
            if waiting:
                return {
                    "resultType": "input_required",
                    "inputRequests": {
                        k: {"method": a.method, "params": a.params} for k, a in waiting.items()
                    },
                    "requestState": deferred.token,
                }
            await deferred.changed.wait()

    def _expire(self) -> None:
        now = time.monotonic()
        for token, deferred in list(self._calls.items()):
            if deferred.expires < now:
                deferred.scope.cancel()
                del self._calls[token]
