"""Middlewares used by the chain tests, loaded by "module:attr" like any plugin."""

from __future__ import annotations

from typing import Any

from gateway.errors import Denied
from gateway.middleware import Call, CallNext, Result

ORDER: list[str] = []


class Record:
    def __init__(self, label: str) -> None:
        self.label = label

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        ORDER.append(f"{self.label}>{call.method}")
        result = await call_next(call)
        ORDER.append(f"{self.label}<{call.method}")
        return result


class DenyTool:
    def __init__(self, tool: str) -> None:
        self.tool = tool

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.name == self.tool:
            raise Denied(f"{self.tool} is not allowed")
        return await call_next(call)


class Shout:
    """Rewrites the request (arguments) and the result."""

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.method == "tools/call":
            args: dict[str, Any] = call.params.setdefault("arguments", {})
            args["text"] = str(args.get("text", "")).upper()
        result = await call_next(call)
        if call.method == "tools/call":
            result = {**result, "_meta": {"shouted": True}}
        return result


class Broken:
    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        result = await call_next(call)
        if call.method == "tools/call":
            raise RuntimeError("bug in a plugin")
        return result
