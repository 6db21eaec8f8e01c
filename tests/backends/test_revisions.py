"""Backends in their best revision: the probe, its fallback, the pin, and what 2026-07-28 changes
below the relay (discovery instead of the handshake, list changes on a listen stream, no ping)."""

from __future__ import annotations

import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from gateway.backends import session as session_module
from gateway.fleet import Fleet
from gateway.tasks import opted_in
from tests._support import HERE, TINY, config, misbehave, modern, modern_http, time_server, wait_until

pytestmark = pytest.mark.anyio

TASKS_SERVER = str(HERE / "servers" / "tasks.py")

MODERN_TOOLS = {
    *("ask", "cancellations", "count", "echo", "envelope", "grow", "headers", "regional", "touch"),
    *("wait", "weather"),
}


def tiny(**extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [TINY], **extra}


async def _started(fleet: Fleet) -> None:
    with anyio.fail_after(60):
        await fleet.wait_started()


async def test_a_2026_only_server_starts_with_what_its_discovery_told() -> None:
    """It refuses `initialize`; before the probe it never started. Its tools come in pages of two."""
    fleet = Fleet(config({"mo": modern()}))
    async with fleet.running():
        await _started(fleet)
        backend = fleet.backends["mo"]
        assert backend.available, backend.last_error
        assert backend.protocol_version == "2026-07-28"
        session = backend._shared
        assert session is not None
        assert session.server_info is not None and session.server_info.name == "modern"
        assert session.instructions == "A 2026-07-28-only test server."
        assert session.capabilities.tools is not None and session.capabilities.tools.list_changed
        assert {t["name"] for t in backend.listing.tools} == MODERN_TOOLS  # all three pages
        assert [r["uri"] for r in backend.listing.resources] == ["modern://info"]
        assert [t["uriTemplate"] for t in backend.listing.templates] == ["modern://item/{item}"]
        assert [p["name"] for p in backend.listing.prompts] == ["greet"]
        result = await backend.request("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        assert result["content"] == [{"type": "text", "text": "hi"}]
        assert "_meta" not in result  # the backend's own identity stamp is not passed on


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (time_server(), "2026-07-28"),  # both revisions: the newest
        (time_server(protocol="2025-11-25"), "2025-11-25"),  # pinned
        (time_server(protocol="2026-07-28"), "2026-07-28"),
        # 2025-11-25 only: tiny answers `server/discover` with `{}`, which is no discovery result.
        (tiny(), "2025-11-25"),
        (misbehave(protocol="2025-11-25"), "2025-11-25"),
    ],
    ids=["time-auto", "time-pinned-2025", "time-pinned-2026", "tiny-auto", "misbehave-pinned-2025"],
)
async def test_the_newest_shared_revision_is_spoken_unless_pinned(
    spec: dict[str, Any], expected: str
) -> None:
    fleet = Fleet(config({"s": spec}))
    async with fleet.running():
        await _started(fleet)
        backend = fleet.backends["s"]
        assert backend.available, backend.last_error
        assert backend.protocol_version == expected
        assert backend.listing.tools
        # A call works in that revision, and the health check's probe too.
        session = backend._shared
        assert session is not None
        await session.ping(timeout=30)
    assert fleet.backends["s"].protocol_version is None  # not running: no revision


async def test_a_pinned_revision_the_server_lacks_fails_with_a_clear_error() -> None:
    fleet = Fleet(config({"t": tiny(protocol="2026-07-28", restart="never")}))
    async with fleet.running():
        await _started(fleet)
        backend = fleet.backends["t"]
        assert not backend.available
        assert backend.last_error == "t: failed to start: its server/discover answer is no discovery result"


async def test_a_2026_only_server_pinned_to_2025_fails_with_its_refusal() -> None:
    fleet = Fleet(config({"mo": modern(protocol="2025-11-25", restart="never")}))
    async with fleet.running():
        await _started(fleet)
        error = fleet.backends["mo"].last_error
        assert error is not None and "Method not found" in error, error


async def test_a_probe_that_is_never_answered_fails_within_the_startup_timeout() -> None:
    fleet = Fleet(config({"h": misbehave("--hang-at-start", startup_timeout=2, restart="never")}))
    began = time.monotonic()
    async with fleet.running():
        await _started(fleet)
        took = time.monotonic() - began
        error = fleet.backends["h"].last_error
    assert error is not None and "no MCP handshake within 2s" in error, error
    assert took < 2 + 20  # the probe and its fallback share the one deadline (slack: a loaded machine)


async def test_health_checks_of_a_2026_backend_pass_without_ping() -> None:
    """2026-07-28 has no `ping`: the health check asks `server/discover` instead."""
    health = {"interval": 0.2, "timeout": 10, "failures": 2}
    fleet = Fleet(config({"mo": modern(health=health)}))
    async with fleet.running():
        await _started(fleet)
        backend = fleet.backends["mo"]
        seen: list[float] = []
        session = backend._shared
        assert session is not None
        original = session.request

        async def counting(method: str, *args: Any, **kw: Any) -> dict[str, Any]:
            if method == "server/discover":
                seen.append(time.monotonic())
            return await original(method, *args, **kw)

        session.request = counting  # type: ignore[method-assign]
        await wait_until(lambda: len(seen) >= 4, timeout=30)
        assert backend.available and backend._shared is session  # never restarted
        assert not [e for e in fleet.events if e.server == "mo" and e.category == "health"]


