"""API keys presented on a request, checked against stored SHA-256 digests: shared by the auth
middleware and the admin API, so both read and compare keys the same way."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


def presented_credential(request: Request, *, skip_empty: bool = False) -> tuple[str | None, str]:
    """The credential on `request` and the header it came in (`authorization` or `x-api-key`).

    `Authorization: Bearer <token>` first, then `X-API-Key`. Another scheme (Basic, ...) counts as
    no credentials (RFC 6750 §3), not as a bad one. With `skip_empty`, an empty token counts as no
    token: an empty bearer token falls through to `X-API-Key`, an empty key gives None.
    """
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and (token.strip() or not skip_empty):
            return token.strip(), "authorization"
    api_key = request.headers.get("x-api-key")
    if api_key is not None and (api_key.strip() or not skip_empty):
        return api_key.strip(), "x-api-key"
    return None, ""


def match_digest(presented: str, pairs: Iterable[tuple[bytes, T]]) -> T | None:
    """The value paired with the stored SHA-256 digest of `presented`, if any.

    Every stored digest is compared, in constant time, whether or not one matched already.
    """
    # Headers arrive latin-1 decoded; re-encoding gives back the bytes the client sent.
    digest = hashlib.sha256(presented.encode("latin-1", "replace")).digest()
    found: T | None = None
    for stored, value in pairs:
        if hmac.compare_digest(digest, stored) and found is None:
            found = value
    return found
