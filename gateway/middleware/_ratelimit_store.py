"""The `limits` storage behind the ratelimit middleware: opened from a URI, made cheap in memory."""

from __future__ import annotations

import bisect
import logging
import time
import urllib.parse
from typing import Any

from limits.aio.storage import MemoryStorage, Storage
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from gateway._sdk import replace_memory_expiry

logger = logging.getLogger("gateway.middleware.ratelimit")

_SWEEP_EVERY = 5.0  # seconds between clean-ups of expired in-memory windows


def open_storage(uri: str, timeout: float, retry_factor: float) -> tuple[Storage, str, str | None]:
    """The async storage for `uri` (references already resolved), a log-safe label for it, and its
    password (to scrub from logs)."""
    parts = urllib.parse.urlsplit(uri)
    label = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
    secret = parts.password
    scheme = parts.scheme.removeprefix("async+")
    options: dict[str, Any] = {"wrap_exceptions": True}
    if scheme.startswith("redis"):
        # `redis` is a dependency, `coredis` (the limits default) is not; without timeouts an
        # unreachable Redis would hold every call for the OS connect timeout. The middleware
        # times each operation itself (and retries a late one once): the socket's own timeout
        # is only a backstop that must not cut the retry short.
        options.update(
            implementation="redispy",
            socket_connect_timeout=timeout,
            socket_timeout=timeout * (1 + retry_factor),
        )
    try:
        storage = storage_from_string(f"async+{scheme}://{uri.partition('://')[2]}", **options)
    except (ConfigurationError, ValueError, ImportError) as exc:
        message = str(exc).replace(secret, "***") if secret else str(exc)
        if "unknown storage scheme" in message:
            message = f"unknown scheme {parts.scheme!r}; use memory://, redis://host:port/db, ..."
        raise ValueError(f"storage {label}: {message}") from None
    if not isinstance(storage, Storage):
        raise ValueError(f"storage {label}: not an async storage")
    if isinstance(storage, MemoryStorage):
        _quiet_memory(storage)
    return storage, label, secret


def _quiet_memory(storage: MemoryStorage) -> None:
    """Replace the in-memory store's clean-up scheduling with a periodic inline sweep.

    As shipped (limits 5.x), every hit after the previous clean-up finished starts a new task that
    runs a thread-pool job per key: ~100 us per hit once the event loop gets to run it, against
    ~5 us for the hit itself. Sweeping every few seconds, inline, keeps memory bounded the same way.
    """
    if not replace_memory_expiry(storage, _Sweeper(storage).maybe_sweep):
        logger.info("ratelimit: limits' MemoryStorage changed; using its own expiry (slower)")


def _expiry_key(entry: Any) -> float:
    return -float(entry.expiry)


class _Sweeper:
    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage
        self.last = time.monotonic()

    async def maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self.last >= _SWEEP_EVERY:
            self.last = now
            self.sweep()

    def sweep(self) -> None:
        # Synchronous on purpose: the store never awaits while holding a key's lock, so nothing
        # else can observe a half-swept key.
        store, wall = self.storage, time.time()
        for key, events in list(store.events.items()):
            # Newest first, so expiries decrease: everything from `cut` on has expired.
            cut = bisect.bisect_left(events, -wall, key=_expiry_key)
            if cut == 0:
                del store.events[key]
            elif cut < len(events):
                del events[cut:]
        for key, expires in list(store.expirations.items()):
            if expires <= wall:
                store.storage.pop(key, None)
                del store.expirations[key]
        for key in [k for k in store.locks if k not in store.events and k not in store.storage]:
            del store.locks[key]
