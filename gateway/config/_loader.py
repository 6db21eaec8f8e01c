"""Read a config file (gateway YAML, or a desktop client's `mcpServers` JSON) into a model.

Every problem is reported at once, each as `FILE:LINE: key.path: what is wrong (the fix)`; the
line is the one of the key (or of its nearest written parent, for a missing key).
"""

from __future__ import annotations

import difflib
import json
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from gateway.config.models import GatewayConfig
from gateway.errors import ConfigError

# Keys of a desktop-client entry that have no meaning for the gateway and are dropped, not refused.
_DESKTOP_ONLY_KEYS = {"disabled", "autoApprove", "alwaysAllow", "transportType", "description"}
_SERVER_TYPES = ("stdio", "http", "sse", "docker")
SCHEMA_HINT = "`mcp-gateway schema` prints every accepted key"

Path_ = tuple[str | int, ...]
"""A key path as pydantic gives it: ("servers", "time", "args", 0)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config: where (file, line, key path) and what to do about it."""

    key: str  # as shown: "servers.time.command", "middleware[0] (auth).options.api_keys"
    message: str
    path: Path_ = ()  # the key path in the document, to find its line
    source: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return ": ".join(part for part in (where, self.key, self.message) if part)


@dataclass(slots=True)
class Document:
    """A parsed config file: its data, the line of every key, and whether it is a desktop config."""

    source: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    desktop: bool = False

    def locate(self, problem: Problem) -> Problem:
        """`problem` with this file named and the line of its key (or nearest parent) filled in."""
        path = problem.path
        if self.desktop and path[:1] == ("servers",):
            path = ("mcpServers", *path[1:])
        line = None
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                break
        key = problem.key
        if self.desktop and (key == "servers" or key.startswith("servers.")):
            key = "mcpServers" + key.removeprefix("servers")  # the file's own spelling
        return replace(problem, source=self.source, line=line, key=key)


def load_config(path: str | Path) -> GatewayConfig:
    """The config model of a file; `ConfigError` with every problem the model finds.

    Only the model: `gateway.config.validation.validate_file` checks everything a start checks."""
    document = read_document(path)
    config, problems = config_problems(document)
    if config is None:
        raise ConfigError([str(p) for p in problems])
    return config


def parse_config(text: str, *, source: str = "<config>") -> GatewayConfig:
    document = parse_document(text, source)
    config, problems = config_problems(document)
    if config is None:
        raise ConfigError([str(p) for p in problems])
    return config


def read_document(path: str | Path) -> Document:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (pass --config FILE, or create gateway.yaml)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{path}: cannot read: {reason}"]) from None
    return parse_document(text, str(path))


