"""Config loading: every mistake is named with its file, key path and fix; nothing starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import HttpServer, StdioServer, load_config, parse_config
from gateway.config.secrets import Secrets
from gateway.errors import ConfigError, SecretError


def problems(text: str, source: str = "gw.yaml") -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(text, source=source)
    return err.value.problems


def test_minimal_stdio_server_infers_type() -> None:
    cfg = parse_config("servers:\n  time:\n    command: mcp-server-time\n    args: [--local-timezone, UTC]\n")
    spec = cfg.servers["time"]
    assert isinstance(spec, StdioServer) and spec.args == ["--local-timezone", "UTC"]


def test_url_infers_http() -> None:
    cfg = parse_config("servers:\n  remote:\n    url: http://127.0.0.1:9/mcp\n")
    assert isinstance(cfg.servers["remote"], HttpServer)


def test_all_problems_reported_at_once_with_key_paths() -> None:
    found = problems(
        "servers:\n  a: {type: stdio}\n  b: {command: x, tools: {alow: []}}\n  c: {type: grpc}\n"
    )
    assert "gw.yaml:2: servers.a.command: required key is missing (add `command:`)" in found
    typo = "gw.yaml:3: servers.b.tools.alow: unknown key; did you mean 'allow'?"
    assert any(p.startswith(typo) for p in found)
    assert "gw.yaml:4: servers.c: unknown server type 'grpc' (use one of: stdio, http, sse, docker)" in found


def test_duplicate_namespace_names_both_servers() -> None:
    found = problems("servers:\n  a: {command: x}\n  b: {command: y, prefix: a}\n")
    assert len(found) == 1 and "'a'" in found[0] and "'b'" in found[0] and "prefix" in found[0]


@pytest.mark.parametrize("bad", ["has__sep", "sp ace", "-leading"])
def test_bad_prefix_is_refused(bad: str) -> None:
    found = problems(f"servers:\n  a: {{command: x, prefix: '{bad}'}}\n")
    assert found[0].startswith("gw.yaml:2: servers.a.prefix:")


def test_yaml_syntax_error_has_line_and_column() -> None:
    found = problems("servers:\n  a: [unclosed\n")
    assert found[0].startswith("gw.yaml:") and "invalid YAML" in found[0]


def test_desktop_json_shape(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": "mcp-server-time", "args": [], "env": {"TZ": "UTC"}},
                    "off": {"command": "x", "disabled": True},
                    "remote": {"type": "streamable-http", "url": "https://example.invalid/mcp"},
                }
            }
        )
    )
    cfg = load_config(path)
    assert set(cfg.servers) == {"time", "remote"}
    assert isinstance(cfg.servers["remote"], HttpServer)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml: file not found" in err.value.message


def test_secret_references_resolve_and_errors_never_hold_values(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("file-secret\n")
    env = {"TOKEN": "env-secret"}
    assert Secrets().resolve("Bearer ${env:TOKEN}", where="k", environ=env) == "Bearer env-secret"
    assert Secrets().resolve(f"${{file:{secret_file}}}", where="k", environ=env) == "file-secret"
    with pytest.raises(SecretError) as err:
        Secrets().resolve("${env:MISSING}", where="servers.a.env.KEY", environ=env)
    assert "MISSING" in err.value.message and "servers.a.env.KEY" in err.value.message
    with pytest.raises(SecretError):
        Secrets().resolve("${file:/nonexistent/secret}", where="k", environ=env)


def test_config_keeps_references_unresolved() -> None:
    cfg = parse_config("servers:\n  a:\n    command: x\n    env: {KEY: '${env:SECRET}'}\n")
    server = cfg.servers["a"]
    assert isinstance(server, StdioServer) and server.env == {"KEY": "${env:SECRET}"}
