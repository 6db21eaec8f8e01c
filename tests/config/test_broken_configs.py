"""Broken configs, each run through `check --no-start`, `check` and `serve` as real processes.

The three must agree (`gateway.config.validation` is the one check): the same exit code and the
same messages, every message naming the file given, the line where there is one, the key path and
the fix. Nothing may be launched: each config also declares a "canary" server that would leave a
file behind if it were ever started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._infra import REPO_ROOT

COMMANDS = (["check", "--no-start"], ["check"], ["serve"])
UNSET = "MCPGW_TEST_SURELY_UNSET"
RUN_LIMIT = 90  # seconds; a refusal takes about one (more under load)


@dataclass
class Case:
    id: str
    config: dict[str, Any] | str  # a mapping (written as YAML or JSON), or the file's exact text
    # Per problem: substrings its line must hold after the file name (the key path, the fix).
    expected: list[tuple[str, ...]]
    suffix: str = ".yaml"
    env: dict[str, str] = field(default_factory=dict)


def _servers(**servers: Any) -> dict[str, Any]:
    return {"servers": servers}


def _mw(use: str, **options: Any) -> dict[str, Any]:
    return {"middleware": [{"use": use, "options": options}]}


CASES = [
    Case("unknown-middleware", {"middleware": [{"use": "telemetri"}]},
         [("middleware[0] (telemetri).use:", "did you mean 'telemetry'?")]),
    Case("plaintext-api-key", _mw("auth", api_keys=[{"name": "a", "key": "plain-text-key"}]),
         [("middleware[0] (auth).options.api_keys.0.key:", "sha256:")]),
    Case("unknown-auth-option", _mw("auth", anonymus=True),
         [("middleware[0] (auth).options.anonymus: unknown key", "did you mean 'anonymous'?")]),
    Case("malformed-rate", _mw("ratelimit", per_tool="ten a second"),
         [("middleware[0] (ratelimit).options.per_tool:", "100/minute")]),
    Case("unset-env-in-middleware", _mw("ratelimit", storage=f"${{env:{UNSET}}}"),
         [("middleware[0] (ratelimit).options.storage:", f"${{env:{UNSET}}}")]),
    Case("bad-telemetry-option", _mw("telemetry", sample_ratio=0.5),
         [("middleware[0] (telemetry).options.sample_ratio:", "otlp_endpoint")]),
    Case("bad-regex-plugin", _mw("plugins.deny_pattern:DenyPattern", patterns=["(unclosed"]),
         [("middleware[0] (plugins.deny_pattern:DenyPattern).options.patterns:",
           "not a valid regular expression")]),
    Case("plugin-does-not-import", {"middleware": [{"use": "no_such_plugin_module:Thing"}]},
         [("middleware[0] (no_such_plugin_module:Thing).use:", "cannot import", "installed")]),
    Case("unknown-server-key", _servers(s={"command": "x", "argz": []}),
         [("servers.s.argz: unknown key", "did you mean 'args'?", "mcp-gateway schema")]),
    Case("missing-required-key", _servers(s={"type": "stdio", "args": []}),
         [("servers.s.command:", "required key is missing", "add `command:`")]),
    Case("wrong-type", _servers(s={"command": "x", "args": "--one --two"}),
         [("servers.s.args:", "must be a valid list")]),
    Case("bad-enum", _servers(s={"command": "x", "restart": "sometimes"}),
         [("servers.s.restart:", "must be 'always', 'on-failure' or 'never'")]),
    Case("enum-typo", _servers(s={"command": "x", "session": "perclient"}),
         [("servers.s.session:", "did you mean 'per-client'?")]),
    Case("unknown-server-type", _servers(s={"type": "stdoi", "command": "x"}),
         [("servers.s:", "did you mean 'stdio'?", "use one of")]),
    Case("duplicate-namespace", _servers(a={"command": "x"}, b={"command": "y", "prefix": "a"}),
         [("servers:", "'a' and 'b'", "different `prefix:`")]),
    Case("negative-timeout", _servers(s={"command": "x", "timeout": -5}),
         [("servers.s.timeout:", "must be greater than 0")]),
    Case("override-typo", _servers(s={"command": "x", "overrides": {"t": {"hidde": {"a": 1}}}}),
         [("servers.s.overrides.t.hidde: unknown key", "did you mean 'hide'?")]),
    Case("override-bad-schema",
         _servers(s={"command": "x", "overrides": {"t": {"schema": {"a": {"type": 7}}}}}),
         [("servers.s.overrides.t.schema:", "`a.type` is not valid JSON Schema")]),
    Case("unset-env-reference", _servers(s={"command": "x", "env": {"KEY": f"${{env:{UNSET}}}"}}),
         [("servers.s.env.KEY:", f"{UNSET} is not set", f"${{env:{UNSET}}}")]),
    Case("env-schema-unmet",
         _servers(s={"command": "x", "env": {"RETRIES": "three"},
                     "env_schema": [{"name": "API_KEY", "description": "from the console"},
                                    {"name": "RETRIES", "type": "integer"}]}),
         [("servers.s.env.API_KEY: required by env_schema (from the console) but not set",
           "add it to servers.s.env"),
          ("servers.s.env.RETRIES:", "'three' is not a valid integer")]),
    Case("unreadable-secret-file", _servers(s={"command": "x", "env": {"T": "${file:/nonexistent/token}"}}),
         [("servers.s.env.T:", "cannot read secret file /nonexistent/token")]),
    Case("undefined-secret-ref",
         _servers(s={"url": "http://127.0.0.1:9/mcp", "bearer_token": "secret_ref:nope"}),
         [("servers.s.bearer_token:", "secret 'nope' is not defined", "MCP_SECRET_NOPE")]),
    Case("unknown-top-level-key", {"middlewares": []},
         [("middlewares: unknown key", "did you mean 'middleware'?")]),
    Case("admin-key-in-clear", {"admin": {"api_keys": ["plain-admin-key"]}},
         [("admin.api_keys:", "not stored in clear", "sha256:")]),
    Case("yaml-syntax", "servers:\n  canary: {command: x}\n  s: [unclosed\n",
         [(":4:1: invalid YAML",)]),
    Case("json-syntax", '{"mcpServers": {"s": {"command": "x",}}}', [(":1:38: invalid JSON",)],
         suffix=".json"),
    Case("json-desktop-typo", {"mcpServers": {"s": {"comand": "x"}}},
         [("mcpServers.s.command:", "required key is missing"),
          ("mcpServers.s.comand: unknown key", "did you mean 'command'?")], suffix=".json"),
    Case("json-desktop-not-a-mapping", {"mcpServers": ["x"]},
         [("mcpServers: must be a mapping",)], suffix=".json"),
    Case("port-in-use", {"listen": {"port": "PORT"}},
         [("listen.port:", "Address already in use", "choose another port")]),
    Case("everything-at-once",
         {**_servers(s={"command": "x", "timeout": 0, "env": {"K": f"${{env:{UNSET}}}"}}),
          **_mw("auth", anonymus=True)},
         [("servers.s.timeout:", "greater than 0"), ("servers.s.env.K:", UNSET),
          ("middleware[0] (auth).options.anonymus:", "did you mean")]),
]  # fmt: skip


def _write(case: Case, directory: Path, canary: Path, port: int) -> Path:
    path = directory / f"broken-{case.id}{case.suffix}"
    if isinstance(case.config, str):
        path.write_text(case.config)
        return path
    # Launching it would leave the canary file: proof that a backend was started.
    spy = {"command": sys.executable, "args": ["-c", f"open({str(canary)!r}, 'w').close()"]}
    data = json.loads(json.dumps(case.config).replace('"PORT"', str(port)))
    if case.suffix == ".json":
        servers = data.get("mcpServers")
        if isinstance(servers, dict):
            servers["canary"] = spy
        path.write_text(json.dumps(data, indent=2))
    else:
        data.setdefault("servers", {})["canary"] = spy
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(command: list[str], path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gateway", *command, "--config", str(path)]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=RUN_LIMIT, env=env, cwd=path.parent
        )
    except subprocess.TimeoutExpired:  # a `serve` that took the config: killed by subprocess.run
        return subprocess.CompletedProcess(argv, -1, "", f"still running after {RUN_LIMIT} s")


@pytest.mark.timeout(RUN_LIMIT * 3)
def test_every_command_refuses_a_broken_config_alike(tmp_path: Path, busy_port: int) -> None:
    assert len(CASES) >= 20
    canary = tmp_path / "a-backend-was-started"
    env = {k: v for k, v in os.environ.items() if k != UNSET and not k.startswith("MCP_SECRET_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    paths = {case.id: _write(case, tmp_path, canary, busy_port) for case in CASES}
    jobs = [(case, command) for case in CASES for command in COMMANDS]
    # Concurrently: each run is a fresh interpreter (~0.8 s of CPU, most of it importing the SDK);
    # in turn they would take minutes on a loaded machine.
    with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 2))) as pool:
        runs = list(pool.map(lambda job: _run(job[1], paths[job[0].id], {**env, **job[0].env}), jobs))
    results: dict[str, list[subprocess.CompletedProcess[str]]] = {}
    for (case, _), run in zip(jobs, runs, strict=True):
        results.setdefault(case.id, []).append(run)

    failures = []
    for case in CASES:
        path, found = paths[case.id], results[case.id]
        try:
            _check(case, path, found)
        except AssertionError as exc:
            failures.append(f"{case.id}: {exc}")
    assert not canary.exists(), "a backend was started"
    assert not failures, "\n\n".join(failures)


def _check(case: Case, path: Path, found: list[subprocess.CompletedProcess[str]]) -> None:
    for command, run in zip(COMMANDS, found, strict=True):
        assert run.returncode == 2, f"{' '.join(command)} exited {run.returncode}:\n{run.stdout}{run.stderr}"
        assert run.stdout == "", f"{' '.join(command)} printed {run.stdout!r}"
        assert "Traceback" not in run.stderr, run.stderr
    texts = {run.stderr.replace("mcp-gateway", "COMMAND") for run in found}
    assert len(texts) == 1, "the commands disagree:\n" + "\n---\n".join(texts)
    lines = [line.strip() for line in found[0].stderr.splitlines()[1:]]
    assert len(lines) == len(case.expected), found[0].stderr
    assert "gateway.yaml" not in found[0].stderr
    for line, expected in zip(lines, case.expected, strict=True):
        assert line.startswith(f"{path}:") or line.startswith(f"{path}: "), line
        after = line.removeprefix(str(path))
        for fragment in expected:
            assert fragment in after, f"{fragment!r} not in {line!r}"
