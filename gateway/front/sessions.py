"""The 2025-11-25 sessions the exchange (`front.exchange`) may serve requests of.

A session is the SDK's: it is opened (`initialize`), kept and closed by the SDK's transport. The
exchange learns a session (the client's connection, and who authenticated it) from its
`notifications/initialized`, or else from the first request of it the SDK dispatches to the relay,
and from then on serves that session's relayed calls itself, for as long as the SDK still holds
the session, and only for the same identity.

A call of the exchange is not known to the SDK's session, so a `notifications/cancelled` naming
it is delivered here; so is the client's answer to a request the exchange sent it (a backend's
sampling, elicitation or roots question, asked on the stream of the call that caused it).

Sessions live on every replica (README "Running several replicas"). A session's id is minted by
`SessionIds`: the client's `initialize` params and its principal, sealed under `state.keys`, so any
replica with the same keys restores a session it does not hold (the SDK's manager replays the
opening, `_sdk.SessionManager`), and nothing about a session has to be looked up to serve it.
What must reach the one replica where something happens travels on the cluster's bus (`Bus`,
topic "sessions"): a client's answer to a question asked by a call running elsewhere (the ask id
names the replica), a cancellation of a call running elsewhere, a resource update for a session
whose GET stream is open elsewhere, and the end of a session (DELETE), which is also kept in Redis
so that no replica restores it again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.connection import Connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, RequestId
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from redis.exceptions import RedisError
from starlette.types import Scope

from gateway import _sdk
from gateway._inputs import StateSeal
from gateway.clients import Clients
from gateway.cluster import TIMEOUT, Cluster
from gateway.errors import InvalidRequestState
from gateway.front import Front

logger = logging.getLogger("gateway.sessions")

# Sessions the SDK has closed are forgotten when the next this many have been learned.
_PRUNE_EVERY = 256
_ASK_PREFIX = "gateway-"
# Puts a request to the client (id, method, params) on the stream of the call it belongs to.
Sender = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class Session:
    """One 2025-11-25 session as the exchange serves it: its connection, its calls in flight, and
    the requests the gateway has sent its client (a backend's questions) awaiting an answer."""

    __slots__ = ("_asks", "_calls", "_manager", "_tag", "connection", "id")

    def __init__(
        self, session_id: str, connection: Connection, manager: StreamableHTTPSessionManager, tag: str = ""
    ) -> None:
        self.id = session_id
        self.connection = connection
        self._manager = manager
        self._tag = tag  # this replica's, in the ids of the requests it sends the client
        self._calls: dict[Hashable, tuple[asyncio.Task[Any], Any]] = {}
        self._asks: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @contextmanager
    def calling(self, request_id: RequestId, exchange: Any) -> Iterator[None]:
        """While a call of the session runs: a `notifications/cancelled` for it can reach it, and
        the session is in use (the SDK does not expire it as idle)."""
        task = asyncio.current_task()
        assert task is not None
        key = coerce_request_id(request_id)  # "7" and 7 are one id, as in the SDK
        self._calls[key] = (task, exchange)
        try:
            with _sdk.session_busy(self._manager, self.id):
                yield
        finally:
            self._calls.pop(key, None)

    def streaming(self, stream: Hashable) -> Any | None:
        """The exchange whose call has the event stream `stream` (`Exchange.stream`), while the
        call runs (a session has a few calls in flight at most)."""
        return next((exchange for _, exchange in self._calls.values() if exchange.stream == stream), None)

    def cancel(self, params: Mapping[str, Any]) -> bool:
        """Cancel the call a `notifications/cancelled` (its `params`) names, if the exchange runs it."""
        request_id = cancelled_request_id_from_params(params)
        if request_id is None:
            return False
        found = self._calls.get(coerce_request_id(request_id))
        if found is None:
            return False
        task, exchange = found
        exchange.gone = True  # no answer is owed to a cancelled request
        task.cancel()
        return True

    async def ask(self, method: str, params: dict[str, Any], send: Sender) -> dict[str, Any]:
        """Send the client a request (`send` puts it on the stream of the call it belongs to) and
        wait for its answer. Bounded by the call: the call ending cancels the wait."""
        # Ids of our own kind: the SDK's session numbers the requests it sends, and the client's
        # answers to those must still reach it.
        request_id = f"{_ASK_PREFIX}{self._tag}{secrets.token_hex(8)}"
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._asks[request_id] = answer
        try:
            await send(request_id, method, params)
            return await answer
        finally:
            del self._asks[request_id]

    def answer(self, message: Mapping[str, Any]) -> bool:
        """Deliver the client's answer (a JSON-RPC response) to the request it names, if the hot
        path sent it."""
        request_id = message.get("id")
        waiting = self._asks.get(request_id) if isinstance(request_id, str) else None
        if waiting is None or waiting.done():
            return False
        error = message.get("error")
        result = message.get("result")
        if isinstance(error, dict):
            code, text = _int(error.get("code")), str(error.get("message", ""))
            waiting.set_exception(MCPError(code=code, message=text, data=error.get("data")))
        elif isinstance(result, dict):
            waiting.set_result(result)
        else:
            waiting.set_exception(MCPError(code=INVALID_REQUEST, message="the client's answer has no result"))
        return True


class Sessions:
    """The sessions the exchange serves here, and what reaches them from other replicas."""

    def __init__(
        self, manager: _sdk.SessionManager, cluster: Cluster | None = None, clients: Clients | None = None
    ) -> None:
        self._manager = manager
        self._clients = clients
        self._known: dict[str, Session] = {}
        self._by_connection: dict[int, str] = {}  # id(connection) -> session id
        self._learned = 0
        self._waiting: dict[str, asyncio.Event] = {}  # restored, not yet learned
        self._listening: collections.Counter[str] = collections.Counter()  # GET streams open here
        self._bus = cluster.bus() if cluster is not None and cluster.shared else None
        # In the ids of the questions this replica asks: an answer landing elsewhere comes back.
        self.tag = _tag(cluster.replica) if cluster is not None else ""
        if self._bus is not None:
            self._bus.on(_TOPIC, self._heard)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._known

    def close(self) -> None:
        """Its endpoint's stack is gone (a reload): it hears nothing more from the bus."""
        if self._bus is not None:
            self._bus.off(_TOPIC, self._heard)

    def knows(self, connection_key: Hashable) -> bool:
        """Whether the session of this connection (`Clients` key: its id) is one of these."""
        return connection_key in self._by_connection

    def learn(self, front: Front) -> None:
        """A relay listener: remember the session of a 2025-11-25 message the SDK dispatched."""
        request = front.request
        if request is None or front.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        connection = front.connection
        if session_id is None or connection is None or session_id in self._known:
            return
        self._known[session_id] = Session(session_id, connection, self._manager, self.tag)
        self._by_connection[id(connection)] = session_id
        waiting = self._waiting.pop(session_id, None)
        if waiting is not None:
            waiting.set()
        self._learned += 1
        if self._learned % _PRUNE_EVERY == 0:
            for gone in [s for s in self._known if not _sdk.session_open(self._manager, s)]:
                self._forget(gone)

    def _forget(self, session_id: str) -> None:
        session = self._known.pop(session_id, None)
        if session is not None:
            self._by_connection.pop(id(session.connection), None)

    def find(self, session_id: str, version: str | None, scope: Scope) -> Session | None:
        """The session, if the exchange may serve this request of it."""
        session = self._known.get(session_id)
        if session is None:
            return None
        if not _sdk.session_open(self._manager, session_id):
            self._forget(session_id)
            return None
        if version != session.connection.protocol_version or not _sdk.session_owned(
            self._manager, session_id, scope
        ):
            return None  # the SDK's transport answers what does not match, in its words
        return session

    async def restore(self, session_id: str, version: str | None, scope: Scope) -> Session | None:
        """The session, restored here if another replica opened it (or this one forgot it);
        None when it cannot be (the SDK's transport then answers, with its 404)."""
        if not session_id or self._manager.held(session_id):
            return None  # held, not learned yet: the SDK's transport serves it meanwhile
        if not await self._manager.restore(session_id, scope):
            return None
        if session_id not in self._known:
            waiting = self._waiting.setdefault(session_id, asyncio.Event())
            # Learned from the replayed `notifications/initialized`, which the SDK runs apart.
            with anyio.move_on_after(_sdk.RESTORE_TIMEOUT):
                await waiting.wait()
            self._waiting.pop(session_id, None)
        return self.find(session_id, version, scope)

    @contextmanager
    def listening(self, session_id: str | None) -> Iterator[None]:
        """While a GET stream of the session is open here (news for it is delivered here)."""
        if session_id is None:
            yield  # refused by the SDK's transport: no session to listen to
            return
        self._listening[session_id] += 1
        try:
            yield
        finally:
            self._listening[session_id] -= 1
            if not self._listening[session_id]:
                del self._listening[session_id]

    # -- what travels between replicas ---------------------------------------------------------

    async def deliver(self, session: Session, message: Mapping[str, Any]) -> bool:
        """Deliver a client's message for a call of the session: here, or (with a bus) to the
        replica running it. False: it is not for a call of the exchange (the SDK's, then)."""
        if message.get("method") == "notifications/cancelled" and "id" not in message:
            params = message.get("params")
            if not isinstance(params, dict):
                return False
            if session.cancel(params):
                return True
            if self._bus is None:
                return False
            # Wherever it runs; a call that ended meanwhile is nothing to cancel, as here.
            return await self._bus.publish(
                _TOPIC, {"kind": "cancel", "session": session.id, "params": params}
            )
        if "method" in message or "id" not in message:
            return False
        if session.answer(message):
            return True
        request_id = message.get("id")
        if self._bus is None or not isinstance(request_id, str) or not request_id.startswith(_ASK_PREFIX):
            return False
        to = request_id[len(_ASK_PREFIX) : len(_ASK_PREFIX) + _TAG_LENGTH]
        if to == self.tag:
            return False  # ours, and no longer awaited
        return await self._bus.publish(
            _TOPIC, {"kind": "answer", "session": session.id, "to": to, "message": message}
        )

    async def notify(self, connection: Connection, method: str, params: dict[str, Any] | None) -> None:
        """Send a session a notification for its GET stream: here if it listens here, else to
        the replicas, one of which holds its stream."""
        session_id = self._by_connection.get(id(connection))
        if self._bus is None or session_id is None or session_id in self._listening:
            await connection.notify(method, params)
            return
        await self._bus.publish(
            _TOPIC, {"kind": "notify", "session": session_id, "method": method, "params": params}
        )

    async def unsubscribed(self, key: Hashable, uri: str) -> None:
        """A session unsubscribed from `uri` here: the replicas that took its subscription stop
        sending it updates."""
        session_id = self._by_connection.get(key) if isinstance(key, int) else None
        if self._bus is not None and session_id is not None:
            await self._bus.publish(_TOPIC, {"kind": "unsubscribe", "session": session_id, "uri": uri})

    async def _heard(self, message: dict[str, Any]) -> None:
        kind, session_id = message.get("kind"), message.get("session")
        session = self._known.get(session_id) if isinstance(session_id, str) else None
        if kind == "ended" and isinstance(session_id, str):
            if self._bus is not None and message.get("from") != self._bus.cluster.replica:
                self._forget(session_id)
                await _sdk.end_session(self._manager, session_id)
            return
        if session is None:
            return
        if kind == "cancel" and isinstance(message.get("params"), dict):
            session.cancel(message["params"])
        elif kind == "answer" and message.get("to") == self.tag and isinstance(message.get("message"), dict):
            session.answer(message["message"])
        elif kind == "unsubscribe" and self._clients is not None and isinstance(message.get("uri"), str):
            self._clients.forget_subscription(id(session.connection), message["uri"])
        elif kind == "notify" and session.id in self._listening and isinstance(message.get("method"), str):
            params = message.get("params")
            await session.connection.notify(message["method"], params if isinstance(params, dict) else None)


class SessionsByEndpoint:
    """Every endpoint's `Sessions` (each endpoint has its own sessions): news for one session goes
    through the sessions of the endpoint it belongs to."""

    def __init__(self) -> None:
        self._all: dict[str, Sessions] = {}

    def add(self, endpoint: str, sessions: Sessions) -> Sessions:
        self._all[endpoint] = sessions  # a reload that rebuilds an endpoint's stack replaces it
        return sessions

    def remove(self, endpoint: str, sessions: Sessions) -> None:
        """`sessions` (an endpoint's stack that stopped) are done: no news goes through them."""
        sessions.close()
        if self._all.get(endpoint) is sessions:
            del self._all[endpoint]

    def _of(self, key: Hashable) -> Sessions | None:
        return next((s for s in self._all.values() if s.knows(key)), None)

    async def notify(self, connection: Connection, method: str, params: dict[str, Any] | None) -> None:
        sessions = self._of(id(connection))
        if sessions is None:
            await connection.notify(method, params)
        else:
            await sessions.notify(connection, method, params)

    async def unsubscribed(self, key: Hashable, uri: str) -> None:
        sessions = self._of(key)
        if sessions is not None:
            await sessions.unsubscribed(key, uri)


class SessionIds:
    """Mints the ids of 2025-11-25 sessions, and says which ones may be restored (the
    `_sdk.SessionIds` the SDK's manager asks).

    An id is the session's opening (the client's `initialize` params: protocol version,
    capabilities, client info) and its owner (the principal that opened it), sealed (AES-256-GCM,
    `state.keys`; the same `StateSeal` as input rounds, with its own purpose claim, so one cannot
    pass for the other) for `listen.session_max_age`. Ended sessions (DELETE) are remembered until
    their ids expire: here, and with `cluster.redis` in Redis, which every replica asks before it
    restores a session (a Redis that does not answer is logged, and the session restored: the id
    is authentic, and only its DELETE could have been missed)."""

    def __init__(self, seal: StateSeal, cluster: Cluster | None = None, *, endpoint: str = "") -> None:
        self._seal = seal
        self._cluster = cluster if cluster is not None and cluster.shared else None
        self._endpoint = endpoint  # a session is restored only on the endpoint it was opened on
        self._ended: dict[str, float] = {}  # digest -> when the id expires anyway

    def mint(self, opening: Mapping[str, Any], owner: AuthorizationContext | None) -> str:
        kept = {key: opening[key] for key in _OPENING if key in opening}
        claims = {"use": _USE, "o": owner, "e": self._endpoint, "i": kept, "n": secrets.token_hex(8)}
        return self._seal.seal(claims)

    async def restorable(self, session_id: str, owner: AuthorizationContext | None) -> dict[str, Any] | None:
        try:
            claims = self._seal.open(session_id)
        except InvalidRequestState:
            return None
        opening = claims.get("i")
        if (
            claims.get("use") != _USE
            or claims.get("o") != owner
            or claims.get("e") != self._endpoint
            or not isinstance(opening, dict)
        ):
            return None
        digest = _digest(session_id)
        if digest in self._ended or await self._ended_in_cluster(digest):
            return None
        return opening

    async def ended(self, session_id: str) -> None:
        try:
            expires = float(self._seal.open(session_id)["exp"])
        except (InvalidRequestState, KeyError, TypeError, ValueError):
            return
        now = time.time()
        digest = _digest(session_id)
        if len(self._ended) % _PRUNE_EVERY == 0:  # now and then: a DELETE costs O(1) on average
            self._ended = {d: t for d, t in self._ended.items() if t > now}
        while len(self._ended) >= _MAX_ENDED:  # bounded (with a cluster, Redis remembers them all)
            del self._ended[next(iter(self._ended))]
        self._ended[digest] = expires
        cluster = self._cluster
        if cluster is None:
            return
        client = cluster.client()
        try:
            with anyio.fail_after(TIMEOUT):
                await client.set(cluster.key(f"ended:{digest}"), "1", exat=int(expires) + 1)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning(
                "session end not recorded in Redis (%s): other replicas may restore it", type(exc).__name__
            )
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                await client.aclose()
        await cluster.bus().publish(_TOPIC, {"kind": "ended", "session": session_id})

    async def _ended_in_cluster(self, digest: str) -> bool:
        cluster = self._cluster
        if cluster is None:
            return False
        client = cluster.client()
        try:
            with anyio.fail_after(TIMEOUT):
                return bool(await client.exists(cluster.key(f"ended:{digest}")))
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning(
                "could not ask Redis whether a session ended (%s); restoring it", type(exc).__name__
            )
            return False
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                await client.aclose()


_TOPIC = "sessions"
_USE = "session"
_OPENING = ("protocolVersion", "capabilities", "clientInfo")
_TAG_LENGTH = 8
# Ended session ids remembered by one process without `cluster.redis`: a client ending more
# sessions than this in `listen.session_max_age` may restore its oldest ended ones.
_MAX_ENDED = 100_000


def _tag(replica: str) -> str:
    return hashlib.sha256(replica.encode()).hexdigest()[:_TAG_LENGTH]


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else INTERNAL_ERROR
