#!/usr/bin/env python3
"""An MCP server with the fixtures the official conformance suite calls by name.

The suite (@modelcontextprotocol/conformance, pinned in tests/node/package.json) is written for
its own test server: its scenarios call `test_simple_text`, read `test://static-text`, get
`test_prompt_with_image`, and so on. Against a server without those names most scenarios fail
whatever sits in between, so a gateway comparison over them says nothing. This server provides
all of them, so that every scenario passes directly and any scenario that fails through the
gateway is the gateway's doing (tests/test_conformance.py).

Names, contents and schemas follow the suite's scenario descriptions (which spell out what its
test server returns); most checks look only at the shape (a text item, an image with a MIME
type, three log notifications before the result), but the values are kept as described.

It speaks both revisions the suite tests (0.1.16 at 2025-11-25, 0.2.0-alpha at 2026-07-28, see
tests/node/package.json). The 2026-07-28 scenarios add tools that need input from the client
(`test_input_required_result_*`, section "input rounds" below): at 2026-07-28 they answer with an
`input_required` result and finish when the client retries with `inputResponses`; at 2025-11-25
the same questions go out as `elicitation/create` / `sampling/createMessage` / `roots/list`
requests mid-call. So one backend drives a gateway's input-round relay in every combination.

Run as ``python tests/conformance/fixture_server.py`` (stdio) or with ``--http PORT`` (streamable
HTTP at ``http://127.0.0.1:PORT/mcp``; ``--http 0`` picks a free port). In HTTP mode the first
line on stdout is the endpoint URL, written once the socket listens, so a caller can wait for
that line instead of polling the port (and port 0 leaves no race with other processes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, get_args

import anyio
import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import is_version_at_least

Ctx = ServerRequestContext[Any]

# A 1x1 PNG and a minimal WAV: the suite checks type, data and MIME type, not the media itself.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


def _titled(*options: tuple[str, str]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in options]


def _string_args(*names: str) -> dict[str, Any]:
    return {"type": "object", "properties": {n: {"type": "string"} for n in names}, "required": list(names)}


# --- input rounds (2026-07-28: InputRequiredResult; 2025-11-25: requests mid-call) ---------------
#
# Each such tool asks fixed questions in one or more rounds. The SDK seals and verifies the
# `requestState` (RequestStateBoundary, installed in `build`): a tampered, expired or replayed-
# elsewhere state is refused with -32602 before a handler runs, so a handler reads back only the
# plaintext it minted. The questions are written out rather than declared with the SDK's resolvers
# (mcp.server.mcpserver.resolve) because the suite names the input keys (`user_name`, ...), while
# resolvers key their questions by `module:qualname`.

MODERN = "2026-07-28"


def _ask_form(message: str, **fields: str) -> types.ElicitRequest:
    properties = {n: {"type": t} for n, t in fields.items()}
    schema = {"type": "object", "properties": properties, "required": list(fields)}
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))


def _ask_llm(prompt: str, max_tokens: int) -> types.CreateMessageRequest:
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(messages=[message], max_tokens=max_tokens)
    )


ROOTS = types.ListRootsRequest(params=types.RequestParams())
NAME = _ask_form("What is your name?", name="string")
CAPITAL = _ask_llm("What is the capital of France?", 100)
CONFIRM = _ask_form("Please confirm", ok="boolean")

Round = dict[str, types.InputRequest]
# tool name -> its rounds, each a map of input key -> question; the scenario descriptions give them.
INPUT_ROUNDS: dict[str, list[Round]] = {
    "test_input_required_result_elicitation": [{"user_name": NAME}],
    "test_input_required_result_sampling": [{"capital_question": CAPITAL}],
    "test_input_required_result_list_roots": [{"client_roots": ROOTS}],
    "test_input_required_result_request_state": [{"confirm": CONFIRM}],
    "test_input_required_result_multiple_inputs": [
        {"user_name": NAME, "greeting": _ask_llm("Generate a greeting", 50), "client_roots": ROOTS}
    ],
    "test_input_required_result_multi_round": [
        {"step1": _ask_form("Step 1: What is your name?", name="string")},
        {"step2": _ask_form("Step 2: What is your favorite color?", color="string")},
    ],
    "test_input_required_result_tampered_state": [{"confirm": CONFIRM}],
    # Asks only what the client can answer (input-required-result-capability-check): see `_rounds`.
    "test_input_required_result_capabilities": [{"user_name": NAME, "capital_question": CAPITAL}],
    # server-stateless: the answer stream carries the input round, never a request of its own.
    "test_streaming_elicitation": [{"user_name": NAME}],
    # server-stateless: sampling undeclared must be refused with -32021, nothing else.
    "test_missing_capability": [{"capital_question": CAPITAL}],
}
PROMPT_ROUNDS: dict[str, list[Round]] = {
    "test_input_required_result_prompt": [
        {"user_context": _ask_form("What context should the prompt use?", context="string")}
    ],
}
# What the client must have declared to be asked, by question method, and the answer's type.
NEEDS: dict[str, types.ClientCapabilities] = {
    "elicitation/create": types.ClientCapabilities(elicitation=types.ElicitationCapability()),
    "sampling/createMessage": types.ClientCapabilities(sampling=types.SamplingCapability()),
    "roots/list": types.ClientCapabilities(roots=types.RootsCapability()),
}
Answer = type[types.ElicitResult] | type[types.CreateMessageResult] | type[types.ListRootsResult]
ANSWERS: dict[str, Answer] = {
    "elicitation/create": types.ElicitResult,
    "sampling/createMessage": types.CreateMessageResult,
    "roots/list": types.ListRootsResult,
}


def _declared(ctx: Ctx, method: str) -> bool:
    return ctx.session.check_client_capability(NEEDS[method])


def _rounds(ctx: Ctx, name: str, rounds: list[Round]) -> list[Round]:
    """`rounds`, after checking that the client can answer them (MissingRequiredClientCapability)."""
    if name == "test_input_required_result_capabilities":
        rounds = [{k: q for k, q in r.items() if _declared(ctx, q.method)} for r in rounds]
        if not any(rounds):
            missing = types.ClientCapabilities(elicitation=types.ElicitationCapability())
            _refuse(missing, "the client declared neither elicitation nor sampling")
        return rounds
    for questions in rounds:
        for question in questions.values():
            if not _declared(ctx, question.method):
                _refuse(NEEDS[question.method], f"{question.method}: capability not declared by the client")
    return rounds


def _refuse(required: types.ClientCapabilities, message: str) -> None:
    data = types.MissingRequiredClientCapabilityErrorData(required_capabilities=required)
    raise MCPError(
        types.MISSING_REQUIRED_CLIENT_CAPABILITY,
        message,
        data.model_dump(by_alias=True, mode="json", exclude_none=True),
    )


def _fits(question: types.InputRequest, answer: types.InputResponse) -> bool:
    return isinstance(answer, ANSWERS[question.method])


async def _gather(
    ctx: Ctx, rounds: list[Round], params: types.InputResponseRequestParams
) -> dict[str, Any] | types.InputRequiredResult:
    """Every round's answers (as sent on the wire, by key), or the next round to put to the client."""
    if not is_version_at_least(ctx.protocol_version, MODERN):
        # 2025-11-25: each question is a request tied to the call, so over HTTP it rides the call's stream.
        related = ServerMessageMetadata(related_request_id=ctx.request_id)
        answers: dict[str, Any] = {}
        for questions in rounds:
            for key, question in questions.items():
                answer = await ctx.session.send_request(question, ANSWERS[question.method], metadata=related)
                answers[key] = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
        return answers
    # The state is the plaintext this handler minted last round (the boundary has verified it).
    state: dict[str, Any] = json.loads(params.request_state) if params.request_state else {}
    done, answers = int(state.get("round", 0)), dict(state.get("answers", {}))
    given = params.input_responses or {}
    for number, questions in enumerate(rounds[done:], start=done):
        for key, question in questions.items():
            # An answer of the wrong kind counts as no answer: the question is asked again.
            if key not in answers and key in given and _fits(question, given[key]):
                answers[key] = given[key].model_dump(by_alias=True, mode="json", exclude_none=True)
        unanswered = {key: question for key, question in questions.items() if key not in answers}
        if unanswered:
            minted = json.dumps({"round": number, "answers": answers})
            return types.InputRequiredResult(input_requests=unanswered, request_state=minted)
        given = {}  # the answers to a round were given in the request that received it
    return answers


