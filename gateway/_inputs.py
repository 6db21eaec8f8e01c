"""Backend requests to a 2026-07-28 client, as `input_required` rounds.

A handshake-era backend asks for sampling, elicitation or roots *during* a call, and waits. A
2026-07-28 client cannot be sent a request; instead the call's result is `input_required`, and the
client retries the same call with `inputResponses` and our `requestState`. So the backend call runs
as a `Deferred` that outlives the front request which started it: each front request (the first,
then every retry) waits until the backend either finishes or asks for something new.

`requestState` is self-contained and sealed (`StateSeal`): encrypted and authenticated under the
gateway's key, carrying its expiry, who it was issued to, the request it continues, and what it
refers to. The client can neither read nor change it, and any gateway process holding the key can
open it. A state that fails any check is refused with the SDK's own wire error (`INVALID_PARAMS`,
"Invalid or expired requestState"); the reason goes to the log only. Deferred calls not resumed
within `ttl` are cancelled at the backend.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from mcp.server.request_state import AESGCMRequestStateCodec
from mcp.server.request_state import InvalidRequestState as SdkInvalidState
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR

if TYPE_CHECKING:
    from gateway.cluster import Bus
from gateway.errors import ClientTimeout, GatewayError, HeldElsewhere, InvalidRequestState, as_mcp_error

logger = logging.getLogger(__name__)

Result = dict[str, Any]
# Clients (the SDK's driver among them) answer within seconds; a human filling an elicitation
# form may take minutes.
DEFAULT_TTL = 600.0
# The payload's layout; a state of another layout is refused, never guessed at.
STATE_VERSION = 1
# Clocks of gateway processes sharing a key drift a little; a state "issued" further in the
# future than this was not issued by any of them.
_FUTURE_SKEW = 60.0


class StateSeal:
    """Seals and opens the gateway's `requestState`.

    The crypto is the SDK's `AESGCMRequestStateCodec` (AES-256-GCM, keys derived with HKDF; the
    first key seals, every key opens, so keys rotate as `[old, new]` -> `[new, old]` -> `[new]`);
    the claims are ours. The payload is a JSON object:

    - `v`: `STATE_VERSION`; `iat`, `exp`: issued and expiry times (seconds since the epoch);
    - `who`: the principal it was issued to (authenticator, issuer, identity name);
    - `m`, `t`: the method and the public name (tool, prompt) or URI the call was made on;
    - `p`: the gateway process holding the deferred call, `c`: that call, `r`: the round number;
    - `k`: the input keys asked in that round;
    - for a 2026-07-28 backend's own round, relayed (`InputBridge.relayed`): `s` the server and
      `b` its `requestState`, instead of `p`, `c` and `r` (no call waits in any process).

    With no keys configured, a random key is made for this process: its states die with it.
    """

    def __init__(
        self,
        keys: Sequence[str | bytes] = (),
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The codec refuses keys under 32 bytes (ValueError) before anything is sealed.
        self._codec = AESGCMRequestStateCodec(list(keys) or [os.urandom(32)])
        self.ttl = ttl
        self.clock = clock

    def seal(self, claims: dict[str, Any]) -> str:
        now = self.clock()
        payload = {"v": STATE_VERSION, "iat": now, "exp": now + self.ttl, **claims}
        return self._codec.seal(json.dumps(payload, separators=(",", ":")).encode())

    def open(self, token: object) -> dict[str, Any]:
        """The claims of a state this gateway sealed, unexpired; else `InvalidRequestState`."""
        if not isinstance(token, str):
            raise InvalidRequestState("not a string")
        try:
            claims = json.loads(self._codec.unseal(token))
        except SdkInvalidState as exc:
            raise InvalidRequestState(str(exc)) from None  # "malformed", "unknown key", "seal"
        except ValueError:
            raise InvalidRequestState("malformed payload") from None
        if not isinstance(claims, dict) or claims.get("v") != STATE_VERSION:
            raise InvalidRequestState("unknown payload version")
        now = self.clock()
        iat, exp = claims.get("iat"), claims.get("exp")
        # Stated positively, so that a missing or NaN time refuses.
        if not (isinstance(iat, int | float) and iat <= now + _FUTURE_SKEW):
            raise InvalidRequestState("issued in the future")
        if not (isinstance(exp, int | float) and now < exp):
            raise InvalidRequestState("expired")
        return claims


@dataclass(frozen=True, slots=True)
class Binding:
    """What a state is bound to: who asked, and which request it continues."""

    who: tuple[str, str | None, str]  # authenticator, issuer, identity name
    method: str
    target: str


@dataclass
class _Ask:
    method: str
    params: dict[str, Any]
    answered: anyio.Event = field(default_factory=anyio.Event)
    response: dict[str, Any] | None = None


@dataclass
class Deferred:
    token: str  # the call's id (in the sealed state, never shown in clear)
    expires: float
    binding: Binding
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    asks: dict[str, _Ask] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None
    context: Any = None  # the front request currently waiting (progress goes there)
    # The last round issued, and whether a retry already used its state: only that state, once,
    # continues the call (an earlier round's, or the same twice, is a replay).
    round: int = 0
    used: bool = False

    def _notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


@dataclass
class _Reply:
    """What another process answered to a continuation asked of it."""

    taken: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Result | None = None
    error: dict[str, Any] | None = None


class _Away:
    """The front of a call continued for another process's client: its progress has nowhere to
    go (the client's request is answered by the process it reached, with the call's result)."""

    async def report_progress(self, progress: float, total: float | None, message: str | None) -> None:
        pass


_AWAY = _Away()


def _error_of(exc: GatewayError | MCPError) -> dict[str, Any]:
    error = as_mcp_error(exc).error
    return {"code": error.code, "message": error.message, "data": error.data}


# The bus topic of continuations; how long the process holding a call has to take one.
_TOPIC = "inputs"
ACK_TIMEOUT = 5.0


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
    def __init__(self, seal: StateSeal | None = None) -> None:
        self.seal = seal if seal is not None else StateSeal()
        # Which process a state's call lives in: another process holding the key can open the
        # state, but the call (a handshake-era backend's request, waiting) is here.
        self.process = secrets.token_urlsafe(9)
        self._calls: dict[str, Deferred] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._bus: Bus | None = None
        self._replies: dict[str, _Reply] = {}  # continuations asked of other processes

    @property
    def ttl(self) -> float:
        return self.seal.ttl

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
        self,
        key: Hashable,
        context: Any,
        call: Callable[[InputCaller], Awaitable[Result]],
        binding: Binding,
    ) -> Deferred:
        self._expire()
        assert self._tg is not None, "InputBridge.running() must be entered"
        deferred = Deferred(
            token=secrets.token_urlsafe(18),
            expires=time.monotonic() + self.ttl,
            binding=binding,
            context=context,
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

    def resume(self, state: object, responses: dict[str, Any], context: Any, binding: Binding) -> Deferred:
        """The deferred call `state` continues, given the client's `responses`; a state that is not
        the latest round's, unused, issued to this client for this request, is refused."""
        self._expire()
        try:
            deferred = self._continued(self.seal.open(state), binding)
        except InvalidRequestState as exc:
            logger.info("requestState refused: %s", exc.reason)
            raise
        deferred.used = True
        deferred.context = context
        deferred.expires = time.monotonic() + self.ttl
        for key, response in responses.items():
            ask = deferred.asks.get(key)
            if ask is not None and not ask.answered.is_set() and isinstance(response, dict):
                ask.response = response
                ask.answered.set()
        return deferred

    def _continued(self, claims: dict[str, Any], binding: Binding) -> Deferred:
        if (
            claims.get("who") != list(binding.who)
            or claims.get("m") != binding.method
            or claims.get("t") != binding.target
        ):
            raise InvalidRequestState("issued to another client or for another request")
        if claims.get("p") != self.process:
            raise HeldElsewhere(str(claims.get("p")))
        deferred = self._calls.get(claims.get("c"))  # type: ignore[arg-type]
        if deferred is None:
            raise InvalidRequestState("the call is over or expired")
        if claims.get("r") != deferred.round or deferred.used:
            raise InvalidRequestState(f"replayed: round {claims.get('r')}, current {deferred.round}")
        return deferred

    # -- a call held by another gateway process ---------------------------------------------------

    def attach(self, bus: Bus) -> None:
        """Continue over `bus` the calls other processes hold, and theirs for them (registered
        before the bus runs)."""
        self._bus = bus
        bus.on(_TOPIC, self._heard)

    async def continue_call(
        self, state: object, responses: dict[str, Any], context: Any, binding: Binding
    ) -> Result:
        """The next result of the call `state` continues, wherever it is held: here, or in the
        gateway process it names (asked over the bus). That process is given `ACK_TIMEOUT` to
        take it (a dead one does not), then as long as a round may wait for its answer (`ttl`)."""
        try:
            deferred = self.resume(state, responses, context, binding)
        except HeldElsewhere as elsewhere:
            if self._bus is None:
                raise
            return await self._continue_elsewhere(elsewhere, state, responses, binding)
        return await self.next_result(deferred)

    async def _continue_elsewhere(
        self, elsewhere: HeldElsewhere, state: object, responses: dict[str, Any], binding: Binding
    ) -> Result:
        assert self._bus is not None
        ask_id = secrets.token_hex(8)
        waiting = self._replies[ask_id] = _Reply()
        ask = {
            "kind": "continue",
            "to": elsewhere.process,
            "reply_to": self.process,
            "id": ask_id,
            "state": state,
            "responses": responses,
            "binding": [list(binding.who), binding.method, binding.target],
        }
        try:
            if not await self._bus.publish(_TOPIC, ask):
                raise elsewhere
            with anyio.move_on_after(ACK_TIMEOUT):
                await waiting.taken.wait()
            if not waiting.taken.is_set():
                logger.info("requestState refused: the process holding the call did not answer")
                raise elsewhere
            with anyio.move_on_after(self.ttl):
                await waiting.done.wait()
            if not waiting.done.is_set():
                raise ClientTimeout(f"the call's next round did not come within {self.ttl:g}s")
        finally:
            del self._replies[ask_id]
        if waiting.error is not None:
            error = waiting.error
            code = error.get("code")
            raise MCPError(
                code=code if isinstance(code, int) else INTERNAL_ERROR,
                message=str(error.get("message", "")),
                data=error.get("data"),
            )
        assert waiting.result is not None
        return waiting.result

    async def _heard(self, message: dict[str, Any]) -> None:
        if message.get("to") != self.process:
            return
        kind, ask_id = message.get("kind"), message.get("id")
        reply = self._replies.get(ask_id) if isinstance(ask_id, str) else None
        if kind == "taken" and reply is not None:
            reply.taken.set()
        elif kind == "result" and reply is not None:
            result, error = message.get("result"), message.get("error")
            reply.result = result if isinstance(result, dict) else None
            if reply.result is None:
                missing = {"code": INTERNAL_ERROR, "message": "no result"}
                reply.error = error if isinstance(error, dict) else missing
            reply.done.set()
        elif kind == "continue" and self._tg is not None:
            self._tg.start_soon(self._continue_for, message)

    async def _continue_for(self, message: dict[str, Any]) -> None:
        """Continue, for another process's client, a call held here; answer with its next result."""
        assert self._bus is not None
        to, ask_id = message.get("reply_to"), message.get("id")
        answer: dict[str, Any] = {"kind": "result", "to": to, "id": ask_id}
        try:
            who, method, target = message["binding"]
            binding = Binding(who=tuple(who), method=method, target=target)
            responses = message.get("responses")
            answers = responses if isinstance(responses, dict) else {}
        except (KeyError, TypeError, ValueError):
            return  # not a message of ours
        try:
            deferred = self.resume(message.get("state"), answers, _AWAY, binding)
        except HeldElsewhere:
            return  # not here after all (a process id is never reused): the asker times out
        except (GatewayError, MCPError) as exc:
            answer["error"] = _error_of(exc)  # refused here: taken, and answered at once
            await self._bus.publish(_TOPIC, {"kind": "taken", "to": to, "id": ask_id})
        else:
            await self._bus.publish(_TOPIC, {"kind": "taken", "to": to, "id": ask_id})
            try:
                answer["result"] = await self.next_result(deferred)
            except (GatewayError, MCPError) as exc:
                answer["error"] = _error_of(exc)
            except Exception:  # the call's own failure: the asker's client is told, nothing here ends
                logger.exception("a call continued for another gateway process failed")
                answer["error"] = {"code": INTERNAL_ERROR, "message": "Internal error", "data": None}
        await self._bus.publish(_TOPIC, answer)

    # -- a 2026-07-28 backend's own rounds, relayed -----------------------------------------------

    def relayed(self, result: Result, binding: Binding, server: str) -> Result:
        """A backend's `input_required` result as the client sees it: its questions unchanged, its
        `requestState` sealed inside ours (with the backend it came from), so that the retry goes
        back to that backend, from any gateway process holding the key. No call waits here."""
        claims: dict[str, Any] = {"who": list(binding.who), "m": binding.method, "t": binding.target}
        claims.update(s=server, b=result.get("requestState"), k=list(result.get("inputRequests") or {}))
        return {**result, "requestState": self.seal.seal(claims)}

    def continued(self, state: object, binding: Binding) -> dict[str, Any]:
        """The claims of `state` if it is a relayed backend round issued for this request, for this
        client; {} if it is one of the gateway's own rounds (`resume` continues those)."""
        try:
            claims = self.seal.open(state)
            if "s" not in claims:
                return {}
            if (
                claims.get("who") != list(binding.who)
                or claims.get("m") != binding.method
                or claims.get("t") != binding.target
            ):
                raise InvalidRequestState("issued to another client or for another request")
        except InvalidRequestState as exc:
            logger.info("requestState refused: %s", exc.reason)
            raise
        return claims

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
                    "requestState": self._issue(deferred, list(waiting)),
                }
            await deferred.changed.wait()

    def _issue(self, deferred: Deferred, keys: list[str]) -> str:
        """A new round's state: every earlier one stops continuing the call."""
        deferred.round += 1
        deferred.used = False
        binding = deferred.binding
        claims: dict[str, Any] = {"who": list(binding.who), "m": binding.method, "t": binding.target}
        claims.update(p=self.process, c=deferred.token, r=deferred.round, k=keys)
        return self.seal.seal(claims)

    def _expire(self) -> None:
        now = time.monotonic()
        for token, deferred in list(self._calls.items()):
            if deferred.expires < now:
                deferred.scope.cancel()
                del self._calls[token]
