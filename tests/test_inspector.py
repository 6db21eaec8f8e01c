"""The real MCP Inspector CLI (a third-party client, headless) against the gateway.

The gateway fronts server-everything (npm) and mcp-server-time (PyPI); the Inspector 2.x CLI talks
to it over streamable HTTP in both protocol eras (`--protocol-era legacy` is the 2025-11-25
handshake, `modern` is 2026-07-28) and prints one JSON object per run (`--format json`), which the
tests parse. The CLI runs as a subprocess under Node 22, with HOME pointed at a temporary directory
so it never writes its catalog or storage into the real home.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests import _infra
from tests._support import config, serve, time_server

pytestmark = [pytest.mark.anyio, pytest.mark.node]

ERAS = ["legacy", "modern"]
# One CLI run (Node start, connect, one request): about 1 s here; bounded for a loaded CI machine.
CLI_TIMEOUT = 60.0
# Inspector settings that would send its files elsewhere than the temporary HOME.
_INSPECTOR_PATH_VARS = (
    "MCP_CATALOG_PATH",
    "MCP_CLIENT_CONFIG_PATH",
    "MCP_STORAGE_DIR",
    "MCP_INSPECTOR_OAUTH_STATE_PATH",
    "USERPROFILE",
)
# The 2026-07-28 result envelope names the server that answered; 2025-11-25 results do not.
SERVER_INFO = "io.modelcontextprotocol/serverInfo"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope, so the gateway below is started once for the whole module


@dataclass(frozen=True)
class Inspector:
    argv: list[str]  # Node 22 + the Inspector launcher + --cli
    url: str  # the gateway's MCP endpoint
    home: Path


@dataclass(frozen=True)
class Run:
    returncode: int
    output: dict[str, Any]  # the JSON object the CLI printed (stdout on success, stderr on failure)
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        assert self.returncode == 0, f"inspector exited {self.returncode}: {self.output} {self.stderr}"
        result: dict[str, Any] = self.output["result"]
        return result


@pytest.fixture(scope="module")
async def inspector(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Inspector]:
    argv = _infra.inspector_cli()
    everything = _infra.npm_server_command("server-everything")
    servers = {
        "everything": {"command": everything[0], "args": everything[1:]},
        "time": time_server(),
    }
    async with serve(config(servers)) as gw:
        yield Inspector(argv=argv, url=gw.url, home=tmp_path_factory.mktemp("inspector-home"))


async def inspect(inspector: Inspector, era: str, method: str, *args: str) -> Run:
    env = {k: v for k, v in _infra.node22_env().items() if k not in _INSPECTOR_PATH_VARS}
    env["HOME"] = str(inspector.home)
    argv = [
        *inspector.argv,
        inspector.url,
        "--transport", "http",
        "--protocol-era", era,
        "--format", "json",
        "--method", method,
        *args,
    ]  # fmt: skip
    with anyio.fail_after(CLI_TIMEOUT):  # a cancelled run_process kills the CLI
        done = await anyio.run_process(argv, env=env, cwd=inspector.home, check=False)
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    # `--format json`: the result object on stdout, or an {"error": ...} envelope last on stderr.
    printed = stdout
    if done.returncode != 0 and stderr.strip():
        printed = stderr.strip().splitlines()[-1]
    try:
        output: dict[str, Any] = json.loads(printed)
    except ValueError:
        pytest.fail(f"inspector {method} exited {done.returncode} without JSON:\n{stdout}\n{stderr}")
    return Run(returncode=done.returncode, output=output, stderr=stderr)


def check_era(era: str, result: dict[str, Any]) -> None:
    """The run really used the era asked for (the CLI could fall back silently otherwise)."""
    stamped = result.get("_meta", {}).get(SERVER_INFO)
    if era == "modern":
        assert stamped is not None and stamped["name"] == "mcp-gateway", result.get("_meta")
    else:
        assert stamped is None, result.get("_meta")


# --- lists: every name arrives namespaced ------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_tools_list_is_the_namespaced_union_of_both_servers(inspector: Inspector, era: str) -> None:
    tools = (await inspect(inspector, era, "tools/list")).result["tools"]
    names = [t["name"] for t in tools]
    assert len(names) == len(set(names)), names
    assert {n for n in names if n.startswith("time__")} == {"time__get_current_time", "time__convert_time"}
    assert {"everything__echo", "everything__get-sum", "everything__get-structured-content"} <= set(names)
    assert all(n.startswith(("time__", "everything__")) for n in names), names
    # Descriptions and schemas are carried untouched.
    echo = next(t for t in tools if t["name"] == "everything__echo")
    assert echo["inputSchema"]["required"] == ["message"]
    assert echo["annotations"]["readOnlyHint"] is True
    current = next(t for t in tools if t["name"] == "time__get_current_time")
    assert "timezone" in current["inputSchema"]["properties"]
    assert "outputSchema" in current


@pytest.mark.parametrize("era", ERAS)
async def test_resources_and_templates_are_listed_under_the_servers_namespace(
    inspector: Inspector, era: str
) -> None:
    resources = (await inspect(inspector, era, "resources/list")).result["resources"]
    uris = [r["uri"] for r in resources]
    assert uris, "server-everything exposes resources"
    assert all(u.startswith("everything+") for u in uris), uris
    assert "everything+demo://resource/static/document/features.md" in uris

    templates = (await inspect(inspector, era, "resources/templates/list")).result["resourceTemplates"]
    assert {t["uriTemplate"] for t in templates} >= {
        "everything+demo://resource/dynamic/text/{resourceId}",
        "everything+demo://resource/dynamic/blob/{resourceId}",
    }


@pytest.mark.parametrize("era", ERAS)
async def test_prompts_list_is_namespaced(inspector: Inspector, era: str) -> None:
    prompts = (await inspect(inspector, era, "prompts/list")).result["prompts"]
    names = {p["name"] for p in prompts}
    assert {"everything__simple-prompt", "everything__args-prompt"} <= names
    assert all(n.startswith("everything__") for n in names), names
    args_prompt = next(p for p in prompts if p["name"] == "everything__args-prompt")
    assert {a["name"]: a["required"] for a in args_prompt["arguments"]} == {"city": True, "state": False}


# --- calls: routed to the owning server, results unchanged -------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_call_time_tool_returns_its_structured_result(inspector: Inspector, era: str) -> None:
    run = await inspect(
        inspector, era, "tools/call", "--tool-name", "time__get_current_time", "--tool-arg", "timezone=UTC"
    )
    result = run.result
    check_era(era, result)
    assert result["isError"] is False
    structured = result["structuredContent"]
    assert structured["timezone"] == "UTC"
    assert structured["datetime"].endswith("+00:00")
    assert json.loads(result["content"][0]["text"]) == structured


@pytest.mark.parametrize("era", ERAS)
async def test_call_everything_tools_with_typed_arguments(inspector: Inspector, era: str) -> None:
    sum_args = ("--tool-name", "everything__get-sum", "--tool-args-json", '{"a": 2, "b": 3}')
    summed = await inspect(inspector, era, "tools/call", *sum_args)
    check_era(era, summed.result)
    assert summed.result["content"] == [{"type": "text", "text": "The sum of 2 and 3 is 5."}]

    echoed = await inspect(
        inspector, era, "tools/call", "--tool-name", "everything__echo", "--tool-arg", "message=hello gateway"
    )
    assert echoed.result["content"] == [{"type": "text", "text": "Echo: hello gateway"}]

    weather = await inspect(
        inspector, era, "tools/call", "--tool-name", "everything__get-structured-content", "--tool-arg",
        "location=Chicago",
    )  # fmt: skip
    structured = weather.result["structuredContent"]
    assert set(structured) == {"temperature", "conditions", "humidity"}
    assert json.loads(weather.result["content"][0]["text"]) == structured


@pytest.mark.parametrize("era", ERAS)
async def test_read_resource_and_get_prompt(inspector: Inspector, era: str) -> None:
    uri = "everything+demo://resource/static/document/features.md"
    read = (await inspect(inspector, era, "resources/read", "--uri", uri)).result
    check_era(era, read)
    [content] = read["contents"]
    assert content["uri"] == uri  # the public URI comes back, not the backend's own
    assert content["mimeType"] == "text/markdown"
    assert content["text"].startswith("# Everything Server - Features")

    prompt_args = ("--prompt-name", "everything__args-prompt", "--prompt-args", "city=Paris")
    prompt = await inspect(inspector, era, "prompts/get", *prompt_args)
    check_era(era, prompt.result)
    assert prompt.result["messages"] == [
        {"role": "user", "content": {"type": "text", "text": "What's weather in Paris?"}}
    ]


# --- failures reach the client as failures ----------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_tool_errors_are_reported(inspector: Inspector, era: str) -> None:
    # An argument the backend rejects: its isError result is relayed, the CLI exits TOOL_ERROR (5).
    bad = await inspect(
        inspector, era, "tools/call", "--tool-name", "everything__get-sum", "--tool-args-json", '{"a": 1}'
    )
    assert bad.returncode == 5, bad
    assert bad.output["error"]["code"] == "tool_is_error", bad.output

    # A name no server owns (the Inspector checks it against tools/list first).
    unknown = await inspect(inspector, era, "tools/call", "--tool-name", "everything__no-such-tool")
    assert unknown.returncode == 5, unknown
    assert unknown.output["error"]["code"] == "tool_not_found", unknown.output
