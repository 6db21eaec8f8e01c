#!/usr/bin/env python3
"""tiny: the smallest stdio MCP server we could write, standard library only.

Starts in a few milliseconds and a few MB, so tests can run fleets of 50 of them. Speaks the
2025-11-25 handshake: initialize, ping, tools/list (one tool, `hello`), tools/call.

`tiny.py [NAME [TTL_MS SCOPE]]`: with TTL_MS and SCOPE, its tools/list result carries the
2026-07-28 freshness hint `ttlMs`/`cacheScope` (raw JSON, which a 2025-11-25 client passes on).
With the environment variable TINY_DESCRIPTION_FILE, `hello`'s description is that file's text,
read at every tools/list (a tool whose definition a test changes under the gateway). A call
answers "NAME PID".
"""

import json
import os
import sys


def reply(request_id: object, result: dict[str, object]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    hint: dict[str, object] = {}
    if len(sys.argv) > 3:
        hint = {"ttlMs": int(sys.argv[2]), "cacheScope": sys.argv[3]}
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
            tool: dict[str, object] = {"name": "hello", "inputSchema": {"type": "object"}}
            described = os.environ.get("TINY_DESCRIPTION_FILE")
            if described:
                with open(described) as f:
                    tool["description"] = f.read()
            reply(request_id, {"tools": [tool], **hint})
        elif method == "tools/call":
            text = f"{name} {os.getpid()}"
            reply(request_id, {"content": [{"type": "text", "text": text}]})
        else:
            reply(request_id, {})


if __name__ == "__main__":
    main()
