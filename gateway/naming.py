"""Namespacing: how a backend's names appear to clients, and back.

- Tools and prompts: `<namespace>__<name>`. Clients cap names at 64 characters; a longer name is
  cut to 55 characters plus `-` and 8 hex digits of its SHA-256, so it stays unique, stable across
  restarts and independent of what other servers are in the fleet.
- Resource URIs and templates: `<namespace>+<original uri>` (a URI scheme may contain `+`, and the
  original stays readable). `_` is not allowed in a scheme, so it becomes `-` there.
- An empty namespace exposes names unchanged.

When two servers' items get the same public name, the first server (config order) keeps it and
the other's is qualified with its server name (`disambiguated`).

Reversal never parses a name: the catalogue keeps the mapping, so `a__b` + `x` and `a` + `b__x`
can never be confused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from gateway.config.models import SEPARATOR

MAX_NAME = 64
_HASH_LEN = 8


def public_name(namespace: str, name: str) -> str:
    full = f"{namespace}{SEPARATOR}{name}" if namespace else name
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_LEN]
    return f"{full[: MAX_NAME - _HASH_LEN - 1]}-{digest}"


def uri_namespace(namespace: str) -> str:
    return namespace.lower().replace("_", "-")


def public_uri(namespace: str, uri: str) -> str:
    return f"{uri_namespace(namespace)}+{uri}" if namespace else uri


def split_uri(uri: str) -> tuple[str, str] | None:
    """`("ns", "original")` if `uri` carries a namespace, else None."""
    head, sep, rest = uri.partition("+")
    if not sep or "://" in head or ":" in head:
        return None
    return head, rest


def disambiguated(server: str, public: str, taken: Callable[[str], bool], *, uri: bool = False) -> str:
    """The name `server`'s item is listed under when another server keeps its public name `public`.

    It is `public` qualified by the server's name (`<server>__<public>`, `<server>+<uri>`): readable,
    and the same on every start. If even that is taken, 8 hex digits of a hash of both are added."""
    candidate = public_uri(server, public) if uri else public_name(server, public)
    if not taken(candidate):
        return candidate
    digest = hashlib.sha256(f"{server}\0{public}".encode()).hexdigest()[:_HASH_LEN]
    if uri:
        return f"{uri_namespace(server)}-{digest}+{public}"
    return public_name(f"{server}-{digest}", public)
