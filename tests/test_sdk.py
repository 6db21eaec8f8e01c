"""Every third-party private `gateway/_sdk.py` reaches, checked against the installed libraries.

When a library moves or renames one, the test for it fails naming the attribute and what in the
gateway needs it, rather than a relay misbehaving somewhere downstream. The behaviour built on
them is tested where it is used (tests/test_exchange.py, tests/backends, tests/middleware).
"""

from __future__ import annotations

import importlib
import inspect
import socket
from importlib.metadata import version
from typing import Any

import anyio
import limits.aio.storage
import mcp.server._streamable_http_modern as modern
import mcp.server.stdio as sdk_stdio
import pytest
from limits.storage import storage_from_string
from mcp.client.session import ClientSession
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.runner import ServerRunner
from mcp.server.session import ServerSession
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types.version import LATEST_MODERN_VERSION

from gateway import _sdk

pytestmark = pytest.mark.anyio


def need(owner: object, name: str, user: str, library: str = "mcp") -> Any:
    """`owner.name`, or a failure saying which library changed what, and who in the gateway needs it."""
    label = owner.__name__ if isinstance(owner, type) else getattr(owner, "__name__", type(owner).__name__)
    assert hasattr(owner, name), (
        f"{library} {version(library)} has no {label}.{name} any more; gateway/_sdk.py's {user} uses it"
    )
    return getattr(owner, name)


def params(function: Any) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p != "self"]


# -- mcp -------------------------------------------------------------------------------------------


def test_mcp_private_modules_still_provide_what_the_gateway_imports() -> None:
    assert callable(need(modern, "_sse_event", "sse_event"))
    headers = need(modern, "_SSE_HEADERS", "SSE_HEADERS")
    assert (b"content-type", b"text/event-stream") in [(k.lower(), v) for k, v in headers]
    assert isinstance(need(modern, "_SSE_PING_INTERVAL", "SSE_PING_INTERVAL"), int | float)
    for name in ("_claim_fd", "_open_stdin_diversion", "_open_stdout_diversion"):
        assert callable(need(sdk_stdio, name, "claim_stdio"))
    protocols = importlib.import_module("mcp.shared._stream_protocols")
    assert need(protocols, "ReadStream", "ReadStream") is _sdk.ReadStream
    assert need(protocols, "WriteStream", "WriteStream") is _sdk.WriteStream


def test_server_session_keeps_its_connection_and_request_outbound() -> None:
    connection = Connection.from_envelope(LATEST_MODERN_VERSION, None, {})
    outbound: Any = object()
    session = ServerSession(outbound, connection)
    assert need(session, "_connection", "SdkFront.connection") is connection
    assert need(session, "_request_outbound", "SdkFront.notify/ask") is outbound


def test_server_runner_serializes_results_by_method_and_version() -> None:
    serialize = need(ServerRunner, "_serialize", "result_shaper")
    assert params(serialize) == ["method", "version", "result"], (
        "mcp changed ServerRunner._serialize's signature"
    )
    shape = _sdk.result_shaper(Server("probe"))
    shaped = shape("tools/call", LATEST_MODERN_VERSION, {"content": [], "resultType": "complete"})
    assert shaped["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "probe"  # the runner's stamp


def test_session_manager_tables_and_admission() -> None:
    manager = StreamableHTTPSessionManager(app=Server("probe"))
    assert need(manager, "_server_instances", "session_busy/session_open/close_get_streams") == {}
    assert need(manager, "_session_owners", "session_owned") == {}
    admit = need(StreamableHTTPSessionManager, "_admit_session", "SessionManager")
    assert params(admit) == ["requestor"], "mcp changed StreamableHTTPSessionManager._admit_session"
    # Portable sessions: the id minted around admission, a session restored by replaying its opening.
    handle = need(StreamableHTTPSessionManager, "_handle_stateful_request", "SessionManager")
    assert params(handle) == ["scope", "receive", "send"]
    serve_opening = need(StreamableHTTPSessionManager, "_serve_opening_request", "SessionManager.restore")
    assert params(serve_opening) == ["http_transport", "scope", "receive", "send"]
    discard = need(StreamableHTTPSessionManager, "_discard_session", "end_session")
    assert params(discard) == ["session_id", "transport"]
    assert need(manager, "_session_creation_lock", "SessionManager.restore") is not None
    # The admitted transport is registered under its `mcp_session_id`, which the override re-keys.
    source = inspect.getsource(StreamableHTTPSessionManager._admit_session)
    assert "self._server_instances[session_id] = http_transport" in source


def test_transport_idle_counters_and_unanswered_request_hook() -> None:
    transport = StreamableHTTPServerTransport(mcp_session_id="s", idle_timeout=7.0)
    assert need(transport, "_requests_in_flight", "session_busy") == 0
    assert need(transport, "_idle_timeout", "session_busy") == 7.0
    assert hasattr(transport, "idle_scope") and callable(transport.close_sse_stream)
    terminate = need(transport, "_terminate_unanswered_request", "SessionManager")
    assert params(terminate) == ["request_id"]
    # The SessionManager replaces it per instance: that works only while it is looked up per request.
    source = inspect.getsource(StreamableHTTPServerTransport)
    # ...and sets each session's own event store, read per use (priming, storing, replaying).
    assert need(transport, "_event_store", "SessionManager") is None
    for use in (
        "if not self._event_store:",
        "self._event_store.store_event",
        "event_store = self._event_store",
    ):
        assert use in source, (
            f"mcp no longer reads StreamableHTTPServerTransport._event_store per use ({use})"
        )
    assert "self._terminate_unanswered_request" in source, (
        "mcp no longer looks up StreamableHTTPServerTransport._terminate_unanswered_request per request; "
        "gateway/_sdk.py's SessionManager can no longer replace it"
    )


async def test_client_session_stamp_and_dispatcher() -> None:
    send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](1)
    out, into = anyio.create_memory_object_stream[SessionMessage](1)
    async with send, receive, out, into:
        client = ClientSession(receive, out)
        stamp = _sdk.stamper(client)
        assert callable(stamp), "mcp changed ClientSession._stamp; gateway/_sdk.py's stamper uses it"
        data: dict[str, Any] = {"method": "tools/list", "params": {}}
        stamp(data, {})  # before a handshake: no envelope, and no failure
        dispatcher = need(client, "_dispatcher", "raw_request/raw_notify")
        assert isinstance(dispatcher, JSONRPCDispatcher)
        assert need(dispatcher, "_closed", "raw_request") is False
        assert params(dispatcher.send_raw_request)[:3] == ["method", "params", "opts"]
        assert params(dispatcher.notify)[:3] == ["method", "params", "opts"]
        # listen_filtered: the SDK's `listen`, on the same privates, with a filter of any keys.
        assert need(client, "_task_group", "listen_filtered") is None  # set once entered
        register = need(client, "_register_listen_route", "listen_filtered")
        route = register("r-1")
        for name in ("acked", "honored", "error", "set_acked", "settle"):
            need(route, name, "listen_filtered")
        assert need(client, "_listen_routes", "listen_filtered (via the session's demux)") == {"r-1": route}
        need(client, "_unregister_listen_route", "listen_filtered")("r-1")
        assert client._listen_routes == {}
        # The session feeds a route from any frame stamped with its id; unknown filter keys stay.
        honored = {"taskIds": ["t-1"]}
        route = register("r-2")
        stamped = {"notifications": honored, "_meta": {SUBSCRIPTION_ID_META_KEY: "r-2"}}
        assert client._intercept_notification("notifications/subscriptions/acknowledged", stamped)
        assert route.honored is not None and route.honored.model_extra == honored


