"""Resource updates from `session: per-client` servers: each client's own backend session's
updates reach that client only, and (gateway.front.listen) a 2026-07-28 client's listen stream
subscribes on its own session.

Real parts: misbehave (`--touch`) over stdio, one process per client session; the gateway under
uvicorn; the `mcp` SDK client over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client.session import MessageHandlerFnT

from tests._support import config, misbehave, serve, text_of

pytestmark = pytest.mark.anyio

WAIT = 60.0
HELLO = "misbehave://static/hello"


async def _touch(client: SdkClient, uri: str) -> dict[str, Any]:
    with anyio.fail_after(WAIT):
        state: dict[str, Any] = json.loads(text_of(await client.call_tool("touch", {"uri": uri})))
    return state


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
