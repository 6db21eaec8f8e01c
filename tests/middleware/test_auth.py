"""The `auth` built-in: API keys, JWT (HS256, RS256 via a live JWKS), the 401 challenge, RFC 9728
metadata, per-identity lists and call checks, stdio identity, and option errors."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client as SdkClient
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.config import parse_config
from gateway.config.models import EndpointConfig
from gateway.errors import DENIED, ConfigError, Hidden
from gateway.middleware import Call, Identity, instantiate
from gateway.middleware.audit import AuditLog
from gateway.middleware.auth import Auth
from tests._support import (
    config,
    free_port,
    initialize,
    messages,
    misbehave,
    rpc,
    serve,
    serve_asgi,
    session,
    text_of,
)

pytestmark = pytest.mark.anyio

READER_KEY = "rk_test_9b1f0c2e7a4d4f0e8f1a6b3c5d7e9f11"
ADMIN_KEY = "ak_test_0f3e5d7c9b1a2c4e6f8a0b2d4f6e8a13"
HS_SECRET = "s" * 40  # >= 32 bytes, as RFC 7518 requires for HS256
AUDIENCE = "https://gw.test/mcp"
WAIT = 60.0


def hashed(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


RULES = [
    {"roles": ["admin"]},
    {"roles": ["reader"], "servers": ["alpha"], "tools": ["alpha__echo", "alpha__add"], "prompts": ["*"]},
    {"roles": ["reader"], "servers": ["beta"], "resources": ["beta+misbehave://static/*"]},
    {"roles": ["reader"], "tools": ["*__add"], "effect": "deny"},
]
KEYS = [
    {"name": "ci-bot", "key": hashed(READER_KEY), "roles": ["reader"], "labels": {"team": "infra"}},
    {"name": "ops", "key": hashed(ADMIN_KEY), "roles": ["admin"]},
]


def auth_config(servers: dict[str, Any] | None = None, **options: Any) -> Any:
    return config(servers or {"alpha": misbehave()}, middleware=[{"use": "auth", "options": options}])


@asynccontextmanager
async def connected(url: str, headers: dict[str, str], mode: str = "legacy") -> AsyncIterator[SdkClient]:
    """A real SDK client whose every HTTP request carries `headers`."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=WAIT) as http,
        SdkClient(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


async def post_initialize(url: str, headers: dict[str, str]) -> httpx.Response:
    body = initialize(client="t")
    async with httpx.AsyncClient(timeout=WAIT) as http:
        return await http.post(
            url, json=body, headers={"Accept": "application/json, text/event-stream", **headers}
        )


def challenge_params(response: httpx.Response) -> dict[str, str]:
    scheme, _, rest = response.headers["www-authenticate"].partition(" ")
    assert scheme == "Bearer"
    params = {}
    for part in rest.split('", '):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"')
    return params


# -- API keys, the challenge, the metadata ---------------------------------------------------


async def test_api_key_in_either_header_and_refusals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cfg = auth_config(api_keys=KEYS, realm="test-realm")
    async with serve(cfg) as gw:
        for headers in ({"Authorization": f"Bearer {ADMIN_KEY}"}, {"X-API-Key": ADMIN_KEY}):
            async with connected(gw.url, headers) as client:
                result = await client.call_tool("alpha__echo", {"text": "hi"})
                assert text_of(result) == "misbehave: hi"

        wrong = await post_initialize(gw.url, {"Authorization": "Bearer not-a-key-at-all"})
        assert wrong.status_code == 401
        params = challenge_params(wrong)
        assert params["realm"] == "test-realm"
        assert params["resource_metadata"] == f"{gw.base}/.well-known/oauth-protected-resource"
        assert params["error"] == "invalid_token"
        assert wrong.json()["error"] == "invalid_token"
        assert "not-a-key-at-all" not in wrong.text + str(wrong.headers)

        wrong_header = await post_initialize(gw.url, {"X-API-Key": READER_KEY + "x"})
        assert wrong_header.status_code == 401 and challenge_params(wrong_header)["error"] == "invalid_token"

        # No credentials (or an unsupported scheme): a challenge without an error code (RFC 6750 §3).
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
            missing = await post_initialize(gw.url, headers)
            assert missing.status_code == 401
            assert "error" not in challenge_params(missing)
            assert challenge_params(missing)["resource_metadata"].endswith(
                "/.well-known/oauth-protected-resource"
            )
        # Health probes stay open.
        async with httpx.AsyncClient(timeout=WAIT) as http:
            assert (await http.get(f"{gw.base}/healthz")).status_code == 200
    logged = caplog.text
    assert "refused" in logged and READER_KEY not in logged and "not-a-key-at-all" not in logged


async def test_protected_resource_metadata() -> None:
    cfg = auth_config(
        api_keys=KEYS,
        rules=RULES,
        authorization_servers=["https://idp.test/realms/mcp"],
    )
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        root = await http.get(f"{gw.base}/.well-known/oauth-protected-resource")
        suffixed = await http.get(f"{gw.base}/.well-known/oauth-protected-resource/mcp")
        other = await http.get(f"{gw.base}/.well-known/oauth-protected-resource/elsewhere")
    assert root.status_code == suffixed.status_code == 200
    assert root.json() == suffixed.json()
    doc = root.json()
    assert doc["resource"] == gw.url
    assert doc["authorization_servers"] == ["https://idp.test/realms/mcp"]
    assert doc["bearer_methods_supported"] == ["header"]
    assert doc["scopes_supported"] == ["admin", "reader"]
    assert doc["resource_name"] == cfg.name
    assert root.headers["cache-control"] == "no-store"  # derived from the Host header
    assert other.status_code == 404


async def test_configured_resource_is_used_for_metadata_and_challenge() -> None:
    cfg = auth_config(api_keys=KEYS, resource="https://gw.test/mcp", scopes_supported=["mcp:tools"])
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        doc = (await http.get(f"{gw.base}/.well-known/oauth-protected-resource/mcp")).json()
        refused = await post_initialize(gw.url, {})
    assert doc["resource"] == "https://gw.test/mcp" and doc["scopes_supported"] == ["mcp:tools"]
    assert "authorization_servers" not in doc
    assert (
        challenge_params(refused)["resource_metadata"]
        == "https://gw.test/.well-known/oauth-protected-resource"
    )


async def test_anonymous_roles_and_no_silent_downgrade() -> None:
    cfg = auth_config(
        api_keys=KEYS,
        anonymous={"roles": ["guest"]},
        rules=[{"roles": ["guest"], "tools": ["alpha__echo"]}, {"roles": ["admin"]}],
    )
    async with serve(cfg) as gw:
        async with connected(gw.url, {}) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["alpha__echo"]
        bad = await post_initialize(gw.url, {"X-API-Key": "wrong"})
        assert bad.status_code == 401


# -- authorization -----------------------------------------------------------------------------


async def test_reader_sees_and_calls_only_what_rules_allow_admin_sees_all() -> None:
    cfg = auth_config({"alpha": misbehave(), "beta": misbehave()}, api_keys=KEYS, rules=RULES)
    async with serve(cfg) as gw:
        async with connected(gw.url, {"X-API-Key": ADMIN_KEY}) as admin:
            admin_tools = {t.name for t in (await admin.list_tools()).tools}
            assert {"alpha__echo", "alpha__add", "alpha__fail", "beta__echo", "beta__add"} <= admin_tools
            assert len((await admin.list_resource_templates()).resource_templates) == 2
            assert text_of(await admin.call_tool("beta__add", {"a": 1, "b": 2})) == "3"

        async with connected(gw.url, {"Authorization": f"Bearer {READER_KEY}"}) as reader:
            assert [t.name for t in (await reader.list_tools()).tools] == ["alpha__echo"]  # add: denied
            assert [p.name for p in (await reader.list_prompts()).prompts] == ["alpha__greet"]
            assert [str(r.uri) for r in (await reader.list_resources()).resources] == [
                "beta+misbehave://static/hello"
            ]
            assert (await reader.list_resource_templates()).resource_templates == []
            assert text_of(await reader.call_tool("alpha__echo", {"text": "ok"})) == "misbehave: ok"
            await reader.read_resource("beta+misbehave://static/hello")
            await reader.get_prompt("alpha__greet", {"name": "x"})

            # What the reader may not see reads as not there (see the test below for the details).
            for forbidden in ("beta__echo", "alpha__add", "alpha__fail"):
                with pytest.raises(MCPError) as err:
                    await reader.call_tool(forbidden, {"text": "x", "a": 1, "b": 2})
                assert (err.value.code, err.value.message) == (INVALID_PARAMS, f"Unknown tool: {forbidden}")
            with pytest.raises(MCPError) as err:
                await reader.read_resource("beta+misbehave://item/7")
            assert err.value.code == INVALID_PARAMS
            with pytest.raises(MCPError) as err:
                await reader.get_prompt("beta__greet", {"name": "x"})
            assert err.value.code == INVALID_PARAMS


async def test_modern_client_is_authenticated_per_request() -> None:
    cfg = auth_config(api_keys=KEYS, rules=RULES)
    async with serve(cfg) as gw, connected(gw.url, {"X-API-Key": READER_KEY}, mode="2026-07-28") as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["alpha__echo"]
        with pytest.raises(MCPError) as err:
            await client.call_tool("alpha__fail", {})
        assert (err.value.code, err.value.message) == (INVALID_PARAMS, "Unknown tool: alpha__fail")


async def test_what_an_identity_may_not_see_is_refused_exactly_as_what_does_not_exist(tmp_path: Path) -> None:
    """A refusal must not tell a caller which hidden names exist: for tools, prompts, resources,
    templates and completions on them, the whole JSON-RPC error of a hidden name is the error of a
    name that does not exist, with the name substituted. Operators still see a denial (audit)."""
    db = tmp_path / "audit.db"
    cfg = config(
        {"alpha": misbehave(), "beta": misbehave()},
        middleware=[
            {"use": "audit", "options": {"path": str(db)}},
            {"use": "auth", "options": {"api_keys": KEYS, "rules": RULES}},
        ],
    )

    def greet(name: str) -> tuple[str, dict[str, Any]]:
        return "prompts/get", {"name": name, "arguments": {"name": "x"}}

    def complete(kind: str, name: str) -> tuple[str, dict[str, Any]]:
        ref = (
            {"type": "ref/prompt", "name": name}
            if kind == "prompt"
            else {"type": "ref/resource", "uri": name}
        )
        return "completion/complete", {"ref": ref, "argument": {"name": "id", "value": ""}}

    # (hidden from the reader, exists for an admin) -> a name nothing has, and the request for a name.
    cases: list[tuple[str, str, Callable[[str], tuple[str, dict[str, Any]]]]] = [
        ("beta__echo", "beta__nothing", lambda n: ("tools/call", {"name": n, "arguments": {"text": "x"}})),
        (
            "alpha__add",
            "alpha__nothing",
            lambda n: ("tools/call", {"name": n, "arguments": {"a": 1, "b": 2}}),
        ),
        ("beta__greet", "beta__nothing", greet),
        ("beta+misbehave://item/7", "nowhere+misbehave://item/7", lambda n: ("resources/read", {"uri": n})),
        (
            "beta+misbehave://item/7",
            "nowhere+misbehave://item/7",
            lambda n: ("resources/subscribe", {"uri": n}),
        ),
        ("beta__greet", "beta__nothing", lambda n: complete("prompt", n)),
        ("beta+misbehave://item/{id}", "nowhere+misbehave://item/{id}", lambda n: complete("resource", n)),
    ]

    async def errors(http: httpx.AsyncClient, headers: dict[str, str], name: str) -> list[str]:
        found = []
        for rid, (hidden, missing, request) in enumerate(cases, start=10):
            method, params = request(name.format(hidden=hidden, missing=missing))
            (reply,) = messages(await http.post(gw.url, headers=headers, json=rpc(method, params, rid)))
            found.append(json.dumps(reply, sort_keys=True))
        return found

    async with serve(cfg) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        async with session(http, gw.url, {"X-API-Key": ADMIN_KEY}) as admin:
            for hidden, _, request in cases:  # the hidden names exist, and are usable by an admin
                method, params = request(hidden)
                (reply,) = messages(await http.post(gw.url, headers=admin, json=rpc(method, params)))
                # (misbehave has no subscriptions: its own -32601 still shows the name routes)
                assert reply.get("error", {}).get("code") in (None, -32601), (hidden, reply)
        async with session(http, gw.url, {"X-API-Key": READER_KEY}) as reader:
            as_hidden = await errors(http, reader, "{hidden}")
            as_missing = await errors(http, reader, "{missing}")
    for (hidden, missing, _), refused, unknown in zip(cases, as_hidden, as_missing, strict=True):
        assert json.loads(refused)["error"]["code"] == INVALID_PARAMS, refused
        assert refused.replace(json.dumps(hidden)[1:-1], "NAME") == unknown.replace(
            json.dumps(missing)[1:-1], "NAME"
        )

    rows = [r for r in await AuditLog(db).query() if r["identity"] == "ci-bot"]
    denied = {(r["method"], r["name"]) for r in rows if (r["outcome"], r["error_code"]) == ("error", DENIED)}
    assert ("tools/call", "alpha__add") in denied and ("prompts/get", "beta__greet") in denied
    assert ("resources/read", "beta+misbehave://item/7") in denied
    assert ("completion/complete", "beta+misbehave://item/{id}") in denied


# -- JWT ------------------------------------------------------------------------------------------


def hs_token(**claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "alice", "iss": "https://a.test", "aud": AUDIENCE, "iat": now, "exp": now + 300}
    payload |= {"roles": ["admin"], **claims}
    # Signed as raw JWS: PyJWT's encode() would refuse the malformed claims some tests need.
    return jwt.api_jws.PyJWS().encode(json.dumps(payload).encode(), HS_SECRET, algorithm="HS256")


async def test_jwt_hs256_valid_expired_wrong_audience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GATEWAY_JWT_SECRET", HS_SECRET)
    cfg = auth_config(
        jwt={
            "secret": "${env:TEST_GATEWAY_JWT_SECRET}",
            "audience": AUDIENCE,
            "issuer": "https://a.test",
            "leeway": 5,
        },
        rules=[{"roles": ["admin"]}, {"roles": ["tools:echo"], "tools": ["alpha__echo"]}],
    )
    async with serve(cfg) as gw:
        async with connected(gw.url, {"Authorization": f"Bearer {hs_token()}"}) as client:
            assert len((await client.list_tools()).tools) > 1
        # Roles from a space-separated OAuth scope.
        scoped = hs_token(roles=None, scope="openid tools:echo")
        async with connected(gw.url, {"Authorization": f"Bearer {scoped}"}) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["alpha__echo"]

        expired = hs_token(exp=int(time.time()) - 60)
        refused = await post_initialize(gw.url, {"Authorization": f"Bearer {expired}"})
        assert refused.status_code == 401
        assert challenge_params(refused)["error"] == "invalid_token"
        assert "expired" in refused.json()["error_description"]
        assert expired not in refused.text + str(refused.headers)

        other_aud = hs_token(aud="https://other.test/mcp")
        refused = await post_initialize(gw.url, {"Authorization": f"Bearer {other_aud}"})
        assert (
            refused.status_code == 401
            and "not issued for this resource" in refused.json()["error_description"]
        )

        odd_issuer = hs_token(iss=["https://a.test", "https://b.test"])
        for token in (odd_issuer, "abc.def.ghi"):
            refused = await post_initialize(gw.url, {"Authorization": f"Bearer {token}"})
            assert refused.status_code == 401 and challenge_params(refused)["error"] == "invalid_token"

        forged = jwt.encode({"sub": "eve", "aud": AUDIENCE, "exp": int(time.time()) + 60}, "x" * 40, "HS256")
        refused = await post_initialize(gw.url, {"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401 and challenge_params(refused)["error"] == "invalid_token"


@asynccontextmanager
async def jwks_server(document: dict[str, Any], hits: list[float]) -> AsyncIterator[str]:
    """A tiny identity provider publishing `document` (mutable: rotate keys by editing it)."""

    async def jwks(request: Request) -> JSONResponse:
        hits.append(time.monotonic())
        return JSONResponse(document)

    async with serve_asgi(Starlette(routes=[Route("/jwks", jwks)]), lifespan="off") as base:
        yield f"{base}/jwks"


def rsa_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {**public_jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def rs_token(private: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "bob", "iss": "https://idp.test", "aud": AUDIENCE, "exp": now + 300, **claims}
    return jwt.encode(payload, private, algorithm="RS256", headers={"kid": kid})


async def test_jwt_rs256_from_a_live_jwks_with_caching_and_rotation() -> None:
    first, first_jwk = rsa_key("k1")
    second, second_jwk = rsa_key("k2")
    document: dict[str, Any] = {"keys": [first_jwk]}
    hits: list[float] = []
    async with jwks_server(document, hits) as jwks_url:
        cfg = auth_config(
            resource=AUDIENCE,  # the default audience
            jwt={
                "jwks_url": jwks_url,
                "issuer": "https://idp.test",
                "roles_claim": "realm_access.roles",
                "jwks_min_refresh_seconds": 0,
            },
            rules=[{"roles": ["reader"], "tools": ["alpha__echo"]}],
        )
        async with serve(cfg) as gw:
            token = rs_token(first, "k1", realm_access={"roles": ["reader"]})
            async with connected(gw.url, {"Authorization": f"Bearer {token}"}) as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["alpha__echo"]
                await client.call_tool("alpha__echo", {"text": "x"})
            assert len(hits) == 1  # several HTTP requests, one fetch

            wrong_issuer = rs_token(first, "k1", iss="https://evil.test")
            assert (
                await post_initialize(gw.url, {"Authorization": f"Bearer {wrong_issuer}"})
            ).status_code == 401

            # The provider rotates: a token with the new kid makes the gateway refetch once.
            document["keys"] = [first_jwk, second_jwk]
            rotated = rs_token(second, "k2", realm_access={"roles": ["reader"]})
            async with connected(gw.url, {"Authorization": f"Bearer {rotated}"}) as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["alpha__echo"]
            assert len(hits) == 2

            # Signed by a key the provider never published, under a published kid.
            impostor, _ = rsa_key("k1")
            forged = rs_token(impostor, "k1")
            refused = await post_initialize(gw.url, {"Authorization": f"Bearer {forged}"})
            assert refused.status_code == 401 and challenge_params(refused)["error"] == "invalid_token"


async def test_jwks_unreachable_is_503_not_401() -> None:
    cfg = auth_config(
        resource=AUDIENCE, jwt={"jwks_url": f"http://127.0.0.1:{free_port()}/jwks", "jwks_timeout_seconds": 5}
    )
    private, _ = rsa_key("k1")
    async with serve(cfg) as gw:
        refused = await post_initialize(gw.url, {"Authorization": f"Bearer {rs_token(private, 'k1')}"})
    assert refused.status_code == 503 and refused.json()["error"] == "temporarily_unavailable"


# -- unit level: stdio identity, the policy, option errors -------------------------------------


async def test_jwt_secret_from_a_secret_ref(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SECRET_TEST_AUTH_JWT", HS_SECRET)
    auth = Auth(jwt={"secret": "secret_ref:test_auth_jwt", "audience": AUDIENCE})
    assert HS_SECRET not in repr(auth.options)  # the options keep the reference, never the value
    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/mcp",
            "headers": [(b"authorization", f"Bearer {hs_token()}".encode())],
            "scheme": "http",
            "server": ("127.0.0.1", 1),
        }
    )
    identity = await auth.authenticate(request)
    assert identity == Identity("alice", frozenset({"admin"}), "jwt", {}, "jwt.0", "https://a.test")


def test_stdio_identity() -> None:
    auth = Auth(stdio_identity={"name": "me", "roles": ["admin"], "labels": {"host": "laptop"}})
    assert auth.local_identity() == Identity("me", frozenset({"admin"}), "stdio", {"host": "laptop"})
    assert Auth(api_keys=KEYS).local_identity() == Identity("local", source="stdio")


async def test_calls_are_checked_with_a_cached_decision() -> None:
    auth = Auth(stdio_identity={"roles": ["reader"]}, rules=RULES)
    identity = auth.local_identity()

    async def terminal(call: Call) -> dict[str, Any]:
        return {"ok": True}

    allowed = Call("tools/call", {"name": "alpha__echo"}, identity, name="alpha__echo", server="alpha")
    assert await auth(allowed, terminal) == {"ok": True}
    denied = Call("tools/call", {"name": "alpha__add"}, identity, name="alpha__add", server="alpha")
    with pytest.raises(Hidden) as hidden:
        await auth(denied, terminal)
    assert hidden.value.code == DENIED  # inside the gateway (audit, telemetry) it is a denial
    ref = {"type": "ref/prompt", "name": "alpha__greet"}
    completion = Call("completion/complete", {"ref": ref}, identity, name="alpha__greet", server="alpha")
    assert await auth(completion, terminal) == {"ok": True}
    await auth(allowed, terminal)
    info = auth.policy.allows.cache_info()
    assert info.hits >= 1 and info.currsize == 3
    # Notifications carry no caller and are not this middleware's business.
    note = Call("notifications/message", {}, kind="notification", server="alpha")
    assert await auth(note, terminal) == {"ok": True}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"api_keys": [{"name": "x", "key": READER_KEY}]}, "sha256sum"),
        ({"api_keys": [{"name": "x", "key": hashed("a")}, {"name": "x", "key": hashed("b")}]}, "unique"),
        ({"jwt": {"secret": HS_SECRET, "audience": "a"}}, "${env:"),
        ({"jwt": {"secret": "${env:TEST_AUTH_SHORT}", "audience": "a"}}, "too short"),
        (
            {"jwt": {"secret": "${env:TEST_AUTH_UNSET_VAR}", "audience": "a"}},
            "TEST_AUTH_UNSET_VAR is not set",
        ),
        ({"jwt": {"jwks_url": "https://idp.test/jwks"}}, "audience"),
        ({"jwt": {"jwks_url": "http://idp.test/jwks", "audience": "a"}}, "https://"),
        ({"jwt": {"jwks_url": "https://idp.test/jwks", "audience": "a", "algorithms": ["HS256"]}}, "cannot"),
        ({"jwt": {"public_key": "not a pem", "audience": "a"}}, "PEM"),
        ({"rules": [{"roles": ["a"]}]}, "at least one of"),
    ],
)
def test_bad_options_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], expected: str
) -> None:
    monkeypatch.setenv("TEST_AUTH_SHORT", "tiny-secret-value")
    with pytest.raises(ConfigError) as err:
        instantiate(config({}, middleware=[{"use": "auth", "options": options}]).middleware)
    text = str(err.value)
    assert expected in text and "middleware[0] (auth)" in text
    assert READER_KEY not in text and HS_SECRET not in text and "tiny-secret-value" not in text


