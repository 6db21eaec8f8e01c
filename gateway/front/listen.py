"""`subscriptions/listen` streams that also carry task status (the tasks extension, SEP-2663).

A 2026-07-28 client hears of its tasks by listing their ids in the listen filter's `taskIds`; the
acknowledgment echoes the ids the server will report on, and each status change arrives as
`notifications/tasks` (the detailed task) on that stream. The SDK's `ListenHandler` serves the
core events only (its filter and its events are a closed set), so a stream that asks for tasks is
served here, the way `ListenHandler` serves one: acknowledged first, every frame tagged with the
subscription id, a bounded backlog that ends a stream whose client stopped reading, closed
gracefully on `close` (the gateway's drain). A stream that asks for no task stays the SDK's.

A task is reported only to its creator: an id the caller does not own (somebody else's, unknown,
expired) is left out of the acknowledgment, as the spec has a server do with what it will not
honour. Before the acknowledgment, the backends holding the tasks are asked to follow them
(`Tasks.follow`): a 2026-07-28 backend reports only on a listen stream of its own naming them.

Likewise a resource update from a client's own backend session (`session: per-client`) is that
client's alone: it is not on the fleet-wide bus, so a stream subscribed at such a session (`own`,
the client's key) is served here too, and also hears what `watch` hands it for that client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import anyio
import anyio.streams.memory
import mcp_types as types
from mcp.server.subscriptions import SUBSCRIPTION_ID_META_KEY, ListenHandler, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ServerEvent, event_matches, event_to_notification

from gateway._sdk import Ctx
from gateway.front import Front
from gateway.tasks import STATUS, Tasks

logger = logging.getLogger(__name__)

_BACKLOG = 1024  # events a stream may hold unread before it is ended (the SDK's default)
_Item = ServerEvent | dict[str, Any]  # a core event, or a task's status params


Watch = Callable[[Hashable, Callable[[ServerEvent], None]], Callable[[], None]]


def _ignored() -> None:
    pass


def _no_watch(owner: Hashable, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
    return _ignored


class TaskListen:
    """Serves `subscriptions/listen`: with `taskIds` or a client's own subscriptions, here;
    otherwise by the SDK's handler. `watch`: how a client's own events are heard
    (`Clients.watch`)."""

    def __init__(
        self, bus: SubscriptionBus, tasks: Tasks, owner: Callable[[Front], str], watch: Watch = _no_watch
    ) -> None:
        self.sdk = ListenHandler(bus)
        self._bus = bus
        self._tasks = tasks
        self._owner = owner
        self._watch = watch
        self._streams: set[anyio.streams.memory.MemoryObjectSendStream[_Item]] = set()

    async def __call__(
        self,
        ctx: Ctx,
        params: types.SubscriptionsListenRequestParams,
        front: Front,
        own: Hashable | None = None,
    ) -> types.SubscriptionsListenResult:
        asked = (params.notifications.model_extra or {}).get("taskIds")
        if not isinstance(asked, list):
            asked = []
        if not asked and own is None:
            return await self.sdk(ctx, params)
        subscription_id = ctx.request_id
        if subscription_id is None:
            raise MCPError(types.INVALID_REQUEST, "subscriptions/listen requires a request id")
        owner = self._owner(front)
        task_ids = [t for t in dict.fromkeys(asked) if isinstance(t, str) and self._tasks.route(t, owner)]
        requested = params.notifications
        # What the SDK's handler honours (every requested kind), plus the caller's own tasks.
        honored = types.SubscriptionFilter.model_validate(
            {
                "toolsListChanged": True if requested.tools_list_changed else None,
                "promptsListChanged": True if requested.prompts_list_changed else None,
                "resourcesListChanged": True if requested.resources_list_changed else None,
                "resourceSubscriptions": list(requested.resource_subscriptions or ()) or None,
                "taskIds": task_ids if asked else None,
            }
        )
        uris = frozenset(honored.resource_subscriptions or ())
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: subscription_id}
        send, receive = anyio.create_memory_object_stream[_Item](_BACKLOG)

        def deliver(item: _Item) -> None:
            if isinstance(item, Mapping) or event_matches(honored, uris, item):
                try:
                    send.send_nowait(item)
                except anyio.ClosedResourceError:
                    pass
                except anyio.WouldBlock:
                    logger.warning("listen stream %r backlog full; ending the stream", subscription_id)
                    self._streams.discard(send)
                    send.close()

        # Watching before the ack, so nothing published meanwhile is lost; the ack still goes first.
        unsubscribe = self._bus.subscribe(deliver)
        unwatch = self._tasks.watch(task_ids, deliver)
        unwatch_own = self._watch(own, deliver) if own is not None else _ignored
        self._streams.add(send)
        try:
            # A 2026-07-28 backend reports only on its own listen stream naming the task: that is
            # acknowledged first, so what it says after the client's ack reaches the client.
            await self._tasks.follow(task_ids)
            ack = types.SubscriptionsAcknowledgedNotificationParams(notifications=honored, _meta=meta)
            await front.notify(
                "notifications/subscriptions/acknowledged", ack.model_dump(by_alias=True, exclude_none=True)
            )
            async for item in receive:
                if isinstance(item, Mapping):
                    await front.notify(STATUS, {**item, "_meta": {**(item.get("_meta") or {}), **meta}})
                else:
                    note = event_to_notification(item, meta).model_dump(by_alias=True, exclude_none=True)
                    await front.notify(note["method"], note.get("params") or {})
        finally:
            unsubscribe()
            unwatch()
            unwatch_own()
            self._streams.discard(send)
            send.close()
            receive.close()
        return types.SubscriptionsListenResult(_meta=meta)

    def close(self) -> None:
        """End every listen stream gracefully (each sends its final result)."""
        self.sdk.close()
        for stream in list(self._streams):
            stream.close()
