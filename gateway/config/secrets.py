"""Resolve secret references when a backend launches, and check a server's declared environment.

A value may hold `${env:NAME}` and `${file:PATH}` references anywhere in it, or be exactly
`secret_ref:<name>`, looked up in the gateway's secrets file (`secrets.file`, a YAML/JSON mapping)
and then in the environment as `<env_prefix><NAME>` (default `MCP_SECRET_<NAME>`). Configs hold
references, never values, so printing a config (or an error about it) is safe; resolution failures
name the reference, never what it would have expanded to.

One `Secrets` per gateway, created where the gateway is assembled (`build_app`, `serve_stdio`;
`validate_document` makes its own for the config it checks) and handed to whatever resolves, holds
both: where `secret_ref:` values come from (the `secrets:` section; a reload swaps it), and, as a
`SecretValues`, every value a reference resolved to, masked by value wherever a string leaves the
gateway: logs, backend stderr, events, admin responses, audit rows, results and errors. Masking by
value does not depend on a value looking like a secret, nor on the masking middleware.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, ValidationInfo

from gateway.config.models import EnvVar, MiddlewareSpec, SecretsConfig
from gateway.errors import SecretError

T = TypeVar("T")

_REF = re.compile(r"\$\{(env|file):([^}]+)\}")
_SECRET_REF = "secret_ref:"


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


class Secrets(SecretValues):
    """One gateway's secrets: where `secret_ref:` values come from (`source`), and, as the
    `SecretValues` it is, every value its references resolved to.

    A reload that changes `secrets:` swaps `source` (`using`); the registry stays, since what the
    running backends were handed is still to be masked.
    """

    def __init__(self, source: SecretsConfig | None = None) -> None:
        super().__init__()
        self.source = source if source is not None else SecretsConfig()

    @contextmanager
    def using(self, source: SecretsConfig) -> Iterator[None]:
        """`source` from now on, unless the block fails (a refused reload keeps the old one)."""
        previous, self.source = self.source, source
        try:
            yield
        except BaseException:
            self.source = previous
            raise

    @contextmanager
    def expanding(self) -> Iterator[None]:
        """Middleware options (`ResolvedStr`) created in this block resolve against these secrets.

        Options are validated by each middleware's own constructor, which the chain calls with the
        options only (a plugin's signature); the context variable carries this object to their
        validators for the span of the block, in this task only."""
        token = _expanding.set(self)
        try:
            yield
        finally:
            _expanding.reset(token)

    def resolve(self, value: str, *, where: str, environ: Mapping[str, str] | None = None) -> str:
        """Expand every reference in `value`. `where` names the config key for error messages;
        every value found is registered, so that it is masked wherever it would leave."""
        env = os.environ if environ is None else environ
        if value.startswith(_SECRET_REF):
            name = value.removeprefix(_SECRET_REF).strip()
            found = self._secret_ref(name, where, env)
            self.add(found, name)
            return found

        def expand(match: re.Match[str]) -> str:
            kind, ref = match.group(1), match.group(2).strip()
            if kind == "env":
                if ref not in env:
                    fix = f"export it, or remove ${{env:{ref}}}"
                    raise SecretError(f"{where}: environment variable {ref} is not set ({fix})")
                found = env[ref]
            else:
                try:
                    found = Path(ref).expanduser().read_text(encoding="utf-8").rstrip("\n")
                except OSError as exc:
                    raise SecretError(f"{where}: cannot read secret file {ref}: {exc.strerror}") from None
                ref = Path(ref).name
            self.add(found, ref)
            return found

        return _REF.sub(expand, value)

    def resolve_mapping(self, values: Mapping[str, str], *, where: str) -> dict[str, str]:
        return {key: self.resolve(value, where=f"{where}.{key}") for key, value in values.items()}

    def register_references(self, value: Any, *, where: str) -> None:
        """Register the values of every reference found in a JSON-like `value` (middleware
        options, which their own validators expand: this sees them first, whatever the
        middleware). A reference that does not resolve is left for the validator to report."""
        if isinstance(value, str):
            if has_reference(value):
                with suppress(SecretError):  # left for the option's validator to report
                    self.resolve(value, where=where)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                self.register_references(item, where=f"{where}.{key}")
        elif isinstance(value, list | tuple):
            for item in value:
                self.register_references(item, where=where)

    def register_options(self, specs: Sequence[MiddlewareSpec]) -> None:
        """Register the secret values in middleware options (a JWT secret, a Redis URL's
        password): a plugin may expand them its own way, which this registry cannot see."""
        for index, spec in enumerate(specs):
            self.register_references(spec.options, where=f"middleware[{index}] ({spec.use}).options")

    def _secret_ref(self, name: str, where: str, env: Mapping[str, str]) -> str:
        source = self.source  # one read: a reload may swap it meanwhile
        if source.file:
            try:
                text = Path(source.file).expanduser().read_text(encoding="utf-8")
                table = json.loads(text) if source.file.endswith(".json") else yaml.safe_load(text)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                raise SecretError(
                    f"{where}: cannot read the secrets file {source.file}: {type(exc).__name__}"
                ) from None
            if isinstance(table, Mapping) and name in table:
                return str(table[name])
        variable = source.env_prefix + re.sub(r"\W", "_", name).upper()
        if variable in env:
            return env[variable]
        shown = f"the secrets file {source.file} or " if source.file else ""
        raise SecretError(
            f"{where}: secret {name!r} is not defined (add it to {shown}the environment as {variable})"
        )


# Set only by `Secrets.expanding`, for the span of one block (see there).
_expanding: ContextVar[Secrets | None] = ContextVar("gateway_secrets_expanding", default=None)


def _resolve_option(value: str, info: ValidationInfo) -> str:
    where = info.field_name or "options"
    # Validation context first (`model_validate(..., context={"secrets": ...})`), then the block
    # the chain creates middlewares in; alone (a middleware made by hand), the default source.
    context = info.context
    found = context.get("secrets") if isinstance(context, Mapping) else None
    secrets = found if isinstance(found, Secrets) else _expanding.get() or Secrets()
    try:
        return secrets.resolve(value, where=where)
    except SecretError as exc:
        # Names the reference, never a value; the key is named by whoever reports the error.
        raise ValueError(exc.message.removeprefix(f"{where}: ")) from None


ResolvedStr = Annotated[str, AfterValidator(_resolve_option)]
"""A middleware option that may hold secret references, expanded when the options are validated."""


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
