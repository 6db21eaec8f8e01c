"""One row of the event log: a backend's state change, or an admin action."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.backends.lifecycle import Event

SEVERITIES = ("info", "warning", "error")
CATEGORIES = ("lifecycle", "health", "admin", "config")
TYPES = ("transition", "action")


@dataclass(frozen=True, slots=True)
class EventRecord:
    ts: float  # epoch seconds
    type: Literal["transition", "action"]
    server: str | None
    category: str
    severity: str
    reason: str = ""
    old: str | None = None  # transitions
    new: str | None = None
    actor: str | None = None  # admin actions
    action: str | None = None
    outcome: str | None = None
    request_id: str | None = None
    id: int | None = None  # assigned by the store once written

    @classmethod
    def of(cls, event: Event) -> EventRecord:
        return cls(
            ts=event.time,
            type="transition",
            server=event.server,
            category=event.category,
            severity=event.severity,
            reason=event.reason,
            old=event.old,
            new=event.new,
        )

    def with_id(self, row_id: int) -> EventRecord:
        return replace(self, id=row_id)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = iso(self.ts)
        return data


COLUMNS = tuple(f.name for f in fields(EventRecord) if f.name != "id")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
