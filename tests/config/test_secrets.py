"""Secret references and env_schema: resolved and checked at launch, never printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel, ValidationError

from gateway.config import secrets
from gateway.config.models import EnvVar, SecretsConfig
from gateway.errors import SecretError
from gateway.fleet import Fleet
from tests._support import config, misbehave


def test_secret_ref_from_file_then_environment(tmp_path: Path) -> None:
    store = tmp_path / "secrets.yaml"
    store.write_text("github_token: ghp-from-file\n")
    known = secrets.Secrets(SecretsConfig(file=str(store)))
    env = {"MCP_SECRET_SLACK_TOKEN": "xoxb-from-env"}
    assert known.resolve("secret_ref:github_token", where="k", environ=env) == "ghp-from-file"
    assert known.resolve("secret_ref:slack_token", where="k", environ=env) == "xoxb-from-env"
    with pytest.raises(SecretError) as err:
        known.resolve("secret_ref:missing", where="servers.a.env.X", environ=env)
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


# -- SecretValues: every resolved value, masked by value ---------------------------------------


def test_resolved_values_are_registered_with_the_name_of_their_reference(tmp_path: Path) -> None:
    key_file = tmp_path / "api.key"
    key_file.write_text("lantern-orchard-pebble\n")
    store = tmp_path / "secrets.yaml"
    store.write_text("db: velvet-harbor-quill\n")
    known = secrets.Secrets(SecretsConfig(file=str(store)))
    env = {"TOKEN": "marble-thicket-sorrel"}
    assert known.resolve("Bearer ${env:TOKEN}", where="k", environ=env) == "Bearer marble-thicket-sorrel"
    known.resolve(f"${{file:{key_file}}}", where="k", environ=env)
    known.resolve("secret_ref:db", where="k", environ=env)
    text = "a marble-thicket-sorrel b lantern-orchard-pebble c velvet-harbor-quill d"
    assert known.mask(text) == "a [secret:TOKEN] b [secret:api.key] c [secret:db] d"


def test_nothing_registered_costs_nothing_and_changes_nothing() -> None:
    known = secrets.SecretValues()
    assert not known
    text, value = "plain text", {"content": [{"type": "text", "text": "x"}]}
    assert known.mask(text) is text and known.mask_json(value) is value
    assert known.mask_bytes(b"abc") == b"abc"


def test_short_values_are_not_masked() -> None:
    known = secrets.SecretValues()
    known.add("12345", "PIN")  # under MIN_LENGTH: it would garble ordinary text
    assert not known and known.mask("call 12345") == "call 12345"
    known.add("123456", "PIN6")
    assert known.mask("call 123456") == "call [secret:PIN6]"


def test_longest_value_first_and_json_escaped_forms() -> None:
    known = secrets.SecretValues()
    known.add("quiet-river", "SHORT")
    known.add("quiet-river-stone", "LONG")  # contains the other: masked whole, not in part
    known.add('say "hello" \\ now', "QUOTED")
    assert known.mask("x quiet-river-stone y quiet-river") == "x [secret:LONG] y [secret:SHORT]"
    encoded = json.dumps({"text": 'he said: say "hello" \\ now'})
    assert "hello" not in known.mask(encoded) and "[secret:QUOTED]" in known.mask(encoded)
    assert json.loads(known.mask(encoded)) == {"text": "he said: [secret:QUOTED]"}


def test_a_multi_line_value_is_masked_line_by_line_too() -> None:
    known = secrets.SecretValues()
    known.add("first-line-abc\nsecond-line-def\n", "PEM")
    assert known.mask("x first-line-abc\nsecond-line-def y") == "x [secret:PEM] y"
    assert known.mask("stderr: second-line-def") == "stderr: [secret:PEM]"


def test_mask_json_walks_only_on_a_hit_and_never_changes_its_input() -> None:
    known = secrets.SecretValues()
    known.add("amber-falcon-wick", "K")
    clean: dict[str, object] = {"content": [{"type": "text", "text": "nothing here"}], "isError": False}
    assert known.mask_json(clean) is clean
    shared = [{"type": "text", "text": "key amber-falcon-wick"}]
    result = {"content": shared, "structuredContent": {"amber-falcon-wick": 1}, "n": 3}
    masked = known.mask_json(result)
    assert masked == {
        "content": [{"type": "text", "text": "key [secret:K]"}],
        "structuredContent": {"[secret:K]": 1},
        "n": 3,
    }
    assert shared[0]["text"] == "key amber-falcon-wick"  # the input (maybe a shared list) is as it was


def test_middleware_option_references_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "copper-meadow-lark")
    monkeypatch.setenv("REDIS_PW", "hollow-ember-finch")
    known = secrets.Secrets()
    options = {
        "secret": "${env:JWT_SECRET}",
        "storage": "redis://:${env:REDIS_PW}@127.0.0.1:6379/0",
        "nested": [{"x": "${env:NOT_SET_ANYWHERE}"}],  # left for the option's validator to report
        "plain": "not a reference",
    }
    known.register_references(options, where="options")
    assert known.mask("copper-meadow-lark hollow-ember-finch") == "[secret:JWT_SECRET] [secret:REDIS_PW]"
    assert len(known) > 0 and known.mask("not a reference") == "not a reference"


@pytest.mark.anyio
async def test_two_gateways_in_one_process_resolve_against_their_own_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each gateway's `secrets:` is its own: creating a second gateway must not move the first
    # one's `secret_ref:` lookups (a module-level setting did, for whatever launched after it).
    monkeypatch.setenv("FIRST_VENDOR", "first-value")
    monkeypatch.setenv("SECOND_VENDOR", "second-value")
    spec = misbehave(env={"VENDOR_KEY": "secret_ref:vendor"})
    first = Fleet(config({"mb": spec}, secrets={"env_prefix": "FIRST_"}))
    second = Fleet(config({"mb": spec}, secrets={"env_prefix": "SECOND_"}))
    seen = []
    for fleet in (first, second):
        async with fleet.running():
            with anyio.fail_after(30):
                await fleet.wait_started()
            result = await fleet.backends["mb"].request(
                "tools/call", {"name": "env", "arguments": {"name": "VENDOR_KEY"}}
            )
        seen.append(result["structuredContent"]["value"])
    # Masked in the result by the gateway that resolved it, not by the other.
    assert first.secrets.mask("first-value second-value") == "[secret:vendor] second-value"
    assert seen == ["first-value", "second-value"]


def test_the_config_models_do_not_import_the_admin_api() -> None:
    # Every configuration model lives in gateway.config; gateway.admin is runtime code, which
    # imports the fleet (and so the config): importing the config must not import it back.
    code = "import sys, gateway.config.models; print(sorted(m for m in sys.modules if 'gateway.admin' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_an_option_validated_with_a_context_resolves_against_its_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A plugin validating its options itself hands the gateway's secrets in validation context.
    class Options(BaseModel):
        token: secrets.ResolvedStr

    monkeypatch.setenv("CTX_TOKEN", "pewter-garland-moss")
    gateway = secrets.Secrets(SecretsConfig(env_prefix="CTX_"))
    options = Options.model_validate({"token": "secret_ref:token"}, context={"secrets": gateway})
    assert options.token == "pewter-garland-moss"
    assert gateway.mask("pewter-garland-moss") == "[secret:token]"
    with pytest.raises(ValidationError):  # without it: the default prefix, where it is not defined
        Options.model_validate({"token": "secret_ref:token"})
