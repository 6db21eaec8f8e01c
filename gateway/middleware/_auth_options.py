"""The `auth` middleware's options: their shape, checked before anything starts.

Secrets never appear here in clear: API keys are stored as SHA-256 hashes, JWT shared secrets as
`${env:...}` / `${file:...}` references. Errors never echo what was typed (`hide_input_in_errors`),
so a key pasted by mistake does not end up in a log.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.config.secrets import ResolvedStr, has_reference

HASH_HOWTO = (
    'store its SHA-256 instead, as key: "sha256:<hex>" - compute it with '
    '`printf %s "$KEY" | sha256sum` or '
    '`python3 -c \'import hashlib,getpass; print("sha256:" + '
    'hashlib.sha256(getpass.getpass("key: ").encode()).hexdigest())\'`'
)
_HASHED = re.compile(r"^sha256:[0-9a-fA-F]{64}$")
# Printable, and safe inside an HTTP quoted-string (the WWW-Authenticate realm).
_REALM = re.compile(r"^[\x20-\x7e]+$")
_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
ASYMMETRIC_ALGORITHMS = (*RSA_ALGORITHMS, *EC_ALGORITHMS, "EdDSA")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not _LABEL_KEY.match(key):
            raise ValueError(
                f"label name {key!r} must match [A-Za-z_][A-Za-z0-9_]* (it may become a metric label)"
            )
    return value


def _https_or_loopback(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return url  # a local identity provider (or a test) needs no TLS
    raise ValueError(f"{what} must be an https:// URL (http:// only for 127.0.0.1, localhost, [::1])")


class ApiKey(_Options):
    name: str = Field(
        min_length=1, description="Who holds the key; becomes the identity's name and `key` label."
    )
    key: str = Field(description='"sha256:<hex of sha256(key)>"; never the key itself.')
    roles: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict, description="Extra non-secret labels for metrics.")

    @field_validator("key")
    @classmethod
    def _hashed(cls, value: str) -> str:
        value = value.strip()
        if not _HASHED.match(value):
            # Never repeat the value: it is most likely a live key pasted in clear.
            raise ValueError(f"API keys are not stored in clear; {HASH_HOWTO}")
        return value.lower()

    _check_labels = field_validator("labels")(_labels)


class Jwt(_Options):
    """One accepted token issuer. Exactly one of `secret`, `public_key`, `jwks_url`."""

    secret: ResolvedStr | None = Field(
        default=None, repr=False, description="HS* secret: ${env:NAME}, ${file:PATH} or secret_ref:name."
    )
    public_key: ResolvedStr | None = Field(
        default=None, description="RS/PS/ES/EdDSA public key: PEM, or ${file:PATH}."
    )
    jwks_url: str | None = Field(default=None, description="Where the issuer publishes its signing keys.")
    algorithms: list[str] | None = Field(
        default=None,
        description="Default: HS256 with `secret`, every asymmetric algorithm the key fits otherwise.",
    )
    issuer: str | list[str] | None = Field(
        default=None, description="Accepted `iss` values (unchecked if unset)."
    )
    audience: str | list[str] | None = Field(
        default=None, description="Accepted `aud` values; defaults to the top-level `resource`. Required."
    )
    leeway: float = Field(
        default=30.0, ge=0, le=600, description="Clock skew tolerated on exp/nbf/iat, seconds."
    )
    required_claims: list[str] = Field(default_factory=lambda: ["exp"])
    roles_claim: str = Field(
        default="roles", description="Claim holding roles (list or space-separated); dots walk into objects."
    )
    name_claim: str = Field(
        default="sub", description="Claim naming the caller (falls back to client_id, azp)."
    )
    labels: dict[str, str] = Field(default_factory=dict)
    jwks_cache_seconds: float = Field(default=300.0, gt=0, description="How long fetched keys are trusted.")
    jwks_min_refresh_seconds: float = Field(
        default=30.0, ge=0, description="At most one early refetch (unknown `kid`) per this interval."
    )
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)

    _check_labels = field_validator("labels")(_labels)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        return None if value is None else _https_or_loopback(value, "jwks_url")

    @field_validator("secret", mode="before")
    @classmethod
    def _secret_is_reference(cls, value: object) -> object:
        # Before the reference is resolved: the config must hold a reference, not the secret.
        if isinstance(value, str) and not has_reference(value):
            raise ValueError(
                "the shared secret must not be written in the config; give a reference: "
                "secret: ${env:GATEWAY_JWT_SECRET}, ${file:/run/secrets/jwt} or secret_ref:jwt_secret"
            )
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Jwt:
        given = [n for n in ("secret", "public_key", "jwks_url") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of secret, public_key, jwks_url (got {', '.join(given) or 'none'})"
            )
        if self.algorithms is not None:
            if not self.algorithms:
                raise ValueError("algorithms must not be empty")
            # HS* with a public key is the classic algorithm-confusion hole: keep the families apart.
            allowed = HMAC_ALGORITHMS if self.secret is not None else ASYMMETRIC_ALGORITHMS
            wrong = [a for a in self.algorithms if a not in allowed]
            if wrong:
                raise ValueError(
                    f"algorithms {wrong} cannot be used with {given[0]}; choose from {', '.join(allowed)}"
                )
        return self


class Configured(_Options):
    """A fixed identity: the stdio caller, or unauthenticated HTTP callers."""

    name: str | None = Field(default=None, min_length=1, description='Default: "local" (stdio), "anonymous".')
    roles: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    _check_labels = field_validator("labels")(_labels)


class Rule(_Options):
    """Grants (or, with `effect: deny`, withdraws) what `roles` may use.

    `servers` globs match backend names; `tools`/`prompts`/`resources` globs match the public
    (namespaced) names and URIs. A rule naming none of the three covers everything on its servers;
    a rule naming some covers only those kinds.
    """

    roles: list[str] = Field(min_length=1)
    servers: list[str] = Field(default_factory=lambda: ["*"])
    tools: list[str] | None = None
    prompts: list[str] | None = None
    resources: list[str] | None = None
    effect: Literal["allow", "deny"] = "allow"


class AuthOptions(_Options):
    realm: str = Field(default="mcp-gateway")
    resource: str | None = Field(
        default=None,
        description="Public MCP URL (https://gw.example.com/mcp); derived from each request if unset.",
    )
    authorization_servers: list[str] = Field(default_factory=list)
    scopes_supported: list[str] | None = Field(
        default=None, description="Advertised in the resource metadata; default: the roles named in `rules`."
    )
    api_keys: list[ApiKey] = Field(default_factory=list)
    jwt: list[Jwt] = Field(default_factory=list, description="One issuer, or a list of them.")
    anonymous: Configured | None = Field(
        default=None, description="Unset: callers without credentials get 401."
    )
    stdio_identity: Configured | None = Field(default=None, description="Unset: 'local' with no roles.")
    rules: list[Rule] | None = Field(
        default=None, description="Unset: every authenticated caller may use everything."
    )

    @field_validator("jwt", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        if not _REALM.match(value) or '"' in value or "\\" in value:
            raise ValueError('realm must be printable ASCII without " or \\')
        return value

    @field_validator("resource")
    @classmethod
    def _resource(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _https_or_loopback(value, "resource")
        if urlsplit(value).fragment:
            raise ValueError("resource must not have a #fragment (RFC 8707)")
        return value

    @field_validator("authorization_servers")
    @classmethod
    def _issuers(cls, value: list[str]) -> list[str]:
        return [_https_or_loopback(v, "authorization_servers entries") for v in value]

    @model_validator(mode="after")
    def _coherent(self) -> AuthOptions:
        if not (self.api_keys or self.jwt or self.anonymous or self.stdio_identity):
            raise ValueError("configure at least one of api_keys, jwt, anonymous, stdio_identity")
        names = [k.name for k in self.api_keys]
        if len(set(names)) != len(names):
            raise ValueError("api_keys names must be unique (they identify the caller)")
        hashes = [k.key for k in self.api_keys]
        if len(set(hashes)) != len(hashes):
            raise ValueError("two api_keys entries have the same key hash")
        for jwt in self.jwt:
            if jwt.audience is None and self.resource is None:
                raise ValueError(
                    "each jwt entry needs an audience (the MCP spec requires tokens issued for this "
                    "gateway): set jwt.audience, or the top-level resource URL"
                )
        return self
