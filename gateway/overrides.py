"""Tool overrides: how a tool is shown to clients, and what the gateway adds to its calls.

An override (`ToolOverride`, keyed by the tool's name as its owner lists it) may rename the tool,
replace or extend its description, set its title, hide arguments (the gateway sends a fixed value),
give arguments defaults, and tighten arguments' schemas (enum, maximum, pattern, ...).

`apply` runs once per listing (when the catalogue is built, not per call): it checks the overrides
against the tools' real schemas, shapes the tools clients see, and gives each tool whose calls need
work a `Plan`. A call then costs one `Plan.prepare`: refuse a hidden argument the client sent, check
the tightened arguments (a validator compiled once per listing), fill in defaults and fixed values.
The backend receives its own tool name (the route's) and the full arguments.

An override that names a tool the owner does not list, or an argument the tool does not have, is
not an error that stops anything: `apply` reports it (`Problem`) and leaves that part out. A
backend's tools are only known once it runs, and may change on any `list_changed`.

Overrides stack: per-server ones are applied to a backend's listing (the catalogue), and an
endpoint's to the catalogue's tools it shows; its plans run before the server's (`Plan.over`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway.config.models import ToolOverride
from gateway.errors import InvalidArguments

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

Item = dict[str, Any]
_Report = Callable[[str, str, str], None]  # (tool, key, message)


@dataclass(frozen=True, slots=True)
class Problem:
    """A part of an override that cannot apply to the tools its owner lists now.

    `owner` is where the overrides are configured (`servers.time`), `tool` the key under its
    `overrides:`, `key` the override's key at fault ("" for the whole override)."""

    owner: str
    tool: str
    key: str
    message: str
    server: str | None = None  # the backend whose listing showed it

    def __str__(self) -> str:
        key = f".{self.key}" if self.key else ""
        return f"{self.owner}.overrides.{self.tool}{key}: {self.message}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "owner": self.owner,
            "tool": self.tool,
            "key": self.key,
            "message": self.message,
            "server": self.server,
        }


