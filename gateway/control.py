"""One control plane for the replicas that share `cluster.redis`.

What an administrator changes through any replica applies to all of them:

- **Registrations and removals.** A runtime registration is kept in the hash `<key_prefix>:servers`
  (name -> the spec as submitted and validated: secrets stay references, nothing is resolved) and
  announced on the bus; every replica adds it to its fleet, and a replica that starts later loads
  the hash after gateway.yaml's servers (gateway.yaml wins a name both have). A removal deletes the
  entry and is announced likewise. The hash is the truth: an announcement only says "look again".
- **start/stop/restart and reload** apply where they were asked, then are announced; every other
  replica does the same to its own copy (or reloads its own gateway.yaml) and acknowledges. The
  caller is told which replicas acknowledged within a bounded wait, and which did not.
- **Pins** (`pinning`): the first replica to see a tool pins it in `<key_prefix>:pins` (HSETNX),
  the others compare against that; an approval overwrites it and is announced.
- **The cluster view.** Each replica heartbeats (every `cluster.heartbeat` seconds, a key that
  expires after three missed beats) its id, address, up-since, load and each backend's state.

While Redis is unreachable a registration, a removal or an approval is refused (`ClusterUnavailable`,
a 503 at the admin API) rather than applied to one replica only; everything else goes on serving
(an action or a reload applies locally and reports that it was not announced). When Redis answers
again, each replica re-syncs from the hash; if Redis came back empty (a restart without
persistence), the replicas first put back what they hold (registrations, pins).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.backends import Backend
from gateway.cluster import TIMEOUT, Bus
from gateway.config.models import GatewayConfig, ServerSpec
from gateway.errors import ClusterUnavailable
from gateway.fleet import Fleet

logger = logging.getLogger("gateway.control")

SERVERS, ACTIONS, ACKS, PINS = "servers", "actions", "acks", "pins"  # bus topics
# A heartbeat older than this many intervals is a replica gone.
_MISSED = 3
# Every so many heartbeats, a full re-sync from the store: pub/sub keeps nothing, so an
# announcement made while this replica's subscriber was reconnecting would otherwise be missed.
_RESYNC_EVERY = 6
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)

Perform = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]
PinListener = Callable[[str, str, str], None]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def parse_spec(name: str, raw: Any) -> ServerSpec:
    """A stored spec, validated exactly as a gateway.yaml `servers:` entry (raises ValidationError)."""
    return GatewayConfig.model_validate({"servers": {name: raw}}).servers[name]


class _Acks:
    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.results: dict[str, dict[str, Any]] = {}
        self.done = anyio.Event()
        if not expected:
            self.done.set()

    def add(self, replica: str, result: dict[str, Any]) -> None:
        self.results[replica] = result
        if self.expected <= set(self.results):
            self.done.set()


class ControlPlane:
    """This replica's part of the cluster's control plane (only with `cluster.redis`)."""

    def __init__(self, fleet: Fleet, bus: Bus) -> None:
        self.fleet = fleet
        self.cluster = cluster = fleet.cluster
        self.bus = bus
        self.replica = cluster.replica
        self.interval = cluster.config.heartbeat
        self.ttl = self.interval * _MISSED
        # The listen address, once known (set by whoever binds the socket); `cluster.address` wins.
        self.address: str | None = cluster.config.address
        self.up_since = time.time()
        # Runtime registrations applied here, as stored: name -> the spec as submitted.
        self.registered: dict[str, Any] = {}
        # Whether the last exchange with Redis worked; False until the first one does.
        self.reachable = False
        # What carries out another replica's action or reload here (the admin API sets it).
        self.perform: Perform | None = None
        # Pin approvals (server, tool, fingerprint) announced by other replicas; and, after Redis
        # came back empty, a call to put this replica's pins back.
        self.pin_listeners: list[PinListener] = []
        self.reseed_listeners: list[Callable[[], Awaitable[None]]] = []
        # ("added" | "removed", server) when the store or another replica changed this fleet.
        self.membership_listeners: list[Callable[[str, str], None]] = []
        # After each re-sync: what caches the store's state (pins) reads it again.
        self.resync_listeners: list[Callable[[], None]] = []
        self._epoch: str | None = None
        # Whether this replica matches the store since Redis last failed it: the heartbeat
        # re-syncs when not (what other paths learn of Redis only sets `reachable`).
        self._in_sync = False
        self._client: Redis | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock = anyio.Lock()
        self._acks: dict[str, _Acks] = {}
        self._calls = 0
        self._rate = (time.monotonic(), 0)
        self.calls_per_second = 0.0
        bus.on(SERVERS, self._on_servers)
        bus.on(ACTIONS, self._on_action)
        bus.on(ACKS, self._on_ack)
        bus.on(PINS, self._on_pin)

    def key(self, kind: str) -> str:
        return self.cluster.key(kind)

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise ClusterUnavailable("the cluster's control plane is not running")
        return self._client

    # -- running -------------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ControlPlane]:
        """Load the cluster's registrations (enter before `fleet.running()`: they start with the
        file's servers), then heartbeat and follow the bus until the block ends."""
        self._client = self.cluster.client()
        try:
            await self._sync_logged()
            self.fleet.call_listeners.append(self._count)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._heartbeat_forever)
                try:
                    yield self
                finally:
                    self._tg = None
                    tg.cancel_scope.cancel()
            # Leaving: out of the cluster view at once, not after the heartbeat expires.
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                try:
                    await self._client.delete(self.key(f"replica:{self.replica}"))
                    await self._client.srem(self.key("replicas"), self.replica)
                except _REDIS_ERRORS:
                    pass
        finally:
            if self._count in self.fleet.call_listeners:
                self.fleet.call_listeners.remove(self._count)
            client, self._client = self._client, None
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                await client.aclose()

    def _count(self, server: str, seconds: float, ok: bool) -> None:
        self._calls += 1

    async def _heartbeat_forever(self) -> None:
        beats = 0
        while True:
            was = self._in_sync
            beats += 1
            try:
                with anyio.fail_after(TIMEOUT * 2):
                    await self._beat()
                if not was:
                    logger.info("cluster: Redis reachable; re-syncing from the shared store")
                if not was or beats % _RESYNC_EVERY == 0:
                    await self.sync()
            except _REDIS_ERRORS as exc:
                self._in_sync = False
                if was:
                    logger.warning(
                        "cluster: Redis unreachable (%s): registrations, removals and pin approvals "
                        "are refused until it is back",
                        type(exc).__name__,
                    )
                self.reachable = False
            await anyio.sleep(self.interval)

    async def _beat(self) -> None:
        now = time.monotonic()
        began, calls = self._rate
        self.calls_per_second = round((self._calls - calls) / max(now - began, 1e-9), 3)
        self._rate = (now, self._calls)
        entry = json.dumps(self.snapshot(), separators=(",", ":"))
        async with self.client.pipeline(transaction=False) as pipe:
            # The key's expiry (Redis's clock, not each replica's) says whether a replica is live;
            # the set is only the index of who to look for.
            pipe.set(self.key(f"replica:{self.replica}"), entry, px=int(self.ttl * 1000))
            pipe.sadd(self.key("replicas"), self.replica)
            await pipe.execute()

    def snapshot(self) -> dict[str, Any]:
        """This replica as the cluster view shows it (calls/s as of the last heartbeat)."""
        backends = self.fleet.backends
        return {
            "replica": self.replica,
            "address": self.address,
            "up_since": _iso(self.up_since),
            "seen": _iso(time.time()),
            "load": {
                "in_flight": sum(b.in_flight for b in backends.values()),
                "calls": self._calls,
                "calls_per_second": self.calls_per_second,
            },
            "backends": {name: _backend_state(b) for name, b in backends.items()},
        }

    async def replicas(self) -> list[dict[str, Any]]:
        """Every live replica (this one as it is now), by id. Raises `ClusterUnavailable`."""
        try:
            others = await self._others()
        except _REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        return sorted([self.snapshot(), *others.values()], key=lambda r: str(r["replica"]))

    async def _others(self) -> dict[str, dict[str, Any]]:
        """The other live replicas' last heartbeats; the index forgets those that expired."""
        with anyio.fail_after(TIMEOUT * 2):
            ids = sorted(
                str(i) for i in await self.client.smembers(self.key("replicas")) if str(i) != self.replica
            )
            raw: list[Any] = await self.client.mget([self.key(f"replica:{i}") for i in ids]) if ids else []
            gone = [i for i, entry in zip(ids, raw, strict=True) if entry is None]
            if gone:
                await self.client.srem(self.key("replicas"), *gone)
        found = {}
        for replica, entry in zip(ids, raw, strict=True):
            try:
                found[replica] = json.loads(entry) if entry is not None else None
            except ValueError:
                logger.warning("cluster: the heartbeat of replica %r is not valid JSON; ignored", replica)
        return {replica: entry for replica, entry in found.items() if isinstance(entry, dict)}

    async def _live_others(self) -> set[str]:
        try:
            return set(await self._others())
        except _REDIS_ERRORS:
            return set()

    def _unavailable(self, exc: BaseException) -> ClusterUnavailable:
        self.reachable = self._in_sync = False
        return ClusterUnavailable(
            f"the cluster's shared store (Redis) is unreachable ({type(exc).__name__}); "
            "nothing was changed, retry once it is back"
        )

    # -- registrations -------------------------------------------------------------------------

    async def register(self, name: str, raw: Any, spec: ServerSpec) -> Backend | None:
        """Store the registration (first one wins, cluster-wide), add it here and announce it.
        None if another replica registered `name` first. Raises `ClusterUnavailable`."""
        entry = json.dumps({"spec": raw, "by": self.replica, "at": time.time()}, separators=(",", ":"))
        async with self._lock:
            try:
                with anyio.fail_after(TIMEOUT * 2):
                    created = await self.client.hsetnx(self.key(SERVERS), name, entry)
            except _REDIS_ERRORS as exc:
                raise self._unavailable(exc) from None
            if not created:
                return None
            backend = self.fleet.add(name, spec)
            self.registered[name] = raw
        await self.bus.publish(SERVERS, {"op": "register", "server": name})
        return backend

    async def unregister(self, name: str) -> None:
        """Delete `name`'s registration (if it has one) before it is removed here. Raises
        `ClusterUnavailable`: a removal that could not reach the others is not done at all."""
        try:
            with anyio.fail_after(TIMEOUT * 2):
                await self.client.hdel(self.key(SERVERS), name)
        except _REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        self.registered.pop(name, None)

    async def removed(self, name: str) -> bool:
        """Announce that `name` was removed here: the others remove theirs."""
        return await self.bus.publish(SERVERS, {"op": "remove", "server": name})

    def extend(self, config: GatewayConfig) -> GatewayConfig:
        """`config` (a reloaded gateway.yaml) plus the cluster's registrations it does not name:
        a reload makes the fleet match the file and the cluster, not the file alone."""
        extra = {}
        for name in self.registered:
            backend = self.fleet.backends.get(name)
            if name not in config.servers and backend is not None:
                extra[name] = backend.spec
        if not extra:
            return config
        return config.model_copy(update={"servers": {**config.servers, **extra}})

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except _REDIS_ERRORS as exc:
            self.reachable = False
            logger.warning(
                "cluster: cannot read the shared registrations (%s); retrying at the next heartbeat",
                type(exc).__name__,
            )

    async def sync(self) -> None:
        """Make this replica's runtime registrations match the hash (start-up, Redis back)."""
        client = self.client
        async with self._lock:
            with anyio.fail_after(TIMEOUT * 2):
                epoch = _string(await client.get(self.key("control:epoch")))
                lost = self._epoch is not None and epoch != self._epoch
                if lost:
                    # Redis lost what it held: put back what this replica knows, first one wins.
                    logger.warning("cluster: the shared store came back empty; restoring registrations")
                    for name, raw in self.registered.items():
                        entry = {"spec": raw, "by": self.replica, "at": time.time()}
                        await client.hsetnx(self.key(SERVERS), name, json.dumps(entry))
            if lost:
                for reseed in list(self.reseed_listeners):
                    try:
                        await reseed()
                    except ClusterUnavailable as exc:
                        raise RedisError(exc.message) from None
            with anyio.fail_after(TIMEOUT * 2):
                if epoch is None or lost:
                    await client.set(self.key("control:epoch"), secrets.token_hex(8), nx=True)
                    epoch = _string(await client.get(self.key("control:epoch")))
                entries: dict[str, str] = _strings(await client.hgetall(self.key(SERVERS)))
            self._epoch = epoch
            self.reachable = self._in_sync = True
            wanted: dict[str, tuple[Any, ServerSpec]] = {}
            for name, text in entries.items():
                try:
                    raw = json.loads(text)["spec"]
                    wanted[name] = (raw, parse_spec(name, raw))
                except (ValueError, KeyError, TypeError, ValidationError):
                    logger.error("cluster: the shared registration of %r is not valid; ignored", name)
            for name in [n for n in self.registered if n not in wanted]:
                await self._remove_here(name)
            for name, (raw, spec) in wanted.items():
                await self._apply(name, raw, spec)
        for listener in list(self.resync_listeners):
            listener()

    async def _apply(self, name: str, raw: Any, spec: ServerSpec) -> None:
        if name in self.registered:
            if self.registered[name] == raw:
                return
            await self._remove_here(name)
        elif name in self.fleet.backends or name in self.fleet.config.servers:
            logger.warning(
                "cluster: registration %r ignored here: gateway.yaml has a server of that name", name
            )
            return
        self.fleet.add(name, spec)
        self.registered[name] = raw
        logger.info("cluster: server %s added (registered through another replica)", name)
        self._tell("added", name)

    def _tell(self, change: str, name: str) -> None:
        for listener in list(self.membership_listeners):
            listener(change, name)

    async def _remove_here(self, name: str) -> None:
        self.registered.pop(name, None)
        if name not in self.fleet.backends:
            return
        try:
            await self.fleet.remove(name)
        except TimeoutError:
            logger.error("cluster: server %s did not stop in time while being removed", name)
        self._tell("removed", name)

    async def _on_servers(self, message: dict[str, Any]) -> None:
        if message.get("from") == self.replica or not isinstance(message.get("server"), str):
            return
        if self._tg is not None:  # off the bus's reader: stopping a server takes a while
            self._tg.start_soon(self._follow, message)

    async def _follow(self, message: dict[str, Any]) -> None:
        name = message["server"]
        # Under the lock, in the order the announcements came: a registration read before a
        # removal that followed it must not be applied after that removal.
        async with self._lock:
            if message.get("op") == "remove":
                await self._remove_here(name)
                logger.info("cluster: server %s removed (through replica %s)", name, message.get("from"))
                return
            try:
                with anyio.fail_after(TIMEOUT * 2):
                    text = await self.client.hget(self.key(SERVERS), name)
            except _REDIS_ERRORS as exc:
                logger.warning("cluster: cannot read registration %r (%s); re-synced later", name, exc)
                return
            self.reachable = True
            if text is None:
                return
            try:
                raw = json.loads(text)["spec"]
                spec = parse_spec(name, raw)
            except (ValueError, KeyError, TypeError, ValidationError):
                logger.error("cluster: the shared registration of %r is not valid; ignored", name)
                return
            await self._apply(name, raw, spec)

    # -- actions and reloads -------------------------------------------------------------------

    async def announce(self, request: Mapping[str, Any], wait: float) -> dict[str, Any]:
        """Have every other live replica perform `request` (an action or a reload); wait (at most
        `wait` s) for their acknowledgements. The answer says who acknowledged, and who did not."""
        expected = await self._live_others()
        ident = uuid.uuid4().hex
        acks = self._acks[ident] = _Acks(expected)
        try:
            announced = await self.bus.publish(ACTIONS, {**request, "request": ident})
            if announced:
                with anyio.move_on_after(wait):
                    await acks.done.wait()
        finally:
            del self._acks[ident]
        return {
            "announced": announced,
            "replicas": dict(sorted(acks.results.items())),
            "pending": sorted(expected - set(acks.results)),
        }

    async def _on_action(self, message: dict[str, Any]) -> None:
        if message.get("from") == self.replica or self._tg is None:
            return
        # Off the bus's reader: a restart may take a while, and other messages must flow meanwhile.
        self._tg.start_soon(self._perform, message)

    async def _perform(self, message: dict[str, Any]) -> None:
        if self.perform is None:
            return
        try:
            result = await self.perform(message)
        except Exception as exc:  # reported to the caller, whatever it was
            logger.exception(
                "cluster: %s announced by %s failed here", message.get("op"), message.get("from")
            )
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply = {"request": message.get("request"), "to": message.get("from"), "result": result}
        await self.bus.publish(ACKS, reply)

    async def _on_ack(self, message: dict[str, Any]) -> None:
        if message.get("to") != self.replica:
            return
        acks = self._acks.get(str(message.get("request")))
        result = message.get("result")
        if acks is not None and isinstance(result, dict):
            acks.add(str(message.get("from")), result)

    # -- pins ----------------------------------------------------------------------------------

    async def claim_pins(self, seen: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], str]:
        """Pin each (server, tool) not pinned yet to the fingerprint seen here (first sight wins,
        cluster-wide), and return what every one of them is pinned to. Raises `ClusterUnavailable`."""
        if not seen:
            return {}
        keys = list(seen)
        fields = [json.dumps(list(k)) for k in keys]
        try:
            with anyio.fail_after(TIMEOUT * 2):
                async with self.client.pipeline(transaction=False) as pipe:
                    for field, key in zip(fields, keys, strict=True):
                        pipe.hsetnx(self.key(PINS), field, seen[key])
                    pipe.hmget(self.key(PINS), fields)
                    answers = await pipe.execute()
        except _REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        self.reachable = True
        pinned: list[str | None] = answers[-1]
        return {k: p if p is not None else seen[k] for k, p in zip(keys, pinned, strict=True)}

    async def approve_pin(self, server: str, tool: str, fingerprint: str) -> None:
        """Trust `fingerprint` for the tool on every replica. Raises `ClusterUnavailable`."""
        try:
            with anyio.fail_after(TIMEOUT * 2):
                await self.client.hset(self.key(PINS), json.dumps([server, tool]), fingerprint)
        except _REDIS_ERRORS as exc:
            raise self._unavailable(exc) from None
        await self.bus.publish(PINS, {"server": server, "tool": tool, "fingerprint": fingerprint})

    async def _on_pin(self, message: dict[str, Any]) -> None:
        if message.get("from") == self.replica:
            return
        server, tool, fingerprint = message.get("server"), message.get("tool"), message.get("fingerprint")
        if isinstance(server, str) and isinstance(tool, str) and isinstance(fingerprint, str):
            for listener in list(self.pin_listeners):
                listener(server, tool, fingerprint)


def _backend_state(backend: Backend) -> dict[str, Any]:
    return {
        "state": backend.state.value,
        "available": backend.available,
        "restarts": backend.restarts,
        "in_flight": backend.in_flight,
        "started_at": None if backend.started_at is None else _iso(backend.started_at),
    }


def local_view(fleet: Fleet) -> dict[str, Any]:
    """This replica alone (no `cluster.redis`), in the shape of a cluster view's entry."""
    backends = fleet.backends
    return {
        "replica": fleet.cluster.replica,
        "address": fleet.cluster.config.address,
        "up_since": None,
        "seen": _iso(time.time()),
        "load": {
            "in_flight": sum(b.in_flight for b in backends.values()),
            "calls": None,
            "calls_per_second": None,
        },
        "backends": {name: _backend_state(b) for name, b in backends.items()},
    }


# The client decodes (`decode_responses`): what Redis answers is str, whatever redis-py's types say.
def _string(value: Any) -> str | None:
    return None if value is None else str(value)


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}
