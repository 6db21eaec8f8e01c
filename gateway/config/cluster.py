"""The `cluster:` section of gateway.yaml: what makes several gateway processes one gateway.

Example::

    cluster:
      replica_id: gw-a                     # default: host:pid:random, new for every process
      redis: ${env:REDIS_URL}              # events and audit of every replica in shared streams
      max_len: 100000                      # entries kept per stream
      max_days: 30

Without `redis`, events and audit stay in this process's SQLite files, as for a single gateway.
Every setting is read at start: a reload that changes one reports that a restart is required.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.config.admin import redis_url

_REPLICA = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    replica_id: str | None = Field(
        default=None,
        description="This process's name in events, audit records and the admin API. Default: "
        "host:pid:random (unique per process). Give each replica its own.",
    )
    redis: str | None = Field(
        default=None,
        description="redis://, rediss:// or unix:// URL (may be a ${env:NAME} reference): events and "
        "audit records of every replica are appended to Redis Streams there, and the admin API of "
        "any replica reads the whole cluster's. Unset: this process's SQLite files only.",
    )
    key_prefix: str = Field(
        default="mcp-gateway",
        min_length=1,
        description="Stream keys are <key_prefix>:events and <key_prefix>:audit.",
    )
    max_len: int = Field(
        default=100_000,
        ge=100,
        description="Entries kept per stream; the oldest are trimmed on every append.",
    )
    max_days: float | None = Field(
        default=30.0, gt=0, description="Entries older than this are trimmed; null: by count only."
    )
    buffer: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Records per stream held in memory while Redis is unreachable, sent once it is "
        "back; beyond this the oldest are dropped (counted and logged).",
    )

    address: str | None = Field(
        default=None,
        description="How this replica is reached (host:port), as the cluster view shows it. "
        "Default: the address it listens on (the host name for 0.0.0.0 or ::).",
    )
    heartbeat: float = Field(
        default=5.0,
        ge=0.2,
        le=60,
        description="Seconds between this replica's heartbeats (with `redis`): its entry in the "
        "cluster view expires after 3 missed ones, and a Redis that comes back is re-synced from at "
        "the next one.",
    )

    @field_validator("replica_id")
    @classmethod
    def _replica(cls, value: str | None) -> str | None:
        if value is not None and not _REPLICA.match(value):
            raise ValueError("must be 1-128 letters, digits or '_.:@-'")
        return value

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return redis_url(value)