# -- limits ----------------------------------------------------------------------------------------


def test_limits_memory_storage_expiry_hook_is_replaceable() -> None:
    memory = limits.aio.storage.MemoryStorage
    assert hasattr(memory, _sdk.MEMORY_EXPIRY_HOOK), (
        f"limits {version('limits')} has no MemoryStorage.__schedule_expiry any more; "
        "gateway/_sdk.py's replace_memory_expiry falls back to limits' slower clean-up"
    )
    storage = memory()

    async def hook() -> None:
        return None

    assert _sdk.replace_memory_expiry(storage, hook)
    assert getattr(storage, _sdk.MEMORY_EXPIRY_HOOK) is hook
    # What `_ratelimit_store._Sweeper` sweeps.
    for name in ("events", "expirations", "storage", "locks"):
        need(storage, name, "the ratelimit store's sweeper", "limits")


def test_limits_redis_storage_exposes_its_client() -> None:
    storage = storage_from_string("async+redis://127.0.0.1:9/0", implementation="redispy")
    client = _sdk.redis_client(storage)
    assert client is not None, (
        f"limits {version('limits')} has no RedisStorage.bridge.storage any more; "
        "gateway/_sdk.py's redis_client cannot close the Redis client, and concurrency caps "
        "fall back to per process"
    )
    assert callable(need(client, "aclose", "redis_client", "redis"))
    assert callable(need(client, "register_script", "redis_client", "redis"))


# -- uvicorn ---------------------------------------------------------------------------------------


def test_uvicorn_supervisor_makes_its_workers_through_the_module_global() -> None:
    import uvicorn.supervisors.multiprocess as multiprocess

    need(multiprocess, "Process", "uvicorn_worker_class", "uvicorn")
    # Every place the supervisor makes a worker looks the class up by that name at the time.
    for method in ("init_processes", "keep_subprocess_alive", "restart_all", "handle_ttin"):
        code = need(multiprocess.Multiprocess, method, "uvicorn_worker_class", "uvicorn").__code__
        assert "Process" in code.co_names, f"uvicorn's Multiprocess.{method} no longer makes a Process"
    # What gateway/front/_workers.py's Worker overrides and sets: the child's entry point and the
    # server it runs (read by the ping-answering thread through `server`).
    assert params(multiprocess.Process.target) == ["sockets"]
    assert "_server" in inspect.getsource(vars(multiprocess.Process)["server"].fget)
    made: list[tuple[object, object]] = []
    with _sdk.uvicorn_worker_class(lambda config, sockets: made.append((config, sockets))):
        multiprocess.Process("config", "sockets")  # type: ignore[arg-type]
    assert made == [("config", "sockets")]
    assert multiprocess.Process.__module__ == "uvicorn.supervisors.multiprocess"  # put back


# -- docker ----------------------------------------------------------------------------------------


def test_attach_socket_dups_the_socket_under_docker_pys_socket_io() -> None:
    theirs, peer = socket.socketpair()
    raw = socket.SocketIO(theirs, "rwb")
    assert need(raw, "_sock", "attach_socket", "docker") is theirs
    closed: list[bool] = []

    class Response:
        def close(self) -> None:
            closed.append(True)

    raw._response = Response()  # type: ignore[attr-defined]  # as docker-py keeps the HTTP response
    own = _sdk.attach_socket(raw)
    try:
        assert theirs.fileno() == -1 and closed == [True]  # nothing of docker-py's is left open
        own.sendall(b"ping")
        assert peer.recv(4) == b"ping"
    finally:
        own.close()
        peer.close()
