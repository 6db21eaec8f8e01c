"""The gateway's own logs: one JSON object per line (or plain text), tagged with the request.

`configure(level, json=True)` installs one handler on the root logger. Every record carries the
request id and server of the call being handled, taken from context variables that the relay sets
per request with `request_scope()`; records emitted outside any request have them as null::

    {"ts": "2026-05-09T07:26:29.123Z", "level": "WARNING", "logger": "gateway.middleware.pinning",
     "msg": "tool changed", "request_id": "3f2a9c0d51e84b7a", "server": "mb", "tool": "echo"}

Fields passed with `extra={...}` are added as top-level keys (values that are not JSON become
their `str()`).

`masking_secrets(known)` masks every resolved secret value in every record, on every handler, for
as long as a gateway runs.
"""

from __future__ import annotations

import itertools
import json as _json
import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from gateway.config.secrets import SecretValues

_request_id: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)
_server: ContextVar[str | None] = ContextVar("gateway_server", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
    # uvicorn's `color_message` is its message again, with terminal colour codes.
    | {"message", "asctime", "request_id", "server", "context", "taskName", "color_message"}
)


# Request ids: this process's random prefix and a counter (unique across restarts and replicas,
# and a fraction of uuid4's cost on every call).
_ID_PREFIX = uuid.uuid4().hex[:8]
_ids = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):08x}"


@contextmanager
def request_scope(request_id: str | int | None = None, *, server: str | None = None) -> Iterator[str]:
    """Tag every log record (and audit record) emitted inside with this request's id.

    JSON-RPC ids repeat across sessions (every client counts from 1), so by default a fresh,
    gateway-unique id is minted.
    """
    rid = new_request_id() if request_id is None else str(request_id)
    rid_token = _request_id.set(rid)
    server_token = _server.set(server)
    try:
        yield rid
    finally:
        _server.reset(server_token)
        _request_id.reset(rid_token)


def current_request_id() -> str | None:
    return _request_id.get()


def current_server() -> str | None:
    return _server.get()


class ContextFilter(logging.Filter):
    """Copies the request context onto each record, unless `extra=` already set it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        if getattr(record, "server", None) is None:
            record.server = _server.get()
        parts = [f"{k}={v}" for k in ("request_id", "server") if (v := getattr(record, k)) is not None]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "server": getattr(record, "server", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            # The cached text, when a filter (SecretFilter) has masked it.
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(entry, default=str, ensure_ascii=False)


class SecretFilter(logging.Filter):
    """Masks the gateway's resolved secret values in a record, in place: its message (arguments
    merged in), extra fields, traceback and stack. Installed on handlers, not loggers: a logger's
    filters do not see records that propagate to it from its children."""

    _formatter = logging.Formatter()

    def __init__(self, known: SecretValues) -> None:
        super().__init__("")
        self.known = known

    def filter(self, record: logging.LogRecord) -> bool:
        known = self.known
        if not known or getattr(record, "_secrets_masked_by", None) is self:
            return True  # nothing to mask, or masked already for another handler
        setattr(record, "_secrets_masked_by", self)  # noqa: B010 (LogRecord declares no such attribute)
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken format string: logging reports it on its own
        masked = known.mask(message)
        if masked is not message:
            self._mask_message(record, masked)
        for key, value in vars(record).items():
            if key not in _STANDARD and isinstance(value, str) and not key.startswith("_"):
                setattr(record, key, known.mask(value))
        if record.exc_info and not record.exc_text:
            # Formatters reuse the cached traceback text: cache it, masked.
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = known.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = known.mask(record.stack_info)
        return True

    def _mask_message(self, record: logging.LogRecord, masked: str) -> None:
        # Arguments masked one by one where that suffices: some formatters read `args` themselves
        # (uvicorn's access log unpacks them); otherwise the message is replaced whole.
        known = self.known
        if isinstance(record.args, tuple) and isinstance(record.msg, str):
            args = tuple(known.mask(a) if isinstance(a, str) else a for a in record.args)
            try:
                candidate = known.mask(record.msg) % args
            except (TypeError, ValueError):
                candidate = None
            if candidate is not None and known.mask(candidate) == candidate:
                record.msg, record.args = known.mask(record.msg), args
                return
        record.msg, record.args = masked, None


def all_handlers() -> list[logging.Handler]:
    """Every handler configured now: the root's and those of named loggers (uvicorn's), so that a
    filter on each sees a record wherever it propagates."""
    seen: dict[int, logging.Handler] = {id(h): h for h in logging.getLogger().handlers}
    for item in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(item, logging.Logger):
            seen.update((id(h), h) for h in item.handlers)
    return list(seen.values())


@contextmanager
def filtering(log_filter: logging.Filter) -> Iterator[None]:
    """`log_filter` on every handler (see `all_handlers`), inside the block."""
    handlers = all_handlers()
    for handler in handlers:
        handler.addFilter(log_filter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(log_filter)


def masking_secrets(known: SecretValues) -> AbstractContextManager[None]:
    """Mask `known`'s values in every log record, on every handler, inside the block."""
    return filtering(SecretFilter(known))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure` installed, so a second call replaces it."""


def configure(level: str | int = "info", json: bool = False, *, stream: IO[str] | None = None) -> None:
    """Send every log record to `stream` (default stderr), as JSON lines or as text.

    Replaces the handler of `logging.basicConfig` or of an earlier call, so no line is printed
    twice; other handlers (a file, a test's capture) stay.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Handler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
