"""JWT bearer tokens: verification by PyJWT, keys from a shared secret, a PEM or a cached JWKS.

No cryptography here beyond choosing keys: PyJWT verifies signatures and standard claims. What this
module adds is policy: which issuer's keys apply, keeping HMAC and public-key algorithms apart,
refusing short HMAC secrets, and a JWKS cache that survives a briefly unreachable identity provider.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.middleware._auth_options import (
    ASYMMETRIC_ALGORITHMS,
    EC_ALGORITHMS,
    RSA_ALGORITHMS,
    Jwt,
)
from gateway.middleware.base import Identity

logger = logging.getLogger(__name__)


class TokenRejected(Exception):
    """The token is not acceptable. `reason` is safe to send to the client (no token content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """The issuer's keys cannot be fetched and none are cached: the gateway's problem, not the caller's."""


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token was not issued for this resource"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token's issuer is not accepted"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the required {exc.claim!r} claim"
    return "the token is invalid"


def _public_key_algorithms(key: object) -> tuple[str, ...]:
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EC_ALGORITHMS
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    raise ValueError("unsupported public key type (use an RSA, EC or Ed25519 key)")


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    alg: str | None  # set when the issuer published the key for one algorithm only
    key: Any  # a cryptography public key object: never usable as an HMAC secret


class JwksCache:
    """The issuer's published keys: fetched lazily, trusted for `ttl`, refetched early (at most once
    per `min_refresh`) when a token names an unknown `kid` (key rotation). When a refetch fails the
    keys fetched before stay in use; concurrent requests share one fetch."""

    def __init__(self, url: str, *, ttl: float, min_refresh: float, timeout: float) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.timeout = timeout
        self.fetches = 0
        self._keys: list[_Key] = []
        self._fetched_at = float("-inf")  # last success
        self._tried_at = float("-inf")  # last attempt, successful or not
        self._lock = anyio.Lock()

    async def keys_for(self, kid: str | None) -> list[_Key]:
        now = time.monotonic()
        # Without any key every request fails: retry sooner, but never in a tight loop.
        backoff = self.min_refresh if self._keys else min(self.min_refresh, 5.0)
        if now - self._fetched_at >= self.ttl and now - self._tried_at >= backoff:
            await self._refresh(self.fetches)
        if not self._keys:
            raise KeysUnavailable(self.url)
        found = self._select(kid)
        if not found and kid is not None and time.monotonic() - self._tried_at >= self.min_refresh:
            await self._refresh(self.fetches)
            found = self._select(kid)
        if not found:
            raise TokenRejected("the token's signing key is unknown")
        return found

    def _select(self, kid: str | None) -> list[_Key]:
        return list(self._keys) if kid is None else [k for k in self._keys if k.kid == kid]

    async def _refresh(self, seen: int) -> None:
        async with self._lock:
            if self.fetches != seen:
                return  # another request fetched while this one waited: use its outcome
            self.fetches += 1
            self._tried_at = time.monotonic()
            try:
                self._keys = await self._fetch()
                self._fetched_at = time.monotonic()
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                kept = "; keeping the keys fetched before" if self._keys else ""
                logger.warning("cannot fetch JWKS from %s: %s%s", self.url, type(exc).__name__, kept)

    async def _fetch(self) -> list[_Key]:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            response = await client.get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        keys: list[_Key] = []
        for entry in document.get("keys") or [] if isinstance(document, dict) else []:
            # Symmetric keys have no business in a public key set; encryption keys do not sign.
            if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
                continue
            try:
                jwk = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # an algorithm this PyJWT does not know: other keys may still serve
            alg = entry.get("alg")
            keys.append(_Key(jwk.key_id, alg if isinstance(alg, str) else None, jwk.key))
        if not keys:
            raise ValueError("the JWKS holds no usable signing key")
        return keys


class JwtVerifier:
    """One configured issuer."""

    def __init__(self, opts: Jwt, *, default_audience: str | None, where: str) -> None:
        self.opts = opts
        self.audience: str | list[str] = (
            opts.audience if opts.audience is not None else default_audience or ""
        )
        self.issuers: frozenset[str] | None = (
            None
            if opts.issuer is None
            else frozenset([opts.issuer] if isinstance(opts.issuer, str) else opts.issuer)
        )
        self.jwks: JwksCache | None = None
        self._key: Any = None
        if opts.secret is not None:
            secret = opts.secret.encode()  # references resolved when the options were validated
            self.algorithms: tuple[str, ...] = tuple(opts.algorithms or ["HS256"])
            for name in self.algorithms:
                algorithm = jwt.get_algorithm_by_name(name)
                if algorithm.check_key_length(algorithm.prepare_key(secret)):
                    raise ValueError(
                        f"{where}.secret is too short for {name} (RFC 7518 §3.2: at least "
                        f"{int(name[2:]) // 8} bytes); generate one with `openssl rand -base64 64`"
                    )
            self._key = secret
        elif opts.public_key is not None:
            try:
                self._key = load_pem_public_key(opts.public_key.encode())
            except ValueError:
                raise ValueError(f"{where}.public_key is not a PEM public key") from None
            fits = _public_key_algorithms(self._key)
            self.algorithms = tuple(opts.algorithms or fits)
            wrong = [a for a in self.algorithms if a not in fits]
            if wrong:
                raise ValueError(
                    f"{where}.public_key cannot verify {', '.join(wrong)}; it fits {', '.join(fits)}"
                )
        else:
            assert opts.jwks_url is not None
            self.algorithms = tuple(opts.algorithms or ASYMMETRIC_ALGORITHMS)
            self.jwks = JwksCache(
                opts.jwks_url,
                ttl=opts.jwks_cache_seconds,
                min_refresh=opts.jwks_min_refresh_seconds,
                timeout=opts.jwks_timeout_seconds,
            )
        # Built once: the same for every token.
        self._decode_options: jwt.types.Options = {
            "require": list(opts.required_claims),
            "enforce_minimum_key_length": True,
        }
        self._name_claims = (opts.name_claim, "client_id", "azp")
        self._roles_path = tuple(opts.roles_claim.split("."))
        self._labels = dict(opts.labels)
        self._where = where.removeprefix("options.")

    def accepts(self, alg: object, iss: object) -> bool:
        """Whether this issuer should try the token (a routing hint; verification decides)."""
        if alg not in self.algorithms:
            return False
        return self.issuers is None or (isinstance(iss, str) and iss in self.issuers)

    async def verify(self, token: str, header: Mapping[str, Any]) -> dict[str, Any]:
        if self.jwks is None:
            return self._decode(token, self._key)
        kid = header.get("kid")
        candidates = await self.jwks.keys_for(kid if isinstance(kid, str) else None)
        failure: TokenRejected | None = None
        for candidate in candidates:
            if candidate.alg is not None and candidate.alg != header.get("alg"):
                continue  # a key published for one algorithm is not used with another
            try:
                return self._decode(token, candidate.key)
            except TokenRejected as exc:
                failure = exc
        raise failure or TokenRejected("the token's signing key is unknown")

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuers,
                leeway=self.opts.leeway,
                options=self._decode_options,
            )
        except jwt.PyJWTError as exc:
            raise TokenRejected(_reason(exc)) from None
        return claims

    def identity(self, claims: Mapping[str, Any]) -> Identity:
        name = next(
            (v for c in self._name_claims if isinstance(v := claims.get(c), str) and v),
            "jwt",
        )
        issuer = claims.get("iss")
        return Identity(
            name=name,
            roles=_roles(claims, self._roles_path),
            source="jwt",
            labels=self._labels,
            # One subject name from two issuers (or two configured keys) is two principals.
            authenticator=self._where,
            issuer=issuer if isinstance(issuer, str) else None,
        )


def _words(value: object) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def _roles(claims: Mapping[str, Any], path: Sequence[str]) -> frozenset[str]:
    """Roles from the claim at `path` (a dotted roles_claim split, e.g. Keycloak's
    realm_access.roles), plus OAuth scopes."""
    node: Any = claims
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return frozenset([*_words(node), *_words(claims.get("scope")), *_words(claims.get("scp"))])


class JwtAuthenticator:
    """Every configured issuer; a token is tried by those whose algorithms and issuer fit it."""

    def __init__(self, verifiers: Sequence[JwtVerifier]) -> None:
        self.verifiers = list(verifiers)

    async def identify(self, token: str) -> Identity:
        try:
            # Read unverified only to pick the issuer's keys; the chosen verifier checks everything.
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRejected("the token is malformed") from None
        header: dict[str, Any] = unverified["header"]
        alg, iss = header.get("alg"), unverified["payload"].get("iss")
        failure: TokenRejected | None = None
        for verifier in self.verifiers:
            if not verifier.accepts(alg, iss):
                continue
            try:
                return verifier.identity(await verifier.verify(token, header))
            except TokenRejected as exc:
                failure = exc
        raise failure or TokenRejected("the token's issuer or algorithm is not accepted")
