"""Resolve secret references when a backend launches, and check a server's declared environment.

A value may hold `${env:NAME}` and `${file:PATH}` references anywhere in it, or be exactly
`secret_ref:<name>`, looked up in the gateway's secrets file (`secrets.file`, a YAML/JSON mapping)
and then in the environment as `<env_prefix><NAME>` (default `MCP_SECRET_<NAME>`). Configs hold
references, never values, so printing a config (or an error about it) is safe; resolution failures
name the reference, never what it would have expanded to.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, ValidationInfo

from gateway.config.models import EnvVar, SecretsConfig
from gateway.errors import SecretError

_REF = re.compile(r"\$\{(env|file):([^}]+)\}")
_SECRET_REF = "secret_ref:"
_store = SecretsConfig()


def configure(config: SecretsConfig) -> SecretsConfig:
    """Where `secret_ref:` values come from (set per gateway, from `gateway.yaml`); returns the
    setting it replaces."""
    global _store
    previous, _store = _store, config
    return previous


@contextmanager
def configured(config: SecretsConfig) -> Iterator[None]:
    """`configure(config)`, undone if the block fails (a refused reload keeps the old secrets)."""
    previous = configure(config)
    try:
        yield
    except BaseException:
        configure(previous)
        raise


def has_reference(value: str) -> bool:
    return value.startswith(_SECRET_REF) or _REF.search(value) is not None


def resolve(value: str, *, where: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand every reference in `value`. `where` names the config key for error messages."""
    env = os.environ if environ is None else environ
    if value.startswith(_SECRET_REF):
        return _secret_ref(value.removeprefix(_SECRET_REF).strip(), where, env)

    def expand(match: re.Match[str]) -> str:
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in env:
                raise SecretError(
                    f"{where}: environment variable {ref} is not set (export it, or remove ${{env:{ref}}})"
                )
            return env[ref]
        try:
            return Path(ref).expanduser().read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise SecretError(f"{where}: cannot read secret file {ref}: {exc.strerror}") from None

    return _REF.sub(expand, value)


def _secret_ref(name: str, where: str, env: Mapping[str, str]) -> str:
    if _store.file:
        try:
            text = Path(_store.file).expanduser().read_text(encoding="utf-8")
            table = json.loads(text) if _store.file.endswith(".json") else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise SecretError(
                f"{where}: cannot read the secrets file {_store.file}: {type(exc).__name__}"
            ) from None
        if isinstance(table, Mapping) and name in table:
            return str(table[name])
    variable = _store.env_prefix + re.sub(r"\W", "_", name).upper()
    if variable in env:
        return env[variable]
    source = f"the secrets file {_store.file} or " if _store.file else ""
    raise SecretError(
        f"{where}: secret {name!r} is not defined (add it to {source}the environment as {variable})"
    )


def _resolve_option(value: str, info: ValidationInfo) -> str:
    where = info.field_name or "options"
    try:
        return resolve(value, where=where)
    except SecretError as exc:
        # Names the reference, never a value; the key is named by whoever reports the error.
        raise ValueError(exc.message.removeprefix(f"{where}: ")) from None


ResolvedStr = Annotated[str, AfterValidator(_resolve_option)]
"""A middleware option that may hold secret references, expanded when the options are validated."""


def resolve_mapping(values: Mapping[str, str], *, where: str) -> dict[str, str]:
    return {key: resolve(value, where=f"{where}.{key}") for key, value in values.items()}


_CHECKS = {
    "integer": re.compile(r"^[+-]?\d+$"),
    "number": re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"),
    "boolean": re.compile(r"^(true|false|1|0|yes|no)$", re.IGNORECASE),
    "url": re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"),
}


def check_env_schema(server: str, env: dict[str, str], schema: Sequence[EnvVar]) -> dict[str, str]:
    """Fill defaults and check the environment a server declared it needs, before it starts.

    Every problem is reported at once; values of `secret: true` variables never appear in messages.
    """
    problems: list[str] = []
    for var in schema:
        if var.name not in env and var.default is not None:
            env[var.name] = var.default
        if var.name not in env:
            if var.required:
                hint = f" ({var.description})" if var.description else ""
                problems.append(
                    f"servers.{server}.env.{var.name}: required by env_schema{hint} but not set; "
                    f"add it to servers.{server}.env (a secret as ${{env:NAME}} or secret_ref:name)"
                )
            continue
        value = env[var.name]
        check = _CHECKS.get(var.type)
        bad = (check is not None and not check.match(value)) or (var.type == "path" and not value)
        if bad:
            shown = "the value" if var.secret else repr(value)
            problems.append(f"servers.{server}.env.{var.name}: {shown} is not a valid {var.type}")
    if problems:
        raise SecretError("; ".join(problems), data={"problems": problems})
    return env
