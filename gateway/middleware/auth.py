"""The `auth` built-in: who is calling (API keys, JWT bearer tokens, a fixed stdio identity) and what
they may use (role rules over servers, tools, prompts and resources).

Example::

    middleware:
      - use: auth
        options:
          resource: https://gw.example.com/mcp        # optional; derived from each request if unset
          authorization_servers: [https://idp.example.com/realms/mcp]
          api_keys:
            - {name: ci-bot, key: "sha256:9f86d0...", roles: [reader]}
          jwt:                                         # one issuer, or a list
            jwks_url: https://idp.example.com/realms/mcp/protocol/openid-connect/certs
            issuer: https://idp.example.com/realms/mcp
            audience: https://gw.example.com/mcp
            roles_claim: realm_access.roles            # plus `scope` / `scp`, always
          anonymous: {roles: [public]}                 # unset: no credentials -> 401
          stdio_identity: {name: local, roles: [admin]}
          rules:                                       # unset: anyone authenticated may do all; []: nothing
            - {roles: [admin]}                         # no tools/prompts/resources: all of them
            - {roles: [reader], servers: [time], tools: ["time__*"]}
            - {roles: [reader], tools: ["git__git_log"], resources: ["git+*"]}
            - {roles: [reader], tools: ["*__delete*"], effect: deny}

Authentication (HTTP only) runs before the MCP endpoint: `Authorization: Bearer <api key or JWT>`
or `X-API-Key: <api key>`. A refusal is a 401 whose `WWW-Authenticate` points at the RFC 9728
metadata this middleware serves. Authorization runs in the chain: list results are filtered per
identity and every call is checked again. Seeing and using are one rule, so a refused tool, prompt
or resource (or a completion on one) is one the identity cannot see: the client gets exactly the
error of a name that does not exist (-32602 "Unknown tool: X"), never a -32003 that would confirm
it exists; audit and telemetry still record a denial. -32003 is left for a method this middleware
does not know, aimed at a backend (failing closed). Backend log notifications are not filtered
here (they carry no caller).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.catalogue import Catalogue, Kind
from gateway.endpoints import View
from gateway.errors import Denied, Hidden
from gateway.fleet import Fleet
from gateway.middleware._auth_jwt import JwtAuthenticator, JwtVerifier, KeysUnavailable, TokenRejected
from gateway.middleware._auth_options import AuthOptions, Configured
from gateway.middleware._auth_policy import Policy
from gateway.middleware._keys import match_digest, presented_credential
from gateway.middleware.base import Call, CallNext, Identity, Result
from gateway.tasks import METHODS as TASK_METHODS

logger = logging.getLogger(__name__)

WELL_KNOWN = "/.well-known/oauth-protected-resource"
# Calls on one named thing: method -> kind. completion/complete depends on its ref.
_CHECKED: dict[str, Kind] = {
    "tools/call": "tool",
    "prompts/get": "prompt",
    "resources/read": "resource",
    "resources/subscribe": "resource",
    "resources/unsubscribe": "resource",
}
# Lists: method -> (result key, kind, item field holding the public name)
_LISTS: dict[str, tuple[str, Kind, str]] = {
    "tools/list": ("tools", "tool", "name"),
    "prompts/list": ("prompts", "prompt", "name"),
    "resources/list": ("resources", "resource", "uri"),
    "resources/templates/list": ("resourceTemplates", "resource", "uriTemplate"),
}
_LIST_CACHE_SIZE = 256
_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, OPTIONS",
         "Access-Control-Allow-Headers": "*"}  # fmt: skip


def _fixed(spec: Configured | None, default_name: str, source: str) -> Identity | None:
    if spec is None:
        return None
    return Identity(spec.name or default_name, frozenset(spec.roles), source, dict(spec.labels))


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


class Auth:
    def __init__(self, **options: Any) -> None:
        self.options = opts = AuthOptions.model_validate(options)
        self._keys = [
            (bytes.fromhex(k.key.removeprefix("sha256:")),
             Identity(k.name, frozenset(k.roles), "api_key", {**k.labels, "key": k.name}, "api_keys"))
            for k in opts.api_keys
        ]  # fmt: skip
        verifiers = [
            JwtVerifier(j, default_audience=opts.resource, where=f"options.jwt.{i}")
            for i, j in enumerate(opts.jwt)
        ]
        self._jwt = JwtAuthenticator(verifiers) if verifiers else None
        self._anonymous = _fixed(opts.anonymous, "anonymous", "anonymous")
        self._stdio = _fixed(opts.stdio_identity, "local", "stdio") or Identity("local", source="stdio")
        self.policy = Policy(opts.rules)
        self._fleet: Fleet | None = None
        self._path = "/mcp"
        self._name: str | None = None
        # (roles, list key, id of the list) -> (the list, its filtered copy). Lists are immutable per
        # view (`gateway.endpoints`), one per endpoint: each endpoint's filtered copy is kept, and
        # the same copy object is what `front.lists` keeps shaped and encoded.
        self._lists: dict[tuple[frozenset[str], str, int], tuple[list[Any], list[Any]]] = {}
        self._lists_of = -1  # the fleet's generation they are of (older lists are dropped)
        self.routes: list[BaseRoute] = [
            Route(WELL_KNOWN + "{suffix:path}", self._metadata, methods=["GET", "HEAD", "OPTIONS"])
        ]

    # -- extras -------------------------------------------------------------------------------

    def attach(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._path = fleet.config.listen.path.rstrip("/") or "/mcp"
        self._name = fleet.config.name

    def local_identity(self) -> Identity:
        return self._stdio

    async def authenticate(self, request: Request) -> Identity | Response:
        token, header = presented_credential(request)
        if token is None:
            if self._anonymous is not None:
                return self._anonymous
            return self._refuse(request, None, "authentication required")
        identity = match_digest(token, self._keys) if token else None
        if identity is not None:
            return identity
        if header == "authorization" and self._jwt is not None and token.count(".") == 2:
            try:
                return await self._jwt.identify(token)
            except TokenRejected as exc:
                return self._refuse(request, "invalid_token", exc.reason)
            except KeysUnavailable:
                logger.warning("auth: JWT signing keys unavailable; answering 503")
                return JSONResponse(
                    {"error": "temporarily_unavailable", "error_description": "token keys cannot be fetched"},
                    status_code=503,
                    headers={"Retry-After": "5", "Cache-Control": "no-store"},
                )
            except Exception:
                # Hostile token shapes must not become a 500 (or get through): refuse, keep the trace.
                logger.exception("auth: unexpected error while verifying a JWT; refusing it")
                return self._refuse(request, "invalid_token", "the token is invalid")
        # A bad credential is refused even when anonymous access is allowed: never downgrade silently.
        return self._refuse(request, "invalid_token", "unknown credentials")

    # -- authentication helpers ---------------------------------------------------------------

    def _endpoint(self, path: str) -> str | None:
        """The path of the virtual endpoint (`endpoints:`) that `path` is, if it is one: each is a
        protected resource of its own (RFC 9728), whose metadata is at the well-known URL suffixed
        with its path."""
        path = path.rstrip("/")
        endpoints = self._fleet.endpoints if self._fleet is not None else {}
        return next((e.path for key, e in endpoints.items() if key and e.path == path), None)

    def _resource(self, request: Request, endpoint: str | None = None) -> str:
        if self.options.resource is not None:
            if endpoint is None:
                return self.options.resource
            parts = urlsplit(self.options.resource)
            return f"{parts.scheme}://{parts.netloc}{endpoint}"
        return f"{request.url.scheme}://{request.url.netloc}{endpoint or self._path}"

    def _metadata_url(self, request: Request) -> str:
        endpoint = self._endpoint(request.url.path)
        parts = urlsplit(self._resource(request, endpoint))
        return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{endpoint or ''}"

    def _refuse(self, request: Request, error: str | None, description: str) -> Response:
        client = request.client.host if request.client else "?"
        logger.info("auth: refused %s %s from %s: %s", request.method, request.url.path, client, description)
        params = [f'realm="{self.options.realm}"', f'resource_metadata="{self._metadata_url(request)}"']
        if error is not None:
            params += [f'error="{error}"', f'error_description="{_quoted(description)}"']
        return JSONResponse(
            {"error": error or "unauthorized", "error_description": description},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer " + ", ".join(params), "Cache-Control": "no-store"},
        )

    async def _metadata(self, request: Request) -> Response:
        """RFC 9728 protected-resource metadata, at the root and at the resource-path suffix."""
        suffix = request.path_params.get("suffix", "").rstrip("/")
        endpoint = self._endpoint(suffix) if suffix else None
        resource = self._resource(request, endpoint)
        if endpoint is None and suffix not in ("", urlsplit(resource).path.rstrip("/"), self._path):
            return JSONResponse({"error": "not_found"}, status_code=404)
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=_CORS)
        document: dict[str, Any] = {"resource": resource, "bearer_methods_supported": ["header"]}
        if self.options.authorization_servers:
            document["authorization_servers"] = list(self.options.authorization_servers)
        scopes = self.options.scopes_supported
        document["scopes_supported"] = list(scopes) if scopes is not None else self.policy.roles
        if self._name:
            document["resource_name"] = self._name
        # Derived from the Host header when `resource` is unset: a shared cache must not keep it.
        cache = "public, max-age=300" if self.options.resource else "no-store"
        return JSONResponse(document, headers={**_CORS, "Cache-Control": cache})

    # -- authorization --------------------------------------------------------------------------

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.kind != "request" or self.policy.unrestricted:
            return await call_next(call)
        listing = _LISTS.get(call.method)
        if listing is not None:
            view = call.state.get("view")
            return self._filtered(call.identity.roles, await call_next(call), view, *listing)
        kind = _CHECKED.get(call.method)
        if call.method == "completion/complete":
            ref = call.params.get("ref") or {}
            kind = "prompt" if isinstance(ref, dict) and ref.get("type") == "ref/prompt" else "resource"
        if call.method in TASK_METHODS:
            # A task is the call that created it, running on: whoever may not (or no longer) use
            # the tool does not see its task either (the relay already checked who created it).
            tool = call.state["task_tool"]
            if not self.policy.allows(call.identity.roles, "tool", call.server or "", tool):
                logger.info("auth: %s denied task %r", call.identity.name, call.name)
                raise Hidden("task", call.name or "")
        elif kind is not None:
            if not self.policy.allows(call.identity.roles, kind, call.server or "", call.name or ""):
                logger.info("auth: %s denied %s %r", call.identity.name, kind, call.name)
                # Refused by the name the client used (an endpoint may show a tool renamed).
                asked = call.params.get("name") if kind == "tool" else None
                raise Hidden(kind, asked if isinstance(asked, str) else call.name or "")
        elif call.server is not None:
            # A method this middleware does not know, aimed at a backend: fail closed.
            raise Denied(f"{call.method} is not allowed")
        return await call_next(call)

    def _filtered(
        self, roles: frozenset[str], result: Result, view: View | None, key: str, kind: Kind, field: str
    ) -> Result:
        items = result.get(key)
        if not isinstance(items, list):
            return result
        cached = self._lists.get((roles, key, id(items)))
        if cached is not None and cached[0] is items:
            return {**result, key: cached[1]}
        catalogue = self._fleet.catalogue if self._fleet is not None else None
        kept = []
        for item in items:
            name = item.get(field) if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            server = _server_of(view, catalogue, kind, name)
            public = view.catalogue_name(kind, name) if view is not None else name
            if server is not None and self.policy.allows(roles, kind, server, public):
                kept.append(item)
        generation = self._fleet.generation if self._fleet is not None else 0
        if generation != self._lists_of or len(self._lists) >= _LIST_CACHE_SIZE:
            self._lists.clear()
            self._lists_of = generation
        self._lists[(roles, key, id(items))] = (items, kept)
        return {**result, key: kept}


def _server_of(view: View | None, catalogue: Catalogue | None, kind: Kind, name: str) -> str | None:
    """Which backend serves a listed item (as the endpoint's view routes it); None (the item is
    dropped) if the catalogue lost it."""
    if view is not None:
        found = view.route(kind, name)
        return found.server if found is not None else None
    if catalogue is None:
        return ""  # not attached to a fleet (unit use): only rules for every server (`*`) apply
    route = catalogue.route(kind, name)
    return route.server if route is not None else None