def test_yaml_example_parses() -> None:
    cfg = parse_config(
        "middleware:\n"
        "  - use: auth\n"
        "    options:\n"
        "      api_keys: [{name: ci-bot, key: 'sha256:"
        + hashlib.sha256(b"k").hexdigest()
        + "', roles: [reader]}]\n"
        "      stdio_identity: {name: local, roles: [admin]}\n"
        "      rules:\n"
        "        - {roles: [admin], servers: ['*'], tools: ['*']}\n"
        "        - {roles: [reader], servers: [time], tools: ['time__*', 'git__git_log']}\n"
    )
    [auth] = instantiate(cfg.middleware)
    assert isinstance(auth, Auth) and auth.local_identity().roles == {"admin"}


async def test_a_session_belongs_to_the_identity_that_opened_it() -> None:
    """Another identity presenting a 2025-11-25 session's id is told the session does not exist,
    whether the call would take the SDK's transport or the exchange."""
    async with (
        serve(auth_config(api_keys=KEYS)) as gw,
        httpx.AsyncClient(timeout=WAIT) as http,
        session(http, gw.url, {"authorization": f"Bearer {READER_KEY}"}) as owner,
    ):
        call = rpc("tools/call", {"name": "alpha__echo", "arguments": {"text": "x"}})
        for _ in range(2):  # the first teaches the exchange the session; the second takes it
            assert (await http.post(gw.url, headers=owner, json=call)).status_code == 200
            other = {**owner, "authorization": f"Bearer {ADMIN_KEY}"}
            assert (await http.post(gw.url, headers=other, json=call)).status_code == 404


