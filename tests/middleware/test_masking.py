"""The masking middleware end to end: a real gateway, the misbehave backend, real MCP clients."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError
from uvicorn.logging import AccessFormatter

from gateway.backends._logbuffer import LogBuffer, LogLine
from gateway.config import parse_config
from gateway.errors import DENIED, BackendUnavailable, ConfigError
from gateway.masking import Masker, default_masker
from gateway.masking._walk import mask_message
from gateway.middleware import Call, Identity, instantiate
from gateway.middleware.audit import MASKED_ARGUMENTS
from gateway.middleware.masking import Masking, MaskingFilter, _with_message
from tests._support import config, misbehave, serve, text_of

pytestmark = pytest.mark.anyio

KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key id, and misbehave's fake one
MAIL = "jane.doe@example.com"
WAIT = 30.0


def masking(**options: Any) -> list[dict[str, Any]]:
    return [{"use": "masking", "options": options}]


async def test_tool_result_text_and_structured_content_are_masked() -> None:
    cfg = config({"mb": misbehave()}, middleware=masking(detectors={"email": "partial"}))
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        result = await client.call_tool("mb__echo", {"text": f"key {KEY} mail {MAIL}"})
    expected = "misbehave: key [REDACTED:aws_access_key] mail ****.com"
    assert text_of(result) == expected
    assert result.structured_content == {"text": expected}


async def test_block_fails_the_call_and_the_secret_is_in_no_error_and_no_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = config({"mb": misbehave()}, middleware=masking(detectors={"aws_access_key": "block"}))
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        with pytest.raises(MCPError) as err:
            await client.call_tool("mb__echo", {"text": f"here it is: {KEY}"})
        # Blocking one result blocks nothing else.
        assert text_of(await client.call_tool("mb__echo", {"text": "fine"})) == "misbehave: fine"
    assert err.value.code == DENIED
    assert "aws_access_key" in err.value.message
    assert KEY not in err.value.message and KEY not in repr(err.value.data)
    assert "masking blocked the result of tools/call on server 'mb'" in caplog.text
    assert KEY not in caplog.text  # not even from the SDK's debug logs of the request carrying it


async def test_log_notifications_are_masked_before_a_client_sees_them() -> None:
    got: list[types.LoggingMessageNotificationParams] = []
    second = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        got.append(params)
        if "second" in str(params.data):
            second.set()

    cfg = config({"mb": misbehave()}, middleware=masking(detectors={"github_token": "block"}))
    token = "ghp_0123456789abcdefghijABCDEFGHIJ012345"
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy", logging_callback=on_log) as client:
        await client.call_tool("mb__log", {"level": "warning", "message": f"login by {MAIL} with {KEY}"})
        await client.call_tool("mb__log", {"level": "warning", "message": f"uses {token}"})  # blocked
        await client.call_tool("mb__log", {"level": "info", "message": "second"})
        with anyio.fail_after(WAIT):
            await second.wait()
    # Notifications of one session arrive in order: the blocked one was dropped, not delayed.
    assert [p.data for p in got] == ["login by [REDACTED:email] with [REDACTED:aws_access_key]", "second"]


async def wait_for_line(buffer: LogBuffer, needle: str) -> None:
    arrived = anyio.Event()

    def listen(line: LogLine) -> None:
        if needle in line.text:
            arrived.set()

    buffer.listeners.append(listen)
    try:
        if not any(needle in line.text for line in buffer.lines):
            with anyio.fail_after(WAIT):
                await arrived.wait()
    finally:
        buffer.listeners.remove(listen)


async def test_backend_stderr_is_masked_in_the_log_buffer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.backend.stderr")
    cfg = config({"mb": misbehave("--stderr-chatter", "5")}, middleware=masking())
    async with serve(cfg) as gw:
        buffer = gw.fleet.backends["mb"].log
        await wait_for_line(buffer, "chatter 4")
        lines = [line.text for line in buffer.lines]
    assert any(line.endswith("AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key]") for line in lines)
    assert not any(KEY in line for line in lines)
    assert "chatter 2" in caplog.text and KEY not in caplog.text


async def test_resources_prompts_and_backend_errors_are_masked() -> None:
    cfg = config({"mb": misbehave()}, middleware=masking())
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        read = await client.read_resource(f"mb+misbehave://item/{MAIL}")
        prompt = await client.get_prompt("mb__greet", {"name": MAIL})
        with pytest.raises(MCPError) as err:
            await client.read_resource(f"mb+misbehave://nothing/{MAIL}")
    item = read.contents[0]
    assert isinstance(item, types.TextResourceContents)
    assert item.text == "item [REDACTED:email] from misbehave"
    message = prompt.messages[0].content
    assert isinstance(message, types.TextContent) and message.text == "Hello, [REDACTED:email]! (misbehave)"
    # The backend's own error: its code kept, its message and data masked.
    assert err.value.code == types.INVALID_PARAMS
    assert err.value.message == "Resource not found: misbehave://nothing/[REDACTED:email]"
    assert MAIL not in repr(err.value.data)


async def test_arguments_are_masked_before_the_backend_and_servers_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = config(
        {"mb": misbehave(), "git": misbehave("--name", "git")},
        middleware=masking(arguments=True, servers={"git": {"detectors": {"email": "allow"}}}),
    )
    async with serve(cfg) as gw, SdkClient(gw.url, mode="legacy") as client:
        backend = gw.fleet.backends["mb"]
        sent: list[dict[str, Any]] = []
        forward = backend.request

        async def spy(method: str, params: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            sent.append(params)
            return await forward(method, params, *args, **kwargs)

        monkeypatch.setattr(backend, "request", spy)
        masked = await client.call_tool("mb__echo", {"text": f"{MAIL} {KEY}"})
        allowed = await client.call_tool("git__echo", {"text": f"{MAIL} {KEY}"})
    assert sent[0]["arguments"] == {"text": "[REDACTED:email] [REDACTED:aws_access_key]"}
    assert text_of(masked) == "misbehave: [REDACTED:email] [REDACTED:aws_access_key]"
    assert text_of(allowed) == f"git: {MAIL} [REDACTED:aws_access_key]"


async def test_gateway_log_records_are_masked_while_it_runs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = logging.getLogger("gateway.test_masking")
    async with serve(config({"mb": misbehave()}, middleware=masking())):
        log.info("configured with key %s", KEY)
        try:
            raise RuntimeError(f"could not use {MAIL}")
        except RuntimeError:
            log.exception("failed")
        during = caplog.text
    assert "configured with key [REDACTED:aws_access_key]" in during
    assert "RuntimeError: could not use [REDACTED:email]" in during
    assert KEY not in during and MAIL not in during
    caplog.clear()
    log.info("configured with key %s", KEY)  # the filter left with the gateway
    assert KEY in caplog.text


def test_bad_options_are_config_errors() -> None:
    cfg = parse_config(
        "middleware:\n  - use: masking\n    options:\n      detectors: {emial: redact, ssn: scramble}\n"
        "      servers: {git: {disable: [nope]}}\n      colour: blue\n"
    )
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.middleware)
    text = "\n".join(err.value.problems)
    assert "options.detectors" in text and "emial" in text
    assert "options.detectors.ssn: must be 'redact'" in text
    assert "options.servers.git.disable" in text and "nope" in text
    assert "options.colour" in text


def test_groups_disable_and_overrides_resolve() -> None:
    m = Masking(
        detectors={"pii": "hash", "email": "partial"}, disable=["ipv4"], servers={"x": {"disable": ["pii"]}}
    )
    assert m.default.actions["phone"] == "hash" and m.default.actions["email"] == "partial"
    assert m.default.actions["ipv4"] == "allow" and m.default.actions["jwt"] == "redact"
    assert m.masker("x").actions["email"] == "allow" and m.masker("x").actions["jwt"] == "redact"
    assert m.masker("elsewhere") is m.default


def test_masking_copies_only_what_changed() -> None:
    shared_image = {"type": "image", "data": f"{KEY}==", "mimeType": "image/png"}
    untouched = {"type": "text", "text": "nothing to see"}
    result: dict[str, Any] = {
        "content": [untouched, {"type": "text", "text": f"key {KEY}"}, shared_image],
        "structuredContent": {"deep": [{"k": MAIL}], "same": {"n": 1}},
        "_meta": {"note": KEY},
    }
    before = repr(result)
    masked = mask_message(default_masker(), "tools/call", result)
    assert repr(result) == before  # the input is never modified
    assert masked["content"][0] is untouched and masked["content"][2] is shared_image  # blobs unscanned
    assert masked["content"][1]["text"] == "key [REDACTED:aws_access_key]"
    assert masked["structuredContent"]["deep"] == [{"k": "[REDACTED:email]"}]
    assert masked["structuredContent"]["same"] is result["structuredContent"]["same"]
    assert masked["_meta"] is result["_meta"]
    clean = {"content": [untouched]}
    assert mask_message(default_masker(), "tools/call", clean) is clean


def test_log_filter_and_error_copies() -> None:
    log_filter = MaskingFilter(default_masker())
    record = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, "id %s at %s", (KEY, MAIL), None)
    assert log_filter.filter(record)
    assert record.getMessage() == "id [REDACTED:aws_access_key] at [REDACTED:email]"
    # uvicorn's access log formatter unpacks `args` itself: they stay a tuple of the same shape.
    access = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("203.0.113.7:50123", "POST", f"/mcp?mail={MAIL}", "1.1", 200), None,
    )  # fmt: skip
    assert log_filter.filter(access)
    line = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s", use_colors=False).format(
        access
    )
    assert line == "[REDACTED:ipv4]:50123 POST /mcp?mail=[REDACTED:email] HTTP/1.1 200 OK"
    card = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, "card %d", (4111111111111111,), None)
    assert log_filter.filter(card) and card.getMessage() == "card [REDACTED:credit_card]"
    original = BackendUnavailable("mb", f"down: {KEY}")
    copy = _with_message(original, "down: [REDACTED:aws_access_key]", {"server": "mb"})
    assert type(copy) is BackendUnavailable and copy.server == "mb" and copy.code == original.code
    assert KEY not in str(copy) and KEY in original.message  # the original is left alone


# -- options ---------------------------------------------------------------------------------------


def test_the_salt_may_be_a_secret_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASK_SALT", "pepper-from-the-environment")
    by_reference = Masking(detectors={"email": "hash"}, salt="${env:MASK_SALT}")
    literal = Masking(detectors={"email": "hash"}, salt="pepper-from-the-environment")
    unresolved = Masker({**by_reference.default.actions, "email": "hash"}, salt="${env:MASK_SALT}")
    hashed = by_reference.default.mask(f"mail {MAIL}")
    assert "[HASH:email:" in hashed and MAIL not in hashed
    assert hashed == literal.default.mask(f"mail {MAIL}")
    assert hashed != unresolved.mask(f"mail {MAIL}")
    assert "pepper" not in repr(by_reference.options)


def test_an_unset_salt_reference_is_a_config_error_naming_it() -> None:
    cfg = parse_config("middleware:\n  - use: masking\n    options: {salt: '${env:MASK_TEST_UNSET}'}\n")
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.middleware)
    (problem,) = err.value.problems
    assert "middleware[0] (masking).options.salt" in problem and "MASK_TEST_UNSET is not set" in problem


async def test_arguments_are_masked_for_audit_only_when_audit_asks() -> None:
    mask = Masking(detectors={"aws_access_key": "block"})
    call = Call("tools/call", {"name": "mb__echo", "arguments": {"text": f"key {KEY}", "to": MAIL}},
                Identity("alice"), name="mb__echo", server="mb")  # fmt: skip

    async def terminal(c: Call) -> dict[str, Any]:
        return {"content": []}

    await mask(call, terminal)
    assert call.params["arguments"]["text"] == f"key {KEY}"  # the backend gets them as sent
    later = call.state[MASKED_ARGUMENTS]
    assert callable(later)
    assert later() == "[withheld by the masking policy]"  # a blocked value withholds them all
    await mask(plain := Call("tools/call", {"arguments": {"to": MAIL}}, Identity("alice")), terminal)
    masked = plain.state[MASKED_ARGUMENTS]()
    assert isinstance(masked, dict) and list(masked) == ["to"] and MAIL not in masked["to"]
