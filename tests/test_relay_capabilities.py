"""Capabilities are honoured: a backend's sampling / elicitation / roots request reaches only a client
that declared it can answer; otherwise the backend gets the spec's error at once.

The backend is our misbehave server (`ask` asks the client mid-call and reports what came back);
the clients are the `mcp` SDK's, in both revisions, over HTTP and over the stdio front.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import yaml
from mcp import Client as SdkClient
from mcp.client import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import MISSING_REQUIRED_CLIENT_CAPABILITY
from pydantic import FileUrl

from gateway.questions import missing_capability
from tests._infra import REPO_ROOT
from tests._support import LEGACY, config, misbehave, serve

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]
# The backend's own timeout for the call: a refusal must come long before it.
TIMEOUT = 60.0
PROMPT = "well within the call's timeout"


async def sampling(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="4"), model="test-model"
    )


async def roots(context: ClientRequestContext) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri=FileUrl("file:///srv/project"), name="project")])


# What each kind of client declares: nothing, only roots, sampling.
CLIENTS: dict[str, dict[str, Any]] = {
    "nothing": {},
    "roots only": {"list_roots_callback": roots},
    "sampling": {"sampling_callback": sampling},
}


def asking(**extra: Any) -> dict[str, Any]:
    return misbehave("--ask", timeout=TIMEOUT, protocol=LEGACY, **extra)


async def ask(client: SdkClient, *kinds: str) -> list[dict[str, Any]]:
    """What the backend saw when it asked the client for each of `kinds` during one call."""
    with anyio.fail_after(TIMEOUT / 2):
        result = await client.call_tool("mb__ask", {"kinds": list(kinds)})
    assert not result.is_error, result
    assert result.structured_content is not None
    answers: list[dict[str, Any]] = result.structured_content["answers"]
    for answer in answers:
        assert answer["seconds"] < TIMEOUT / 4, (PROMPT, answer)
    return answers


def assert_refused(answer: dict[str, Any], required: dict[str, Any]) -> None:
    assert "result" not in answer, answer
    assert answer["error"]["code"] == MISSING_REQUIRED_CLIENT_CAPABILITY, answer
    assert answer["error"]["data"] == {"requiredCapabilities": required}, answer


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text and "AssertionError" not in caplog.text


@pytest.mark.parametrize("client_kind", list(CLIENTS))
@pytest.mark.parametrize("mode", ERAS)
async def test_sampling_reaches_only_a_client_that_declared_it(
    mode: str, client_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        serve(config({"mb": asking()})) as gw,
        SdkClient(gw.url, mode=mode, **CLIENTS[client_kind]) as client,
    ):
        (answer,) = await ask(client, "sampling")
    if client_kind == "sampling":
        assert answer["result"]["content"] == {"type": "text", "text": "4"}, answer
    else:
        assert_refused(answer, {"sampling": {}})
    assert_no_traceback(caplog)


@pytest.mark.parametrize("mode", ERAS)
async def test_roots_are_asked_only_of_a_client_that_declared_them(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Per-client sessions forward roots: the roots-only client answers roots, and its backend's
    sampling request is refused in the same call (in a 2026-07-28 client's input round too)."""
    caplog.set_level(logging.INFO)
    async with (
        serve(config({"mb": asking(session="per-client")})) as gw,
        SdkClient(gw.url, mode=mode, list_roots_callback=roots) as client,
    ):
        listed, sampled = await ask(client, "roots", "sampling")
    assert listed["result"]["roots"] == [{"uri": "file:///srv/project", "name": "project"}], listed
    assert_refused(sampled, {"sampling": {}})
    assert_no_traceback(caplog)


@asynccontextmanager
async def stdio_gateway(tmp_path: Path, mode: str, **callbacks: Any) -> AsyncIterator[tuple[SdkClient, Path]]:
    """A client of `mcp-gateway serve --stdio` (its stderr, the gateway's log, in the second item)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"servers": {"mb": asking()}}))
    argv = [sys.executable, "-m", "gateway", "serve", "--stdio", "--no-reload", "--config", str(path)]
    params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(REPO_ROOT))
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog:
        async with SdkClient(stdio_client(params, errlog=errlog), mode=mode, **callbacks) as client:
            yield client, log


@pytest.mark.parametrize("mode", ERAS)
async def test_over_stdio_a_client_without_capabilities_is_never_asked(mode: str, tmp_path: Path) -> None:
    async with stdio_gateway(tmp_path, mode) as (client, log):
        (sampled,) = await ask(client, "sampling")
        (elicited,) = await ask(client, "elicitation")
    assert_refused(sampled, {"sampling": {}})
    assert_refused(elicited, {"elicitation": {"form": {}}})
    assert "Traceback" not in log.read_text(), log.read_text()


async def test_over_stdio_a_client_that_declared_sampling_is_asked(tmp_path: Path) -> None:
    async with stdio_gateway(tmp_path, "legacy", sampling_callback=sampling) as (client, _log):
        (answer,) = await ask(client, "sampling")
    assert answer["result"]["content"] == {"type": "text", "text": "4"}, answer


def declared(raw: dict[str, Any]) -> types.ClientCapabilities:
    return types.ClientCapabilities.model_validate(raw)


@pytest.mark.parametrize(
    ("capabilities", "method", "params", "required"),
    [
        ({"sampling": {}}, "sampling/createMessage", {"messages": []}, None),
        ({"sampling": {}}, "sampling/createMessage", {"tools": []}, {"sampling": {"tools": {}}}),
        ({"sampling": {"tools": {}}}, "sampling/createMessage", {"toolChoice": {}}, None),
        ({"elicitation": {}}, "elicitation/create", {"message": "?"}, None),  # bare: form mode
        ({"elicitation": {"url": {}}}, "elicitation/create", {"mode": "form"}, {"elicitation": {"form": {}}}),
        ({"elicitation": {"form": {}}}, "elicitation/create", {"mode": "url"}, {"elicitation": {"url": {}}}),
        ({"elicitation": {"url": {}}}, "elicitation/create", {"mode": "url"}, None),
        ({"sampling": {}}, "roots/list", {}, {"roots": {}}),
        ({}, "ping", {}, None),
    ],
)
def test_the_spec_rules_per_method_and_mode(
    capabilities: dict[str, Any], method: str, params: dict[str, Any], required: dict[str, Any] | None
) -> None:
    missing = missing_capability(declared(capabilities), method, params)
    assert (missing.data["requiredCapabilities"] if missing is not None else None) == required
    if missing is not None:
        assert missing.code == MISSING_REQUIRED_CLIENT_CAPABILITY
        json.dumps(missing.data)  # goes on the wire as it is
