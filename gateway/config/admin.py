"""The `admin:` section of gateway.yaml: who may use the admin API, and where events are kept.

Example::

    admin:
      api_keys:
        - "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        - {name: ops-bot, key: "sha256:..."}       # a name makes the audit log say who it was
      role: admin                                   # or: an identity with this role (auth middleware)
      events:
        path: /var/lib/mcp-gateway/events.db        # default: $XDG_STATE_HOME/mcp-gateway/events.db
        max_rows: 100000
        max_days: 30
        redis: ${env:REDIS_URL}                     # also publish every event on `channel`

The admin API itself (`gateway.admin`) is runtime code; like every configuration model, these live
in `gateway.config`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HASHED = re.compile(r"^sha256:[0-9a-fA-F]{64}$")
_REFERENCE = re.compile(r"\$\{(env|file):[^}]+\}")


def redis_url(value: str | None) -> str | None:
    """`value` if it can name a Redis (a URL of its schemes, or a reference resolved later)."""
    if value is None or _REFERENCE.search(value):
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL (or a ${env:NAME} reference)")
    return value


HASH_HOWTO = 'store its SHA-256 instead, as "sha256:<hex>" - compute it with `printf %s "$KEY" | sha256sum`'
DEFAULT_CHANNEL = "mcp-gateway:events"


class _Model(BaseModel):
    # Never echo input in errors: a key pasted in clear must not end up in a log.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _check_hashed(value: str) -> str:
    value = value.strip()
    if not _HASHED.match(value):
        raise ValueError(f"admin API keys are not stored in clear; {HASH_HOWTO}")
    return value.lower()


class AdminKey(_Model):
    name: str = Field(min_length=1, description="Who holds the key; recorded in the audit log.")
    key: str = Field(description='"sha256:<hex of sha256(key)>"; never the key itself.')

    _hashed = field_validator("key")(_check_hashed)


def default_events_path() -> str:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "mcp-gateway" / "events.db")


class EventsConfig(_Model):
    """Lifecycle events and admin actions: SQLite (bounded), optionally mirrored to Redis."""

    path: str = Field(
        default_factory=default_events_path,
        description='SQLite file (WAL). ":memory:" keeps events in memory only (lost on restart).',
    )
    max_rows: int = Field(default=100_000, ge=1, description="Oldest rows beyond this count are pruned.")
    max_days: float | None = Field(default=30.0, gt=0, description="Rows older than this are pruned.")
    queue_size: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Events waiting for the writer; beyond: dropped."
    )
    redis: str | None = Field(
        default=None,
        description="redis:// or rediss:// URL (may be a ${env:NAME} reference): every event is also "
        "published there as JSON.",
    )
    channel: str = Field(default=DEFAULT_CHANNEL, min_length=1, description="The Redis channel.")

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return redis_url(value)


class AdminConfig(_Model):
    api_keys: list[str | AdminKey] = Field(
        default_factory=list,
        description='Hashed keys ("sha256:<hex>", or {name, key}) accepted as `Authorization: Bearer` or '
        "`X-API-Key`. With none and no auth middleware, the admin API refuses everyone.",
    )
    role: str = Field(
        default="admin",
        min_length=1,
        description="An identity with this role (from the auth middleware) may use the admin API.",
    )
    events: EventsConfig = Field(default_factory=EventsConfig)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        if isinstance(value, list):
            return [_check_hashed(v) if isinstance(v, str) else v for v in value]
        return value

    def credentials(self) -> list[tuple[str, str]]:
        """(who, lowercase hex digest) for every accepted key. Unnamed keys are told apart by a
        short prefix of their hash (the hash of a key, not the key: safe to record)."""
        out: list[tuple[str, str]] = []
        for entry in self.api_keys:
            if isinstance(entry, AdminKey):
                out.append((entry.name, entry.key.removeprefix("sha256:")))
            else:
                digest = entry.removeprefix("sha256:")
                out.append((f"admin-key:{digest[:8]}", digest))
        return out
