"""Schemathesis hooks for the admin API run (loaded with SCHEMATHESIS_HOOKS).

Generated data is sent to a real gateway, so two kinds of case are made harmless first:
- `follow=true` on the logs endpoint opens a stream that never ends (it is tested on its own);
- a registered server spec would launch whatever command, or connect to whatever URL, the
  generator made up. It is pointed at loopback and a command that exits at once, with short
  timeouts, before it is sent; its shape (what the API must validate) is otherwise untouched.
"""

from __future__ import annotations

from typing import Any

import schemathesis

_HARMLESS_COMMAND = "/bin/false"
_LOOPBACK_URL = "http://127.0.0.1:9/mcp"
_TRUE = ("1", "true", "yes", "on")
_SHORT = {"timeout": 2.0, "startup_timeout": 2.0, "connect_timeout": 1.0}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tame(spec: dict[str, Any]) -> None:
    # Only values that are already valid are replaced (with other valid ones): a case generated
    # to be invalid must stay invalid, or the negative-data check would be fooled.
    if isinstance(spec.get("command"), str) and spec["command"]:
        spec["command"] = _HARMLESS_COMMAND
        if isinstance(spec.get("args"), list):
            spec["args"] = []
        if isinstance(spec.get("cwd"), str):
            del spec["cwd"]
    if isinstance(spec.get("url"), str) and spec["url"].startswith(("http://", "https://")):
        spec["url"] = _LOOPBACK_URL
    if isinstance(spec.get("image"), str) and spec["image"]:
        spec["image"] = "local/never-pulled:none"
        if spec.get("pull", "never") in ("never", "missing", "always"):
            spec["pull"] = "never"  # a pull would reach a registry on the network
        if isinstance(spec.get("volumes"), list):
            spec["volumes"] = []
    for key, value in _SHORT.items():
        if _number(spec.get(key)) and spec[key] > value:
            spec[key] = value
    for key, value in (("autostart", False), ("lazy", False)):
        if isinstance(spec.get(key, False), bool):
            spec[key] = value
    restarts = spec.get("max_restarts", 0)
    if isinstance(restarts, int) and not isinstance(restarts, bool) and restarts >= 0:
        spec["max_restarts"] = 0


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    following = isinstance(case.query, dict) and str(case.query.get("follow", "")).lower() in _TRUE
    if case.method.upper() == "GET" and case.path.endswith("/logs") and following:
        case.query["follow"] = "false"
    if case.method.upper() == "POST" and case.path == "/servers" and isinstance(case.body, dict):
        spec = case.body.get("spec")
        if isinstance(spec, dict):
            _tame(spec)
