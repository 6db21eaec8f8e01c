"""Authorization rules, compiled once: may these roles use this tool, prompt or resource?

Globs are compiled into one regex per rule and kind; decisions are cached per (roles, kind,
server, name) in a bounded LRU, so the check on every call is a dictionary lookup once warm. A
`deny` rule that matches wins over any `allow`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.catalogue import Kind
from gateway.middleware._auth_options import Rule
from gateway.middleware.globs import compile_globs

_CACHE_SIZE = 8192  # names are bounded by the catalogue, except resource URIs from templates


@dataclass(frozen=True, slots=True)
class _Compiled:
    roles: frozenset[str]
    servers: re.Pattern[str]
    kinds: dict[Kind, re.Pattern[str] | None]  # None: this rule says nothing about the kind
    deny: bool


def _compiled(rule: Rule) -> _Compiled:
    named: dict[Kind, list[str] | None] = {
        "tool": rule.tools,
        "prompt": rule.prompts,
        "resource": rule.resources,
    }
    covers_all = all(globs is None for globs in named.values())
    kinds: dict[Kind, re.Pattern[str] | None] = {
        kind: compile_globs(["*"]) if covers_all else None if globs is None else compile_globs(globs)
        for kind, globs in named.items()
    }
    return _Compiled(frozenset(rule.roles), compile_globs(rule.servers), kinds, rule.effect == "deny")


class Policy:
    """`rules=None` means no authorization at all (authentication only)."""

    def __init__(self, rules: Sequence[Rule] | None) -> None:
        self.unrestricted = rules is None
        self._rules = [_compiled(r) for r in rules or ()]
        self.roles = sorted({role for r in rules or () for role in r.roles})
        self.allows = functools.lru_cache(maxsize=_CACHE_SIZE)(self._decide)

    def _decide(self, roles: frozenset[str], kind: Kind, server: str, name: str) -> bool:
        # Never asked when unrestricted: the middleware lets every call through before asking.
        allowed = False
        for rule in self._rules:
            pattern = rule.kinds[kind]
            if pattern is None or rule.roles.isdisjoint(roles):
                continue
            if rule.servers.match(server) and pattern.match(name):
                if rule.deny:
                    return False
                allowed = True
        return allowed
