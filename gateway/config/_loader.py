"""Read a config file (gateway YAML, or a desktop client's `mcpServers` JSON) into a model.

Every problem is reported at once, each as `FILE: key.path: what is wrong (the fix)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.config.models import GatewayConfig
from gateway.errors import ConfigError

# Keys of a desktop-client entry that have no meaning for the gateway and are dropped, not refused.
_DESKTOP_ONLY_KEYS = {"disabled", "autoApprove", "alwaysAllow", "transportType", "description"}


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (pass --config FILE, or create gateway.yaml)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<config>") -> GatewayConfig:
    data = _parse_document(text, source)
    if isinstance(data, dict) and "mcpServers" in data:
        data = _from_desktop_shape(data, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping with a `servers:` key"])
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(source, err) for err in exc.errors()]) from None


def _parse_document(text: str, source: str) -> Any:
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None


def _from_desktop_shape(data: dict[str, Any], source: str) -> dict[str, Any]:
    servers_in = data["mcpServers"]
    if not isinstance(servers_in, dict):
        raise ConfigError([f"{source}: mcpServers: must be a mapping of server name to its launch spec"])
    servers: dict[str, Any] = {}
    for name, spec in servers_in.items():
        if isinstance(spec, dict):
            if spec.get("disabled") is True:
                continue
            spec = {k: v for k, v in spec.items() if k not in _DESKTOP_ONLY_KEYS}
        servers[name] = spec
    rest = {k: v for k, v in data.items() if k != "mcpServers"}
    return {**rest, "servers": servers}


def _describe(source: str, err: Any) -> str:
    key, msg = _key_message(err)
    return f"{source}: {key}: {msg}"


def _key_message(err: Any) -> tuple[str, str]:
    """A pydantic error as (`key.path`, what is wrong and the fix)."""
    loc = [str(part) for part in err["loc"]]
    # Drop the discriminator tag pydantic inserts ("servers.time.stdio.command").
    if len(loc) >= 3 and loc[0] == "servers" and loc[2] in ("stdio", "http", "sse", "docker"):
        del loc[2]
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    msg = err["msg"]
    if kind == "extra_forbidden":
        msg = (
            "unknown key (check the spelling; `mcp-gateway check` lists the accepted keys in the JSON Schema)"
        )
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "union_tag_invalid":
        msg = f"unknown server type {err.get('ctx', {}).get('tag')!r} (use one of: stdio, http, sse, docker)"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    return key, msg