def _answered(answers: dict[str, Any], *, modern: bool) -> str:
    """What the client said, for the result; `state-ok` marks a round trip through a verified state."""
    said = "; ".join(f"{key}={json.dumps(value, sort_keys=True)}" for key, value in sorted(answers.items()))
    return f"{'state-ok: ' if modern else ''}{said}"


TOOLS = (
    [
        types.Tool(name=name, description=description, input_schema=NO_ARGS)
        for name, description in [
            ("test_simple_text", "Returns a text item"),
            ("test_image_content", "Returns an image item"),
            ("test_audio_content", "Returns an audio item"),
            ("test_embedded_resource", "Returns an embedded resource"),
            ("test_multiple_content_types", "Returns text, image and resource items"),
            ("test_tool_with_logging", "Sends log notifications while running"),
            ("test_tool_with_progress", "Sends progress notifications while running"),
            ("test_error_handling", "Returns a result with isError"),
            ("test_elicitation_sep1034_defaults", "Elicits a form whose fields have defaults"),
            ("test_elicitation_sep1330_enums", "Elicits a form with every kind of enum"),
            ("test_reconnection", "Returns at once (the SSE polling scenario's tool)"),
        ]
    ]
    + [
        types.Tool(name=name, description="Asks the client for input first", input_schema=NO_ARGS)
        for name in INPUT_ROUNDS
    ]
    + [
        types.Tool(
            name="test_sampling", description="Asks the client's LLM", input_schema=_string_args("prompt")
        ),
        types.Tool(
            name="test_elicitation", description="Asks the user", input_schema=_string_args("message")
        ),
        # Checked key by key in tools/list: $schema, $defs, $ref and additionalProperties must survive
        # (SEP-1613), and at 2026-07-28 also $anchor, allOf/anyOf and if/then/else (SEP-2106).
        types.Tool(
            name="json_schema_2020_12_tool",
            description="Tool with JSON Schema 2020-12 features",
            input_schema={
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "$anchor": "addressDef",
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                    }
                },
                "properties": {
                    "name": {"type": "string"},
                    "address": {"$ref": "#/$defs/address"},
                    "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                    "phone": {"type": "string"},
                    "email": {"type": "string"},
                },
                "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                "then": {"required": ["phone"]},
                "else": {"required": ["email"]},
                "additionalProperties": False,
            },
        ),
        # SEP-2243: `region` is mirrored into an `Mcp-Param-Region` header, which the SDK's HTTP
        # transport checks against the body (it finds the schema through `get_tool_input_schema`).
        types.Tool(
            name="test_custom_headers",
            description="Has an argument mirrored into an HTTP header",
            input_schema={
                "type": "object",
                "properties": {
                    "region": {"type": "string", "x-mcp-header": "Region"},
                    "query": {"type": "string"},
                },
                "required": ["region"],
            },
        ),
        # server-stateless: at 2026-07-28 no log goes out unless the request's _meta asked for a level.
        types.Tool(name="test_logging_tool", description="Logs while running", input_schema=NO_ARGS),
    ]
)
TOOL_SCHEMAS = {tool.name: tool.input_schema for tool in TOOLS}

SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "default": True},
    },
}
SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": _titled(("value1", "First Option"), ("value2", "Second Option")),
        },
        # The pre-SEP-1330 form, which the scenario still expects to see.
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "items": {"anyOf": _titled(("value1", "First Choice"), ("value2", "Second Choice"))},
        },
    },
}
USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

STATIC_RESOURCES: dict[str, types.TextResourceContents | types.BlobResourceContents] = {
    "test://static-text": types.TextResourceContents(
        uri="test://static-text",
        mime_type="text/plain",
        text="This is the content of the static text resource.",
    ),
    "test://static-binary": types.BlobResourceContents(
        uri="test://static-binary", mime_type="image/png", blob=PNG
    ),
    "test://watched-resource": types.TextResourceContents(
        uri="test://watched-resource", mime_type="text/plain", text="Watched resource content"
    ),
}
TEMPLATE_PREFIX, TEMPLATE_SUFFIX = "test://template/", "/data"

PROMPTS = [
    types.Prompt(name="test_input_required_result_prompt", description="Asks the user for context first"),
    types.Prompt(name="test_simple_prompt", description="A prompt without arguments"),
    types.Prompt(
        name="test_prompt_with_arguments",
        description="A prompt with two required arguments",
        arguments=[
            types.PromptArgument(name="arg1", required=True),
            types.PromptArgument(name="arg2", required=True),
        ],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt embedding the resource it is given",
        arguments=[types.PromptArgument(name="resourceUri", required=True)],
    ),
    types.Prompt(name="test_prompt_with_image", description="A prompt with an image"),
]


def _text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG, mime_type="image/png")


def _result(value: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[_text(value)], is_error=error)


async def _sample(ctx: Ctx, prompt: str) -> str:
    request = types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=_text(prompt))], max_tokens=100
        )
    )
    # Tied to the tool call (as the elicitations are), so over HTTP the request rides the call's own
    # SSE stream, where the suite's client answers it.
    related = ServerMessageMetadata(related_request_id=ctx.request_id)
    answer = await ctx.session.send_request(request, types.CreateMessageResult, metadata=related)
    return answer.content.text if isinstance(answer.content, types.TextContent) else answer.content.type


