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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.catalogue import Catalogue
from gateway.errors import Denied
from gateway.middleware.base import Call, CallNext, Result

if TYPE_CHECKING:
    from gateway.fleet import Fleet

logger = logging.getLogger(__name__)

PINNED_FIELDS = ("description", "inputSchema", "outputSchema", "annotations")
_STORE_VERSION = 1


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

    def attach(self, fleet: Fleet) -> None:
        self._fleet = fleet

    # -- the admin surface --------------------------------------------------------------------

    def changes(self) -> list[dict[str, str]]:
        """The tools whose current definition differs from their pin."""
        return [asdict(change) for change in self.pending.values()]

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
                self._sync_catalogue(self._fleet.catalogue)
                result = await call_next(call)
            else:  # unattached (unit use): the listing itself is all we know
                result = await call_next(call)
                self._sync((call.server or "", t["name"], t) for t in _tools(result))
            return self._filtered(result) if self.hide and self.pending else result
        if call.method == "tools/call":
            if self._fleet is not None:
                self._sync_catalogue(self._fleet.catalogue)
            key = (call.server or "", call.original or call.name or "")
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

        tools = [t for t in _tools(result) if key(t["name"]) not in self.pending]
        return {**result, "tools": tools}  # a new list: the catalogue's is shared

    # -- pins ---------------------------------------------------------------------------------

    def _sync_catalogue(self, catalogue: Catalogue) -> None:
        # The catalogue is immutable and replaced on every change: hash each version once.
        if catalogue is self._synced:
            return
        self._synced = catalogue
        routes = catalogue.tool_routes
        self._sync(
            (route.server, route.name, tool)
            for tool in catalogue.tools
            if (route := routes.get(tool["name"])) is not None
        )

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
