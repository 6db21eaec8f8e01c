"""Bad input on the MCP endpoint gets its JSON-RPC error at once (`gateway/_envelope.py`), on both
protocol revisions and both the exchange and its SDK reference (the SDK's transport alone), and a
cancelled request gets no answer at all.

Every request goes over real HTTP to a real gateway in front of our misbehave server, whose calls
would take the backend's full timeout if a body the backend cannot read were forwarded to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from gateway.front.envelope import decode
from tests._support import (
    LEGACY,
    MODERN,
    Running,
    config,
    envelope,
    messages,
    misbehave,
    rpc,
    serve,
    session,
    wait_until,
)

pytestmark = pytest.mark.anyio

ENVELOPE = envelope("bad-input")
BACKEND_TIMEOUT = 60.0
PROMPT = 15.0  # "at once", on a loaded 2-core machine: far below the backend's timeout
MARK = "@@ID@@"

# The id (or the whole body) as raw JSON text, and the JSON-RPC code it must get.
CASES: dict[str, tuple[str, int]] = {
    "id 1.5": ("1.5", -32600),
    "id null": ("null", -32600),
    "id 1e308": ("1e308", -32600),
    "id true": ("true", -32600),
    "id an object": ('{"n": 1}', -32600),
    "id NaN (not JSON)": ("NaN", -32700),
    "id Infinity (not JSON)": ("Infinity", -32700),
}


def call_body(version: str, rid: str = "1", text: str = '"hi"') -> bytes:
    """A `tools/call` of mb__echo with the id and the text argument given as raw JSON text."""
    params: dict[str, Any] = {"name": "mb__echo", "arguments": {"text": MARK + "text"}}
    if version == MODERN:
        params["_meta"] = ENVELOPE
    raw = json.dumps({"jsonrpc": "2.0", "id": MARK + "id", "method": "tools/call", "params": params})
    return raw.replace(f'"{MARK}id"', rid).replace(f'"{MARK}text"', text).encode()


BODIES: dict[str, tuple[Any, int]] = {
    **{name: ((lambda v, rid=rid: call_body(v, rid)), code) for name, (rid, code) in CASES.items()},
    "a lone surrogate in arguments": (lambda v: call_body(v, text='"\\ud800 alone"'), -32700),
    "a lone low surrogate": (lambda v: call_body(v, text='"x\\udfff"'), -32700),
    "a number out of range in arguments": (lambda v: call_body(v, text="1e400"), -32700),
    "not UTF-8": (lambda v: call_body(v, text='"\xff"').replace(b"\xc3\xbf", b"\xff"), -32700),
    "not JSON": (lambda v: b"{nope", -32700),
    "a batch": (lambda v: b"[" + call_body(v) + b"]", -32600),
    "an empty batch": (lambda v: b"[]", -32600),
    "a scalar": (lambda v: b"42", -32600),
    "params not an object": (
        lambda v: b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":[1]}',
        -32600,
    ),
    "no method": (lambda v: b'{"jsonrpc":"2.0","id":3}', -32600),
    "a method that is a list": (lambda v: b'{"jsonrpc":"2.0","id":3,"method":["tools/call"]}', -32600),
}


@asynccontextmanager
async def front(
    sdk_reference: bool, version: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Running, dict[str, str]]]:
    """A gateway (on the given path) and the headers of a request of `version` to it."""
    cfg = config({"mb": misbehave(timeout=BACKEND_TIMEOUT)})
    async with (
        serve(cfg, sdk_reference=sdk_reference) as gw,
        httpx.AsyncClient(timeout=BACKEND_TIMEOUT * 2) as http,
    ):
        if version == MODERN:
            headers = {
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": MODERN,
                "mcp-method": "tools/call",
                "mcp-name": "mb__echo",
            }
            yield http, gw, headers
        else:
            async with session(http, gw.url) as headers:
                await http.post(gw.url, headers=headers, json=rpc("tools/list"))  # the exchange learns it
                yield http, gw, headers


@pytest.mark.parametrize("version", [LEGACY, MODERN])
@pytest.mark.parametrize("sdk_reference", [False, True], ids=["exchange", "sdk-reference"])
async def test_bad_input_gets_its_json_rpc_error_at_once(sdk_reference: bool, version: str) -> None:
    async with front(sdk_reference, version) as (http, gw, headers):
        url = gw.url
        for name, (build, code) in BODIES.items():
            began = time.monotonic()
            resp = await http.post(url, headers=headers, content=build(version))
            took = time.monotonic() - began
            assert resp.status_code == 400, (name, resp.status_code, resp.text)
            error = resp.json()
            assert error["jsonrpc"] == "2.0" and error["id"] is None, name
            assert error["error"]["code"] == code, (name, error)
            message = error["error"]["message"]
            assert "\n" not in message and len(message) < 250, (name, message)  # one line, no dump
            assert took < PROMPT, (name, took)
        # Nothing was lost on the way: a good call is still served, correctly.
        good = messages(await http.post(url, headers=headers, content=call_body(version)))
        assert good[-1]["result"]["structuredContent"] == {"text": "misbehave: hi"}


@pytest.mark.parametrize("sdk_reference", [False, True], ids=["exchange", "sdk-reference"])
async def test_a_cancelled_request_gets_no_answer(sdk_reference: bool) -> None:
    async with front(sdk_reference, LEGACY) as (http, gw, headers):
        url, backend = gw.url, gw.fleet.backends["mb"]
        answers: list[httpx.Response] = []

        async def call() -> None:
            hang = rpc("tools/call", {"name": "mb__hang"}, rid=9)
            answers.append(await http.post(url, headers=headers, json=hang))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await wait_until(backend.callers, timeout=PROMPT)
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}
            assert (await http.post(url, headers=headers, json=cancel)).status_code == 202
        assert answers[0].status_code == 200
        assert messages(answers[0]) == []  # no result, and no error either
        assert not backend.callers()  # the backend was told
        echo = messages(await http.post(url, headers=headers, json=rpc("tools/call", CALL_ECHO, rid=10)))
        assert echo[-1]["result"]["structuredContent"] == {"text": "misbehave: hi"}


CALL_ECHO = {"name": "mb__echo", "arguments": {"text": "hi"}}


def test_decode_refuses_what_a_backend_cannot_be_sent() -> None:
    for text in (b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}', b'{"a": "\\udc00"}', b"\xff{}"):
        with pytest.raises(ValueError):
            decode(text)
    assert decode(b'{"a": "\\ud83d\\ude00", "b": 1.5, "c": "\\\\ud800"}') == {
        "a": "\N{GRINNING FACE}",
        "b": 1.5,
        "c": "\\ud800",
    }
