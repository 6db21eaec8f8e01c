"""Fuzzing the MCP endpoint: thousands of generated request bodies over real HTTP, one gateway.

`hypothesis` generates, from a fixed seed, valid-ish JSON-RPC for both protocol revisions (a
2025-11-25 session's requests and 2026-07-28 single-exchange ones) with mutated ids, methods,
params, `_meta` and routing headers, plus JSON that is no JSON-RPC and raw garbage bytes. Each
is posted to a gateway in front of `tests/servers/tiny.py`, and every one must be answered: a
request whose id is usable gets a response for that id (a result or a JSON-RPC error), anything
else a JSON-RPC error or, for a notification, 202; never a 5xx, never a dropped request. The
gateway then still serves a normal call correctly.

The gateway runs in a thread of its own (an anyio blocking portal), since hypothesis drives a
synchronous test; the client is one keep-alive `httpx.Client`.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests._support import HERE, LEGACY, Running, config, initialize, messages, rpc, serve

MODERN = "2026-07-28"
EXAMPLES = 5200
REQUEST_TIMEOUT = 30.0  # a bound on every request; tiny answers in milliseconds
TOOL = "tiny__hello"
ENVELOPE_KEYS = (
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
)
METHODS = [
    "tools/call",
    "tools/list",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "ping",
    "initialize",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
]

# -- strategies ----------------------------------------------------------------------------------


def chance(percent: int) -> st.SearchStrategy[bool]:
    """True in about `percent`% of draws. Hypothesis favours the ends of a range (and the first of
    `one_of`'s branches), so the odds are taken from the middle of one."""
    return st.integers(0, 99).map(lambda drawn: 20 <= drawn < 20 + percent)


def rarely(
    common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], percent: int
) -> st.SearchStrategy[Any]:
    return chance(percent).flatmap(lambda odd: rare if odd else common)


lone_surrogates = st.sampled_from(["\ud800", "a\udbff", "\udc00z", "\udfff"])
texts = rarely(st.text(max_size=12), lone_surrogates, 3)
numbers = rarely(st.integers(), st.floats(allow_nan=True, allow_infinity=True), 30)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)
good_ids = st.one_of(st.integers(min_value=-(2**63), max_value=2**63), st.text(max_size=8))
bad_ids = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ids = rarely(good_ids, bad_ids, 15)
methods = rarely(st.sampled_from(METHODS), st.one_of(st.text(max_size=16), json_values), 15)


