"""Resolve secret references when a backend launches, and check a server's declared environment.

A value may hold `${env:NAME}` and `${file:PATH}` references anywhere in it, or be exactly
`secret_ref:<name>`, looked up in the gateway's secrets file (`secrets.file`, a YAML/JSON mapping)
and then in the environment as `<env_prefix><NAME>` (default `MCP_SECRET_<NAME>`). Configs hold
references, never values, so printing a config (or an error about it) is safe; resolution failures
name the reference, never what it would have expanded to.

Every value a reference resolves to is registered with the gateway's `SecretValues` (one per
gateway, handed to whatever resolves), which masks it by value wherever a string leaves the
gateway: logs, backend stderr, events, admin responses, audit rows, results and errors. Masking by
value does not depend on a value looking like a secret, nor on the masking middleware.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, ValidationInfo

from gateway.config.models import EnvVar, MiddlewareSpec, SecretsConfig
from gateway.errors import SecretError

T = TypeVar("T")

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


class SecretValues:
    """Every secret value one gateway resolved, and the one matcher that masks them by value.

    A value is replaced by `[secret:NAME]` (NAME: the variable, secret or file it came from), never
    by a hash: a hash of a low-entropy value can be reversed by trying candidates. Values shorter
    than `MIN_LENGTH` are not masked: they occur by chance in ordinary text, and masking them
    would garble it while revealing that the short string is the secret.

    The matcher is one compiled alternation of the escaped values (and their JSON-escaped forms,
    for text that is encoded JSON), longest first so that a value containing another is masked
    whole; it is rebuilt only when a new value is registered. With nothing registered, every
    method returns its argument after one attribute test.
    """

    MIN_LENGTH = 6

    def __init__(self) -> None:
        self._markers: dict[str, str] = {}  # each form of each value -> its marker
        self._pattern: re.Pattern[str] | None = None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __len__(self) -> int:
        return len(self._markers)

    def add(self, value: str, name: str) -> None:
        """Mask `value` from now on. A multi-line value (a PEM key) is masked line by line too,
        since stderr and logs are read and shown a line at a time."""
        # The marker's characters need no escaping in JSON, HTML or a log line.
        marker = f"[secret:{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:64]}]"
        lines = value.splitlines()
        candidates = {value, value.strip(), *lines, *(line.strip() for line in lines)}
        added = False
        for candidate in candidates:
            if len(candidate) < self.MIN_LENGTH:
                continue
            for form in _encoded_forms(candidate):
                if form not in self._markers:
                    self._markers[form] = marker
                    added = True
        if added:
            forms = sorted(self._markers, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, forms)))

    def mask(self, text: str) -> str:
        """`text` with every registered value replaced by its marker (`text` itself when none is in it)."""
        pattern = self._pattern
        if pattern is None or pattern.search(text) is None:
            return text
        return pattern.sub(self._marker, text)

    def mask_bytes(self, data: bytes) -> bytes:
        """`mask` for encoded text (a response body); bytes that are not UTF-8 pass unchanged."""
        if self._pattern is None:
            return data
        text = data.decode("utf-8", "surrogateescape")
        masked = self.mask(text)
        return data if masked is text else masked.encode("utf-8", "surrogateescape")

    def mask_json(self, value: T) -> T:
        """A JSON-like value with every registered value masked in its strings (keys too).

        Its strings are searched at once (one regex search over them joined, about a microsecond
        for a typical tool result); only on a hit is the value walked, building new containers, so
        a shared value (a catalogue list) is never changed in place.
        """
        pattern = self._pattern
        if pattern is None:
            return value
        if isinstance(value, str):
            return self.mask(value)  # type: ignore[return-value]
        strings: list[str] = []
        try:
            _strings(value, strings)
        except RecursionError:  # absurdly deep: the walk below cuts it off
            pass
        else:
            if pattern.search("\0".join(strings)) is None:
                return value
        return self._walk(value, 0)  # type: ignore[no-any-return]

    def _walk(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if depth > 64:  # deeper than any JSON a client would accept: hide rather than recurse on
            return "[nested too deep]"
        if isinstance(value, Mapping):
            return {self._walk(k, depth + 1): self._walk(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v, depth + 1) for v in value]
        return value

    def _marker(self, match: re.Match[str]) -> str:
        return self._markers[match.group(0)]


def _strings(value: Any, out: list[str]) -> None:
    """Every string in a JSON-like value, keys included, appended to `out` (exact types first:
    this runs on every relayed result)."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is str:
                out.append(key)
            if type(item) is str:
                out.append(item)
            elif item is not None and type(item) not in (bool, int, float):
                _strings(item, out)
    elif kind is list or kind is tuple:
        for item in value:
            if type(item) is str:
                out.append(item)
            elif item is not None and type(item) not in (bool, int, float):
                _strings(item, out)
    elif isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        _strings(dict(value), out)
    elif isinstance(value, list | tuple):
        _strings(list(value), out)


def _encoded_forms(value: str) -> set[str]:
    """`value` as text shows it: as is; JSON-escaped (`"`, `\\`, control characters, and with
    ASCII-only encoders any non-ASCII); and each of those escaped once more, as JSON or as a
    Python repr (a JSON body inside a JSON log line, or in a library's debug line of raw bytes).
    A value without such characters has one form only, and costs the matcher nothing more."""
    once = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return once | {json.dumps(f)[1:-1] for f in once} | {repr(f)[1:-1] for f in once}


def resolve(
    value: str,
    *,
    where: str,
    environ: Mapping[str, str] | None = None,
    known: SecretValues | None = None,
) -> str:
    """Expand every reference in `value`. `where` names the config key for error messages; every
    value found is registered with `known`, so that it is masked wherever it would leave."""
    env = os.environ if environ is None else environ
    if value.startswith(_SECRET_REF):
        name = value.removeprefix(_SECRET_REF).strip()
        found = _secret_ref(name, where, env)
        if known is not None:
            known.add(found, name)
        return found

    def expand(match: re.Match[str]) -> str:
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in env:
                raise SecretError(
                    f"{where}: environment variable {ref} is not set (export it, or remove ${{env:{ref}}})"
                )
            found = env[ref]
        else:
            try:
                found = Path(ref).expanduser().read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                raise SecretError(f"{where}: cannot read secret file {ref}: {exc.strerror}") from None
            ref = Path(ref).name
        if known is not None:
            known.add(found, ref)
        return found

    return _REF.sub(expand, value)


def register_references(value: Any, known: SecretValues, *, where: str) -> None:
    """Register the values of every reference found in a JSON-like `value` (middleware options,
    which their own validators expand: this sees them first, whatever the middleware). A
    reference that does not resolve is left for the validator to report."""
    if isinstance(value, str):
        if has_reference(value):
            with suppress(SecretError):  # left for the option's validator to report
                resolve(value, where=where, known=known)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            register_references(item, known, where=f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for item in value:
            register_references(item, known, where=where)


def register_options(specs: Sequence[MiddlewareSpec], known: SecretValues) -> None:
    """Register the secret values in middleware options (a JWT secret, a Redis URL's password):
    each middleware's own validator expands them, and cannot know about the gateway's registry."""
    for index, spec in enumerate(specs):
        register_references(spec.options, known, where=f"middleware[{index}] ({spec.use}).options")


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


def resolve_mapping(
    values: Mapping[str, str], *, where: str, known: SecretValues | None = None
) -> dict[str, str]:
    return {key: resolve(value, where=f"{where}.{key}", known=known) for key, value in values.items()}


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