async def test_a_session_is_bound_to_the_authenticator_and_issuer_not_only_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """alice's API key opened the session: a JWT whose `sub` is alice (HS256 or RS256) is another
    principal, and is told the session does not exist; the key itself still gets in."""
    private, _ = rsa_key("k1")
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    alice_key = "ak_alice_5c1e0a7b3d9f4e2a8b6c0d1e2f3a4b5c"
    monkeypatch.setenv("TEST_GATEWAY_JWT_SECRET", HS_SECRET)
    cfg = auth_config(
        api_keys=[{"name": "alice", "key": hashed(alice_key), "roles": ["admin"]}],
        jwt=[
            {"secret": "${env:TEST_GATEWAY_JWT_SECRET}", "audience": AUDIENCE, "issuer": "https://a.test"},
            {"public_key": public_pem, "audience": AUDIENCE, "issuer": "https://idp.test"},
        ],
    )
    impostors = {
        "HS256": hs_token(sub="alice"),
        "RS256": rs_token(private, "k1", sub="alice", roles=["admin"]),
    }
    call = rpc("tools/call", {"name": "alpha__echo", "arguments": {"text": "x"}})
    async with (
        serve(cfg) as gw,
        httpx.AsyncClient(timeout=WAIT) as http,
        session(http, gw.url, {"authorization": f"Bearer {alice_key}"}) as owner,
    ):
        for _ in range(2):  # the first teaches the exchange the session; the second takes it
            for alg, token in impostors.items():
                # The token itself is good: it opens a session of its own.
                opened = await post_initialize(gw.url, {"Authorization": f"Bearer {token}"})
                assert opened.status_code == 200
                other = {**owner, "authorization": f"Bearer {token}"}
                refused = await http.post(gw.url, headers=other, json=call)
                assert refused.status_code == 404, (alg, refused.text)
            served = await http.post(gw.url, headers=owner, json=call)
            assert served.status_code == 200 and "misbehave: x" in served.text