async def _elicit(ctx: Ctx, prefix: str, message: str, schema: dict[str, Any]) -> types.CallToolResult:
    # The suite's elicitation scenarios are about what the *request* carries (defaults, enum forms),
    # so the schema goes out exactly as written here.
    answer = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    return _result(f"{prefix}: action={answer.action}, content={json.dumps(answer.content)}")


# --- handlers -----------------------------------------------------------------------------------


async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def _log(ctx: Ctx, message: str) -> None:
    # At 2026-07-28 a log goes out only on a request whose _meta asked for its level or a lower one;
    # at 2025-11-25 logging/setLevel governs (and this fixture accepts any level).
    if is_version_at_least(ctx.protocol_version, MODERN):
        levels = get_args(types.LoggingLevel)  # declared in ascending severity
        asked = (ctx.meta or {}).get(types.LOG_LEVEL_META_KEY)
        if asked not in levels or levels.index(asked) > levels.index("info"):
            return
    # A typed notification rather than the deprecated send_log_message, which warns on stderr.
    log = types.LoggingMessageNotificationParams(level="info", data=message, logger="conformance")
    notification = types.LoggingMessageNotification(params=log)
    await ctx.session.send_notification(notification, related_request_id=ctx.request_id)


async def call_tool(
    ctx: Ctx, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    name, args = params.name, params.arguments or {}
    if name in INPUT_ROUNDS:
        answers = await _gather(ctx, _rounds(ctx, name, INPUT_ROUNDS[name]), params)
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return _result(_answered(answers, modern=is_version_at_least(ctx.protocol_version, MODERN)))
    if name == "test_simple_text":
        return _result("This is a simple text response for testing.")
    if name == "test_image_content":
        return types.CallToolResult(content=[_image()])
    if name == "test_audio_content":
        return types.CallToolResult(
            content=[types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")]
        )
    if name == "test_embedded_resource":
        embedded = types.TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=embedded)])
    if name == "test_multiple_content_types":
        mixed = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text='{"test": "data", "value": 123}',
        )
        return types.CallToolResult(
            content=[
                _text("Multiple content types test:"),
                _image(),
                types.EmbeddedResource(type="resource", resource=mixed),
            ]
        )
    if name in ("test_tool_with_logging", "test_logging_tool"):
        for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            await _log(ctx, message)
        return _result("Tool with logging executed successfully")
    if name == "test_custom_headers":
        return _result(f"Region: {args.get('region')}")
    if name == "test_tool_with_progress":
        for step in (0, 50, 100):
            await ctx.session.report_progress(step, 100, f"Completed step {step} of 100")
        return _result("Tool with progress executed successfully")
    if name == "test_error_handling":
        return _result("This tool intentionally returns an error for testing", error=True)
    if name == "test_sampling":
        return _result(f"LLM response: {await _sample(ctx, str(args.get('prompt', '')))}")
    if name == "test_elicitation":
        return await _elicit(ctx, "User response", str(args.get("message", "")), USER_SCHEMA)
    if name == "test_elicitation_sep1034_defaults":
        return await _elicit(ctx, "Elicitation completed", "Please provide user information", SEP1034_SCHEMA)
    if name == "test_elicitation_sep1330_enums":
        return await _elicit(
            ctx, "Elicitation completed", "Please choose from the enum fields", SEP1330_SCHEMA
        )
    if name == "test_reconnection":
        return _result("Reconnection test completed")
    if name == "json_schema_2020_12_tool":
        return _result(f"Received: {json.dumps(args)}")
    # The error the specification prescribes for an unknown tool (not an isError result).
    raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


async def list_resources(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[
            types.Resource(uri=uri, name=uri.removeprefix("test://"), mime_type=contents.mime_type)
            for uri, contents in STATIC_RESOURCES.items()
        ]
    )


async def list_resource_templates(
    ctx: Ctx, params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    template = types.ResourceTemplate(
        uri_template=f"{TEMPLATE_PREFIX}{{id}}{TEMPLATE_SUFFIX}",
        name="template",
        mime_type="application/json",
    )
    return types.ListResourceTemplatesResult(resource_templates=[template])


async def read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    uri = str(params.uri)
    if uri in STATIC_RESOURCES:
        return types.ReadResourceResult(contents=[STATIC_RESOURCES[uri]])
    if uri.startswith(TEMPLATE_PREFIX) and uri.endswith(TEMPLATE_SUFFIX):
        ident = uri.removeprefix(TEMPLATE_PREFIX).removesuffix(TEMPLATE_SUFFIX)
        body = json.dumps({"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"})
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=body)]
        )
    raise MCPError(types.INVALID_PARAMS, f"Resource not found: {uri}", {"uri": uri})


