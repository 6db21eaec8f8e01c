"""Resource updates from `session: per-client` servers: each client's own backend session's
updates reach that client only, and (gateway.front.listen) a 2026-07-28 client's listen stream
with `resourceSubscriptions` subscribes on that client's own session, for as long as it lasts.

Real parts: misbehave (`--touch`) over stdio, one process per client session, pinned to either
revision; the gateway under uvicorn with API keys for two identities; the `mcp` SDK client at
2026-07-28 (and, for `resources/subscribe`, at 2025-11-25), over HTTP.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client.session import MessageHandlerFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated

from tests._support import config, misbehave, serve, text_of

pytestmark = pytest.mark.anyio

WAIT = 60.0
ALICE_KEY = "ak_test_alice_5f0c2e7a4d4f0e8f1a6b3c5d7e9f1133"
BOB_KEY = "ak_test_bob_0f3e5d7c9b1a2c4e6f8a0b2d4f6e8a1357"
HELLO = "misbehave://static/hello"
ITEM = "misbehave://item/1"


def _key(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "key": "sha256:" + hashlib.sha256(key.encode()).hexdigest(), "roles": ["user"]}


def _gateway_config(protocol: str) -> Any:
    server = misbehave("--touch", session="per-client", protocol=protocol, prefix="")
    auth = {"api_keys": [_key("alice", ALICE_KEY), _key("bob", BOB_KEY)]}
    return config({"p": server}, middleware=[{"use": "auth", "options": auth}])


@asynccontextmanager
async def _client(url: str, key: str) -> AsyncIterator[SdkClient]:
    async with (
        httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=WAIT) as http,
        SdkClient(streamable_http_client(url, http_client=http), mode="2026-07-28") as client,
    ):
        yield client


async def _touch(client: SdkClient, uri: str) -> dict[str, Any]:
    with anyio.fail_after(WAIT):
        state: dict[str, Any] = json.loads(text_of(await client.call_tool("touch", {"uri": uri})))
    return state


async def _until_unsubscribed(*clients: SdkClient) -> None:
    """Until nobody is subscribed to HELLO at these clients' sessions (undone after their streams
    ended, which the gateway learns a moment later)."""

    async def subscribed() -> bool:
        return any([(await _touch(client, HELLO))["subscribed"] for client in clients])

    with anyio.fail_after(WAIT):
        while await subscribed():  # noqa: ASYNC110 - the backends' state, polled: no event exists
            await anyio.sleep(0.05)


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
async def test_a_listen_stream_hears_its_own_per_client_session_only(protocol: str) -> None:
    async with (
        serve(_gateway_config(protocol)) as gw,
        _client(gw.url, ALICE_KEY) as alice,
        _client(gw.url, BOB_KEY) as bob,
    ):
        async with (
            alice.listen(resource_subscriptions=[HELLO, ITEM]) as alice_events,
            bob.listen(resource_subscriptions=[HELLO]) as bob_events,
        ):
            # Subscribed on each client's own session (its own process), started for the stream.
            touched_by_alice = await _touch(alice, HELLO)
            assert touched_by_alice["subscribed"] is True
            with anyio.fail_after(WAIT):
                assert await alice_events.__anext__() == ResourceUpdated(uri=HELLO)
            touched_by_bob = await _touch(bob, HELLO)
            assert touched_by_bob["subscribed"] is True
            assert touched_by_bob["pid"] != touched_by_alice["pid"]
            with anyio.fail_after(WAIT):
                assert await bob_events.__anext__() == ResourceUpdated(uri=HELLO)
            # Bob's update reached the gateway's streams before this one: had it reached Alice's
            # stream too, it would come first.
            await _touch(alice, ITEM)
            with anyio.fail_after(WAIT):
                assert await alice_events.__anext__() == ResourceUpdated(uri=ITEM)
        # The streams are over: the subscriptions they made on the sessions are undone.
        await _until_unsubscribed(alice, bob)
        assert touched_by_alice["pid"] == (await _touch(alice, ITEM))["pid"]  # the same session still


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
async def test_a_client_s_two_streams_share_its_subscription_until_both_end(protocol: str) -> None:
    async with serve(_gateway_config(protocol)) as gw, _client(gw.url, ALICE_KEY) as alice:
        async with alice.listen(resource_subscriptions=[HELLO]) as kept:
            async with alice.listen(resource_subscriptions=[HELLO]) as ended:
                assert (await _touch(alice, HELLO))["subscribed"] is True
                with anyio.fail_after(WAIT):
                    assert await ended.__anext__() == ResourceUpdated(uri=HELLO)
                    assert await kept.__anext__() == ResourceUpdated(uri=HELLO)
            # One stream ended; the other still holds the subscription, and still hears.
            assert (await _touch(alice, HELLO))["subscribed"] is True
            with anyio.fail_after(WAIT):
                assert await kept.__anext__() == ResourceUpdated(uri=HELLO)
        await _until_unsubscribed(alice)


# The handshake era's own way, deprecated by the SDK that still speaks it.
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_a_2025_client_hears_its_own_per_client_session_only() -> None:
    """The same for `resources/subscribe` on the handshake era: each connection has its own
    backend session, and hears that session's updates, not another connection's."""
    heard: dict[str, list[str]] = {"alice": [], "bob": []}
    arrived = {"alice": anyio.Event(), "bob": anyio.Event()}

    def recorder(name: str) -> MessageHandlerFnT:
        async def on_message(message: object) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                heard[name].append(message.params.uri)
                arrived[name].set()

        return on_message

    cfg = config({"p": misbehave("--touch", session="per-client", prefix="")})
    async with (
        serve(cfg) as gw,
        SdkClient(gw.url, mode="legacy", message_handler=recorder("alice")) as alice,
        SdkClient(gw.url, mode="legacy", message_handler=recorder("bob")) as bob,
    ):
        await alice.subscribe_resource(HELLO)
        await bob.subscribe_resource(HELLO)
        await _touch(bob, HELLO)
        with anyio.fail_after(WAIT):
            await arrived["bob"].wait()
        await _touch(alice, HELLO)
        with anyio.fail_after(WAIT):
            await arrived["alice"].wait()
        # Bob's update was handed out before Alice's touch: had it reached Alice, it would be here.
        assert heard == {"alice": [HELLO], "bob": [HELLO]}
