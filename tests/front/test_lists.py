"""Large list results are shaped and encoded once per list (`gateway/front/lists.py`), and still
answered byte for byte as the SDK's transport answers them."""

from __future__ import annotations

import sys
from typing import Any

import httpx
import pytest

from gateway.front.lists import Encoded, ListShaper
from tests._support import HERE, LEGACY, MODERN, config, envelope, messages, rpc, serve, session
from tests.front.test_exchange import answer

pytestmark = pytest.mark.anyio
MANY_TOOLS = str(HERE / "servers" / "many_tools.py")
WAIT = 60.0
_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


async def test_a_large_list_is_answered_as_the_sdk_answers_it_every_time() -> None:
    many = {"many": {"command": sys.executable, "args": [MANY_TOOLS, "300"]}}
    modern = {**_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": "tools/list"}
    listing = rpc("tools/list", {"_meta": envelope()})
    async with (
        serve(config(many)) as ours,
        serve(config(many), sdk_reference=True) as sdk,
        httpx.AsyncClient(timeout=WAIT) as http,
        session(http, ours.url) as our_session,
        session(http, sdk.url) as sdk_session,
    ):
        theirs = [await http.post(sdk.url, headers=modern, json=listing)]
        theirs.append(await http.post(sdk.url, headers=sdk_session, json=rpc("tools/list", rid=2)))
        assert len(theirs[0].json()["result"]["tools"]) == 300
        for _ in range(3):  # the first one shapes the list, the others answer from what it kept
            mine = await http.post(ours.url, headers=modern, json=listing)
            assert answer(mine) == answer(theirs[0]) and mine.content == theirs[0].content
            # A session's answer: JSON here, an event stream there (the SDK's transport streams it).
            mine = await http.post(ours.url, headers=our_session, json=rpc("tools/list", rid=2))
            assert messages(mine) == messages(theirs[1])
        assert our_session["mcp-protocol-version"] == LEGACY


def test_what_is_kept_is_of_the_current_lists_only() -> None:
    generation = 0
    shaped: list[int] = []

    def shape(method: str, version: str, result: Any) -> dict[str, Any]:
        shaped.append(len(result["tools"]))
        return {**result, "tools": [dict(t) for t in result["tools"]]}

    shaper = ListShaper(shape, lambda items: repr(items).encode(), lambda: generation)
    first = [{"name": f"t{i}"} for i in range(100)]
    kept = shaper("tools/list", MODERN, {"tools": first})["tools"]
    assert isinstance(kept, Encoded) and kept == first
    again = shaper("tools/list", MODERN, {"tools": first, "ttlMs": 5})
    assert again["tools"] is kept and again["ttlMs"] == 5
    assert shaped == [100, 0]  # the second time, only the rest of the result was shaped
    # The catalogue changed: a new list is kept, and the old one is let go.
    generation += 1
    second = [{"name": f"u{i}"} for i in range(100)]
    shaper("tools/list", MODERN, {"tools": second})
    assert [items for items, _ in shaper._kept.values()] == [second]
