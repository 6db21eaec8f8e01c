#!/usr/bin/env python3
"""many_tools: a stdio MCP server with N generated tools, standard library only.

`many_tools.py [N [NAME]]` (N default 1000): tools `tool_0000` ... each with a description and a
small input schema of the size real servers have (a few typed properties, one required), so that
listing them costs what listing a large real catalogue costs. Speaks the 2025-11-25 handshake:
initialize, ping, tools/list (one page), tools/call (answers "<NAME> <tool> <arguments JSON>").
"""

import json
import sys

_VERBS = ("get", "list", "create", "update", "delete", "search", "sync", "export")
_THINGS = ("issue", "file", "user", "invoice", "event", "metric", "ticket", "branch", "order", "note")


def tool(index: int) -> dict[str, object]:
    verb, thing = _VERBS[index % len(_VERBS)], _THINGS[(index // len(_VERBS)) % len(_THINGS)]
    return {
        "name": f"tool_{index:04d}",
        "title": f"{verb.title()} {thing} ({index})",
        "description": f"{verb.title()} a {thing} in workspace {index % 17}. Returns the {thing} as JSON; "
        f"fails if the {thing} does not exist or the caller lacks access.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": f"The {thing}'s identifier."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                "fields": {"type": "array", "items": {"type": "string"}, "description": "Fields to return."},
                "dry_run": {"type": "boolean", "default": False},
            },
            "required": ["id"],
        },
        "annotations": {"readOnlyHint": verb in ("get", "list", "search", "export")},
    }


def reply(request_id: object, result: dict[str, object]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    name = sys.argv[2] if len(sys.argv) > 2 else "many"
    tools = [tool(i) for i in range(count)]
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue  # a notification
        if method == "initialize":
            reply(
                request_id,
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": name, "version": "1"},
                },
            )
        elif method == "tools/list":
            reply(request_id, {"tools": tools})
        elif method == "tools/call":
            params = message.get("params") or {}
            text = f"{name} {params.get('name')} {json.dumps(params.get('arguments') or {}, sort_keys=True)}"
            reply(request_id, {"content": [{"type": "text", "text": text}]})
        else:
            reply(request_id, {})


if __name__ == "__main__":
    main()