def parse_document(text: str, source: str) -> Document:
    """Parse YAML or JSON, keeping the line of every key. A syntax error is a `ConfigError`."""
    if source.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"]) from None
        lines = _lines(text)  # JSON is YAML: the YAML composer gives the marks json does not
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
        lines = _lines(text)
    desktop = isinstance(data, dict) and "mcpServers" in data
    if desktop:
        data = _from_desktop_shape(data, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping with a `servers:` key"])
    return Document(source, data, lines, desktop)


def _lines(text: str) -> dict[Path_, int]:
    """The 1-based line of every mapping key and sequence item, by key path."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}  # valid JSON that PyYAML reads differently: no lines, still every problem
    lines: dict[Path_, int] = {}

    def walk(node: yaml.Node | None, path: Path_) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    here = (*path, key.value)
                    lines.setdefault(here, key.start_mark.line + 1)
                    walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines.setdefault((*path, index), item.start_mark.line + 1)
                walk(item, (*path, index))

    walk(root, ())
    return lines


def _from_desktop_shape(data: dict[str, Any], source: str) -> dict[str, Any]:
    servers_in = data["mcpServers"]
    if not isinstance(servers_in, dict):
        raise ConfigError([f"{source}: mcpServers: must be a mapping of server name to its launch spec"])
    servers: dict[str, Any] = {}
    for name, spec in servers_in.items():
        if isinstance(spec, dict):
            if spec.get("disabled") is True:
                continue
            spec = {k: v for k, v in spec.items() if k not in _DESKTOP_ONLY_KEYS}
        servers[name] = spec
    rest = {k: v for k, v in data.items() if k != "mcpServers"}
    return {**rest, "servers": servers}


def config_problems(document: Document) -> tuple[GatewayConfig | None, list[Problem]]:
    """The model of `document`, or None and every problem the model finds (located)."""
    try:
        return GatewayConfig.model_validate(document.data), []
    except ValidationError as exc:
        return None, [document.locate(p) for p in validation_problems(exc, GatewayConfig)]


def validation_problems(
    exc: ValidationError, model: type[BaseModel] | None, *, prefix: Path_ = (), label: str = ""
) -> list[Problem]:
    """pydantic's errors as problems. `model` (the validated class, if known) gives "did you
    mean" for unknown keys; `prefix` is where the validated data sits in the document and `label`
    how that place is shown (e.g. "middleware[0] (auth).options")."""
    problems = []
    for err in exc.errors():
        key, message = _key_message(err, model)
        path = (*prefix, *_document_path(err["loc"]))
        shown = f"{label}.{key}" if label and key != "(top level)" else label or key
        problems.append(Problem(shown, message, path))
    return problems


def _document_path(loc: Sequence[str | int]) -> Path_:
    loc = list(loc)
    # Drop the discriminator tag pydantic inserts ("servers.time.stdio.command").
    if len(loc) >= 3 and loc[0] == "servers" and loc[2] in _SERVER_TYPES:
        del loc[2]
    return tuple(loc)


def _key_message(err: Any, model: type[BaseModel] | None = None) -> tuple[str, str]:
    """A pydantic error as (`key.path`, what is wrong and the fix). Input values are never shown:
    a misplaced secret must not reach a log."""
    path = _document_path(err["loc"])
    key = ".".join(str(part) for part in path) or "(top level)"
    kind = err["type"]
    msg: str = err["msg"]
    if kind == "extra_forbidden":
        hint = _did_you_mean(str(path[-1]), _keys_at(model, tuple(err["loc"][:-1])))
        msg = f"unknown key{hint} ({SCHEMA_HINT})"
    elif kind == "missing":
        msg = f"required key is missing (add `{path[-1]}:`)" if path else "required key is missing"
    elif kind == "union_tag_invalid":
        tag = str(err.get("ctx", {}).get("tag"))
        hint = _did_you_mean(tag, _SERVER_TYPES)
        msg = f"unknown server type {tag!r}{hint} (use one of: {', '.join(_SERVER_TYPES)})"
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",")]
        given = err.get("input")
        hint = _did_you_mean(given, choices) if isinstance(given, str) else ""
        msg = f"must be {expected}{hint}"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    elif msg.startswith("Input should be "):
        msg = "must be " + msg.removeprefix("Input should be ")
    return key, msg


def _did_you_mean(given: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(given, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys_at(model: type[BaseModel] | None, loc: tuple[str | int, ...]) -> list[str]:
    """The keys the model accepts at `loc` (pydantic's loc of the mapping holding a bad key)."""
    tp: Any = model
    parts = list(loc)
    while tp is not None:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not parts:
                return [f.alias or name for name, f in tp.model_fields.items()]
            part = parts.pop(0)
            found = tp.model_fields.get(str(part)) or next(
                (f for f in tp.model_fields.values() if f.alias == part), None
            )
            tp = None if found is None else found.annotation
        elif not parts:
            return []
        elif origin in (dict, Mapping):
            parts.pop(0)
            tp = get_args(tp)[1]
        elif origin in (list, tuple, Sequence):
            parts.pop(0)
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = _member(get_args(tp), parts)
        else:
            return []
    return []


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return tp


def _member(members: Sequence[Any], parts: list[str | int]) -> Any:
    """The union member a pydantic loc goes on with: a discriminated union names its tag."""
    tag = parts[0] if parts else None
    for member in members:
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
            annotation = member.model_fields["type"].annotation
            if get_origin(annotation) is Literal and tag in get_args(annotation):
                parts.pop(0)
                return member
    return None


def options_model(factory: Callable[..., Any], title: str) -> type[BaseModel] | None:
    """A middleware's options model, found by the name pydantic gives its errors (`title`) in the
    factory's module: by convention options are validated by a model defined or imported there.
    Only used for "did you mean" hints; None when the convention is not followed."""
    module = sys.modules.get(getattr(factory, "__module__", ""), None)
    found = getattr(module, title, None)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None