# A plan is compared by identity: the catalogue's equality (did a list change?) is about items.
@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """What a call of an overridden tool needs, prepared once per listing."""

    fixed: Mapping[str, Any] = field(default_factory=dict)  # hidden arguments and their values
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Per tightened argument, a validator of its tightened keywords only (the backend checks its own
    # schema itself). One per argument, not one of the object: a fifth of the cost per call.
    checks: tuple[tuple[str, Validator], ...] = ()
    inner: Plan | None = None  # the plan of the overrides under these (an endpoint's over a server's)

    def over(self, inner: Plan | None) -> Plan:
        """This plan, then `inner` (the overrides this one was applied on top of)."""
        if inner is None:
            return self
        return replace(self, inner=inner if self.inner is None else self.inner.over(inner))

    def prepare(self, tool: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """The arguments the backend receives for the client's `arguments` to `tool` (its public
        name, for the error); `InvalidArguments` (-32602) for a hidden argument the client sent or
        a value its tightened schema refuses."""
        args = dict(arguments) if arguments else {}
        fixed = self.fixed
        if fixed and not fixed.keys().isdisjoint(args):
            arg = next(a for a in fixed if a in args)
            raise InvalidArguments(tool, arg, f"argument {arg!r} is set by the gateway and must not be sent")
        for arg, validator in self.checks:
            if arg in args and not validator.is_valid(args[arg]):
                from jsonschema.exceptions import best_match

                error = best_match(validator.iter_errors(args[arg]))
                raise InvalidArguments(tool, arg, f"argument {arg!r}: {error.message}")
        for arg, value in self.defaults.items():
            if arg not in args:
                args[arg] = value
        if fixed:
            args.update(fixed)
        return args if self.inner is None else self.inner.prepare(tool, args)

    def summary(self) -> dict[str, Any]:
        """What the plan does, for people (`mcp-gateway tools`): the hidden arguments' values are
        left out, they may be credentials."""
        shown: dict[str, Any] = {}
        if self.fixed:
            shown["hidden"] = sorted(self.fixed)
        if self.defaults:
            shown["defaults"] = dict(self.defaults)
        if self.checks:
            shown["tightened"] = [arg for arg, _ in self.checks]
        if self.inner is not None:
            for key, value in self.inner.summary().items():
                shown.setdefault(key, value)
        return shown


@dataclass(frozen=True, slots=True)
class Shaped:
    """One tool as clients see it (`item`), its name as its owner lists it, and its call plan."""

    original: str
    item: Item
    plan: Plan | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    tools: list[Shaped]  # every listed tool, in the listing's order
    problems: tuple[Problem, ...] = ()


def apply(
    tools: Iterable[Item],
    overrides: Mapping[str, ToolOverride],
    *,
    owner: str,
    server: str | None = None,
) -> Applied:
    """The `tools` of one owner (a backend's listing, an endpoint's view) with its `overrides`.

    `owner` is where the overrides are configured (`servers.time`, for the problems' wording)."""
    listed = [t for t in tools if isinstance(t.get("name"), str)]
    if not overrides:
        return Applied([Shaped(t["name"], t) for t in listed])
    names = {t["name"] for t in listed}
    problems: list[Problem] = []

    def report(tool: str, key: str, message: str) -> None:
        problems.append(Problem(owner, tool, key, message, server))

    for missing in overrides.keys() - names:
        report(missing, "", f"no tool {missing!r} is listed; the override is ignored")
    # A new name must not take the name of a tool that keeps its own: one would be unreachable.
    kept = {n for n in names if n not in overrides or overrides[n].name in (None, n)}
    shaped: list[Shaped] = []
    for tool in listed:
        override = overrides.get(tool["name"])
        if override is None:
            shaped.append(Shaped(tool["name"], tool))
            continue
        name = override.name
        if name is not None and name != tool["name"] and name in kept:
            report(tool["name"], "name", f"another tool is named {name!r}; the tool keeps its own name")
            name = None
        shaped.append(_shape(tool, override, name, report))
    return Applied(shaped, tuple(problems))


def _shape(tool: Item, override: ToolOverride, name: str | None, report: _Report) -> Shaped:
    original: str = tool["name"]
    item = dict(tool)
    if name is not None:
        item["name"] = name
    if override.title is not None:
        item["title"] = override.title
    description = tool.get("description") if override.description is None else override.description
    if (extra := override.description_append) is not None:
        description = f"{description}\n\n{extra}" if description else extra
    if description is not None:
        item["description"] = description

    schema = tool.get("inputSchema")
    schema = schema if isinstance(schema, dict) else {}
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}

    def known(section: str, args: Mapping[str, Any]) -> dict[str, Any]:
        for arg in args:
            if not isinstance(props.get(arg), dict):
                report(original, f"{section}.{arg}", f"the tool has no argument {arg!r}; ignored")
        return {arg: value for arg, value in args.items() if isinstance(props.get(arg), dict)}

    fixed = known("hide", override.hide)
    defaults = known("defaults", override.defaults)
    tighten = known("schema", override.tighten)
    if not (fixed or defaults or tighten):
        return Shaped(original, item)
    for section, values in (("hide", fixed), ("defaults", defaults)):
        for arg, value in values.items():
            if not _satisfies(schema, arg, value):
                report(original, f"{section}.{arg}", "the value does not satisfy the tool's own schema")

    shown_props = {arg: prop for arg, prop in props.items() if arg not in fixed}
    for arg, value in defaults.items():
        shown_props[arg] = {**props[arg], "default": value}
    for arg, keywords in tighten.items():
        shown_props[arg] = {**shown_props[arg], **keywords}
    shown = {**schema, "properties": shown_props}
    if isinstance(schema.get("required"), list):
        # The gateway supplies hidden and defaulted arguments: a client may leave them out.
        shown["required"] = [r for r in schema["required"] if r not in fixed and r not in defaults]
    item["inputSchema"] = shown

    checks: tuple[tuple[str, Validator], ...] = ()
    if tighten:
        from jsonschema import Draft202012Validator

        checks = tuple((arg, Draft202012Validator(keywords)) for arg, keywords in tighten.items())
    plan = Plan(fixed=fixed, defaults=defaults, checks=checks)
    return Shaped(original, item, plan)


def _satisfies(schema: Mapping[str, Any], arg: str, value: Any) -> bool:
    """Whether `value` passes the tool's own schema for `arg` (a schema that cannot be checked
    passes: the backend will say)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from referencing.exceptions import Unresolvable

    # The argument's schema alone, with the definitions its `$ref`s may point to.
    probe = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    probe.update(type="object", properties={arg: schema["properties"][arg]})
    try:
        return bool(Draft202012Validator(probe).is_valid({arg: value}))
    except (SchemaError, Unresolvable):
        return True
