"""Secret references and env_schema: resolved and checked at launch, never printed."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from gateway.config import secrets
from gateway.config.models import EnvVar, SecretsConfig
from gateway.errors import SecretError
from gateway.fleet import Fleet
from tests._support import config, misbehave


@pytest.fixture(autouse=True)
def _reset_store() -> object:
    yield
    secrets.configure(SecretsConfig())


def test_secret_ref_from_file_then_environment(tmp_path: Path) -> None:
    store = tmp_path / "secrets.yaml"
    store.write_text("github_token: ghp-from-file\n")
    secrets.configure(SecretsConfig(file=str(store)))
    env = {"MCP_SECRET_SLACK_TOKEN": "xoxb-from-env"}
    assert secrets.resolve("secret_ref:github_token", where="k", environ=env) == "ghp-from-file"
    assert secrets.resolve("secret_ref:slack_token", where="k", environ=env) == "xoxb-from-env"
    with pytest.raises(SecretError) as err:
        secrets.resolve("secret_ref:missing", where="servers.a.env.X", environ=env)
    assert "MCP_SECRET_MISSING" in err.value.message and "servers.a.env.X" in err.value.message


def test_env_schema_defaults_types_and_missing_names() -> None:
    schema = [
        EnvVar(name="PORT", type="integer", default="8080"),
        EnvVar(name="API_KEY", secret=True, description="the vendor API key"),
        EnvVar(name="DEBUG", type="boolean", required=False),
        EnvVar(name="TOKEN", type="integer", secret=True),
    ]
    with pytest.raises(SecretError) as err:
        secrets.check_env_schema("svc", {"DEBUG": "maybe", "TOKEN": "s3cr3t"}, schema)
    message = err.value.message
    assert "servers.svc.env.API_KEY: required by env_schema (the vendor API key)" in message
    assert "servers.svc.env.DEBUG: 'maybe' is not a valid boolean" in message
    assert "servers.svc.env.TOKEN: the value is not a valid integer" in message
    assert "s3cr3t" not in message
    env = secrets.check_env_schema("svc", {"API_KEY": "k", "TOKEN": "1"}, schema)
    assert env["PORT"] == "8080"


@pytest.mark.anyio
async def test_a_missing_required_variable_fails_that_backend_before_it_starts() -> None:
    spec = misbehave(env_schema=[{"name": "VENDOR_KEY", "secret": True}], restart="never")
    fleet = Fleet(config({"mb": spec}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
        backend = fleet.backends["mb"]
        assert backend.state.value == "failed"
        assert "servers.mb.env.VENDOR_KEY" in (backend.last_error or "")
        assert backend.log.pid is None  # never launched


@pytest.mark.anyio
async def test_secret_ref_reaches_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SECRET_VENDOR", "v-123")
    fleet = Fleet(config({"mb": misbehave(env={"VENDOR_KEY": "secret_ref:vendor"})}))
    async with fleet.running():
        with anyio.fail_after(30):
            await fleet.wait_started()
        result = await fleet.backends["mb"].request(
            "tools/call", {"name": "env", "arguments": {"name": "VENDOR_KEY"}}
        )
    assert result["structuredContent"]["value"] == "v-123"
