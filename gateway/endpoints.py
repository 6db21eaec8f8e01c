"""Endpoints (virtual servers) and the view of the fleet each one exposes.

An `Endpoint` is one MCP endpoint of the gateway: the default one (`listen.path`, the whole
fleet) or one of `endpoints:` in gateway.yaml, with its own path, `serverInfo` name,
instructions, selection of the fleet's tools, prompts and resources, and who may use it.

A `View` is what an endpoint exposes of one `Catalogue`: its lists and its routing. Like the
catalogue it is immutable and built once per catalogue change (`views`), never per call; the
relay serves every call through the view of the endpoint it came in on, so a name outside the
view is unknown there exactly as a name no backend has. The default endpoint's view is the
catalogue itself (its very lists), so the one code path costs the default endpoint nothing.

A view also keeps what a list result costs to build: the result of each list kind, once per view
(`View.listing`), so that serving `tools/list` of a thousand tools is a dictionary lookup, not a
rebuild. Whatever filters lists per caller caches its filtered copy keyed by the view's list (see
the `auth` middleware).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.catalogue import Catalogue, Item, Kind, ListKind, Route
from gateway.catalogue import overridden as catalogue_overridden
from gateway.config.models import (
    EndpointAuth,
    EndpointConfig,
    GatewayConfig,
    Selection,
    ServerSelection,
    ToolOverride,
    ToolSearchConfig,
)
from gateway.middleware.base import Identity
from gateway.overrides import Problem

DEFAULT = ""
"""The key of the default endpoint (`listen.path`): stdio clients always use it."""

# Per list kind: the result key, and the field holding an item's public name.
LISTS: Mapping[ListKind, tuple[str, str]] = {
    "tools": ("tools", "name"),
    "prompts": ("prompts", "name"),
    "resources": ("resources", "uri"),
    "templates": ("resourceTemplates", "uriTemplate"),
}
_SELECTION_OF: Mapping[Kind, Literal["tools", "prompts", "resources"]] = {
    "tool": "tools",
    "prompt": "prompts",
    "resource": "resources",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One MCP endpoint: where it is served, what it is called, what it takes from the fleet and
    who may use it. `servers` None: the whole fleet (the default endpoint)."""

    key: str  # DEFAULT, or the path of an `endpoints:` entry
    path: str
    name: str
    instructions: str | None = None
    servers: Mapping[str, ServerSelection | None] | None = None
    auth: EndpointAuth = field(default_factory=EndpointAuth)
    # Per-tool overrides of this endpoint, by public tool name (over the servers' own).
    overrides: Mapping[str, ToolOverride] = field(default_factory=dict)
    tool_search: ToolSearchConfig | None = None  # search mode here (None: the full list)

    @classmethod
    def of(cls, config: EndpointConfig, gateway: GatewayConfig) -> Endpoint:
        return cls(
            key=config.route,
            path=config.route,
            name=config.name or gateway.name,
            instructions=config.instructions,
            servers=dict(config.servers),
            auth=config.auth,
            overrides=dict(config.overrides),
            tool_search=config.tool_search,
        )

    def admits(self, identity: Identity) -> bool:
        """Whether `identity` may use this endpoint at all (its `auth:` rules)."""
        rules = self.auth
        if rules.roles is None and rules.identities is None:
            return True
        if rules.identities is not None and identity.name in rules.identities:
            return True
        return rules.roles is not None and not identity.roles.isdisjoint(rules.roles)

    def selects(self, kind: Kind, server: str, original: str) -> bool:
        """Whether `server`'s item `original` (its own name, or URI) is part of this endpoint."""
        if self.servers is None:
            return True
        if server not in self.servers:
            return False
        chosen = self.servers[server]
        if chosen is None:
            return True
        return _selected(original, getattr(chosen, _SELECTION_OF[kind]))


def _selected(name: str, rule: Selection) -> bool:
    if any(fnmatch.fnmatchcase(name, p) for p in rule.deny):
        return False
    return name in rule.names or any(fnmatch.fnmatchcase(name, p) for p in rule.allow)


def endpoints_of(config: GatewayConfig) -> dict[str, Endpoint]:
    """Every endpoint `config` declares, the default one first, by key."""
    path = config.listen.path.rstrip("/") or "/mcp"
    found = {DEFAULT: Endpoint(DEFAULT, path, config.name, tool_search=config.tool_search)}
    for declared in config.endpoints:
        endpoint = Endpoint.of(declared, config)
        found[endpoint.key] = endpoint
    return found


