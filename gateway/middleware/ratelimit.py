"""Rate limits and per-backend concurrency caps, counted in memory or in a shared store (Redis).

Options (every key optional)::

    - use: ratelimit
      options:
        storage: "redis://127.0.0.1:6379/0"  # default "memory://"; any `limits` storage URI, ${env:..} ok
        strategy: moving-window              # or fixed-window, sliding-window-counter
        global: "1000/minute"                # all calls through this gateway (all gateways on one store)
        per_identity: "100/minute"           # per Call.identity.name
        per_tool: "10/second"                # per identity and tool (tools/call) or prompt (prompts/get)
        per_server: {"*": "500/minute", git: "50/minute"}   # per backend; "*" = every other backend
        lists: "50/second"                   # per identity, for everything that is not a counted call
        overrides:                           # first match wins; a key set here replaces the default,
          - {roles: [admin], per_identity: "1000/minute", lists: null}  # null = no limit
        concurrency: {"*": {max: 8, queue: 32, queue_timeout: 5}}   # bulkhead per backend
        concurrency_lease: 10                # seconds; with Redis, how long a dead gateway's slots last
        on_storage_error: deny               # or allow: what to do while the store does not answer
        storage_timeout: 0.5                 # seconds per store operation (not used for memory://);
                                             # one that takes longer is retried once, allowed 4x as long
        key_prefix: mcpgw                    # namespace of the keys in a shared store

Limits use the `limits` notation: "100/minute", "10 per second", several at once as
"10/second; 500/hour". Only the calls that reach a backend count: `tools/call`, `resources/read`,
`prompts/get`, `completion/complete`. Lists and (un)subscriptions are answered by the gateway and
cost little, so they do not use up the call budget; they have their own per-identity budget
(`lists`, on by default) so that a client looping on `tools/list` cannot hog the gateway.
Notifications from backends are never limited.

Every limit that applies is checked narrowest first (tool, identity, backend, global) and the
first exhausted one refuses the call; a call refused by a wider limit has already used its
narrower budgets (the store cannot take a hit back atomically), which only slows down the one
identity that keeps retrying. A refused call never reaches the backend: it fails with
`RateLimited` (-32029), `data = {"retry_after": s, "limit": "100/minute", "scope": "per_identity"}`.
All clients without an identity share the identity "anonymous", hence its budget. With
`memory://` each gateway process counts alone and a reload with new middleware options starts
from zero; a shared store gives exact limits across processes.

`concurrency` caps the calls in flight on a backend (`max`); up to `queue` more wait at most
`queue_timeout` seconds for a slot, anything beyond is refused at once (`scope: concurrency`).
With a Redis store the cap holds across every gateway on that store (`key_prefix` and server
name make the key); the waiting line stays per process. A slot is a lease of `concurrency_lease`
seconds that its gateway extends while the call runs, so the slots of a gateway killed mid-call
are free again at most `concurrency_lease` seconds later. While the store does not answer,
`on_storage_error` applies to capped calls too (`allow`: they run uncapped). Other stores keep
the cap per process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import STRATEGIES, RateLimiter
from limits.errors import StorageError
from limits.util import parse_many
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from redis.exceptions import RedisError

from gateway._sdk import redis_client
from gateway.config.secrets import ResolvedStr
from gateway.errors import RateLimited
from gateway.middleware._bulkhead import Bulkhead, ConcurrencyOptions, Full, SharedBulkhead
from gateway.middleware._ratelimit_store import open_storage
from gateway.middleware.base import Call, CallNext, Identity, Result

logger = logging.getLogger(__name__)

# The methods a backend answers; everything else a client sends is answered by the gateway.
COUNTED = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
_PER_NAME = {"tools/call": "t", "prompts/get": "p"}  # names from the catalogue: a bounded key space
_RETRY_STORE_AFTER = 1.0  # seconds during which an unanswering store is not asked again
_BUSY_RETRY_AFTER = 1.0
# A store operation that does not answer within `storage_timeout` gets one more try, this many times
# as long, before the store counts as down (see `_store`).
RETRY_FACTOR = 4
# What a store raises when it does not answer (limits wraps the client's errors in StorageError;
# the concurrency scripts run on its redis client directly).
_STORE_ERRORS = (StorageError, RedisError, OSError, TimeoutError)


def _check_limit(text: str) -> str:
    try:
        parse_many(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a rate limit; write e.g. '100/minute' or '10/second; 500/hour'"
        ) from None
    return text


LimitText = Annotated[str, AfterValidator(_check_limit)]


class Override(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(default_factory=list, description="Identities with any of these roles.")
    identities: list[str] = Field(default_factory=list, description="Identities with these names.")
    per_identity: LimitText | None = None
    per_tool: LimitText | None = None
    lists: LimitText | None = None

    @model_validator(mode="after")
    def _selects_someone(self) -> Override:
        if not (self.roles or self.identities):
            raise ValueError("an override needs `roles` or `identities`")
        if not self.model_fields_set & {"per_identity", "per_tool", "lists"}:
            raise ValueError("an override changes at least one of per_identity, per_tool, lists")
        return self


class RateLimitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    storage: ResolvedStr = Field(
        default="memory://", repr=False, description="A `limits` storage URI; may hold ${env:...}."
    )
    strategy: Literal["moving-window", "fixed-window", "sliding-window-counter"] = "moving-window"
    global_: LimitText | None = Field(default=None, alias="global")
    per_identity: LimitText | None = None
    per_tool: LimitText | None = None
    per_server: dict[str, LimitText] = Field(default_factory=dict)
    lists: LimitText | None = "50/second"
    overrides: list[Override] = Field(default_factory=list)
    concurrency: dict[str, ConcurrencyOptions] = Field(default_factory=dict)
    concurrency_lease: float = Field(
        default=10.0, ge=1, description="Seconds a cluster-wide slot outlives a gateway that died."
    )
    on_storage_error: Literal["deny", "allow"] = "deny"
    storage_timeout: float = Field(default=0.5, gt=0)
    key_prefix: str = Field(default="mcpgw", pattern=r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True, slots=True)
class Rule:
    scope: str  # the option that set it: global, per_server, per_identity, per_tool, lists
    text: str  # as configured, for error data
    items: tuple[RateLimitItem, ...]


Check = tuple[Rule, tuple[str, ...]]  # a rule and the identifiers of its counter


@dataclass(frozen=True, slots=True)
class _Personal:
    per_identity: Rule | None
    per_tool: Rule | None
    lists: Rule | None


def _escape(part: str) -> str:
    """Identifiers are joined with "/" into keys: keep ("a/b", "c") and ("a", "b/c") apart."""
    if "/" in part or "%" in part:
        return part.replace("%", "%25").replace("/", "%2F")
    return part


def _describe(item: RateLimitItem) -> str:
    per = item.GRANULARITY.name if item.multiples == 1 else f"{item.multiples} {item.GRANULARITY.name}s"
    return f"{item.amount}/{per}"


class RateLimit:
    def __init__(self, **options: Any) -> None:
        opts = RateLimitOptions.model_validate(options)
        self.options = opts
        self._prefix = opts.key_prefix
        self.storage, self.storage_label, self._secret = open_storage(
            opts.storage, opts.storage_timeout, RETRY_FACTOR
        )
        strategy: Callable[[Storage], RateLimiter] = STRATEGIES[opts.strategy]
        try:
            self.limiter = strategy(self.storage)
        except NotImplementedError:
            raise ValueError(f"storage {self.storage_label} does not support {opts.strategy}") from None
        self._timeout = None if isinstance(self.storage, MemoryStorage) else opts.storage_timeout
        self._global = self._rule("global", opts.global_)
        self._servers = {name: self._rule("per_server", text) for name, text in opts.per_server.items()}
        self._default = _Personal(
            self._rule("per_identity", opts.per_identity),
            self._rule("per_tool", opts.per_tool),
            self._rule("lists", opts.lists),
        )
        self._overrides: list[tuple[frozenset[str], frozenset[str], _Personal]] = []
        for override in opts.overrides:
            chosen = {key: getattr(override, key) for key in override.model_fields_set}
            self._overrides.append(
                (
                    frozenset(override.roles),
                    frozenset(override.identities),
                    _Personal(
                        *(
                            self._rule(scope, chosen[scope])
                            if scope in chosen
                            else getattr(self._default, scope)
                            for scope in ("per_identity", "per_tool", "lists")
                        )
                    ),
                )
            )
        self._bulkheads: dict[str, Bulkhead | SharedBulkhead | None] = {}
        # Concurrency caps are cluster-wide on Redis (its client runs the scripts), else per process.
        self._redis = None if self._timeout is None else redis_client(self.storage)
        self._down_until = 0.0  # monotonic time before which the store is not asked
        self._outage_since: float | None = None
        self._outage_calls = 0

    def _rule(self, scope: str, text: str | None) -> Rule | None:
        if text is None:
            return None
        items = parse_many(text)
        for item in items:
            item.namespace = self._prefix
        return Rule(scope, "; ".join(_describe(item) for item in items), tuple(items))

    # -- which counters a call uses ------------------------------------------------------------

    def personal(self, identity: Identity) -> _Personal:
        for roles, names, rules in self._overrides:
            if identity.name in names or not roles.isdisjoint(identity.roles):
                return rules
        return self._default

    def checks(self, call: Call) -> list[Check]:
        """The counters `call` must pass, narrowest first."""
        if call.kind != "request":
            return []
        rules = self.personal(call.identity)
        who = _escape(call.identity.name)
        if call.method not in COUNTED:
            return [(rules.lists, ("lists", who))] if rules.lists else []
        found: list[Check] = []
        kind = _PER_NAME.get(call.method)
        if rules.per_tool and kind and call.name:
            found.append((rules.per_tool, ("tool", who, kind, _escape(call.name))))
        if rules.per_identity:
            found.append((rules.per_identity, ("identity", who)))
        if call.server is not None:
            server_rule = self._servers.get(call.server) or self._servers.get("*")
            if server_rule:
                found.append((server_rule, ("server", _escape(call.server))))
        if self._global:
            found.append((self._global, ("global",)))
        return found

    # -- the middleware ------------------------------------------------------------------------

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.kind != "request":
            return await call_next(call)
        checks = self.checks(call)
        if checks:
            await self._enforce(call, checks)
        if call.server is None or call.method not in COUNTED:
            return await call_next(call)
        bulkhead = self.bulkhead(call.server)
        if bulkhead is None:
            return await call_next(call)
        if isinstance(bulkhead, SharedBulkhead):
            return await self._shared(call, call_next, bulkhead)
        try:
            await bulkhead.acquire()
        except Full as exc:
            raise self._busy(call.server, bulkhead, exc.timed_out) from None
        try:
            return await call_next(call)
        finally:
            bulkhead.release()

    async def _shared(self, call: Call, call_next: CallNext, bulkhead: SharedBulkhead) -> Result:
        assert call.server is not None
        if self._down_until and time.monotonic() < self._down_until:
            self._store_unavailable()
            return await call_next(call)
        try:
            token = await bulkhead.acquire()
        except Full as exc:
            raise self._busy(call.server, bulkhead, exc.timed_out) from None
        except _STORE_ERRORS as exc:
            self._store_failed(exc)
            self._store_unavailable()
            return await call_next(call)
        if self._outage_since is not None:
            self._store_recovered()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(bulkhead.keep, token)
                try:
                    result = await call_next(call)
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # `keep` never raises: the group holds the call's own error, which the chain expects bare.
            raise group.exceptions[0] from None
        finally:
            await bulkhead.release(token)
        return result

    async def _enforce(self, call: Call, checks: list[Check]) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            self._store_unavailable()
            return
        hit = self.limiter.hit
        try:
            for rule, ids in checks:
                for item in rule.items:
                    # Memory cannot hang: no timeout scope there (it is a third of a hit's cost).
                    ok = await (hit(item, *ids) if self._timeout is None else self._store(hit, item, *ids))
                    if not ok:
                        raise await self._refusal(call, rule, item, ids)
        except _STORE_ERRORS as exc:
            self._store_failed(exc)
            self._store_unavailable()
            return
        if self._outage_since is not None:
            self._store_recovered()

    async def _store(self, op: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`op(*args)` on the shared store, retried once if it does not answer in time.

        A Redis that is up but busy (a load spike, a slow command of someone else's) answers late,
        not never: refusing every call for `_RETRY_STORE_AFTER` on the first late answer would turn
        a spike into an outage. A retry, rather than an adaptive timeout, because a spike is
        sudden: a timeout learnt from past latencies is still short when it starts. A Redis that
        is down refuses the connection at once (no retry: that is not a timeout); one that hangs
        costs `(1 + RETRY_FACTOR) * storage_timeout` once, after which calls fail fast. A hit whose
        first try reached the store counts twice: the budget runs out early, never late.
        """
        if self._timeout is None:
            return await op(*args)
        try:
            with anyio.fail_after(self._timeout):
                return await op(*args)
        except TimeoutError:
            pass
        with anyio.fail_after(self._timeout * RETRY_FACTOR):
            return await op(*args)

    async def _refusal(
        self, call: Call, rule: Rule, item: RateLimitItem, ids: tuple[str, ...]
    ) -> RateLimited:
        try:
            stats = await self._store(self.limiter.get_window_stats, item, *ids)
            retry_after = max(0.001, stats.reset_time - time.time())
        except _STORE_ERRORS:
            retry_after = float(item.get_expiry())
        limit = _describe(item)
        who = {
            "global": "for all callers",
            "per_server": f"for server {call.server!r}",
            "per_identity": f"for {call.identity.name!r}",
            "per_tool": f"for {call.identity.name!r} on {call.name!r}",
            "lists": f"on lists for {call.identity.name!r}",
        }[rule.scope]
        exc = RateLimited(
            f"rate limit {limit} exceeded {who}; retry after {retry_after:.1f} s",
            retry_after=retry_after,
            limit=limit,
        )
        exc.data["scope"] = rule.scope
        if rule.scope == "per_server":
            exc.data["server"] = call.server
        return exc

    # -- an unanswering store: deny or allow, logged once per outage -----------------------------

    def _store_failed(self, cause: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + _RETRY_STORE_AFTER
        if self._outage_since is None:
            self._outage_since, self._outage_calls = now, 0
            reason = f"{type(cause).__name__}: {cause}"
            if self._secret:
                reason = reason.replace(self._secret, "***")
            logger.warning(
                "ratelimit: storage %s does not answer (%s); %s calls until it does",
                self.storage_label,
                reason,
                "refusing" if self.options.on_storage_error == "deny" else "allowing",
            )

    def _store_unavailable(self) -> None:
        self._outage_calls += 1
        if self.options.on_storage_error == "allow":
            return
        exc = RateLimited(
            "rate limit storage unavailable; call refused",
            retry_after=_RETRY_STORE_AFTER,
            limit="storage unavailable",
        )
        exc.data["scope"] = "storage"
        raise exc

    def _store_recovered(self) -> None:
        assert self._outage_since is not None
        logger.warning(
            "ratelimit: storage %s answers again after %.1f s; %d calls were %s meanwhile",
            self.storage_label,
            time.monotonic() - self._outage_since,
            self._outage_calls,
            "refused" if self.options.on_storage_error == "deny" else "allowed unchecked",
        )
        self._outage_since, self._down_until = None, 0.0

    # -- bulkheads ---------------------------------------------------------------------------------

    def bulkhead(self, server: str) -> Bulkhead | SharedBulkhead | None:
        """The concurrency cap on `server` (made on its first call), or None."""
        try:
            return self._bulkheads[server]
        except KeyError:
            spec = self.options.concurrency.get(server) or self.options.concurrency.get("*")
            made: Bulkhead | SharedBulkhead | None = None
            if spec is not None and self._redis is not None:
                key = f"{self._prefix}:concurrency:{_escape(server)}"
                made = SharedBulkhead(spec, self._redis, key, self.options.concurrency_lease, self._store)
            elif spec is not None:
                made = Bulkhead(spec)
            self._bulkheads[server] = made
            return made

    def _busy(self, server: str, bulkhead: Bulkhead | SharedBulkhead, timed_out: bool) -> RateLimited:
        limit = f"{bulkhead.max} in flight, {bulkhead.queue} queued"
        why = f"no slot within {bulkhead.queue_timeout:g} s" if timed_out else "queue full"
        exc = RateLimited(
            f"server {server!r} is busy ({limit}; {why})", retry_after=_BUSY_RETRY_AFTER, limit=limit
        )
        exc.data.update(scope="concurrency", server=server)
        return exc

    # -- extras ------------------------------------------------------------------------------------

    def attach(self, fleet: Any) -> None:
        known = set(getattr(fleet, "backends", {}))
        for option in ("per_server", "concurrency"):
            for name in set(getattr(self.options, option)) - known - {"*"}:
                logger.warning("ratelimit: %s names server %r, which is not configured", option, name)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        if self._timeout is not None:
            # Say at start-up, not at the first call, that the store does not answer.
            answered = False
            with suppress(Exception), anyio.move_on_after(self._timeout):
                answered = await self.storage.check()
            if not answered:
                self._store_failed(ConnectionError("no answer to PING"))
        try:
            yield
        finally:
            close = getattr(redis_client(self.storage), "aclose", None)
            if close is not None:
                with suppress(Exception), anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await close()
