"""The relay: every client request runs through the middleware chain and is then answered from
the catalogue or relayed to the backend that owns the name.

It knows no transport: a front (`gateway.front`) hands it each request as a `Front`, over HTTP or
stdio, in either protocol revision, and gets the result back (`dispatch`).

Results are relayed as the backend's raw JSON (structuredContent, _meta, annotations, isError and
anything newer pass through untouched); only names and resource URIs are rewritten.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import anyio
from mcp.server.connection import allowed_log_levels
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types.methods import INPUT_REQUIRED_METHODS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway._drain import Drain
from gateway._inputs import Binding, InputBridge, InputCaller
from gateway._rewrite import Result, finish, forward_params, rewrite_content
from gateway.backends import Backend
from gateway.catalogue import Kind, ListKind
from gateway.config.secrets import SecretValues
from gateway.endpoints import DEFAULT, View
from gateway.errors import (
    ClientTimeout,
    EndlessRounds,
    EndpointGone,
    GatewayError,
    InvalidRequestState,
    MissingCapability,
    TaskGone,
    UnknownName,
    as_mcp_error,
)
from gateway.fleet import Fleet
from gateway.front import Front
from gateway.logs import request_scope
from gateway.middleware import ANONYMOUS, Call, Identity, Middleware, build_chain, extras
from gateway.overrides import Plan
from gateway.questions import (
    MAX_BACKEND_ROUNDS,
    Caller,
    answering,
    binding_of,
    check_capability,
    declared_by,
    state_seal,
)
from gateway.search import CALL, META_NAMES, SEARCH, ToolSearch
from gateway.tasks import EXTENSION as TASKS_EXTENSION
from gateway.tasks import METHODS as TASK_METHODS
from gateway.tasks import OPT_IN, Tasks, declared, opted_in
from gateway.tasks import STATUS as TASK_STATUS

logger = logging.getLogger(__name__)

# `Call.state` key: the overridden tool's `Plan`, from its route (`_route`), for `_call_tool`.
PLAN = "override_plan"


def _masking(report: ProgressFnT, known: SecretValues) -> ProgressFnT:
    """`report`, with resolved secrets masked in the message: a backend's progress reaches the
    client as the backend worded it, not through `dispatch`."""

    async def masked(progress: float, total: float | None, message: str | None) -> None:
        await report(progress, total, None if message is None else known.mask(message))

    return masked


class Relay:
    def __init__(self, fleet: Fleet, middlewares: Sequence[Middleware] = (), *, local: bool = False):
        """`local`: the client is whoever launched the gateway (stdio); nobody authenticates, and
        calls run as the chain's `local_identity()`."""
        self.fleet = fleet
        self.inputs = InputBridge(state_seal(fleet.config.state, fleet.secrets))
        # The tasks created through the gateway: where they are, and whose.
        self.tasks = Tasks(follow=self._follow_tasks)
        # Every client call runs inside it: shutdown refuses new ones and ends what is left.
        self.drain = Drain()
        # Listen streams' resource subscriptions at per-client sessions: (server, client key,
        # backend URI) -> how many streams hold it (a client may listen on several at once).
        self._own_subscriptions: collections.Counter[tuple[str, Hashable, str]] = collections.Counter()
        self._local = local
        self._searches: dict[str, ToolSearch] = {}  # per endpoint key
        # 2025-11-25 sessions (`tool_search.expose_found`): client key -> the names its searches found.
        self._found: dict[Hashable, set[str]] = {}
        fleet.clients.on_disconnect.append(self._forget_found)
        self.use(middlewares)
        self._terminals: dict[str, Callable[[Call], Awaitable[Result]]] = {
            "tools/list": lambda call: self._listing("tools", "tools", call.state["view"].tools),
            "prompts/list": lambda call: self._listing("prompts", "prompts", call.state["view"].prompts),
            "resources/list": lambda call: self._listing(
                "resources", "resources", call.state["view"].resources
            ),
            "resources/templates/list": lambda call: self._listing(
                "templates", "resourceTemplates", call.state["view"].templates
            ),
            "tools/call": self._call_tool,
            "prompts/get": self._get_prompt,
            "resources/read": self._read_resource,
            "resources/subscribe": self._forward_uri,
            "resources/unsubscribe": self._forward_uri,
            "completion/complete": self._complete,
            "notifications/message": self._deliver_log,
        }
        for method in TASK_METHODS:
            self._terminals[method] = self._task_call
        self._terminals[TASK_STATUS] = self._deliver_task_status

    def use(self, middlewares: Sequence[Middleware]) -> None:
        """Swap the chain (config reload): calls already running finish on the old one."""
        self.middlewares = list(middlewares)
        self.chain = build_chain(middlewares, self._terminal)
        # Looked up once per chain, not per request: HTTP authentication runs on every call.
        self.authenticators: list[Any] = extras(middlewares, "authenticate")
        # Derived from the chain, so a reload that changes `auth` changes who a local client is.
        local = extras(middlewares, "local_identity") if self._local else []
        self.default_identity: Identity = local[0]() if local else ANONYMOUS

    # -- the entry point: client request -> Call -> chain ------------------------------------

    async def dispatch(self, front: Front) -> Result:
        """Run one client request through the chain; an error leaves as the `MCPError` the client gets
        (`errors.as_mcp_error`: the one translation of ours, for both front paths)."""
        call = Call(
            method=front.method,
            params=dict(front.params or {}),
            identity=self.identity_of(front),
            request_id=front.request_id,
            context=front,
        )
        # Known from its first request on, so a client that only listed hears list changes.
        call.state["client"] = self._client_key(front, call.identity)
        try:
            # Every call is served through the view of the endpoint it came in on: its lists, and
            # its routing (a name outside it is unknown there).
            view = self.fleet.view(front.endpoint)
            if view is None:
                raise EndpointGone(front.endpoint)
            call.state["view"] = view
            search = self.tool_search(view)
            name = call.params.get("name") if call.method == "tools/call" else None
            meta = search if search is not None and name in META_NAMES else None
            if meta is not None and name == CALL:
                # The real call from here on: routed, checked, limited and audited as the tool's own.
                call.params, meta = meta.unwrapped(call.params), None
            if meta is None:
                self._route(call, view)
            with request_scope(server=call.server), self.drain.call():
                if meta is not None:
                    result = await self._meta_tool(meta, call)
                else:
                    result = await self.chain(call)
                    if search is not None and call.method == "tools/list":
                        result = self._condensed(search, call, result)
                result = finish(front.protocol_version, result)
        except (GatewayError, MCPError) as exc:
            raise self._masked_error(as_mcp_error(exc)) from None
        # Every result leaves here, on every front: a resolved secret a backend echoes is masked
        # by value, whether or not a masking middleware runs (one search when no secret is in it).
        return self.fleet.secrets.mask_json(result)

    def tool_search(self, view: View) -> ToolSearch | None:
        """Search mode of the view's endpoint as configured now (its `tool_search:`; the default
        endpoint's is the top-level one; reloadable); None: off."""
        endpoint = view.endpoint
        config = self.fleet.config.tool_search if endpoint.key == DEFAULT else endpoint.tool_search
        if config is None:
            return None
        key = endpoint.key
        current = self._searches.get(key)
        if current is None or (current.config is not config and current.config != config):
            current = self._searches[key] = ToolSearch(config)
            self._found.clear()
        return current

    async def _meta_tool(self, search: ToolSearch, call: Call) -> Result:
        """`gateway_search_tools` or `gateway_describe_tool`, over the tools the caller may see: a
        `tools/list` of theirs through the chain (so authorization filters it as any list)."""
        front: Front = call.context
        params = {"_meta": call.params["_meta"]} if "_meta" in call.params else {}
        listing = Call(
            method="tools/list",
            params=params,
            identity=call.identity,
            request_id=call.request_id,
            context=front,
        )
        listing.state["client"] = key = call.state["client"]
        listing.state["view"] = call.state["view"]
        tools = (await self.chain(listing)).get("tools")
        visible = tools if isinstance(tools, list) else []
        arguments = call.params.get("arguments")
        if call.params["name"] != SEARCH:
            return search.describe(visible, arguments)
        await search.view(visible).prepare()
        hits = search.hits(visible, arguments)
        session = front.connection is not None and front.protocol_version not in MODERN_PROTOCOL_VERSIONS
        if search.config.expose_found and hits and session:
            found = self._found.setdefault(key, set())
            new = {hit.name for hit in hits} - found
            if new:
                found |= new
                await self.fleet.clients.tell(key, "notifications/tools/list_changed")
        return search.results(hits)

    def _condensed(self, search: ToolSearch, call: Call, result: Result) -> Result:
        """A `tools/list` result (the caller's, filtered by the chain) as search mode shows it;
        with `expose_found`, a session's found tools are listed too."""
        shown = search.listing(result)
        found = self._found.get(call.state["client"]) if self._found else None
        if found and shown.get("tools") is not result.get("tools"):
            listed = {t.get("name") for t in shown["tools"]}
            extra = [t for t in result["tools"] if t.get("name") in found and t.get("name") not in listed]
            shown["tools"] = [*shown["tools"], *extra]
        return shown

    async def _forget_found(self, key: Hashable) -> None:
        self._found.pop(key, None)

    def identity_of(self, front: Front) -> Identity:
        """Who sent a request: HTTP authentication's identity, or (stdio) the configured one."""
        return front.identity or self.default_identity

    def _masked_error(self, exc: MCPError) -> MCPError:
        """`exc`, or a copy without the resolved secrets its message or data quote."""
        known = self.fleet.secrets
        if not known:
            return exc
        error = exc.error
        message, data = known.mask(error.message), known.mask_json(error.data)
        if message is error.message and data is error.data:
            return exc
        return MCPError(code=error.code, message=message, data=data)

    def _client_key(self, front: Front, identity: Identity) -> Hashable:
        """Who the client is, for per-client backend sessions and for routing news back to it.

        A 2025-11-25 client is its session (registered for broadcasts). A 2026-07-28 client has no
        session (a new connection object per request), so it is its identity: one backend session
        per identity.
        """
        if front.protocol_version in MODERN_PROTOCOL_VERSIONS or front.connection is None:
            return ("stateless", identity.name)
        return self.fleet.clients.track(front.connection, front.endpoint)

    def _route(self, call: Call, view: View) -> None:
        """Fill in which backend serves the call, before the chain sees it.

        A name the catalogue does not know is refused here, the same way whatever the backends'
        states (no hint at servers that are starting: they may have nothing to do with it). A name
        of a backend that is down routes to it: its refusal says it is down, and why."""
        params = call.params
        kind: Kind
        if call.method == "tools/call":
            name, kind = params.get("name", ""), "tool"
        elif call.method == "prompts/get":
            name, kind = params.get("name", ""), "prompt"
        elif call.method.startswith("resources/") and "uri" in params:
            name, kind = params["uri"], "resource"
        elif call.method == "completion/complete":
            ref = params.get("ref") or {}
            if ref.get("type") == "ref/prompt":
                name, kind = ref.get("name", ""), "prompt"
            else:
                name, kind = ref.get("uri", ""), "resource"
        elif call.method in TASK_METHODS:
            self._route_task(call)
            return
        else:
            return
        route = view.route(kind, name or "")
        if route is None:
            raise UnknownName(kind, name)
        # Rules and records name a tool as the catalogue does, whatever an endpoint shows it as.
        call.name = view.catalogue_name(kind, name)
        call.server, call.original = route.server, route.name
        if route.plan is not None:
            call.state[PLAN] = route.plan

    def _route_task(self, call: Call) -> None:
        """Route a `tasks/*` request to the backend holding the task, if the caller created it.

        Somebody else's task, an expired one and one never created read alike: "Unknown task"
        (-32602, the extension's error for an unknown id), so task ids cannot be probed."""
        if not declared(call.params):
            raise MissingCapability(call.method, TASKS_EXTENSION, dict(OPT_IN))
        public = str(call.params.get("taskId"))
        route = self.tasks.route(public, call.identity.name)
        backend = self.fleet.backends.get(route.server) if route is not None else None
        if route is None or backend is None:
            raise UnknownName("task", public)
        if backend.started_at is not None and backend.started_at != route.run:
            raise TaskGone(public, route.server)  # a backend that is down says so when asked
        call.name, call.server, call.original = public, route.server, route.task_id
        call.state["task_tool"] = route.tool

    def extensions(self) -> dict[str, dict[str, Any]]:
        """The extensions the gateway offers clients: those it relays that a running backend
        declares (read when a client discovers the gateway, not per call)."""
        offered: dict[str, dict[str, Any]] = {}
        if any(b.available and b.declares_extension(TASKS_EXTENSION) for b in self.fleet.backends.values()):
            offered[TASKS_EXTENSION] = {}
        return offered

    async def _terminal(self, call: Call) -> Result:
        return await self._terminals[call.method](call)

    # -- terminals: what happens once the chain lets a call through --------------------------

    async def _listing(self, kind: ListKind, key: str, items: list[dict[str, Any]]) -> Result:
        # Shared lists: a middleware filtering them builds new ones. The backends' freshness hints
        # merged (2026-07-28 clients read them; the SDK drops them for 2025-11-25 ones); private
        # with authentication, where lists differ per identity.
        hint = self.fleet.cache_hint(kind)
        scope = "private" if self.authenticators else hint.scope
        return {key: items, "ttlMs": hint.ttl_ms, "cacheScope": scope}

    async def _forward(self, call: Call, *, opt_in: bool = False, **replace: Any) -> Result:
        """The call at its backend, and the backend's answer. A question the backend asks on the
        way reaches the client the way the client can take it (see "Questions a backend asks
        mid-call" in README): asked on its stream (2025-11-25), or as an input round (2026-07-28),
        whether the backend asks mid-call (2025-11-25) or returns `input_required` (2026-07-28).
        `opt_in`: declare the tasks extension to the backend for this request (the client did)."""
        assert call.server is not None
        backend = self.fleet.backends[call.server]
        params = forward_params(call.params, **replace)
        if opt_in:
            params = opted_in(params)
        front: Front = call.context
        if call.method not in INPUT_REQUIRED_METHODS:
            return await self._request(call, backend, params)
        raw = front.params or {}
        binding = binding_of(call)
        rounds_client = front.protocol_version in MODERN_PROTOCOL_VERSIONS
        if rounds_client and "requestState" in raw:
            # A retry carrying our state is checked whatever the client declares now.
            claims = self.inputs.continued(raw["requestState"], binding)
            if not claims:  # one of the gateway's own rounds
                return await self._forward_with_input_rounds(call, backend, params, binding)
            if claims["s"] != call.server:
                raise InvalidRequestState("issued for another server")
            params = answering(params, raw.get("inputResponses"), claims.get("b"))
        elif not backend.speaks_rounds:
            if rounds_client and front.can_answer():
                # A handshake-era backend asks mid-call and waits: its call must outlive this request.
                return await self._forward_with_input_rounds(call, backend, params, binding)
        elif "inputResponses" in raw:
            # Answers offered up front, with no state of ours: the backend's to judge, as directly.
            params = answering(params, raw["inputResponses"], None)
        # A 2026-07-28 backend asks only what the client declared it can answer: it is told.
        declared = declared_by(front) if backend.speaks_rounds else None
        result = await self._request(call, backend, params, declared)
        for _ in range(MAX_BACKEND_ROUNDS):
            if result.get("resultType") != "input_required":
                return result
            requests = result.get("inputRequests") or {}
            if rounds_client:
                for request in requests.values():
                    check_capability(front, request)
                return self.inputs.relayed(result, binding, call.server)
            # A 2025-11-25 client answers each question on its stream; the backend gets them all.
            caller = Caller(front, call.state["client"], self.fleet.secrets)
            timeout = backend.spec.timeout
            try:
                # As long as the backend would wait for an answer asked mid-call (its timeout).
                with anyio.fail_after(timeout):
                    answers = {
                        key: await caller.ask(str(request.get("method")), dict(request.get("params") or {}))
                        for key, request in requests.items()
                        if isinstance(request, Mapping)
                    }
            except TimeoutError:
                raise ClientTimeout(
                    f"the client did not answer {call.server}'s question within {timeout:g}s"
                ) from None
            params = answering(params, answers, result.get("requestState"))
            result = await self._request(call, backend, params, declared)
        raise EndlessRounds(call.server, MAX_BACKEND_ROUNDS)

    async def _request(
        self, call: Call, backend: Backend, params: dict[str, Any], declared: dict[str, Any] | None = None
    ) -> Result:
        front: Front = call.context
        known = self.fleet.secrets
        caller = Caller(front, call.state["client"], known)
        progress = _masking(front.report_progress, known) if front.wants_progress() else None
        return await backend.request(call.method, params, caller, on_progress=progress, capabilities=declared)

    async def _forward_with_input_rounds(
        self, call: Call, backend: Backend, params: dict[str, Any], binding: Binding
    ) -> Result:
        front: Front = call.context
        method = call.method
        raw = front.params or {}
        state = raw.get("requestState")
        if state is not None:
            # Held here, or continued by the process that holds it (with `cluster.redis`).
            responses = dict(raw.get("inputResponses") or {})
            return await self.inputs.continue_call(state, responses, front, binding)
        key = call.state["client"]
        known = self.fleet.secrets

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            await deferred.context.report_progress(progress, total, message)

        masked = _masking(progress, known)

        def run(rounds: InputCaller) -> Awaitable[Result]:
            # The backend's questions pass the same check as on any other front, then queue.
            caller = Caller(front, key, known, channel=rounds.ask)
            return backend.request(method, params, caller, on_progress=masked)

        deferred = self.inputs.start(key, front, run, binding)
        return await self.inputs.next_result(deferred)

    def _public_uri(self, server: str) -> Callable[[str], str]:
        return functools.partial(self.fleet.catalogue.public_uri, server)

    async def _call_tool(self, call: Call) -> Result:
        server = call.server or ""
        # A 2026-07-28 client declares the tasks extension per request; the backend hears it from
        # us, who declared nothing of the kind when we opened its session.
        # (A 2025-11-25 client cannot be handed a task: the SDK's handshake-era results have no
        # such shape, so its calls run to their result, as the extension says for such clients.)
        opt_in = (
            call.context.protocol_version in MODERN_PROTOCOL_VERSIONS
            and declared(call.params)
            and self.fleet.backends[server].declares_extension(TASKS_EXTENSION)
        )
        plan: Plan | None = call.state.get(PLAN)
        if plan is None:
            result = await self._forward(call, opt_in=opt_in, name=call.original)
        else:
            # The client's arguments, as the chain let them through, become the backend's.
            arguments = plan.prepare(call.name or "", call.params.get("arguments"))
            result = await self._forward(call, opt_in=opt_in, name=call.original, arguments=arguments)
        if result.get("resultType") == "task" and isinstance(result.get("taskId"), str):
            # A task instead of a result: from now on its id is ours to route (and to guard).
            backend = self.fleet.backends[server]
            result["taskId"] = self.tasks.add(
                server, result, owner=call.identity.name, tool=call.name or "", run=backend.started_at
            )
            return result
        if self.fleet.catalogue.namespaces.get(server):
            rewrite_content(result.get("content"), self._public_uri(server))
        return result

    async def _task_call(self, call: Call) -> Result:
        """`tasks/get`, `tasks/update`, `tasks/cancel`, at the backend holding the task, with its
        own id; a task's inlined result is shown as a call's would be."""
        # `inputResponses` of `tasks/update` answer the backend's task, not an input round of ours.
        answers = {k: call.params[k] for k in ("inputResponses",) if k in call.params}
        result = await self._forward(call, opt_in=True, taskId=call.original, **answers)
        if result.get("taskId") == call.original:
            result["taskId"] = call.name
        inlined = result.get("result")
        if isinstance(inlined, dict) and self.fleet.catalogue.namespaces.get(call.server or ""):
            rewrite_content(inlined.get("content"), self._public_uri(call.server or ""))
        return result

    async def _get_prompt(self, call: Call) -> Result:
        result = await self._forward(call, name=call.original)
        if self.fleet.catalogue.namespaces.get(call.server or ""):
            rewrite_content(
                [m.get("content") for m in result.get("messages") or [] if isinstance(m, dict)],
                self._public_uri(call.server or ""),
            )
        return result

    async def _read_resource(self, call: Call) -> Result:
        result = await self._forward(call, uri=call.original)
        if call.name != call.original:
            public = self._public_uri(call.server or "")
            for item in result.get("contents") or []:
                if isinstance(item, dict) and isinstance(item.get("uri"), str):
                    item["uri"] = call.name if item["uri"] == call.original else public(item["uri"])
        return result

    async def _forward_uri(self, call: Call) -> Result:
        key = call.state["client"]
        if call.method == "resources/subscribe":
            result = await self._forward(call, uri=call.original)
            self.fleet.clients.subscribe(key, call.name or "")
            return result
        await self.fleet.clients.unsubscribe(key, call.name or "")
        return await self._forward(call, uri=call.original)

    async def _complete(self, call: Call) -> Result:
        ref = dict(call.params.get("ref") or {})
        ref["name" if ref.get("type") == "ref/prompt" else "uri"] = call.original
        return await self._forward(call, ref=ref)

    async def set_logging_level(self, level: str) -> None:
        """A 2025-11-25 client's `logging/setLevel`, passed on to every backend that logs."""
        for backend in self.fleet.backends.values():
            if backend.available and backend.takes_log_level:
                try:
                    await backend.request("logging/setLevel", {"level": level})
                except (GatewayError, MCPError) as exc:
                    logger.info("server %s refused logging/setLevel: %s", backend.name, exc)

    @contextlib.asynccontextmanager
    async def listening(self, front: Front, uris: Iterable[str]) -> AsyncIterator[Hashable | None]:
        """A 2026-07-28 listen stream's resource subscriptions, made at the owning backends (as
        `resources/subscribe`, which a 2026-07-28 backend's session turns into its own listen
        filter) so that their updates flow, for as long as the stream lasts.

        At a `session: per-client` server the subscription is made on the client's own session
        (opened if need be), whose updates reach that client only: yields the client's key then,
        for the stream to `Clients.watch` (None: every subscription is at a shared session). Those
        are undone when the stream ends, once no other stream of the client holds them. Those at a
        shared session stay, as they always have (other clients' subscriptions may rest on them:
        the backend counts no subscribers, and 2025-11-25 clients subscribe there too)."""
        key = self._client_key(front, self.identity_of(front))
        caller = Caller(front, key, self.fleet.secrets)
        held: list[tuple[Backend, str]] = []
        view = self.fleet.view(front.endpoint)
        try:
            for uri in dict.fromkeys(uris):
                route = view.route_uri(uri) if view is not None else None
                backend = self.fleet.backends.get(route.server) if route else None
                if route is None or backend is None or not backend.capabilities_have("resources"):
                    continue
                own = (backend.name, key, route.name)
                try:
                    if not backend.per_client:
                        await backend.request("resources/subscribe", {"uri": route.name})
                        continue
                    self._own_subscriptions[own] += 1
                    held.append((backend, route.name))
                    if self._own_subscriptions[own] == 1:
                        await backend.request("resources/subscribe", {"uri": route.name}, caller)
                except (GatewayError, MCPError) as exc:
                    logger.info("server %s refused a subscription to %s: %s", route.server, uri, exc)
            yield key if held else None
        finally:
            # The stream ends by cancellation (its client went away) as often as not: the undoing
            # is shielded, and bounded by each backend's own call timeout.
            with anyio.CancelScope(shield=True):
                for backend, original in held:
                    await self._unsubscribe_own(backend, key, original, caller)

    async def _unsubscribe_own(self, backend: Backend, key: Hashable, original: str, caller: Caller) -> None:
        own = (backend.name, key, original)
        self._own_subscriptions[own] -= 1
        if self._own_subscriptions[own] > 0:
            return
        del self._own_subscriptions[own]
        if not backend.available:
            return  # its sessions are gone, and their subscriptions with them
        try:
            with anyio.fail_after(backend.spec.timeout):
                await backend.request("resources/unsubscribe", {"uri": original}, caller)
        except (GatewayError, MCPError, TimeoutError) as exc:
            logger.info("server %s refused to end a subscription to %s: %s", backend.name, original, exc)

    # -- backend notifications -> chain -> clients -------------------------------------------

    async def backend_notification(self, backend: Backend, method: str, params: Mapping[str, Any]) -> None:
        """A backend's log message or task status, through the chain to the clients (a
        `Fleet.notification_hooks` hook)."""
        if method == TASK_STATUS:
            public = self.tasks.public_id(backend.name, str(params.get("taskId")))
            if public is None:
                return  # not a task created through us (or long gone): nobody to tell
            params = {**params, "taskId": public}
        elif method != "notifications/message":
            return
        call = Call(method=method, params=dict(params), kind="notification", server=backend.name)
        call.state["backend"] = backend
        try:
            with request_scope(server=backend.name):
                await self.chain(call)
        except (GatewayError, MCPError) as exc:
            logger.info("%s from %s dropped by the chain: %s", method, backend.name, exc)

    async def _follow_tasks(self, server: str, task_ids: Sequence[str]) -> None:
        """Have `server` report these tasks' status (`Tasks.follow`). A backend that cannot is
        logged, not raised: its tasks are still polled."""
        backend = self.fleet.backends.get(server)
        if backend is None:
            return
        try:
            await backend.follow_tasks(task_ids)
        except (GatewayError, MCPError) as exc:
            logger.info("server %s will not report task status: %s", server, exc)

    async def _deliver_task_status(self, call: Call) -> Result:
        """A task's status, to the listen streams its creator opened for it (`front.listen`)."""
        params = self.fleet.secrets.mask_json(call.params)
        self.tasks.publish(params["taskId"], params)
        return params

    async def _deliver_log(self, call: Call) -> Result:
        backend: Backend = call.state["backend"]
        # A backend's log message goes to clients as it is: the one server-sent string that does
        # not leave through `dispatch`.
        params = dict(self.fleet.secrets.mask_json(call.params))
        params["logger"] = f"{backend.name}/{params['logger']}" if params.get("logger") else backend.name
        callers = backend.callers()
        if not callers:
            # Nobody's call is running: a single-user gateway shows the log to every client, but
            # with authentication on, a server's logs are not everyone's business.
            # Only the endpoints that take from the server: another desk's clients never see it.
            if not self.authenticators:
                for key, endpoint in self.fleet.endpoints.items():
                    if endpoint.servers is None or backend.name in endpoint.servers:
                        await self.fleet.clients.broadcast(call.method, params, key)
            return params
        # The backend is working for these calls: tell their clients on the calls' streams.
        seen: set[Hashable] = set()
        for caller in callers:
            # An input round's first request was answered already (its retry is a request of its own).
            if caller.key in seen or not isinstance(caller, Caller) or caller.rounds:
                continue
            seen.add(caller.key)
            # 2026-07-28 clients opt in to logs per request, with a minimum level.
            front = caller.front
            if params.get("level") in allowed_log_levels(front.protocol_version, front.meta):
                await front.notify(call.method, params)
        return params