def one_in(n: int) -> st.SearchStrategy[bool]:
    return chance(max(1, 100 // n))


@st.composite
def meta(draw: st.DrawFn, version: str) -> Any:
    """A `_meta`: progress tokens, a log-level opt-in, the 2026-07-28 envelope (mutated), or junk."""
    if draw(one_in(10)):
        return draw(json_values)
    found: dict[str, Any] = {}
    if draw(one_in(3)):
        found["progressToken"] = draw(st.one_of(st.integers(), st.text(max_size=6), json_values))
    if version == MODERN and not draw(one_in(6)):
        found[ENVELOPE_KEYS[0]] = draw(st.sampled_from([MODERN, MODERN, LEGACY, "1999-01-01"]) | json_values)
        found[ENVELOPE_KEYS[1]] = draw(st.just({}) | json_values)
        found[ENVELOPE_KEYS[2]] = {"name": "fuzz", "version": "0"}
    return found


@st.composite
def params(draw: st.DrawFn, method: Any, version: str) -> Any:
    if draw(one_in(10)):
        return draw(json_values)  # whatever, even not an object
    found: dict[str, Any] = {}
    if method == "tools/call":
        found["name"] = draw(st.sampled_from([TOOL] * 6 + ["tiny__nope", ""]) | json_values)
        found["arguments"] = draw(st.dictionaries(texts, json_values, max_size=3) | json_values)
    elif method in ("prompts/get", "resources/read"):
        found["name" if method == "prompts/get" else "uri"] = draw(texts)
    elif method == "initialize":
        found = initialize()["params"]
    elif method == "notifications/cancelled":
        found["requestId"] = draw(ids)
    if not draw(one_in(10)):
        found["_meta"] = draw(meta(version))
    return found


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """(revision, header mutations, body bytes)."""
    version = draw(st.sampled_from([LEGACY, MODERN]))
    kind = draw(st.sampled_from(["message"] * 17 + ["bytes", "json", "batch"]))
    headers: dict[str, str] = {}
    if kind == "bytes":
        return version, headers, draw(st.binary(max_size=64))
    if kind == "json":
        return version, headers, json.dumps(draw(json_values)).encode()
    method = draw(methods)
    message: dict[str, Any] = {"jsonrpc": "1.0" if draw(one_in(10)) else "2.0"}
    if not draw(one_in(5)):
        message["id"] = draw(ids)
    message["method"] = method
    if not draw(one_in(6)):
        message["params"] = draw(params(method, version))
    body = json.dumps(message).encode()  # NaN, Infinity and lone surrogates come out as such
    if kind == "batch":
        body = b"[" + body + b"]"
    if version == MODERN:
        headers["mcp-method"] = "x" if draw(one_in(10)) or not _header_safe(method) else method
        named = message.get("params")
        if isinstance(named, dict) and _header_safe(named.get("name")) and not draw(one_in(4)):
            headers["mcp-name"] = named["name"]
    if draw(one_in(30)):
        headers["mcp-protocol-version"] = draw(st.sampled_from([LEGACY, MODERN, "2025-06-18", "1999-01-01"]))
    if draw(one_in(30)):
        headers["accept"] = draw(st.sampled_from(["application/json", "text/event-stream", "*/*"]))
    if draw(one_in(30)):
        headers["content-type"] = draw(st.sampled_from(["text/plain", "application/json; charset=utf-8"]))
    return version, headers, body


def _header_safe(value: Any) -> bool:
    """Whether `value` can be sent as a header value as it is (printable ASCII, no edge spaces)."""
    return isinstance(value, str) and re.fullmatch(r"[!-~]([ -~]*[!-~])?", value) is not None


# -- the oracle -----------------------------------------------------------------------------------


def usable_id(body: bytes) -> tuple[bool, Any]:
    """(whether the body is one JSON-RPC request a response is owed to, its id)."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return False, None
    if not isinstance(decoded, dict) or "id" not in decoded or "method" not in decoded:
        return False, None
    rid = decoded["id"]
    valid = isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))
    return valid, rid


def check(response: httpx.Response, headers: dict[str, str], body: bytes) -> None:
    status = response.status_code
    assert status < 500, (status, response.text[:300], body[:300])
    kind = response.headers.get("content-type", "")
    owed, rid = usable_id(body)
    if status == 202:
        # Only a notification (or a posted response) is acknowledged without an answer.
        decoded = json.loads(body)
        assert isinstance(decoded, dict) and ("id" not in decoded or "method" not in decoded), body[:300]
        return
    if not kind.startswith(("application/json", "text/event-stream")):
        # An HTTP-level refusal, for headers a client got wrong (Accept, Content-Type) only.
        assert "accept" in headers or "content-type" in headers, (status, response.text[:300], body[:300])
        assert 400 <= status < 500
        return
    answers = messages(response)
    assert answers, (status, body[:300])
    final = answers[-1]
    assert "result" in final or "error" in final, (final, body[:300])
    if "result" in final or final.get("id") is not None:
        # An answer to the request itself: only a request with a usable id gets one, for that id.
        assert owed and final.get("id") == rid, (final, body[:300])
    if "error" in final:
        code, message = final["error"].get("code"), final["error"].get("message")
        assert isinstance(code, int) and isinstance(message, str), final
        assert "pydantic" not in message, message  # a sentence, not a validation dump


def _outcome(response: httpx.Response) -> str:
    if response.status_code == 202:
        return "202"
    kind = response.headers.get("content-type", "")
    if not kind.startswith(("application/json", "text/event-stream")):
        return "http"
    final = messages(response)[-1]
    return "result" if "result" in final else "error"


# -- the test -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[Running, dict[str, str]]]:
    tiny = {"command": sys.executable, "args": [str(HERE / "servers" / "tiny.py"), "tiny"]}
    # The fuzz opens a session for every `initialize` it sends without one: room for all of them.
    cfg = config({"tiny": tiny}, listen={"max_sessions": 100_000})
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(serve(cfg)) as gw,
        httpx.Client(timeout=REQUEST_TIMEOUT) as http,
    ):
        base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        opened = http.post(gw.url, headers=base, json=initialize(rid=0))
        session = {**base, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert http.post(gw.url, headers=session, json=note).status_code == 202
        yield gw, session


@pytest.mark.timeout(600)
def test_every_fuzzed_request_is_answered(gateway: tuple[Running, dict[str, str]]) -> None:
    gw, session = gateway
    modern = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
    }
    began = time.monotonic()
    sent: list[str] = []
    outcomes: list[str] = []
    with httpx.Client(timeout=REQUEST_TIMEOUT) as http:

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the run stays bounded
            suppress_health_check=list(HealthCheck),
        )
        @given(requests())
        def fuzz(case: tuple[str, dict[str, str], bytes]) -> None:
            version, mutations, body = case
            headers = {**(session if version == LEGACY else modern), **mutations}
            sent.append(version)
            response = http.post(gw.url, headers=headers, content=body)
            check(response, mutations, body)
            outcomes.append(_outcome(response))

        fuzz()

        assert len(sent) >= 5000 and {LEGACY, MODERN} <= set(sent), len(sent)
        # The bodies reach every kind of answer, real results included, not only refusals.
        seen = {kind: outcomes.count(kind) for kind in set(outcomes)}
        assert all(seen.get(kind, 0) >= 50 for kind in ("result", "error", "202")), seen
        # Still serving, correctly, on both revisions.
        call = rpc("tools/call", {"name": TOOL, "arguments": {}}, rid=77)
        answer = messages(http.post(gw.url, headers=session, json=call))[-1]
        assert answer["id"] == 77 and answer["result"]["content"][0]["text"].startswith("tiny ")
        envelope = {
            ENVELOPE_KEYS[0]: MODERN,
            ENVELOPE_KEYS[1]: {},
            ENVELOPE_KEYS[2]: {"name": "t", "version": "0"},
        }
        modern_call = rpc("tools/call", {"name": TOOL, "arguments": {}, "_meta": envelope}, rid=78)
        headers = {**modern, "mcp-method": "tools/call", "mcp-name": TOOL}
        answer = messages(http.post(gw.url, headers=headers, json=modern_call))[-1]
        assert answer["id"] == 78 and answer["result"]["content"][0]["text"].startswith("tiny ")
    print(f"fuzz: {len(sent)} requests in {time.monotonic() - began:.1f}s: {seen}")
    assert time.monotonic() - began < 90, time.monotonic() - began
