"""One row of the event log: a backend's state change, or an admin action."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.backends.lifecycle import Event
from gateway.cluster import stream_order

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
    replica: str | None = None  # the gateway process that recorded it (`cluster.replica_id`)
    # Assigned once written: the SQLite row id, or with `cluster.redis` the stream entry id
    # ("<ms>-<seq>", unique across replicas).
    id: int | str | None = None

    @classmethod
    def of(cls, event: Event, replica: str | None = None) -> EventRecord:
        return cls(
            replica=replica,
            ts=event.time,
            type="transition",
            server=event.server,
            category=event.category,
            severity=event.severity,
            reason=event.reason,
            old=event.old,
            new=event.new,
        )

    def with_id(self, row_id: int | str) -> EventRecord:
        return replace(self, id=row_id)

    def to_stream(self) -> dict[str, str]:
        """The fields of its stream entry (the entry id is its id; absent fields are None)."""
        return {name: str(value) for name in COLUMNS if (value := getattr(self, name)) is not None}

    @classmethod
    def from_stream(cls, entry_id: str, fields: dict[str, str]) -> EventRecord | None:
        """The record an entry holds, or None for one this version cannot read."""
        values: dict[str, Any] = {name: fields.get(name) for name in COLUMNS}  # absent: None
        if any(values[name] is None for name in _REQUIRED):
            return None
        try:
            values["ts"] = float(values["ts"])
        except ValueError:
            return None
        return cls(**values, id=entry_id)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = iso(self.ts)
        return data


COLUMNS = tuple(f.name for f in fields(EventRecord) if f.name != "id")
_REQUIRED = ("ts", "type", "category", "severity", "reason")


def id_order(record_id: int | str) -> tuple[int, int]:
    """Ids of one store sort like this: row ids, or stream entry ids ("<ms>-<seq>")."""
    return (record_id, 0) if isinstance(record_id, int) else stream_order(record_id)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
