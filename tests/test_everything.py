"""The relay against the reference server-everything (npm): every protocol feature it demonstrates
arrives through the gateway as it does directly, in both protocol revisions."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client import ClientRequestContext
from mcp.client.stdio import StdioServerParameters
from pydantic import FileUrl

from tests import _infra
from tests._support import config, serve, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.node]
ERAS = ["legacy", "2026-07-28"]


def everything(**extra: Any) -> dict[str, Any]:
    cmd = _infra.npm_server_command("server-everything")
    return {"command": cmd[0], "args": cmd[1:], **extra}


async def sampling(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    prompt = params.messages[0].content
    text = prompt.text if isinstance(prompt, types.TextContent) else "?"
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"echo of <{text}>"), model="test-model"
    )


async def elicitation(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada Lovelace"})


@pytest.mark.parametrize("mode", ERAS)
async def test_sampling_request_reaches_the_calling_client_and_the_answer_goes_back(mode: str) -> None:
    async with (
        serve(config({"ev": everything()})) as gw,
        SdkClient(gw.url, mode=mode, sampling_callback=sampling) as client,
    ):
        with anyio.fail_after(30):
            result = await client.call_tool("ev__trigger-sampling-request", {"prompt": "what is 2+2?"})
    text = text_of(result)
    assert "echo of <" in text and "what is 2+2?" in text and "test-model" in text


@pytest.mark.parametrize("mode", ERAS)
async def test_elicitation_request_is_relayed(mode: str) -> None:
    async with (
        serve(config({"ev": everything()})) as gw,
        SdkClient(gw.url, mode=mode, elicitation_callback=elicitation) as client,
    ):
        with anyio.fail_after(30):
            result = await client.call_tool("ev__trigger-elicitation-request", {})
    assert "Ada Lovelace" in str(result.content)


async def test_roots_are_asked_of_the_client_with_per_client_sessions() -> None:
    async def roots(context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=FileUrl("file:///srv/project"), name="project")])

    async with (
        serve(config({"ev": everything(session="per-client")})) as gw,
        SdkClient(gw.url, mode="legacy", list_roots_callback=roots) as client,
    ):
        with anyio.fail_after(30):
            result = await client.call_tool("ev__get-roots-list", {})
    assert "file:///srv/project" in text_of(result)


@pytest.mark.parametrize("mode", ERAS)
async def test_progress_of_a_long_running_operation(mode: str) -> None:
    seen: list[tuple[float, float | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with serve(config({"ev": everything()})) as gw, SdkClient(gw.url, mode=mode) as client:
        with anyio.fail_after(30):
            await client.call_tool(
                "ev__trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=progress
            )
    assert [p for p, _ in seen] == [1, 2, 3, 4]
    assert all(total == 4 for _, total in seen)


async def test_resource_links_are_namespaced_and_readable_through_the_gateway() -> None:
    async with serve(config({"ev": everything()})) as gw, SdkClient(gw.url, mode="legacy") as client:
        result = await client.call_tool("ev__get-resource-links", {"count": 2})
        links = [c for c in result.content if isinstance(c, types.ResourceLink)]
        assert links and all(str(link.uri).startswith("ev+demo://") for link in links)
        read = await client.read_resource(str(links[0].uri))
        assert str(read.contents[0].uri) == str(links[0].uri)


async def test_completions_are_routed_to_the_prompt_owner() -> None:
    async with serve(config({"ev": everything()})) as gw, SdkClient(gw.url, mode="legacy") as client:
        result = await client.complete(
            types.PromptReference(type="ref/prompt", name="ev__completable-prompt"),
            argument={"name": "department", "value": "E"},
        )
    assert "Engineering" in result.completion.values


async def test_resource_subscription_updates_arrive_with_the_public_uri() -> None:
    updated = anyio.Event()
    uris: list[str] = []

    async def on_message(message: object) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            uris.append(str(message.params.uri))
            updated.set()

    async with (
        serve(config({"ev": everything()})) as gw,
        SdkClient(gw.url, mode="legacy", message_handler=on_message) as client,
    ):
        resources = (await client.list_resources()).resources
        uri = str(resources[0].uri)
        await client.subscribe_resource(uri)
        await client.call_tool("ev__toggle-subscriber-updates", {})
        with anyio.fail_after(30):
            await updated.wait()
    assert uris[0] == uri


async def test_tool_definitions_and_results_are_identical_to_direct_except_names() -> None:
    cmd = _infra.npm_server_command("server-everything")
    direct_params = StdioServerParameters(command=cmd[0], args=cmd[1:])
    async with SdkClient(direct_params, mode="legacy") as direct:
        direct_tools = {t.name: t.model_dump(exclude_none=True) for t in (await direct.list_tools()).tools}
        direct_result = await direct.call_tool("get-structured-content", {"location": "New York"})
        direct_annotated = await direct.call_tool("get-annotated-message", {"messageType": "error"})
    async with serve(config({"ev": everything(prefix="")})) as gw, SdkClient(gw.url, mode="legacy") as client:
        tools = {t.name: t.model_dump(exclude_none=True) for t in (await client.list_tools()).tools}
        result = await client.call_tool("get-structured-content", {"location": "New York"})
        annotated = await client.call_tool("get-annotated-message", {"messageType": "error"})
    # The gateway declares sampling/elicitation to the backend; a bare client declares nothing,
    # so the gateway's list may hold more tools, never different ones.
    assert set(direct_tools) <= set(tools)
    for name, definition in direct_tools.items():
        assert tools[name] == definition
    assert result.model_dump() == direct_result.model_dump()
    assert annotated.model_dump() == direct_annotated.model_dump()


async def test_modern_listen_stream_receives_resource_updates_from_a_legacy_backend() -> None:
    from mcp.server.subscriptions import ResourceUpdated

    async with serve(config({"ev": everything()})) as gw, SdkClient(gw.url, mode="2026-07-28") as client:
        uri = str((await client.list_resources()).resources[0].uri)
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            await client.call_tool("ev__toggle-subscriber-updates", {})
            with anyio.fail_after(30):
                event = await subscription.__anext__()
    assert isinstance(event, ResourceUpdated) and str(event.uri) == uri
