"""`pinning`: a guard against "rug pulls" — a backend that changes what a tool says it does.

A model decides what to call from a tool's description and schemas, so a server that swaps them
after it was reviewed (a description that now says "also send ~/.ssh to ...") changes what the
model will do without anyone noticing. On first sight the definition of every tool (description,
inputSchema, outputSchema, annotations) is pinned as a hash, per server. When a backend later
shows a different definition for a pinned tool:

- `mode: warn` (default): a warning is logged once per new definition (server and tool name, never
  the description itself) and counted in `changed_tools`;
- `mode: hide`: the same, and the tool disappears from tools/list and calls to it are denied
  (-32003) until an administrator accepts the new definition with `accept(server, tool)`.

A tool whose definition changes back to the pinned one is trusted again by itself. New tools are
pinned as they appear. With `store: pins.json` the pins survive restarts (a change made while the
gateway was down is caught at the next start).

With `cluster.redis`, the pins are the cluster's (`gateway.control`): the first replica to see a
tool pins it in Redis and every other compares against that pin, so a replica started after a tool
changed does not take the changed definition as trusted; an approval on any replica applies to
all. While Redis is unreachable a replica compares against the pins it already knows; a tool it
has never seen a pin for is unverified (hidden and denied with `mode: hide`), and approvals are
refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from gateway.catalogue import Catalogue
from gateway.errors import ClusterUnavailable, Denied
from gateway.middleware.base import Call, CallNext, Result

if TYPE_CHECKING:
    from gateway.control import ControlPlane
    from gateway.fleet import Fleet

logger = logging.getLogger(__name__)

PINNED_FIELDS = ("description", "inputSchema", "outputSchema", "annotations")
_STORE_VERSION = 1
# While the cluster's store is unreachable, how often a listing or call tries it again.
_RETRY = 5.0


def fingerprint(tool: Mapping[str, Any]) -> str:
    """A stable hash of what a model reads about a tool (key order and whitespace do not matter)."""
    pinned = {key: tool.get(key) for key in PINNED_FIELDS}
    canonical = json.dumps(pinned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Change:
    server: str
    tool: str  # the backend's own name
    pinned: str  # the accepted fingerprint
    current: str  # what the backend shows now
    seen: str  # UTC ISO time the change was first seen


class PinningOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["warn", "hide"] = Field(
        "warn", description="warn: log and count a changed tool; hide: also hide it and deny calls"
    )
    store: str | None = Field(None, description="JSON file keeping the pins across restarts")


class Pinning:
    def __init__(self, **options: Any) -> None:
        self.options = opts = PinningOptions(**options)
        self.hide = opts.mode == "hide"
        self.store = Path(opts.store).absolute() if opts.store else None
        self.pins: dict[str, dict[str, str]] = self._load() if self.store else {}
        self.pending: dict[tuple[str, str], Change] = {}
        self.changed_tools = 0  # changes detected since start (a counter, for metrics)
        self._fleet: Fleet | None = None
        self._synced: Catalogue | None = None
        # With `cluster.redis`: the cluster's pins, and the tools whose pin could not be read.
        self._shared: ControlPlane | None = None
        self.unverified: set[tuple[str, str]] = set()
        self._lock = anyio.Lock()
        self._retry_at = 0.0
        self._tried: Catalogue | None = None

    def attach(self, fleet: Fleet) -> None:
        self._fleet = fleet
        if fleet.control is not None and self._shared is None:
            self._shared = fleet.control
            fleet.control.pin_listeners.append(self._approved)
            fleet.control.reseed_listeners.append(self._reseed)
            fleet.control.resync_listeners.append(self._forget_synced)

    @property
    def shared(self) -> bool:
        """Whether the pins are the cluster's (`cluster.redis`)."""
        return self._shared is not None

    # -- the admin surface --------------------------------------------------------------------

    def changes(self) -> list[dict[str, str]]:
        """The tools whose current definition differs from their pin."""
        return [asdict(change) for change in self.pending.values()]

    async def approve(self, server: str, tool: str) -> bool:
        """`accept`, on every replica when clustered. Raises `ClusterUnavailable` (nothing changed)."""
        change = self.pending.get((server, tool))
        if change is None:
            return False
        if self._shared is not None:
            await self._shared.approve_pin(server, tool, change.current)
        return self.accept(server, tool)

    def accept(self, server: str, tool: str) -> bool:
        """Trust the tool's current definition. False if nothing was pending for it."""
        change = self.pending.pop((server, tool), None)
        if change is None:
            return False
        self.pins.setdefault(server, {})[tool] = change.current
        logger.warning(
            "pinning: accepted the new definition of tool %s of server %s",
            tool,
            server,
            extra={"server": server, "tool": tool},
        )
        self._save()
        return True

    # -- the middleware -----------------------------------------------------------------------

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.method == "tools/list":
            if self._fleet is not None:
                await self._sync_catalogue(self._fleet.catalogue)
                result = await call_next(call)
            else:  # unattached (unit use): the listing itself is all we know
                result = await call_next(call)
                self._sync((call.server or "", t["name"], t) for t in _tools(result))
            return self._filtered(result) if self.hide and (self.pending or self.unverified) else result
        if call.method == "tools/call":
            if self._fleet is not None:
                await self._sync_catalogue(self._fleet.catalogue)
            key = (call.server or "", call.original or call.name or "")
            if self.hide and key in self.unverified:
                raise Denied(
                    f"tool {call.name} cannot be checked against its pin: the cluster's store is "
                    "unreachable; retry once it is back",
                    data={"server": key[0], "tool": key[1]},
                )
            if self.hide and key in self.pending:
                raise Denied(
                    f"tool {call.name} changed its definition since it was reviewed; "
                    "an administrator must accept the change before it can be called",
                    data={"server": key[0], "tool": key[1]},
                )
        return await call_next(call)

    def _filtered(self, result: Result) -> Result:
        routes = self._fleet.catalogue.tool_routes if self._fleet is not None else {}

        def key(public: str) -> tuple[str, str]:
            route = routes.get(public)
            return (route.server, route.name) if route is not None else ("", public)

        tools = [
            t
            for t in _tools(result)
            if key(t["name"]) not in self.pending and key(t["name"]) not in self.unverified
        ]
        return {**result, "tools": tools}  # a new list: the catalogue's is shared

    # -- pins ---------------------------------------------------------------------------------

    async def _sync_catalogue(self, catalogue: Catalogue) -> None:
        # The catalogue is immutable and replaced on every change: hash each version once.
        if catalogue is self._synced:
            return
        routes = catalogue.tool_routes
        tools = [
            (route.server, route.name, tool)
            for tool in catalogue.tools
            if (route := routes.get(tool["name"])) is not None
        ]
        if self._shared is None:
            self._synced = catalogue
            self._sync(tools)
            return
        async with self._lock:  # one round-trip to Redis per catalogue version, not one per call
            # Redis down a moment ago (and not known to be back): not tried again on every call.
            waiting = not self._shared.reachable and time.monotonic() < self._retry_at
            if catalogue is self._synced or (catalogue is self._tried and waiting):
                return  # (this version was compared with the pins known here)
            self._tried = catalogue
            seen = {(server, name): fingerprint(tool) for server, name, tool in tools}
            try:
                if waiting:
                    raise ClusterUnavailable("the cluster's store was unreachable")
                pinned = await self._shared.claim_pins(seen)
            except ClusterUnavailable:
                if time.monotonic() >= self._retry_at:
                    self._retry_at = time.monotonic() + _RETRY
                unverified = {k for k in seen if self.pins.get(k[0], {}).get(k[1]) is None}
                if unverified - self.unverified:
                    logger.warning(
                        "pinning: the cluster's store is unreachable; %d tool(s) without a known pin "
                        "are unverified%s",
                        len(unverified),
                        " and hidden" if self.hide else "",
                    )
                self.unverified = unverified
                self._sync(t for t in tools if (t[0], t[1]) not in unverified)
                return
            for (server, name), value in pinned.items():
                self.pins.setdefault(server, {})[name] = value
            self.unverified = set()
            self._synced = catalogue
            self._sync(tools)

    def _approved(self, server: str, tool: str, value: str) -> None:
        """Another replica approved `value` for the tool: trusted here too (and only it: a copy here
        still showing the old definition is compared again at once, as after a local accept)."""
        self.pins.setdefault(server, {})[tool] = value
        self._synced = None
        change = self.pending.get((server, tool))
        if change is not None and change.current == value:
            del self.pending[(server, tool)]
            logger.warning(
                "pinning: the new definition of tool %s of server %s was accepted on another replica",
                tool,
                server,
                extra={"server": server, "tool": tool},
            )
        self._save()

    def _forget_synced(self) -> None:
        # The store was read again (an approval announced while the bus was reconnecting is not
        # missed), and is reachable: the next listing or call compares against it once more.
        self._synced = None
        self._retry_at = 0.0

    async def _reseed(self) -> None:
        """Redis came back empty: put back the pins this replica trusts, before anything is
        pinned anew from what backends show now."""
        assert self._shared is not None
        trusted = {
            (server, name): value for server, tools in self.pins.items() for name, value in tools.items()
        }
        if trusted:
            await self._shared.claim_pins(trusted)
        self._synced = None

    def _sync(self, tools: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        new = 0
        for server, name, tool in tools:
            current = fingerprint(tool)
            pins = self.pins.setdefault(server, {})
            pinned = pins.get(name)
            key = (server, name)
            if pinned is None:
                pins[name] = current
                new += 1
            elif pinned == current:
                if self.pending.pop(key, None) is not None:
                    logger.info(
                        "pinning: tool %s of server %s is back to its pinned definition", name, server
                    )
            elif (seen := self.pending.get(key)) is None or seen.current != current:
                self.pending[key] = Change(server, name, pinned, current, _now())
                self.changed_tools += 1
                logger.warning(
                    "pinning: server %s changed the definition of tool %s since it was pinned%s",
                    server,
                    name,
                    "; hidden until an administrator accepts it" if self.hide else "",
                    extra={"server": server, "tool": name},
                )
        if new:
            self._save()

    def _load(self) -> dict[str, dict[str, str]]:
        assert self.store is not None
        if not self.store.exists():
            return {}
        try:
            document = json.loads(self.store.read_text())
            pins = document["pins"]
            if document.get("version") != _STORE_VERSION or not all(
                isinstance(tools, dict) and all(isinstance(h, str) for h in tools.values())
                for tools in pins.values()
            ):
                raise ValueError("unexpected structure")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"store {self.store}: not a pin file this gateway wrote ({exc})") from None
        return {server: dict(tools) for server, tools in pins.items()}

    def _save(self) -> None:
        # Small and rare (new tools, an accept), so written inline; replaced atomically, so a crash
        # never leaves half a file that would stop the next start.
        if self.store is None:
            return
        document = {"version": _STORE_VERSION, "pins": self.pins}
        tmp = self.store.with_name(self.store.name + ".tmp")
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(document, indent=1, sort_keys=True))
            os.replace(tmp, self.store)
        except OSError as exc:
            logger.error("pinning: cannot save pins to %s: %s", self.store, exc)


def _tools(result: Result) -> list[dict[str, Any]]:
    return [t for t in result.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
