"""The merged, namespaced catalogue of the fleet: what clients list, and where each name routes.

A `Catalogue` is immutable and rebuilt (cheaply) whenever a backend starts, stops or announces a
list change; handlers read whichever one is current, so a list and the routing it implies always
agree. It also carries `known`, the catalogue of every backend's last known listing: a name that
left the lists because its backend went down still routes to that backend (whose answer says it
is down), instead of reading as a name that never existed.

Order: the merged lists follow the order of the sources (the fleet passes them in gateway.yaml
order), each backend's items in its own order, so a list never depends on which backend started
or answered first.

Collisions: when two backends' items get the same public name, the server that comes first (in
the order of the sources) keeps it and the other one's item is listed under a disambiguated
name (`naming.disambiguated`), so both stay reachable. Who keeps a name is decided over `known`
(down backends included), so a name never passes from one backend to another because one of them
restarted.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp.server.caching import CacheHint
from mcp.shared.inbound import x_mcp_header_map

from gateway import naming, overrides
from gateway.config.models import ToolFilter, ToolOverride
from gateway.overrides import Plan, Problem

Item = dict[str, Any]
Kind = Literal["tool", "prompt", "resource"]
ListKind = Literal["tools", "prompts", "resources", "templates"]
# The list method whose result each list kind is (what a freshness hint is stamped on).
LIST_METHODS: Mapping[str, ListKind] = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "templates",
}
# What a list result without a (valid) hint means: stale at once, not for sharing (the SDK's default).
NO_HINT = CacheHint(ttl_ms=0, scope="private")


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    name: str  # the backend's own name (or URI)
    plan: Plan | None = None  # an overridden tool's: what its calls' arguments need


@dataclass(frozen=True)
class BackendListing:
    """Everything one backend exposes, fetched (all pages) after it started or changed."""

    tools: list[Item] = field(default_factory=list)
    prompts: list[Item] = field(default_factory=list)
    resources: list[Item] = field(default_factory=list)
    templates: list[Item] = field(default_factory=list)
    # The freshness hint (SEP-2549 `ttlMs`/`cacheScope`) each list kind's result carried, for the
    # kinds the backend lists at all; `NO_HINT` where its result had none.
    hints: Mapping[ListKind, CacheHint] = field(default_factory=dict)
    listed_at: float = field(default_factory=time.monotonic)  # when the hints' TTLs started


def cache_hint_of(results: Iterable[Mapping[str, Any]]) -> CacheHint:
    """The hint a list's pages carried together: the shortest TTL, private if any page is.

    A page without a valid hint (any 2025-11-25 backend's) counts as `NO_HINT`."""
    ttl: int | None = None
    private = False
    for result in results:
        value, scope = result.get("ttlMs"), result.get("cacheScope")
        if type(value) is not int or value < 0 or scope not in ("public", "private"):
            return NO_HINT
        ttl = value if ttl is None else min(ttl, value)
        private = private or scope == "private"
    if ttl is None:
        return NO_HINT
    return CacheHint(ttl_ms=ttl, scope="private" if private else "public")


@dataclass(frozen=True, slots=True)
class Collision:
    """Two backends' items that would have had the same public name `name`.

    `kept` (the first server in config order) keeps `name`; `server`'s item (its own name:
    `original`) is listed and routed as `renamed`."""

    kind: Kind
    name: str
    kept: str
    server: str
    original: str
    renamed: str

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.name!r} is exposed by both {self.kept!r} and {self.server!r}; "
            f"the one from {self.server!r} is listed as {self.renamed!r} "
            "(set a `prefix:` on one of them to choose the names yourself)"
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "kept": self.kept,
            "server": self.server,
            "original": self.original,
            "renamed": self.renamed,
        }


@dataclass(frozen=True, slots=True)
class Source:
    """One backend as the catalogue sees it."""

    server: str
    namespace: str
    tool_filter: ToolFilter
    listing: BackendListing
    overrides: Mapping[str, ToolOverride] = field(default_factory=dict)  # by the backend's tool name


def _allowed(name: str, rule: ToolFilter) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in rule.allow) and not any(
        fnmatch.fnmatchcase(name, p) for p in rule.deny
    )


def overridden(
    tools: Iterable[Item],
    routes: Mapping[str, Route],
    tool_overrides: Mapping[str, ToolOverride],
    *,
    owner: str,
) -> tuple[list[Item], dict[str, Route], tuple[Problem, ...]]:
    """Overrides over tools that are public already (an endpoint's view of the catalogue): keyed
    by public name, applied to `tools` (routed by `routes`). Returns the tools clients see, the
    route of each (its new name's, for a renamed one; the route's plan under the override's),
    and what the overrides name that the tools do not have."""
    listed = [t for t in tools if t["name"] in routes]
    applied = overrides.apply(listed, tool_overrides, owner=owner)
    shown: list[Item] = []
    shown_routes: dict[str, Route] = {}
    for tool in applied.tools:
        route = routes[tool.original]
        if tool.plan is not None:
            route = Route(route.server, route.name, tool.plan.over(route.plan))
        shown.append(tool.item)
        shown_routes[tool.item["name"]] = route
    return shown, shown_routes, applied.problems


