"""The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663), relayed: whose task is whose.

A backend that declares the extension may answer a `tools/call` with a task (`resultType: "task"`)
instead of a result; the client then polls it with `tasks/get`, answers its input requests with
`tasks/update` and ends it with `tasks/cancel`. The gateway relays all of it and keeps one table:

- Task ids are namespaced: the client sees `<server>__<backend's id>` (so two backends' ids never
  collide), and the backend receives its own id back. The table, not the string, maps one to the
  other, as the catalogue does for names.
- A task belongs to the identity whose call created it. Another identity asking about it gets the
  error of a task that does not exist ("Unknown task: X"), so ids cannot be probed; without
  authentication everybody is the same identity, as for everything else.
- A task remembers which run of its backend holds it: once the backend restarted, it is gone, and
  the client is told so at once instead of being sent to a server that never heard of it.
- Entries last the task's `ttlMs` (the backend keeps it no longer) and the table holds at most
  `MAX_TASKS`, the oldest dropped first.
- Status notifications go to the listen streams the task's creator opened for it (`watch`). A
  2026-07-28 backend sends them only on a listen stream of its own naming the task, so when a
  client starts watching, the backends holding its tasks are asked to follow the tasks somebody
  watches (`follow`); a task that finished, expired or that nobody watches any more leaves that
  set the next time it is sent.

`tasks/list` and `tasks/result` are not part of the extension (SEP-2663 removed them: the result
is inlined in `tasks/get`), so the gateway does not serve them either.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mcp_types import RequestParams

from gateway.config.models import SEPARATOR

EXTENSION = "io.modelcontextprotocol/tasks"
METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
STATUS = "notifications/tasks"  # a task's new state (the detailed task), on a listen stream
TERMINAL = frozenset({"completed", "failed", "cancelled"})  # no status follows these
CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
# What a request says to declare the extension (SEP-2575's per-request capabilities).
OPT_IN: Mapping[str, Any] = {"extensions": {EXTENSION: {}}}
MAX_TASKS = 10_000


class TaskRequestParams(RequestParams):
    """`tasks/get`, `tasks/update` and `tasks/cancel` params: a task id (and whatever else the
    method carries, relayed as sent)."""

    task_id: str


@dataclass(frozen=True, slots=True)
class TaskRoute:
    server: str
    task_id: str  # the backend's own
    owner: str  # the identity that created it
    tool: str  # the public name of the tool whose call created it (authorization checks it)
    run: float | None  # which run of the backend holds it (its `started_at` then)
    expires: float | None  # monotonic; None: as long as the backend keeps it


def declared(params: Mapping[str, Any] | None) -> bool:
    """Whether a request's `_meta` declares the extension (a 2026-07-28 client's capabilities)."""
    meta = (params or {}).get("_meta")
    capabilities = meta.get(CAPABILITIES_META) if isinstance(meta, Mapping) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, Mapping) else None
    return isinstance(extensions, Mapping) and EXTENSION in extensions


def opted_in(params: dict[str, Any]) -> dict[str, Any]:
    """`params` declaring the extension to a backend (the gateway's own session did not)."""
    return {**params, "_meta": {**(params.get("_meta") or {}), CAPABILITIES_META: OPT_IN}}


# Has the backend `server` report the status of these of its tasks (backend ids, first watched first).
Follow = Callable[[str, Sequence[str]], Awaitable[None]]


class Tasks:
    """The tasks the gateway has relayed the creation of: public id -> `TaskRoute`."""

    def __init__(self, limit: int = MAX_TASKS, follow: Follow | None = None) -> None:
        self._routes: OrderedDict[str, TaskRoute] = OrderedDict()
        self._limit = limit
        self._follow = follow
        # public id -> the listen streams that asked for its status notifications
        self._watchers: dict[str, set[Callable[[dict[str, Any]], None]]] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def add(self, server: str, task: Mapping[str, Any], *, owner: str, tool: str, run: float | None) -> str:
        """Record a task a backend created; return the id the client sees."""
        task_id = str(task["taskId"])
        public = f"{server}{SEPARATOR}{task_id}"
        ttl = task.get("ttlMs")
        now = time.monotonic()
        expires = now + ttl / 1000 if isinstance(ttl, int | float) and ttl > 0 else None
        self._routes.pop(public, None)
        self._routes[public] = TaskRoute(server, task_id, owner, tool, run, expires)
        self._prune(now)
        return public

    def route(self, public: str, owner: str) -> TaskRoute | None:
        """The task `public` if `owner` created it and it has not expired, else None."""
        route = self._routes.get(public)
        if route is None or route.owner != owner:
            return None
        if route.expires is not None and route.expires < time.monotonic():
            del self._routes[public]
            return None
        return route

    def public_id(self, server: str, task_id: str) -> str | None:
        """The id the client knows a backend's task by, if the gateway relayed its creation."""
        public = f"{server}{SEPARATOR}{task_id}"
        return public if public in self._routes else None

    def watch(self, public_ids: list[str], deliver: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Have `deliver` called with each status notification of these tasks; returns the undo."""
        for public in public_ids:
            self._watchers.setdefault(public, set()).add(deliver)

        def unwatch() -> None:
            for public in public_ids:
                watchers = self._watchers.get(public)
                if watchers is not None:
                    watchers.discard(deliver)
                    if not watchers:
                        del self._watchers[public]

        return unwatch

    async def follow(self, public_ids: Iterable[str]) -> None:
        """Have the backends holding these tasks report on every task somebody watches (the
        listen stream of a 2026-07-28 backend names them); call after `watch`."""
        if self._follow is None:
            return
        servers = dict.fromkeys(route.server for p in public_ids if (route := self._routes.get(p)))
        for server in servers:
            await self._follow(server, self.followed(server))

    def followed(self, server: str) -> list[str]:
        """The backend ids of `server`'s tasks that somebody watches and that have not finished
        or expired, in the order they were first watched."""
        now = time.monotonic()
        followed = [
            route
            for public in self._watchers  # the few watched, not the whole table
            if (route := self._routes.get(public)) is not None
            and route.server == server
            and (route.expires is None or route.expires >= now)
        ]
        return [route.task_id for route in followed]

    def publish(self, public: str, params: dict[str, Any]) -> None:
        watchers = self._watchers.get(public, ())
        if params.get("status") in TERMINAL:
            # The last news of this task: it is nobody's to follow any more.
            self._watchers.pop(public, None)
        for deliver in list(watchers):
            deliver(params)

    def _prune(self, now: float) -> None:
        while len(self._routes) > self._limit:
            self._routes.popitem(last=False)
        # Expired entries are dropped from the oldest end while there are any there.
        while self._routes:
            oldest = next(iter(self._routes.values()))
            if oldest.expires is None or oldest.expires >= now:
                break
            self._routes.popitem(last=False)