@dataclass(frozen=True)
class View:
    """What `endpoint` exposes of `catalogue` (see the module docstring)."""

    endpoint: Endpoint
    catalogue: Catalogue
    tools: list[Item]
    prompts: list[Item]
    resources: list[Item]
    templates: list[Item]
    # The public names listed, per kind: a listed name routes without asking the selection again.
    listed: Mapping[Kind, frozenset[str]] = field(default_factory=dict)
    # The endpoint's overridden tools: their routes (by the name shown here), and the names they
    # replace (no longer tools of this endpoint).
    tool_routes: Mapping[str, Route] = field(default_factory=dict)
    replaced: frozenset[str] = frozenset()
    # An overridden tool's name in the catalogue (what `auth` rules and audit name it by).
    catalogue_names: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()  # what the endpoint's overrides name that its tools lack

    @classmethod
    def build(cls, endpoint: Endpoint, catalogue: Catalogue) -> View:
        if endpoint.servers is None:
            # The whole fleet: the catalogue's own lists, and its routing unfiltered.
            return cls(
                endpoint,
                catalogue,
                catalogue.tools,
                catalogue.prompts,
                catalogue.resources,
                catalogue.templates,
            )
        tools = _kept(endpoint, catalogue, "tool", catalogue.tools, catalogue.tool_routes, "name")
        tool_routes: dict[str, Route] = {}
        replaced: frozenset[str] = frozenset()
        catalogue_names: dict[str, str] = {}
        problems: tuple[Problem, ...] = ()
        if endpoint.overrides:
            kept = {t["name"] for t in tools}
            tools, tool_routes, problems = catalogue_overridden(
                tools, catalogue.tool_routes, endpoint.overrides, owner=f"endpoints.{endpoint.path}"
            )
            replaced = frozenset(kept - {t["name"] for t in tools})
            public = {(r.server, r.name): name for name, r in catalogue.tool_routes.items()}
            catalogue_names = {
                shown: public[(r.server, r.name)]
                for shown, r in tool_routes.items()
                if (r.server, r.name) in public
            }
        prompts = _kept(endpoint, catalogue, "prompt", catalogue.prompts, catalogue.prompt_routes, "name")
        resources = _kept(
            endpoint, catalogue, "resource", catalogue.resources, catalogue.resource_routes, "uri"
        )
        templates = []
        for template in catalogue.templates:
            route = catalogue.route_uri(template["uriTemplate"])
            if route is not None and endpoint.selects("resource", route.server, route.name):
                templates.append(template)
        listed: dict[Kind, frozenset[str]] = {
            "tool": frozenset(t["name"] for t in tools),
            "prompt": frozenset(p["name"] for p in prompts),
            "resource": frozenset(r["uri"] for r in resources),
        }
        return cls(
            endpoint,
            catalogue,
            tools,
            prompts,
            resources,
            templates,
            listed,
            tool_routes,
            replaced,
            catalogue_names,
            problems,
        )

    def items(self, kind: ListKind) -> list[Item]:
        items: list[Item] = getattr(self, kind)
        return items

    def same_list(self, other: View, kind: ListKind) -> bool:
        """Whether `other` lists the same `kind` (so its clients need no `list_changed`)."""
        mine, theirs = self.items(kind), other.items(kind)
        return mine is theirs or mine == theirs

    def route(self, kind: Kind, name: str) -> Route | None:
        """Which backend serves the public `name` of a `kind` on this endpoint (None: unknown here)."""
        if kind == "tool" and self.tool_routes:
            if name in self.tool_routes:
                return self.tool_routes[name]
            if name in self.replaced:
                return None  # renamed on this endpoint: its old name is not one of its tools
        route = self.catalogue.route(kind, name)
        if route is None or self.endpoint.servers is None or name in self.listed.get(kind, ()):
            return route
        # Not listed: a down backend's name, or an unlisted URI of a server (templates, catch-all).
        return route if self.endpoint.selects(kind, route.server, route.name) else None

    def route_uri(self, uri: str) -> Route | None:
        return self.route("resource", uri)

    def catalogue_name(self, kind: Kind, name: str) -> str:
        """The catalogue's public name of what this endpoint shows as `name` (the same, unless an
        endpoint override renamed a tool): what `auth` rules and audit records name it by."""
        return self.catalogue_names.get(name, name) if kind == "tool" else name


def _kept(
    endpoint: Endpoint,
    catalogue: Catalogue,
    kind: Kind,
    items: Iterable[Item],
    routes: Mapping[str, Route],
    attr: str,
) -> list[Item]:
    kept = []
    for item in items:
        route = routes.get(item[attr])
        if route is not None and endpoint.selects(kind, route.server, route.name):
            kept.append(item)
    return kept


def views(endpoints: Mapping[str, Endpoint], catalogue: Catalogue) -> dict[str, View]:
    """Every endpoint's view of `catalogue`."""
    return {key: View.build(endpoint, catalogue) for key, endpoint in endpoints.items()}


def changed_lists(old: Mapping[str, View], new: Mapping[str, View]) -> dict[str, set[ListKind]]:
    """Per endpoint of `new`, the list kinds whose items differ from `old`'s (a new endpoint has
    no clients yet: nothing changed for it)."""
    changed: dict[str, set[ListKind]] = {}
    for key, view in new.items():
        before = old.get(key)
        if before is None:
            continue
        kinds = {kind for kind in LISTS if not view.same_list(before, kind)}
        if kinds:
            changed[key] = kinds
    return changed
