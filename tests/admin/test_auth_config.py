"""Admin API: who gets in, the one error shape, the redacted configuration, and reload."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from gateway.admin._redact import redact
from gateway.config import load_config
from gateway.config.admin import AdminConfig
from tests._support import config, misbehave
from tests.admin._helpers import ADMIN_KEY, NAMED_KEY, admin_config, error_of, hashed, serve_admin

pytestmark = pytest.mark.anyio
MW_ADMIN_KEY = "mw-admin-key"
MW_READER_KEY = "mw-reader-key"


# -- authentication ------------------------------------------------------------------------------


async def test_admin_keys_are_required_and_checked() -> None:
    async with serve_admin(config({"mb": misbehave()})) as gw:
        async with gw.client(key=None) as anonymous:
            error = error_of(await anonymous.get("/servers"), 401, "unauthorized")
            assert "credentials required" in error["message"]
            r = await anonymous.get("/servers")
            assert r.headers["www-authenticate"].startswith("Bearer realm=")
            error_of(await anonymous.post("/servers/mb/stop"), 401, "unauthorized")
            error_of(await anonymous.get("/servers", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}),
                     401, "unauthorized")  # fmt: skip
            # The document maps the whole admin surface: it is the admin's, like the API it describes.
            error_of(await anonymous.get("/openapi.json"), 401, "unauthorized")
        async with gw.client(key="wrong") as wrong:
            assert (
                error_of(await wrong.get("/servers"), 401, "unauthorized")["message"]
                == "unknown admin credentials"
            )
        async with gw.client(key=None, **{"X-API-Key": ADMIN_KEY}) as by_header:
            assert (await by_header.get("/servers")).status_code == 200
            assert (await by_header.get("/openapi.json")).json()["openapi"].startswith("3.1")
        async with gw.client(key=ADMIN_KEY.upper()) as near_miss:
            error_of(await near_miss.get("/servers"), 401, "unauthorized")
        assert gw.fleet.backends["mb"].available  # the refused stop did nothing
        async with gw.client(key=NAMED_KEY) as ops:
            await ops.post("/servers/mb/test")
            actors = [
                e["actor"] for e in (await ops.get("/events", params={"type": "action"})).json()["events"]
            ]
            assert actors == ["ops-bot"]
            unnamed = "admin-key:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest()[:8]
        async with gw.client() as admin:
            await admin.post("/servers/mb/test")
            events = (await admin.get("/events", params={"type": "action"})).json()["events"]
            assert events[0]["actor"] == unnamed and ADMIN_KEY not in str(events)


async def test_without_any_admin_credentials_everyone_is_refused() -> None:
    async with serve_admin(config({"mb": misbehave()}), AdminConfig()) as gw, gw.client() as http:
        error = error_of(await http.get("/servers"), 401, "unauthorized")
        assert "no credentials configured" in error["message"]


async def test_an_identity_with_the_admin_role_from_the_auth_middleware_gets_in() -> None:
    auth = {
        "use": "auth",
        "options": {
            "api_keys": [
                {"name": "root", "key": hashed(MW_ADMIN_KEY), "roles": ["admin"]},
                {"name": "reader", "key": hashed(MW_READER_KEY), "roles": ["reader"]},
            ]
        },
    }
    cfg = config({"mb": misbehave()}, middleware=[auth])
    async with serve_admin(cfg, admin_config()) as gw:
        async with gw.client(key=MW_ADMIN_KEY) as root:
            assert (await root.post("/servers/mb/test")).status_code == 200
            events = (await root.get("/events", params={"type": "action"})).json()["events"]
            assert [e["actor"] for e in events] == ["root"]
        async with gw.client(key=MW_READER_KEY) as reader:
            error = error_of(await reader.get("/servers"), 403, "forbidden")
            assert "'reader'" in error["message"] and "admin" in error["message"]
        async with gw.client(key=ADMIN_KEY) as own_key:  # the admin API's own keys still work
            assert (await own_key.get("/servers")).status_code == 200
        async with gw.client(key="nobody") as nobody:
            error_of(await nobody.get("/servers"), 401, "unauthorized")


def test_admin_keys_must_be_hashed_and_are_never_echoed() -> None:
    with pytest.raises(ValidationError) as err:
        AdminConfig.model_validate({"api_keys": ["plain-secret-key"]})
    assert "sha256" in str(err.value) and "plain-secret-key" not in str(err.value)
    with pytest.raises(ValidationError) as err:
        AdminConfig.model_validate({"api_keys": [{"name": "x", "key": "also-plain"}]})
    assert "also-plain" not in str(err.value)
    with pytest.raises(ValidationError):
        AdminConfig.model_validate({"events": {"redis": "http://127.0.0.1:6379"}})
    assert (
        AdminConfig.model_validate({"events": {"redis": "${env:REDIS_URL}"}}).events.redis
        == "${env:REDIS_URL}"
    )


# -- the error shape and request ids -------------------------------------------------------------


async def test_every_error_has_the_same_shape_and_a_request_id() -> None:
    async with serve_admin(config({"mb": misbehave()})) as gw, gw.client() as http:
        error = error_of(await http.get("/servers/ghost"), 404, "not_found")
        assert error["details"] == {"server": "ghost"}
        error_of(await http.get("/no/such/thing"), 404, "not_found")
        error_of(await http.delete("/servers"), 405, "method_not_allowed")
        error_of(await http.get("/servers/mb", params={"events": "many"}), 400, "invalid_parameter")
        error_of(await http.post("/servers", content=b"[1,"), 400, "invalid_request")
        error_of(await http.post("/servers", content=b"x" * (1 << 21)), 413, "payload_too_large")
        error_of(await http.post("/config/reload"), 409, "not_configured")

        r = await http.get("/servers/ghost", headers={"X-Request-Id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123" and r.json()["error"]["request_id"] == "abc-123"
        r = await http.get("/servers/ghost", headers={"X-Request-Id": "bad id\twith spaces"})
        minted = r.headers["x-request-id"]
        assert (
            minted != "bad id\twith spaces"
            and len(minted) == 16
            and r.json()["error"]["request_id"] == minted
        )
        a, b = (
            (await http.get("/servers")).headers["x-request-id"],
            (await http.get("/servers")).headers["x-request-id"],
        )
        assert a != b


# -- configuration -------------------------------------------------------------------------------

SECRETS = {
    "abc-literal-key",
    "tok-literal",
    "hunter2",
    "pw-in-url",
    "bearer-literal",
    "qs-secret",
    "dflt-secret",
}


def _spec_with_secrets() -> dict[str, Any]:
    return misbehave(
        "--token=tok-literal",
        "--password",
        "hunter2",
        "--name",
        "visible-name",
        "--api-key=${env:MB_KEY}",
        env={"API_KEY": "abc-literal-key", "DB_PASSWORD": "${env:DB_PASSWORD}", "LOG_LEVEL": "debug"},
        env_schema=[{"name": "X_TOKEN", "secret": True, "required": False, "default": "dflt-secret"}],
    )


async def test_config_is_shown_with_secrets_redacted() -> None:
    remote = {
        "type": "http",
        "url": "http://user:pw-in-url@127.0.0.1:9/mcp?api_key=qs-secret&mode=fast",
        "headers": {"Authorization": "Bearer bearer-literal", "X-Trace": "on", "X-Api-Key": "${file:/run/k}"},
        "bearer_token": "${env:REMOTE_TOKEN}",
        "autostart": False,
    }
    cfg = config({"mb": _spec_with_secrets(), "remote": remote})
    async with serve_admin(cfg, wait=True) as gw, gw.client() as http:
        r = await http.get("/config")
        assert r.status_code == 200
        assert not any(secret in r.text for secret in SECRETS), r.text
        servers = r.json()["config"]["servers"]
        mb, rem = servers["mb"], servers["remote"]
        assert mb["env"] == {"API_KEY": "***", "DB_PASSWORD": "${env:DB_PASSWORD}", "LOG_LEVEL": "debug"}
        assert mb["args"][-6:] == ["--token=***", "--password", "***", "--name", "visible-name",
                                   "--api-key=${env:MB_KEY}"]  # fmt: skip
        assert mb["env_schema"][0]["default"] == "***"
        assert rem["headers"] == {"Authorization": "***", "X-Trace": "on", "X-Api-Key": "${file:/run/k}"}
        assert rem["bearer_token"] == "${env:REMOTE_TOKEN}"
        assert rem["url"] == "http://user:***@127.0.0.1:9/mcp?api_key=***&mode=fast"
        admin = r.json()["admin"]
        assert all(k == "***" or k.get("key") == "***" for k in admin["api_keys"])

        detail = await http.get("/servers/mb")
        assert not any(secret in detail.text for secret in SECRETS)
        assert detail.json()["config"]["env"]["DB_PASSWORD"] == "${env:DB_PASSWORD}"
        assert detail.json()["config"]["env"]["API_KEY"] == "***"


def test_redaction_rules() -> None:
    assert redact({"password": 5, "token": None, "auth": {"user": "u", "list": ["a", "${env:B}"]}}) == {
        "password": 5, "token": None, "auth": {"user": "***", "list": ["***", "${env:B}"]},
    }  # fmt: skip
    assert redact({"secret_name": "secret_ref:db"}) == {"secret_name": "secret_ref:db"}
    assert redact(["--auth-token", "--other"]) == ["--auth-token", "--other"]  # a flag is not a value
    assert redact("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert redact("https://example.test/a?b=1") == "https://example.test/a?b=1"


async def test_reload_applies_the_file_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"servers": {"a": misbehave()}}))
    async with serve_admin(load_config(path), config_path=path) as gw, gw.client() as http:
        assert (await http.post("/servers", json={"name": "rt", "spec": misbehave()})).status_code == 201
        path.write_text(yaml.safe_dump({"servers": {"a": misbehave(), "b": misbehave()}}))
        r = await http.post("/config/reload")
        assert r.status_code == 200, r.text
        # The file is the truth: the runtime registration goes, the new file entry comes.
        assert r.json()["report"]["servers"] == {
            "added": ["b"],
            "removed": ["rt"],
            "changed": [],
            "unchanged": ["a"],
        }
        assert set(gw.fleet.backends) == {"a", "b"}
        assert (await http.get("/config")).json()["source"] == str(path)

        path.write_text("servers:\n  a:\n    comand: nope\n")
        error = error_of(await http.post("/config/reload"), 422, "invalid_config")
        assert any("servers.a.comand: unknown key" in p for p in error["details"]["problems"])
        assert set(gw.fleet.backends) == {"a", "b"}
        audit = (await http.get("/events", params={"type": "action", "category": "admin"})).json()["events"]
        assert [(e["action"], e["outcome"]) for e in audit if e["action"] == "reload"] == [
            ("reload", "failed"), ("reload", "ok"),
        ]  # fmt: skip


async def test_a_refused_reload_keeps_the_secrets_config(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"servers": {"a": misbehave()}}))
    environ = {"MCP_SECRET_DB": "old", "NEW_DB": "new"}
    async with serve_admin(load_config(path), config_path=path) as gw, gw.client() as http:
        assert gw.fleet.secrets.resolve("secret_ref:db", where="t", environ=environ) == "old"
        # Valid as a file; refused when the middleware is built, after the secrets were read.
        path.write_text(
            yaml.safe_dump(
                {
                    "secrets": {"env_prefix": "NEW_"},
                    "servers": {"a": misbehave()},
                    "middleware": [{"use": "nosuch:Thing"}],
                }
            )
        )
        error = error_of(await http.post("/config/reload"), 422, "invalid_config")
        assert any("nosuch" in p for p in error["details"]["problems"])
        assert gw.fleet.secrets.resolve("secret_ref:db", where="t", environ=environ) == "old"
