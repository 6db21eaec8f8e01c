"""Schemas of the admin API's responses and bodies (components of its OpenAPI document)."""

from __future__ import annotations

from typing import Any

from gateway.admin._record import SEVERITIES, TYPES

REF = "#/components/schemas/{model}"
ACTIONS = ("start", "stop", "restart")  # what POST /servers/{name}/<action> and bulk accept


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _obj(required_: list[str] | None = None, /, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required_ is None else required_
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


_STR, _INT, _NUM, _BOOL, _ANY_OBJ = (
    {"type": "string"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "object"},
)
_STATES = ["stopped", "starting", "running", "stopping", "backoff", "failed"]

SCHEMAS: dict[str, Any] = {
    "Error": _obj(error=_obj(code=_STR, message=_STR, details=_ANY_OBJ, request_id=_STR)),
    "Calls": _obj(
        total=_INT, errors=_INT, error_rate=_NUM, p50_ms=_nullable("number"), p95_ms=_nullable("number")
    ),
    "Health": _obj(
        status={"enum": ["healthy", "starting", "stopping", "stopped", "dormant", "unhealthy"]},
        ok=_BOOL,
        last_error=_nullable("string"),
        last_health_failure=_nullable("string", format="date-time"),
        last_test={"oneOf": [{"type": "null"}, _obj(ok=_BOOL, time=_STR, error=_nullable("string"))]},
    ),
    "ServerSummary": _obj(
        name=_STR,
        type={"enum": ["stdio", "http", "sse", "docker"]},
        state={"enum": _STATES},
        available=_BOOL,
        required=_BOOL,
        health=_ref("Health"),
        started_at=_nullable("string", format="date-time"),
        uptime_seconds=_nullable("number"),
        restarts=_INT,
        protocol_version={
            **_nullable("string"),
            "description": "the MCP revision spoken to the running server (found by probing, or pinned "
            "with `protocol:`); null while it is not running",
        },
        tools={**_INT, "description": "tools of this server in the catalogue clients see"},
        in_flight=_INT,
        calls=_ref("Calls"),
    ),
    "ServerList": _obj(
        servers={"type": "array", "items": _ref("ServerSummary")},
        summary=_obj(total=_INT, states={"type": "object", "additionalProperties": _INT}),
        collisions={"type": "array", "items": _ref("Collision")},
    ),
    "Collision": {
        **_obj(
            kind={"enum": ["tool", "prompt", "resource"]},
            name={**_STR, "description": "the public name both servers' items would have"},
            kept={**_STR, "description": "the server that keeps `name` (the first in config order)"},
            server={**_STR, "description": "the server whose item is renamed"},
            original={**_STR, "description": "that server's own name for the item"},
            renamed={**_STR, "description": "the public name that item is listed and called under"},
        ),
        "description": "two servers' items with the same public name; both stay reachable",
    },
    "LogLine": _obj(time=_STR, ts=_NUM, server=_STR, text=_STR),
    "Logs": _obj(
        server=_STR,
        pid=_nullable("integer"),
        exit_code=_nullable("integer"),
        lines={"type": "array", "items": _ref("LogLine")},
    ),
    "Event": _obj(
        # A row id (one process), or with `cluster.redis` a stream entry id "<ms>-<seq>".
        id={"type": ["integer", "string", "null"]},
        ts=_NUM,
        time=_STR,
        type={"enum": list(TYPES)},
        server=_nullable("string"),
        category=_STR,
        severity={"enum": list(SEVERITIES)},
        reason=_STR,
        old=_nullable("string"),
        new=_nullable("string"),
        actor=_nullable("string"),
        action=_nullable("string"),
        outcome=_nullable("string"),
        request_id=_nullable("string"),
        replica=_nullable("string"),
    ),
    "EventPage": _obj(events={"type": "array", "items": _ref("Event")}, next_cursor=_nullable("string")),
    "Catalogue": _obj(
        namespace=_STR,
        tools={
            "type": "array",
            "items": _obj(
                name=_STR,
                original=_STR,
                title=_nullable("string"),
                description=_nullable("string"),
                exposed=_BOOL,
            ),
        },
        prompts={"type": "array", "items": _STR},
        resources={"type": "array", "items": _STR},
        templates={"type": "array", "items": _STR},
        collisions={"type": "array", "items": _ref("Collision")},
    ),
    "ServerDetail": {
        "allOf": [
            _ref("ServerSummary"),
            _obj(
                dormant=_BOOL,
                config={**_ANY_OBJ, "description": "the server's spec; literal secrets shown as ***"},
                process=_obj(pid=_nullable("integer"), exit_code=_nullable("integer")),
                catalogue=_ref("Catalogue"),
                events={"type": "array", "items": _ref("Event")},
                logs={"type": "array", "items": _ref("LogLine")},
            ),
        ]
    },
    "ActionResult": _obj(
        ["server", "action", "ok", "state", "error", "duration_ms"],
        server=_STR,
        action={"enum": list(ACTIONS)},
        ok=_BOOL,
        state=_nullable("string"),
        error=_nullable("string"),
        duration_ms=_NUM,
        cluster=_ref("Announced"),
    ),
    "Announced": {
        **_obj(
            announced={**_BOOL, "description": "whether the other replicas were told (false: Redis down)"},
            replicas={
                "type": "object",
                "additionalProperties": _ref("Acknowledged"),
                "description": "the replicas that acknowledged within the wait, by id",
            },
            pending={
                "type": "array",
                "items": _STR,
                "description": "live replicas that did not acknowledge within the wait",
            },
        ),
        "description": "with `cluster.redis`: what the other replicas did about it",
    },
    "Acknowledged": _obj(
        ["ok"],
        ok=_BOOL,
        error=_nullable("string"),
        results={"type": "object", "additionalProperties": _ref("ActionResult")},
        report=_ANY_OBJ,
    ),
    "BulkRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"servers": {"type": "array", "items": _STR, "description": "default: every server"}},
    },
    "BulkResult": _obj(
        ["action", "results", "summary"],
        action={"enum": list(ACTIONS)},
        results={"type": "object", "additionalProperties": _ref("ActionResult")},
        summary=_obj(requested=_INT, succeeded=_INT, failed=_INT),
        cluster=_ref("Announced"),
    ),
    "TestResult": _obj(
        ["server", "time", "ok", "stage", "error", "timings", "stderr"],
        server=_STR,
        time=_STR,
        ok=_BOOL,
        stage=_nullable("string"),
        error=_nullable("string"),
        server_info={"oneOf": [{"type": "null"}, _obj(name=_STR, version=_STR)]},
        protocol_version=_STR,
        tools=_INT,
        timings={
            "type": "object",
            "additionalProperties": _NUM,
            "description": "connect_initialize_ms, tools_list_ms, ping_ms, close_ms, total_ms",
        },
        stderr={"type": "array", "items": _STR},
    ),
    "RegisterRequest": {
        **_obj(name={**_STR, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}, spec=_ref("ServerSpec")),
        "additionalProperties": False,
    },
    "Registered": _obj(server=_ref("ServerSummary"), persisted=_BOOL, note=_STR),
    "Removed": _obj(
        ["removed", "persisted", "note"],
        removed=_STR,
        persisted=_BOOL,
        note=_STR,
        cluster=_obj(announced=_BOOL),
    ),
    "Cluster": _obj(
        replica=_STR,
        shared=_BOOL,
        streams={
            "type": "object",
            "additionalProperties": _obj(key=_STR, written=_INT, buffered=_INT, dropped=_INT),
        },
        reachable={
            **_nullable("boolean"),
            "description": "whether Redis answered (null without `cluster.redis`); false: `replicas` "
            "holds this replica only",
        },
        replicas={"type": "array", "items": _ref("Replica"), "description": "every live replica, by id"},
    ),
    "Endpoint": _obj(
        path=_STR,
        name=_STR,
        default={**_BOOL, "description": "the default endpoint (`listen.path`): the whole fleet"},
        instructions=_nullable("string"),
        servers={
            "oneOf": [
                {"type": "null"},
                {"type": "object", "additionalProperties": {"oneOf": [{"type": "null"}, _ANY_OBJ]}},
            ],
            "description": "per server, what the endpoint takes of it (null: all of it); null: every server",
        },
        auth=_obj(
            roles={"oneOf": [{"type": "null"}, {"type": "array", "items": _STR}]},
            identities={"oneOf": [{"type": "null"}, {"type": "array", "items": _STR}]},
        ),
        counts=_obj(tools=_INT, prompts=_INT, resources=_INT, templates=_INT),
    ),
    "Endpoints": _obj(endpoints={"type": "array", "items": _ref("Endpoint")}),
    "Replica": _obj(
        replica=_STR,
        address={**_nullable("string"), "description": "host:port it listens on (or `cluster.address`)"},
        up_since=_nullable("string", format="date-time"),
        seen={**_STR, "format": "date-time", "description": "its last heartbeat"},
        load=_obj(
            in_flight={**_INT, "description": "calls in flight to its backends"},
            calls={**_nullable("integer"), "description": "calls relayed since it started"},
            calls_per_second=_nullable("number"),
        ),
        backends={
            "type": "object",
            "additionalProperties": _obj(
                state={"enum": _STATES},
                available=_BOOL,
                restarts=_INT,
                in_flight=_INT,
                started_at=_nullable("string", format="date-time"),
            ),
        },
    ),
    "PinChange": _obj(
        server=_STR,
        tool={**_STR, "description": "the backend's own name of the tool"},
        pinned={**_STR, "description": "the trusted fingerprint"},
        current={**_STR, "description": "what the backend shows now"},
        seen={**_STR, "description": "when the change was first seen here"},
    ),
    "Pins": _obj(
        shared={**_BOOL, "description": "pins are the cluster's (`cluster.redis`)"},
        mode={"enum": ["warn", "hide"]},
        changes={"type": "array", "items": _ref("PinChange")},
    ),
    "PinRequest": {
        **_obj(server=_STR, tool=_STR),
        "additionalProperties": False,
    },
    "PinAccepted": _obj(accepted=_obj(server=_STR, tool=_STR), shared=_BOOL),
    "Config": _obj(source=_nullable("string"), config=_ANY_OBJ, admin=_ANY_OBJ),
    "ReloadResult": _obj(
        ["report", "duration_ms"], report=_ANY_OBJ, duration_ms=_NUM, cluster=_ref("Announced")
    ),
}

# What the document builder reuses.
STR, INT, BOOL, ANY_OBJ, ref = _STR, _INT, _BOOL, _ANY_OBJ, _ref