def _freshness(sources: Iterable[Source]) -> dict[ListKind, tuple[float, Literal["public", "private"]]]:
    """Per list kind, when the first of its backends' hints runs out, and whether any is private."""
    fresh: dict[ListKind, tuple[float, Literal["public", "private"]]] = {}
    for src in sources:
        for kind, hint in src.listing.hints.items():
            expires = src.listing.listed_at + hint.ttl_ms / 1000
            if kind in fresh:
                until, scope = fresh[kind]
                fresh[kind] = (
                    min(until, expires),
                    "private" if "private" in (scope, hint.scope) else "public",
                )
            else:
                fresh[kind] = (expires, hint.scope)
    return fresh


@dataclass(frozen=True)
class Catalogue:
    tools: list[Item] = field(default_factory=list)
    prompts: list[Item] = field(default_factory=list)
    resources: list[Item] = field(default_factory=list)
    templates: list[Item] = field(default_factory=list)
    tool_routes: Mapping[str, Route] = field(default_factory=dict)
    prompt_routes: Mapping[str, Route] = field(default_factory=dict)
    namespaces: Mapping[str, str] = field(default_factory=dict)  # server -> namespace
    uri_owners: Mapping[str, str] = field(default_factory=dict)  # uri namespace -> server
    unprefixed: tuple[str, ...] = ()
    resource_routes: Mapping[str, Route] = field(default_factory=dict)  # exact public uri -> route
    collisions: tuple[Collision, ...] = ()
    # (kind, server, its own name) -> public name, for the items a collision renamed.
    renames: Mapping[tuple[Kind, str, str], str] = field(default_factory=dict)
    # The input schemas that mark properties `x-mcp-header`: only their calls' Mcp-Param-* headers
    # need checking against the arguments (2026-07-28).
    header_schemas: Mapping[str, Any] = field(default_factory=dict)
    # Per list kind: until when (time.monotonic()) the merged list is fresh, and its cache scope.
    freshness: Mapping[ListKind, tuple[float, Literal["public", "private"]]] = field(default_factory=dict)
    # Every backend's last known listing, down ones included (None: not kept). Routing only.
    known: Catalogue | None = None
    # (server, its own tool name) -> the name its override gives it (before the namespace).
    override_names: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # What of the servers' overrides their listings do not allow (with `known`: over `known`'s,
    # so that a backend's restart does not report them again).
    override_problems: tuple[Problem, ...] = ()

    @classmethod
    def build(cls, sources: Iterable[Source], *, known: Catalogue | None = None) -> Catalogue:
        """Merge `sources` in their order; with `known`, names are given as `known` gave them."""
        sources = list(sources)
        namespaces: dict[str, str] = {}
        uri_owners: dict[str, str] = {}
        unprefixed: list[str] = []
        # Every item that takes a name, in list order: (kind, server, item, its own name, public name).
        entries: list[tuple[Kind, str, Item, str, str]] = []
        templates: list[Item] = []
        plans: dict[tuple[str, str], Plan] = {}
        override_names: dict[tuple[str, str], str] = {}
        problems: list[Problem] = []
        for src in sources:
            ns = src.namespace
            namespaces[src.server] = ns
            if ns:
                uri_owners[naming.uri_namespace(ns)] = src.server
            else:
                unprefixed.append(src.server)
            # Overrides apply to the whole listing (what they name is checked against all of
            # it); the filter to the backend's own names, as without them.
            shaped = overrides.apply(
                src.listing.tools, src.overrides, owner=f"servers.{src.server}", server=src.server
            )
            problems += shaped.problems
            for tool in shaped.tools:
                original, shown = tool.original, tool.item["name"]
                if _allowed(original, src.tool_filter):
                    entries.append(("tool", src.server, tool.item, original, naming.public_name(ns, shown)))
                    if tool.plan is not None:
                        plans[(src.server, original)] = tool.plan
                    if shown != original:
                        override_names[(src.server, original)] = shown
            for prompt in src.listing.prompts:
                original = prompt["name"]
                entries.append(("prompt", src.server, prompt, original, naming.public_name(ns, original)))
            for res in src.listing.resources:
                original = res["uri"]
                entries.append(("resource", src.server, res, original, naming.public_uri(ns, original)))
            for tpl in src.listing.templates:
                public = naming.public_uri(ns, tpl["uriTemplate"])
                templates.append(tpl if public == tpl["uriTemplate"] else {**tpl, "uriTemplate": public})

        forced = known.renames if known is not None else {}
        # Who keeps each public name: the first server that has it (a name `known` renamed keeps none).
        keepers: dict[tuple[Kind, str], str] = {}
        for kind, server, _, original, public in entries:
            if (kind, server, original) not in forced:
                keepers.setdefault((kind, public), server)
        taken = {*keepers, *((key[0], name) for key, name in forced.items())}
        renames: dict[tuple[Kind, str, str], str] = {}
        collisions: list[Collision] = list(known.collisions) if known is not None else []
        routes: dict[Kind, dict[str, Route]] = {"tool": {}, "prompt": {}, "resource": {}}
        merged: dict[Kind, list[Item]] = {"tool": [], "prompt": [], "resource": []}
        for kind, server, item, original, public in entries:
            key = (kind, server, original)
            name = forced.get(key) or renames.get(key)
            if name is None:
                keeper = keepers[(kind, public)]
                if keeper == server:
                    name = public
                else:
                    in_kind = {n for k, n in taken if k == kind}
                    name = naming.disambiguated(server, public, in_kind.__contains__, uri=kind == "resource")
                    taken.add((kind, name))
                    collisions.append(Collision(kind, public, keeper, server, original, name))
            if name != public:
                renames[key] = name
            if name in routes[kind]:
                continue  # the backend lists it twice: its first one stands
            plan = plans.get((server, original)) if kind == "tool" and plans else None
            routes[kind][name] = Route(server, original, plan)
            attr = "uri" if kind == "resource" else "name"
            merged[kind].append(item if item[attr] == name else {**item, attr: name})
        tools = merged["tool"]
        return cls(
            tools=tools,
            prompts=merged["prompt"],
            resources=merged["resource"],
            templates=templates,
            tool_routes=routes["tool"],
            prompt_routes=routes["prompt"],
            namespaces=namespaces,
            uri_owners=uri_owners,
            unprefixed=tuple(unprefixed),
            resource_routes=routes["resource"],
            collisions=tuple(collisions),
            renames=renames,
            known=known,
            header_schemas={
                t["name"]: schema
                for t in tools
                if isinstance(schema := t.get("inputSchema"), dict) and x_mcp_header_map(schema)
            },
            freshness=_freshness(sources),
            override_names=override_names,
            override_problems=known.override_problems if known is not None else tuple(problems),
        )

    def cache_hint(self, kind: ListKind) -> CacheHint:
        """The freshness hint for the merged list of `kind` now (SEP-2549).

        The TTL is what is left of the shortest one among the backends that list `kind` (counted
        from when each was listed, so a client never holds a list longer than its backend allowed);
        the scope is private if any backend's is. No backend listing `kind`: stale at once, since
        any backend that starts changes the list."""
        expires, scope = self.freshness.get(kind, (0.0, "private"))
        left = int((expires - time.monotonic()) * 1000)
        return CacheHint(ttl_ms=max(0, left), scope=scope)

    def public_name(self, kind: Kind, server: str, namespace: str, original: str) -> str:
        """The public name of `server`'s item `original` (whether or not the server is listed now)."""
        renamed = self.renames.get((kind, server, original))
        if renamed is not None:
            return renamed
        if kind == "resource":
            return naming.public_uri(namespace, original)
        if kind == "tool":
            original = self.override_names.get((server, original), original)
        return naming.public_name(namespace, original)

    def route(self, kind: Kind, name: str) -> Route | None:
        """Which backend serves the public `name` of a `kind`, and its own name for it.

        A name a down backend had when it was last listed routes to that backend (not listed now,
        so it is not a live route): its answer says it is down, where "unknown" would mislead."""
        if kind == "resource":
            return self.route_uri(name)
        routes = self.tool_routes if kind == "tool" else self.prompt_routes
        route = routes.get(name)
        if route is None and self.known is not None:
            known = self.known.tool_routes if kind == "tool" else self.known.prompt_routes
            route = self._down(known.get(name))
        return route

    def _down(self, route: Route | None) -> Route | None:
        """`route` (from `known`) if its backend is not listed now: a listed one no longer has it."""
        return route if route is not None and route.server not in self.namespaces else None

    def route_uri(self, uri: str) -> Route | None:
        """Which backend a public resource URI belongs to, and its original URI."""
        exact = self.resource_routes.get(uri)
        if exact is not None:
            return exact
        split = naming.split_uri(uri)
        if split is not None and split[0] in self.uri_owners:
            return Route(self.uri_owners[split[0]], split[1])
        known = self.known
        if known is not None:
            # A down backend's URIs (listed, or in its namespace) are its own, not the catch-all's.
            route = self._down(known.resource_routes.get(uri))
            if route is None and split is not None and split[0] in known.uri_owners:
                route = self._down(Route(known.uri_owners[split[0]], split[1]))
            if route is not None:
                return route
        if self.unprefixed:
            # Templated or unlisted URIs of unprefixed servers cannot be told apart by name:
            # the first unprefixed server (config order) owns them.
            return Route(self.unprefixed[0], uri)
        if known is not None and known.unprefixed:
            return self._down(Route(known.unprefixed[0], uri))  # down, or it would be in `unprefixed`
        return None

    def public_uri(self, server: str, uri: str) -> str:
        renamed = self.renames.get(("resource", server, uri)) if self.renames else None
        return renamed or naming.public_uri(self.namespaces.get(server, ""), uri)
