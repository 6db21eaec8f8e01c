"""gateway.config.validation: the one check every command runs, in-process."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from gateway.config.models import GatewayConfig, SecretsConfig
from gateway.config.validation import Listen, validate_file
from gateway.errors import ConfigError
from gateway.fleet import Fleet


def write(tmp_path: Path, data: object, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_valid_config_comes_with_its_middlewares_and_bound_socket(tmp_path: Path) -> None:
    path = write(tmp_path, {"listen": {"port": 0}, "middleware": [{"use": "audit", "options": {}}]})
    validated = validate_file(path, listen=Listen())
    assert validated.listener is not None
    try:
        host, port = validated.listener.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        # Bound: nobody else can take the port until the server does.
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
    finally:
        validated.listener.close()
    assert [type(m).__name__ for m in validated.middlewares] == ["Audit"]
    assert not (tmp_path / "audit.db").exists()  # created, not started: no file opened
    assert validate_file(path).listener is None  # stdio, tools, reload: no address


def test_a_port_given_on_the_command_line_is_named_as_such(tmp_path: Path, busy_port: int) -> None:
    path = write(tmp_path, {"servers": {}})
    with pytest.raises(ConfigError) as err:
        validate_file(path, listen=Listen(port=busy_port))
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}: --port: cannot listen on 127.0.0.1:{busy_port}")


def test_references_resolve_against_the_checked_config_then_the_setting_is_back(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text("token: from-the-file\n")
    running = SecretsConfig(env_prefix="RUNNING_")
    gateway = Fleet(GatewayConfig(secrets=running))  # a running gateway's secrets
    good = {
        "secrets": {"file": str(tmp_path / "secrets.yaml")},
        "servers": {"s": {"command": "x", "env": {"T": "secret_ref:token"}}},
    }
    validate_file(write(tmp_path, good))
    bad = {"servers": {"s": {"command": "x", "env": {"T": "secret_ref:token"}}}}
    with pytest.raises(ConfigError) as err:
        validate_file(write(tmp_path, bad))
    assert "servers.s.env.T: secret 'token' is not defined" in err.value.problems[0]
    # A reload's check must not leave the running gateway on the new file's secrets.
    assert gateway.secrets.source is running


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        (
            [{"path": "/mcp/a", "servers": {"mb": None}}, {"path": "/mcp/a/", "servers": {"mb": None}}],
            "endpoints[1] (/mcp/a/): path '/mcp/a' is already endpoints[0]'s; give it another path",
        ),
        (
            [{"path": "/mcp"}],
            "endpoints[0] (/mcp): path '/mcp' is already listen.path's; give it another path",
        ),
        (
            [{"path": "/admin/tools"}],
            "endpoints[0] (/admin/tools): path '/admin/tools' is the gateway's own /admin; use another path",
        ),
        ([{"path": "/healthz"}], "is the gateway's own /healthz"),
        (
            [{"path": "/mcp/x", "servers": {"mb": None, "nope": None}}],
            "endpoints[0] (/mcp/x): unknown server 'nope' (declared servers: mb)",
        ),
    ],
)
def test_a_bad_endpoint_is_refused_with_its_line_and_the_fix(
    tmp_path: Path, endpoints: list[dict[str, object]], expected: str
) -> None:
    data = {"servers": {"mb": {"command": "true"}}, "endpoints": endpoints}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = path.read_text().splitlines().index("endpoints:") + 1
    with pytest.raises(ConfigError) as err:
        validate_file(path)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}:{line}: endpoints: "), problem
    assert expected in problem, problem


def test_an_endpoint_selection_accepts_globs_names_and_lists(tmp_path: Path) -> None:
    selection = {"tools": ["get_*"], "prompts": {"deny": ["secret*"], "names": ["one"]}}
    path = write(
        tmp_path,
        {"servers": {"mb": {"command": "true"}}, "endpoints": [{"path": "/x", "servers": {"mb": selection}}]},
    )
    (endpoint,) = validate_file(path).config.endpoints
    chosen = endpoint.servers["mb"]
    assert chosen is not None
    assert (chosen.tools.allow, chosen.tools.names) == (["get_*"], [])
    assert (chosen.prompts.allow, chosen.prompts.deny, chosen.prompts.names) == (["*"], ["secret*"], ["one"])
    assert chosen.resources.allow == ["*"]


def test_per_endpoint_overrides_are_checked_like_a_servers(tmp_path: Path) -> None:
    good = {"path": "/x", "overrides": {"mb__echo": {"title": "Echo", "hide": {"text": "hi"}}}}
    path = write(tmp_path, {"servers": {"mb": {"command": "true"}}, "endpoints": [good]})
    validate_file(path)
    bad = {"path": "/x", "overrides": {"mb__echo": {"titel": "Echo"}}}
    path = write(tmp_path, {"servers": {"mb": {"command": "true"}}, "endpoints": [bad]})
    with pytest.raises(ConfigError) as err:
        validate_file(path)
    (problem,) = err.value.problems
    assert "endpoints.0.overrides.mb__echo.titel" in problem, problem
