"""The example plugins, loaded by "module:attr" like any plugin, against real backends and clients."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway.config import parse_config
from gateway.errors import DENIED, ConfigError, Denied
from gateway.logs import request_scope
from gateway.middleware import Call, Identity, Result, instantiate
from plugins.deny_pattern import DenyPattern
from plugins.stamp_meta import StampMeta
from tests._support import config, misbehave, request_meta, serve, text_of

pytestmark = pytest.mark.anyio

FAKE_KEY = "AKIAIOSFODNN7EXAMPLE"
DENY = "plugins.deny_pattern:DenyPattern"
STAMP = "plugins.stamp_meta:StampMeta"

# A backend that answers `meta` with the `_meta` it received, so a test can see what arrived.
META_SERVER = r"""
import json, sys
def send(message):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    message = json.loads(line)
    method, rid = message.get("method"), message.get("id")
    if rid is None:
        continue
    if method == "initialize":
        info = {"name": "m", "version": "1"}
        send({"id": rid, "result": {"protocolVersion": "2025-11-25", "serverInfo": info,
                                    "capabilities": {"tools": {}}}})
    elif method == "tools/list":
        send({"id": rid, "result": {"tools": [{"name": "meta", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":
        got = message["params"].get("_meta") or {}
        send({"id": rid, "result": {"content": [{"type": "text", "text": json.dumps(got)}],
                                    "structuredContent": {"meta": got}}})
    else:
        send({"id": rid, "result": {}})
"""


def call(arguments: Any, name: str = "mb__echo", **extra: Any) -> Call:
    return Call("tools/call", {"name": name, "arguments": arguments}, name=name, server="mb", **extra)


async def passed(c: Call) -> Result:
    return {"content": [{"type": "text", "text": "passed"}]}


# -- deny_pattern --------------------------------------------------------------------------------


async def test_deny_pattern_through_the_real_gateway() -> None:
    cfg = config(
        {"mb": misbehave()},
        middleware=[
            {"use": DENY, "options": {"patterns": ["AKIA[0-9A-Z]{16}"], "tools": ["mb__echo", "mb__l*"]}}
        ],
    )
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        with pytest.raises(MCPError) as err:
            await client.call_tool("mb__echo", {"text": f"my key is {FAKE_KEY}"})
        assert err.value.code == DENIED and FAKE_KEY not in err.value.message
        with pytest.raises(MCPError):  # nested anywhere in the arguments
            await client.call_tool("mb__echo", {"text": "fine", "extra": {"deep": [1, {"k": FAKE_KEY}]}})
        ok = await client.call_tool("mb__echo", {"text": "nothing to see"})
        assert text_of(ok) == "misbehave: nothing to see"
        # Tools outside the `tools` globs are not checked.
        env = await client.call_tool("mb__env", {"name": FAKE_KEY})
        assert env.structured_content == {"name": FAKE_KEY, "value": None}


async def test_deny_pattern_options_case_and_message() -> None:
    deny = DenyPattern(patterns=[r"drop\s+table"], ignore_case=True, message="no DDL here")
    with pytest.raises(Denied) as err:
        await deny(call({"sql": ["select 1", "DROP   TABLE users"]}), passed)
    assert err.value.message == "no DDL here" and err.value.data == {"tool": "mb__echo"}
    assert (await deny(call({"sql": "select 'drop' || 'table'"}), passed))["content"]
    assert (await deny(call({"drop table": 1}), passed))["content"]  # keys are names, not content
    strict = DenyPattern(patterns=[r"drop\s+table"])
    assert (await strict(call({"sql": "DROP TABLE x"}), passed))["content"]
    # Lists and other methods pass untouched.
    assert await deny(Call("prompts/get", {"arguments": {"a": "drop table"}}), passed)


async def test_deny_pattern_survives_absurd_nesting() -> None:
    deny = DenyPattern(patterns=["needle"])
    nested: Any = "needle"
    for _ in range(50_000):
        nested = {"a": [nested]}
    with pytest.raises(Denied):
        await deny(call(nested), passed)


def test_deny_pattern_bad_options_name_the_key() -> None:
    cfg = parse_config(
        f"middleware:\n  - use: {DENY}\n    options: {{patterns: ['(unclosed']}}\n"
        f"  - use: {DENY}\n    options: {{patterns: []}}\n"
        f"  - use: {DENY}\n    options: {{pattern: x}}\n"
    )
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.middleware)
    problems = err.value.problems
    assert any(
        "middleware[0]" in p and "options.patterns" in p and "regular expression" in p for p in problems
    )
    assert any("middleware[1]" in p and "options.patterns" in p for p in problems)
    assert any("middleware[2]" in p and "pattern" in p for p in problems)


# -- stamp_meta ----------------------------------------------------------------------------------


async def test_stamp_meta_through_the_real_gateway(tmp_path: Path) -> None:
    script = tmp_path / "meta_server.py"
    script.write_text(META_SERVER)
    server = {"command": sys.executable, "args": [str(script)]}
    options = {
        "request": {"example.com/tenant": "acme", "example.com/route": "{server}/{name}"},
        "result": {"example.com/via": "mcp-gateway"},
        "servers": ["a"],
    }
    cfg = config({"a": server, "b": server}, middleware=[{"use": STAMP, "options": options}])
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        # A client's own key of the same name does not survive: it cannot pose as another tenant.
        a = await client.call_tool(
            "a__meta", {}, meta=request_meta({"example.com/tenant": "evil", "mine": 1})
        )
        assert a.structured_content == {
            "meta": {"example.com/tenant": "acme", "example.com/route": "a/a__meta", "mine": 1}
        }
        assert a.meta == {"example.com/via": "mcp-gateway"}
        b = await client.call_tool("b__meta", {})
        assert b.structured_content == {"meta": {}} and not b.meta  # `servers` leaves b alone


async def test_stamp_meta_placeholders_keep_client_keys_when_asked() -> None:
    stamp = StampMeta(
        request={"x/caller": "{identity}@{identity_source}", "x/rid": "{request_id}", "x/keep": "mine"},
        result={"x/n": 2},
        overwrite=False,
    )
    seen: dict[str, Any] = {}

    async def backend(c: Call) -> Result:
        seen.update(c.params["_meta"])
        return {"content": [], "_meta": {"backend": True}}

    client_meta = {"x/keep": "client", "progressToken": 5}
    c = call({}, identity=Identity("alice {server}", source="jwt"))
    c.params["_meta"] = client_meta
    with request_scope("rid-9"):
        result = await stamp(c, backend)
    assert seen == {
        "x/caller": "alice {server}@jwt",
        "x/rid": "rid-9",
        "x/keep": "client",
        "progressToken": 5,
    }
    assert client_meta == {"x/keep": "client", "progressToken": 5}  # the client's dict was not changed
    assert result["_meta"] == {"backend": True, "x/n": 2}
    # A list goes to no backend: only the result is stamped.
    listed = await stamp(Call("tools/list", {}), lambda c: _tools())
    assert listed == {"tools": [], "_meta": {"x/n": 2}}


async def _tools() -> Result:
    return {"tools": []}


def test_stamp_meta_refuses_protocol_keys_and_empty_config() -> None:
    cfg = parse_config(
        f"middleware:\n  - use: {STAMP}\n    options: {{request: {{progressToken: 1}}}}\n"
        f"  - use: {STAMP}\n    options: {{result: {{'io.modelcontextprotocol/x': 1}}}}\n"
        f"  - use: {STAMP}\n"
    )
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.middleware)
    first, second, third = err.value.problems
    assert "middleware[0]" in first and "options.request" in first and "reserved" in first
    assert "middleware[1]" in second and "options.result" in second
    assert "middleware[2]" in third and "request" in third