async def accept(
    ctx: Ctx,
    params: types.SubscribeRequestParams | types.UnsubscribeRequestParams | types.SetLevelRequestParams,
) -> types.EmptyResult:
    # Accepted and forgotten: the scenarios check only that (un)subscribing or setting a level succeeds.
    return types.EmptyResult()


async def list_prompts(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=PROMPTS)


def _user(content: types.TextContent | types.ImageContent | types.EmbeddedResource) -> types.PromptMessage:
    return types.PromptMessage(role="user", content=content)


async def get_prompt(
    ctx: Ctx, params: types.GetPromptRequestParams
) -> types.GetPromptResult | types.InputRequiredResult:
    args = params.arguments or {}
    if params.name in PROMPT_ROUNDS:
        answers = await _gather(ctx, _rounds(ctx, params.name, PROMPT_ROUNDS[params.name]), params)
        if isinstance(answers, types.InputRequiredResult):
            return answers
        said = _answered(answers, modern=is_version_at_least(ctx.protocol_version, MODERN))
        return types.GetPromptResult(messages=[_user(_text(f"Use this context: {said}"))])
    if params.name == "test_simple_prompt":
        return types.GetPromptResult(messages=[_user(_text("This is a simple prompt for testing."))])
    if params.name == "test_prompt_with_arguments":
        said = f"Prompt with arguments: arg1='{args.get('arg1')}', arg2='{args.get('arg2')}'"
        return types.GetPromptResult(messages=[_user(_text(said))])
    if params.name == "test_prompt_with_embedded_resource":
        resource = types.TextResourceContents(
            uri=args.get("resourceUri", "test://example-resource"),
            mime_type="text/plain",
            text="Embedded resource content for testing.",
        )
        return types.GetPromptResult(
            messages=[
                _user(types.EmbeddedResource(type="resource", resource=resource)),
                _user(_text("Please process the embedded resource above.")),
            ]
        )
    if params.name == "test_prompt_with_image":
        return types.GetPromptResult(
            messages=[_user(_image()), _user(_text("Please analyze the image above."))]
        )
    raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")


async def complete(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
    # Any argument of any reference: the scenario checks the completion's shape, not its sense.
    return types.CompleteResult(
        completion=types.Completion(values=["paris", "park", "party"], total=3, has_more=False)
    )


def build() -> Server[Any]:
    server: Server[Any] = Server(
        "conformance-fixture",
        version="0.1.0",
        get_tool_input_schema=TOOL_SCHEMAS.get,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=accept,
        on_unsubscribe_resource=accept,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
    )
    # Registered this way (not on_set_logging_level=) to skip the SDK's deprecation warning on
    # stderr; the server still declares the logging capability, which logging-set-level needs.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, accept)
    # Seals every requestState this server mints and verifies every one echoed back (AES-GCM under a
    # key of this process: a stdio backend and a single HTTP process need no shared key).
    security = RequestStateSecurity.ephemeral()
    server.middleware.append(RequestStateBoundary(security, default_audience="conformance-fixture"))
    return server


# --- transports ---------------------------------------------------------------------------------


async def serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(server: Server[Any], port: int) -> None:
    # host="127.0.0.1" also turns on the SDK's Host/Origin checks (DNS-rebinding protection),
    # which the suite's dns-rebinding-protection scenario expects of a loopback server.
    app = server.streamable_http_app(host="127.0.0.1")
    # Bound and listening before the URL is announced: a client that connects at once waits in
    # the backlog until uvicorn accepts, instead of being refused.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    await uvicorn.Server(config).serve(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MCP server with the conformance suite's fixtures.")
    parser.add_argument("--http", type=int, metavar="PORT", help="streamable HTTP on 127.0.0.1:PORT (0: any)")
    args = parser.parse_args(argv)
    server = build()
    try:
        if args.http is None:
            anyio.run(serve_stdio, server)
        else:
            anyio.run(serve_http, server, args.http)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    code = main()
    # Skip interpreter finalization: tearing down the SDK's pydantic classes takes a noticeable
    # fraction of a second, and the gateway waits for its stdio backend to exit on shutdown.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
