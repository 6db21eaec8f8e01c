"""A 2026-07-28 backend's own input rounds (`input_required` results), relayed (`Relay._forward`).

The backend is our 2026-07-28-only server (tests/servers/modern.py) over stdio; its `ask` tool
returns `input_required` (an elicitation, its own key and `requestState`) and then answers with
what it was told. Clients are the `mcp` SDK's in both revisions, and raw HTTP where the wire itself
is the point.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client import ClientRequestContext
from mcp.shared.exceptions import MCPError

from tests._support import (
    MODERN,
    START_TIMEOUT,
    config,
    envelope,
    messages,
    modern,
    modern_http,
    rpc,
    serve,
    text_of,
)

pytestmark = pytest.mark.anyio

KEY = "k" * 40  # a state key both gateways of a test hold (>= 32 bytes)
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": MODERN,
    "mcp-method": "tools/call",
    "mcp-name": "m__ask",
}


async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


def gateway_config(**extra: Any) -> Any:
    return config({"m": modern()}, state={"keys": [KEY]}, **extra)


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_a_backend_round_reaches_the_client_and_its_answer_the_backend(mode: str) -> None:
    """2025-11-25: the gateway asks the client on the call's stream and retries the backend with
    the answer; 2026-07-28: the client gets the round (the backend's own key) and retries."""
    asked: list[str] = []

    async def answer(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return await elicitation(context, params)

    async with (
        serve(gateway_config()) as gw,
        SdkClient(gw.url, mode=mode, elicitation_callback=answer) as client,
    ):
        with anyio.fail_after(START_TIMEOUT):
            result = await client.call_tool("m__ask", {})
    assert asked == ["Your name?"]  # the backend's question, as it put it
    assert "Ada" in text_of(result) and text_of(result).startswith("answered:"), text_of(result)


async def test_a_2026_client_sees_the_backend_s_keys_and_a_state_of_ours() -> None:
    async with serve(gateway_config()) as gw, httpx.AsyncClient(timeout=START_TIMEOUT) as http:
        body = rpc(
            "tools/call",
            {"name": "m__ask", "arguments": {}, "_meta": envelope(capabilities={"elicitation": {}})},
        )
        first = messages(await http.post(gw.url, headers=HEADERS, json=body))[0]["result"]
    assert first["resultType"] == "input_required"
    assert list(first["inputRequests"]) == ["who"]  # the backend's own key
    assert first["inputRequests"]["who"]["method"] == "elicitation/create"
    # Not the backend's state in clear: sealed, with the backend it belongs to.
    assert first["requestState"] != "round-1" and "round-1" not in first["requestState"]


async def test_any_gateway_holding_the_key_continues_the_round() -> None:
    """Nothing waits in the gateway for a 2026-07-28 backend's round: a second gateway (its own
    relay and bridge) with the same key continues it at the same backend (one HTTP server that
    both reach: the backend's own state is sealed with the backend's key)."""
    meta = envelope(capabilities={"elicitation": {}})
    async with modern_http() as url:
        cfg = config({"m": {"url": url}}, state={"keys": [KEY]})
        async with (
            serve(cfg) as one,
            serve(cfg) as two,
            httpx.AsyncClient(timeout=START_TIMEOUT) as http,
        ):
            body = rpc("tools/call", {"name": "m__ask", "arguments": {}, "_meta": meta})
            first = messages(await http.post(one.url, headers=HEADERS, json=body))[0]["result"]
            answers = {"who": {"action": "accept", "content": {"name": "Grace"}}}
            retry = {"name": "m__ask", "arguments": {}, "_meta": meta}
            retry |= {"inputResponses": answers, "requestState": first["requestState"]}
            done = messages(await http.post(two.url, headers=HEADERS, json=rpc("tools/call", retry, 2)))[0]
    assert "result" in done, done
    assert done["result"]["resultType"] == "complete", done
    assert "Grace" in done["result"]["content"][0]["text"]


async def test_a_tampered_or_foreign_state_is_refused() -> None:
    meta = envelope(capabilities={"elicitation": {}})
    async with serve(gateway_config()) as gw, httpx.AsyncClient(timeout=START_TIMEOUT) as http:
        body = rpc("tools/call", {"name": "m__ask", "arguments": {}, "_meta": meta})
        state = messages(await http.post(gw.url, headers=HEADERS, json=body))[0]["result"]["requestState"]
        tampered = state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]
        answers = {"who": {"action": "accept", "content": {"name": "Eve"}}}
        for bad in (tampered, "round-1"):  # one byte changed; the backend's own state, unsealed
            retry = {"name": "m__ask", "arguments": {}, "_meta": meta, "inputResponses": answers}
            retry["requestState"] = bad
            error = messages(await http.post(gw.url, headers=HEADERS, json=rpc("tools/call", retry, 3)))[0]
            assert error["error"]["code"] == types.INVALID_PARAMS, error
            assert error["error"]["message"] == "Invalid or expired requestState"
        # Another tool's state does not continue this one.
        echo = {**HEADERS, "mcp-name": "m__echo"}
        retry = {"name": "m__echo", "arguments": {"text": "x"}, "_meta": meta, "inputResponses": answers}
        retry["requestState"] = state
        error = messages(await http.post(gw.url, headers=echo, json=rpc("tools/call", retry, 4)))[0]
        assert error["error"]["code"] == types.INVALID_PARAMS, error


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_a_client_that_cannot_answer_gets_the_spec_s_error_at_once(mode: str) -> None:
    async with serve(gateway_config()) as gw, SdkClient(gw.url, mode=mode) as client:
        with anyio.fail_after(START_TIMEOUT), pytest.raises(MCPError) as raised:
            await client.call_tool("m__ask", {})
    assert raised.value.error.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY
    assert raised.value.error.data == {"requiredCapabilities": {"elicitation": {"form": {}}}}


async def test_a_2025_client_that_never_answers_ends_the_call_within_the_backend_s_timeout() -> None:
    """The client is asked on its stream; one that never answers does not hold the call for ever:
    it ends with REQUEST_TIMEOUT after the backend's `timeout`, as a mid-call question would."""
    timeout = 2.0

    async def never(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    cfg = config({"m": modern(timeout=timeout)}, state={"keys": [KEY]})
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy", elicitation_callback=never) as client:
        began = anyio.current_time()
        with anyio.fail_after(START_TIMEOUT), pytest.raises(MCPError) as raised:
            await client.call_tool("m__ask", {})
    assert raised.value.error.code == types.REQUEST_TIMEOUT
    assert "did not answer" in raised.value.error.message
    assert anyio.current_time() - began >= timeout