async def test_a_filtered_list_is_kept_per_endpoint_list() -> None:
    """Two endpoints' lists, listed in turn by one identity, each keep their filtered copy: the
    same object request after request (`front.lists` keeps it shaped and encoded by identity)."""
    auth = Auth(anonymous={"roles": ["reader"]}, rules=[{"roles": ["reader"], "tools": ["keep_*"]}])
    reader = Identity("reader", frozenset({"reader"}), "api_key")
    lists = {
        "one": [{"name": "keep_a"}, {"name": "drop_a"}],
        "two": [{"name": "keep_b"}, {"name": "drop_b"}],
    }

    async def listed(which: str) -> list[Any]:
        async def terminal(call: Call) -> dict[str, Any]:
            return {"tools": lists[which]}

        result = await auth(Call(method="tools/list", params={}, identity=reader), terminal)
        tools: list[Any] = result["tools"]
        return tools

    first_one, first_two = await listed("one"), await listed("two")
    assert first_one == [{"name": "keep_a"}] and first_two == [{"name": "keep_b"}]
    assert await listed("one") is first_one
    assert await listed("two") is first_two


@pytest.mark.parametrize("resource", [None, "https://gw.test/mcp"])
async def test_each_endpoint_is_a_protected_resource_of_its_own(resource: str | None) -> None:
    """RFC 9728: a client refused at /mcp/desk is pointed at that endpoint's own metadata, whose
    `resource` is the endpoint it connects to (a client checks that they match)."""
    options: dict[str, Any] = {"api_keys": KEYS, "authorization_servers": ["https://idp.test/realms/mcp"]}
    if resource is not None:
        options["resource"] = resource
    cfg = auth_config(**options).model_copy(
        update={"endpoints": [EndpointConfig(path="/mcp/desk", servers={"alpha": None})]}
    )
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=WAIT) as http:
        origin = "https://gw.test" if resource is not None else gw.base
        refused = await post_initialize(gw.base + "/mcp/desk/", {})
        assert refused.status_code == 401
        metadata = challenge_params(refused)["resource_metadata"]
        assert metadata == f"{origin}/.well-known/oauth-protected-resource/mcp/desk"
        doc = (await http.get(f"{gw.base}/.well-known/oauth-protected-resource/mcp/desk")).json()
        assert doc["resource"] == f"{origin}/mcp/desk"
        assert doc["authorization_servers"] == ["https://idp.test/realms/mcp"]
        # The default endpoint's stay as they were.
        default = challenge_params(await post_initialize(gw.url, {}))["resource_metadata"]
        assert default == f"{origin}/.well-known/oauth-protected-resource"
        root = (await http.get(f"{gw.base}/.well-known/oauth-protected-resource")).json()
        assert root["resource"] == (resource or gw.url)
