"""The admin API's OpenAPI 3.1 document, written by hand; server specs come from the config models."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter

from gateway.admin._params import MAX_EPOCH
from gateway.admin._record import CATEGORIES, SEVERITIES, TYPES
from gateway.admin._schemas import ACTIONS, SCHEMAS
from gateway.admin._schemas import ANY_OBJ as _ANY_OBJ
from gateway.admin._schemas import BOOL as _BOOL
from gateway.admin._schemas import INT as _INT
from gateway.admin._schemas import REF as _REF
from gateway.admin._schemas import STR as _STR
from gateway.admin._schemas import ref as _ref
from gateway.config.models import ServerSpec

_ERRORS = {
    400: "A query parameter is invalid",
    401: "No or unknown admin credentials",
    403: "Authenticated, but without the admin role",
    404: "No such server (or endpoint)",
    409: "Conflict",
    413: "Body too large",
    422: "The body is invalid (details.errors lists `servers.<name>.<key>`)",
    503: "The cluster's shared store (Redis) is unreachable",
    504: "The server did not stop in time",
}
_HEADERS = {
    "X-Request-Id": {
        "description": "the caller's X-Request-Id, or a generated one",
        "schema": _STR,
        "required": True,
    }
}


def _error(status: int) -> dict[str, Any]:
    return {
        "description": _ERRORS[status],
        "headers": _HEADERS,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _ok(schema: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "headers": _HEADERS,
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _param(name: str, where: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "schema": schema, "description": description, **extra}


_INSTANT = {
    "oneOf": [
        {"type": "string", "format": "date-time"},
        {"type": "number", "minimum": 0, "maximum": int(MAX_EPOCH)},
    ]
}
# As the API writes ids: digits (< 2**62), or with `cluster.redis` a stream entry id.
_EVENT_ID = {"type": "string", "pattern": "^([0-9]{1,18}|[0-9]{1,20}-[0-9]{1,20})$"}
_COUNT = {**_INT, "minimum": 0, "maximum": 1000}  # how many recent events / log lines

_NAME = _param("name", "path", _STR, "the server's name", required=True)
_WAIT = _param("wait", "query", _BOOL, "wait until the server settled (default true; bounded)")


def _list(name: str, items: dict[str, Any], description: str) -> dict[str, Any]:
    return _param(name, "query", {"type": "array", "items": items}, description, style="form", explode=False)


_EVENT_FILTERS = [
    _list("server", _STR, "only these servers (comma-separated)"),
    _list("severity", {"enum": list(SEVERITIES)}, "only these severities"),
    _list("category", _STR, f"only these categories ({', '.join(CATEGORIES)})"),
    _list("type", {"enum": list(TYPES)}, "transition (a state change) or action (an admin action)"),
    _param("since", "query", _INSTANT, "from this time (ISO 8601 or epoch seconds), inclusive"),
    _param("until", "query", _INSTANT, "before this time, exclusive"),
]


def _op(
    op_id: str,
    summary: str,
    responses: dict[int, Any],
    *,
    parameters: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "responses": {str(status): r for status, r in responses.items()},
    }
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    return op


def _errors(*statuses: int) -> dict[int, Any]:
    return {s: _error(s) for s in (401, 403, *statuses)}


_RUNTIME = (
    "Runtime change: it is NOT written to gateway.yaml, is lost when the gateway restarts, and a config "
    "reload makes the fleet match the file again. Connected clients are told (list_changed). With "
    "`cluster.redis` it applies to every replica and is kept in Redis (replicas started later load "
    "it, a reload keeps it); while Redis is unreachable it is refused (503)."
)


def _paths() -> dict[str, Any]:
    action_ops = {
        f"/servers/{{name}}/{a}": {
            "post": _op(
                f"{a}Server",
                f"{a.capitalize()} a server",
                {200: _ok("ActionResult"), **_errors(400, 404, 504)},
                parameters=[_NAME, _WAIT],
                description="The result says whether the server reached the wanted state (`ok`). With "
                "`cluster.redis` every other replica does the same to its own copy; `cluster` says "
                "which acknowledged.",
            )
        }
        for a in ACTIONS
    }
    bulk_ops = {
        f"/servers/bulk/{a}": {
            "post": _op(
                f"bulk{a.capitalize()}",
                f"{a.capitalize()} several servers (default: all)",
                {200: _ok("BulkResult"), **_errors(400, 413, 422)},
                parameters=[_WAIT],
                body={"required": False, "content": {"application/json": {"schema": _ref("BulkRequest")}}},
            )
        }
        for a in ACTIONS
    }
    return {
        "/servers": {
            "get": _op(
                "listServers",
                "Every server: state, health, uptime, restarts, tools, call stats",
                {200: _ok("ServerList"), **_errors()},
            ),
            "post": _op(
                "registerServer",
                "Register and start a server at runtime",
                {201: _ok("Registered", "Registered"), **_errors(400, 409, 413, 422, 503)},
                parameters=[_WAIT],
                description=_RUNTIME,
                body={"required": True, "content": {"application/json": {"schema": _ref("RegisterRequest")}}},
            ),
        },
        **bulk_ops,
        "/servers/{name}": {
            "get": _op(
                "getServer",
                "One server: summary, redacted config, catalogue, recent events and logs",
                {200: _ok("ServerDetail"), **_errors(400, 404)},
                parameters=[
                    _NAME,
                    _param("events", "query", _COUNT, "recent events"),
                    _param("logs", "query", _COUNT, "recent log lines"),
                ],
            ),
            "delete": _op(
                "deleteServer",
                "Stop and remove a server",
                {200: _ok("Removed"), **_errors(404, 503, 504)},
                parameters=[_NAME],
                description=_RUNTIME,
            ),
        },
        **action_ops,
        "/servers/{name}/test": {
            "post": _op(
                "testServer",
                "Open a fresh session: time connect+initialize, tools/list and ping",
                {200: _ok("TestResult"), **_errors(404)},
                parameters=[_NAME],
                description="A failed test is still a 200: `ok` false, the failing `stage`, the `error`.",
            )
        },
        "/servers/{name}/logs": {
            "get": _op(
                "serverLogs",
                "The server's stderr: the last lines, or with follow=1 a live SSE stream",
                {
                    200: {
                        "description": "lines (JSON), or `log` events (SSE) when following",
                        "headers": _HEADERS,
                        "content": {
                            "application/json": {"schema": _ref("Logs")},
                            "text/event-stream": {"schema": _STR},
                        },
                    },
                    **_errors(400, 404),
                },
                parameters=[
                    _NAME,
                    _param("tail", "query", _COUNT, "backlog lines"),
                    _param("follow", "query", _BOOL, "stream new lines as Server-Sent Events"),
                ],
            )
        },
        "/events": {
            "get": _op(
                "listEvents",
                "Lifecycle events and admin actions, newest first",
                {200: _ok("EventPage"), **_errors(400, 503)},
                parameters=[
                    *_EVENT_FILTERS,
                    _param("limit", "query", {**_INT, "minimum": 1, "maximum": 1000}, "page size (100)"),
                    _param(
                        "cursor",
                        "query",
                        _EVENT_ID,
                        "next_cursor of the previous page",
                    ),
                ],
            )
        },
        "/events/stream": {
            "get": _op(
                "streamEvents",
                "New events as Server-Sent Events (`id` = event id; resume with Last-Event-ID)",
                {
                    200: {
                        "description": "`event` events",
                        "headers": _HEADERS,
                        "content": {"text/event-stream": {"schema": _STR}},
                    },
                    **_errors(400),
                },
                parameters=[
                    *_EVENT_FILTERS,
                    _param(
                        "after",
                        "query",
                        _EVENT_ID,
                        "resume after this event id (as Last-Event-ID does)",
                    ),
                ],
            )
        },
        "/cluster": {
            "get": _op(
                "getCluster",
                "Every replica (id, address, up since, load) and each backend on each replica",
                {200: _ok("Cluster"), **_errors()},
                description="With `cluster.redis`, every replica whose heartbeat is live; while Redis "
                "is unreachable, this replica only (`reachable` false).",
            )
        },
        "/pins": {
            "get": _op(
                "listPins",
                "Tools whose definition differs from its pin (the `pinning` middleware)",
                {200: _ok("Pins"), **_errors(409)},
            )
        },
        "/pins/accept": {
            "post": _op(
                "acceptPin",
                "Trust a changed tool's current definition (on every replica with `cluster.redis`)",
                {200: _ok("PinAccepted"), **_errors(400, 404, 409, 413, 422, 503)},
                body={"required": True, "content": {"application/json": {"schema": _ref("PinRequest")}}},
                description="404 when no change of that tool is pending on this replica.",
            )
        },
        "/endpoints": {
            "get": _op(
                "listEndpoints",
                "The MCP endpoints (the default one and `endpoints:`), with what each exposes now",
                {200: _ok("Endpoints"), **_errors()},
            )
        },
        "/config": {
            "get": _op(
                "getConfig",
                "The effective configuration, secrets redacted",
                {200: _ok("Config"), **_errors()},
                description="References (${env:X}) are shown as written; literal secrets as ***.",
            )
        },
        "/config/reload": {
            "post": _op(
                "reloadConfig",
                "Validate and apply the config file as a diff",
                {200: _ok("ReloadResult"), **_errors(409, 422)},
            )
        },
    }


@functools.cache
def _spec_schemas() -> dict[str, Any]:
    schema = TypeAdapter(ServerSpec).json_schema(ref_template=_REF)
    defs: dict[str, Any] = schema.pop("$defs")
    schema.pop("discriminator", None)  # `type` may be omitted (inferred), so it cannot discriminate
    return {**defs, "ServerSpec": {**schema, "description": "A gateway.yaml `servers:` entry."}}


def document(base_path: str = "/admin") -> dict[str, Any]:
    paths = _paths()
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "headers": _HEADERS,
                    "content": {"application/json": {"schema": _ANY_OBJ}},
                },
                **{str(status): error for status, error in _errors().items()},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mcp-gateway admin API",
            "version": "1",
            "description": "Operate the gateway's servers, read its event log and configuration. "
            'Errors share one shape: {"error": {"code", "message", "details", "request_id"}}. ' + _RUNTIME,
        },
        "servers": [{"url": base_path}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **_spec_schemas()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an admin API key"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
