"""The merged, namespaced catalogue of the fleet: what clients list, and where each name routes.

A `Catalogue` is immutable and rebuilt (cheaply) whenever a backend starts, stops or announces a
list change; handlers read whichever one is current, so a list and the routing it implies always
agree. It also carries `known`, the catalogue of every backend's last known listing: a name that
left the lists because its backend went down still routes to that backend (whose answer says it
is down), instead of reading as a name that never existed.

Order: the merged lists follow the order of the sources (the fleet passes them in gateway.yaml
order), each backend's items in its own order, so a list never depends on which backend started
or answered first.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp.shared.inbound import x_mcp_header_map

from gateway import naming
from gateway.config.models import ToolFilter

Item = dict[str, Any]
Kind = Literal["tool", "prompt", "resource"]


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    name: str  # the backend's own name (or URI)


@dataclass(frozen=True)
class BackendListing:
    """Everything one backend exposes, fetched (all pages) after it started or changed."""

    tools: list[Item] = field(default_factory=list)
    prompts: list[Item] = field(default_factory=list)
    resources: list[Item] = field(default_factory=list)
    templates: list[Item] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Source:
    """One backend as the catalogue sees it."""

    server: str
    namespace: str
    tool_filter: ToolFilter
    listing: BackendListing


def _allowed(name: str, rule: ToolFilter) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in rule.allow) and not any(
        fnmatch.fnmatchcase(name, p) for p in rule.deny
    )


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
    collisions: tuple[str, ...] = ()
    # The input schemas that mark properties `x-mcp-header`: only their calls' Mcp-Param-* headers
    # need checking against the arguments (2026-07-28).
    header_schemas: Mapping[str, Any] = field(default_factory=dict)
    # Every backend's last known listing, down ones included (None: not kept). Routing only.
    known: Catalogue | None = None

    @classmethod
    def build(cls, sources: Iterable[Source], *, known: Catalogue | None = None) -> Catalogue:
        tools: list[Item] = []
        prompts: list[Item] = []
        resources: list[Item] = []
        templates: list[Item] = []
        tool_routes: dict[str, Route] = {}
        prompt_routes: dict[str, Route] = {}
        resource_routes: dict[str, Route] = {}
        namespaces: dict[str, str] = {}
        uri_owners: dict[str, str] = {}
        unprefixed: list[str] = []
        collisions: list[str] = []

        def claim(kind: str, routes: dict[str, Route], public: str, route: Route) -> bool:
            if public in routes:
                other = routes[public].server
                collisions.append(
                    f"{kind} {public!r} is exposed by both {other!r} and {route.server!r}; "
                    f"set a `prefix:` on one of them (the one from {other!r} is kept)"
                )
                return False
            routes[public] = route
            return True

        for src in sources:
            ns = src.namespace
            namespaces[src.server] = ns
            if ns:
                uri_owners[naming.uri_namespace(ns)] = src.server
            else:
                unprefixed.append(src.server)
            for tool in src.listing.tools:
                original = tool["name"]
                if not _allowed(original, src.tool_filter):
                    continue
                public = naming.public_name(ns, original)
                if claim("tool", tool_routes, public, Route(src.server, original)):
                    tools.append(tool if public == original else {**tool, "name": public})
            for prompt in src.listing.prompts:
                public = naming.public_name(ns, prompt["name"])
                if claim("prompt", prompt_routes, public, Route(src.server, prompt["name"])):
                    prompts.append(prompt if public == prompt["name"] else {**prompt, "name": public})
            for res in src.listing.resources:
                public = naming.public_uri(ns, res["uri"])
                if claim("resource", resource_routes, public, Route(src.server, res["uri"])):
                    resources.append(res if public == res["uri"] else {**res, "uri": public})
            for tpl in src.listing.templates:
                public = naming.public_uri(ns, tpl["uriTemplate"])
                templates.append(tpl if public == tpl["uriTemplate"] else {**tpl, "uriTemplate": public})
        return cls(
            tools=tools,
            prompts=prompts,
            resources=resources,
            templates=templates,
            tool_routes=tool_routes,
            prompt_routes=prompt_routes,
            namespaces=namespaces,
            uri_owners=uri_owners,
            unprefixed=tuple(unprefixed),
            resource_routes=resource_routes,
            collisions=tuple(collisions),
            known=known,
            header_schemas={
                t["name"]: schema
                for t in tools
                if isinstance(schema := t.get("inputSchema"), dict) and x_mcp_header_map(schema)
            },
        )

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
        return naming.public_uri(self.namespaces.get(server, ""), uri)