async def test_an_http_2026_backend_gets_the_mcp_method_and_name_headers() -> None:
    async with modern_http() as url:
        fleet = Fleet(config({"mo": {"url": url}}))
        async with fleet.running():
            await _started(fleet)
            backend = fleet.backends["mo"]
            assert backend.protocol_version == "2026-07-28"
            await backend.request("tools/call", {"name": "echo", "arguments": {"text": "x"}})
            await backend.request("prompts/get", {"name": "greet", "arguments": {"name": "a"}})
            await backend.request("resources/read", {"uri": "modern://info"})
            # The SDK's server refuses a call whose `Mcp-Param-*` header is missing or wrong.
            regional = await backend.request(
                "tools/call", {"name": "regional", "arguments": {"region": "eu"}}
            )
            assert regional["content"] == [{"type": "text", "text": "served in eu"}], regional
            result = await backend.request("tools/call", {"name": "headers", "arguments": {}})
    seen = result["structuredContent"]["result"]
    assert {"mcp-method": "tools/list"} in seen
    assert {"mcp-method": "tools/call", "mcp-name": "echo"} in seen
    assert {"mcp-method": "prompts/get", "mcp-name": "greet"} in seen
    assert {"mcp-method": "resources/read", "mcp-name": "modern://info"} in seen
    assert {"mcp-method": "tools/call", "mcp-name": "regional", "mcp-param-region": "eu"} in seen


async def test_the_pipe_s_direct_path_stamps_the_2026_envelope_as_the_sdk_does() -> None:
    """Over a pipe the relay's requests bypass the SDK's dispatcher; they must carry the same
    `_meta` envelope as the SDK's own requests (over HTTP, through its dispatcher)."""
    seen: dict[str, list[Any]] = {}
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(modern_http())
        fleet = Fleet(config({"pipe": modern(), "http": {"url": url}}))
        await stack.enter_async_context(fleet.running())
        await _started(fleet)
        pipe = fleet.backends["pipe"]._shared
        assert pipe is not None and pipe._direct is not None  # the direct path is the one in use
        for name, backend in fleet.backends.items():

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                pass

            plain = await backend.request("tools/call", {"name": "envelope", "arguments": {}})
            tracked = await backend.request(
                "tools/call", {"name": "envelope", "arguments": {}}, on_progress=on_progress
            )
            seen[name] = [plain["structuredContent"], tracked["structuredContent"]]
    plain, tracked = seen["http"]
    assert plain["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert plain["io.modelcontextprotocol/clientInfo"]["name"] == "mcp-gateway"
    assert "io.modelcontextprotocol/clientCapabilities" in plain
    assert plain["io.modelcontextprotocol/logLevel"] == "debug"
    assert tracked == {**plain, "progressToken": True}
    assert seen["pipe"] == seen["http"]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_list_changes_of_a_2026_backend_arrive_on_its_listen_stream(transport: str) -> None:
    async with AsyncExitStack() as stack:
        spec = modern() if transport == "stdio" else {"url": await stack.enter_async_context(modern_http())}
        fleet = Fleet(config({"mo": spec}))
        await stack.enter_async_context(fleet.running())
        await _started(fleet)
        backend = fleet.backends["mo"]
        assert "grown" not in {t["name"] for t in backend.listing.tools}
        await backend.request("tools/call", {"name": "grow", "arguments": {}})
        await wait_until(lambda: "grown" in {t["name"] for t in backend.listing.tools}, timeout=30)
        await wait_until(lambda: "mo__grown" in {t["name"] for t in fleet.catalogue.tools}, timeout=30)


async def test_a_2026_backend_is_asked_for_the_status_of_the_tasks_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`BackendSession.follow_tasks`: one listen stream naming the tasks followed, replaced when the
    set changes, the newest `MAX_FOLLOWED_TASKS` of them, a finished task dropped."""
    monkeypatch.setattr(session_module, "MAX_FOLLOWED_TASKS", 2)
    fleet = Fleet(config({"t": {"command": sys.executable, "args": [TASKS_SERVER]}}))
    async with fleet.running():
        await _started(fleet)
        backend = fleet.backends["t"]
        assert backend.protocol_version == "2026-07-28"
        session = backend._shared
        assert session is not None

        async def create() -> str:
            params = opted_in({"name": "confirm_delete", "arguments": {"filename": "x"}})
            task_id: str = (await backend.request("tools/call", params))["taskId"]
            return task_id

        async def streams() -> list[list[str]]:
            result = await backend.request("tools/call", {"name": "listening", "arguments": {}})
            found: list[list[str]] = result["structuredContent"]["streams"]
            return found

        async def settles_at(expected: list[list[str]]) -> None:
            # The replaced stream is ended after its successor's ack: the backend notices soon after.
            with anyio.fail_after(30):
                while (now := await streams()) != expected:  # noqa: ASYNC110 - the backend's state, polled
                    await anyio.sleep(0.05)
            assert now == expected

        a, b, c = [await create() for _ in range(3)]
        await session.follow_tasks([a], timeout=30)
        assert await streams() == [[a]]  # acknowledged, so open at the backend when it returns
        await session.follow_tasks([a, b], timeout=30)
        await settles_at([[a, b]])
        await session.follow_tasks([a, b, c], timeout=30)
        await settles_at([[b, c]])  # past the cap, the newest
        answer = {"confirm": {"action": "accept", "content": {"ok": True}}}
        await backend.request("tasks/update", opted_in({"taskId": b, "inputResponses": answer}))
        await settles_at([[c]])  # its last status seen, b is followed no more
        await session.follow_tasks([], timeout=30)
        await settles_at([])
