"""Resolve `${env:NAME}` and `${file:PATH}` references when a backend launches.

Configs hold references, never values, so printing a config (or an error about it) is safe.
Resolution failures name the reference, never what it would have expanded to.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from gateway.errors import SecretError

_REF = re.compile(r"\$\{(env|file):([^}]+)\}")


def has_reference(value: str) -> bool:
    return _REF.search(value) is not None


def resolve(value: str, *, where: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand every reference in `value`. `where` names the config key for error messages."""
    env = os.environ if environ is None else environ

    def expand(match: re.Match[str]) -> str:
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in env:
                raise SecretError(
                    f"{where}: environment variable {ref} is not set (export it, or remove {{env:{ref}}})"
                )
            return env[ref]
        try:
            return Path(ref).expanduser().read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise SecretError(f"{where}: cannot read secret file {ref}: {exc.strerror}") from None

    return _REF.sub(expand, value)


def resolve_mapping(values: Mapping[str, str], *, where: str) -> dict[str, str]:
    return {key: resolve(value, where=f"{where}.{key}") for key, value in values.items()}
