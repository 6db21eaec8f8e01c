"""The `masking` middleware: secrets and personal data never leave the gateway unmasked.

Configured in `gateway.yaml`::

    - use: masking
      options:
        detectors: {email: partial, credit_card: redact, aws_access_key: block}  # or secrets:/pii:/all:
        disable: [ipv4]
        servers: {git: {detectors: {email: allow}, arguments: true}}
        arguments: false        # also mask tool/prompt arguments on their way to backends
        gateway_logs: true      # a logging.Filter masking the gateway's own log records
        backend_stderr: true    # mask backends' stderr lines before they are kept or logged
        salt: ${env:MASK_SALT}  # key of the `hash` action (without one, hashes of short values
                                # such as phone numbers can be reversed by trying them all)

Every detector redacts by default. Actions: `redact` (`[REDACTED:email]`), `partial` (`****1234`),
`hash` (`[HASH:email:<12 hex>]`, stable for one salt), `block` (the call fails with -32003
Denied; nothing of the result is returned), `allow` (off).

Masked on the way back: tool results (text, embedded resources, resource_link descriptions,
`structuredContent`), resource reads, prompts, JSON-RPC errors from backends; backend log
notifications before they reach clients; optionally arguments on the way in. Blobs and images are
not scanned.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any

from mcp.shared.exceptions import MCPError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.config.secrets import ResolvedStr
from gateway.errors import Denied, GatewayError
from gateway.logs import filtering
from gateway.masking import BY_NAME, PII, SECRETS, Action, Blocked, Masker
from gateway.masking._walk import mask_message, mask_tree
from gateway.middleware.audit import MASKED_ARGUMENTS
from gateway.middleware.base import Call, CallNext, Result

if TYPE_CHECKING:
    from gateway.fleet import Fleet

logger = logging.getLogger(__name__)

_GROUPS = {"all": frozenset(BY_NAME), "secrets": SECRETS, "pii": PII}


def _known(name: str) -> str:
    if name not in BY_NAME and name not in _GROUPS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join([*_GROUPS, *BY_NAME])}")
    return name


DetectorName = Annotated[str, AfterValidator(_known)]


class _Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detectors: dict[DetectorName, Action] = {}
    disable: list[DetectorName] = []

    def resolve(self, base: dict[str, Action]) -> dict[str, Action]:
        actions = dict(base)
        for group, names in _GROUPS.items():  # groups first: a named detector overrides its group
            if group in self.detectors:
                actions.update(dict.fromkeys(names, self.detectors[group]))
        actions.update({n: a for n, a in self.detectors.items() if n not in _GROUPS})
        for name in self.disable:
            actions.update(dict.fromkeys(_GROUPS.get(name, {name}), "allow"))
        return actions


class ServerOptions(_Overrides):
    arguments: bool | None = None  # None: as the global `arguments`


class MaskingOptions(_Overrides):
    servers: dict[str, ServerOptions] = {}
    arguments: bool = False
    gateway_logs: bool = True
    backend_stderr: bool = True
    salt: ResolvedStr = Field(default="", repr=False)  # may hold ${env:...}, ${file:...}, secret_ref:


# Which backend's data is being masked, for the masked-values metric (set per call; maskers are shared).
_server: ContextVar[str] = ContextVar("masking_server", default="")


# Counts one masked value: (detector, server).
Counter = Callable[[str, str], None]


def _masked_later(masker: Masker, arguments: Any) -> Callable[[], Any]:
    def masked() -> Any:
        try:
            return mask_tree(masker, arguments)
        except Blocked:
            return "[withheld by the masking policy]"

    return masked


class Masking:
    def __init__(self, **options: Any) -> None:
        self.options = opts = MaskingOptions(**options)
        actions = opts.resolve(dict.fromkeys(BY_NAME, "redact"))
        self.default = Masker(actions, salt=opts.salt)
        self._servers = {name: Masker(s.resolve(actions), salt=opts.salt) for name, s in opts.servers.items()}
        self._counters: list[Counter] = []
        for masker in (self.default, *self._servers.values()):
            masker.on_masked = self._count
        self._arguments = {
            name: s.arguments if s.arguments is not None else opts.arguments
            for name, s in opts.servers.items()
        }

    def count_with(self, counters: Sequence[Counter]) -> None:
        """Who counts the values masked (the chain's telemetry; `chain.create` wires them)."""
        self._counters = list(counters)

    def _count(self, detector: str) -> None:
        for count in self._counters:
            count(detector, _server.get())

    def masker(self, server: str | None) -> Masker:
        return self._servers.get(server or "", self.default)

    # -- the chain ------------------------------------------------------------------------------

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        masker = self.masker(call.server)
        _server.set(call.server or "")
        if not masker.enabled:
            return await call_next(call)
        if call.kind == "notification":
            # Log notifications are masked on their way to clients; a blocked one is dropped.
            call.params = self._mask(masker, call, call.params, "log notification")
            return await call_next(call)
        if call.method in ("tools/call", "prompts/get") and self._arguments.get(
            call.server or "", self.options.arguments
        ):
            arguments = call.params.get("arguments")
            masked = self._mask_tree(masker, call, arguments, "arguments")
            if masked is not arguments:
                call.params = {**call.params, "arguments": masked}
        elif call.method in ("tools/call", "prompts/get") and call.params.get("arguments"):
            # The backend gets the arguments as sent; the audit record must not keep the secrets.
            # Masked only if an audit middleware asks for them.
            call.state[MASKED_ARGUMENTS] = _masked_later(masker, call.params["arguments"])
        try:
            result = await call_next(call)
        except MCPError as exc:
            masked_error = self._mask_error(masker, call, exc.message, exc.data)
            if masked_error is None:
                raise
            raise MCPError(exc.code, *masked_error) from None
        except GatewayError as exc:
            masked_error = self._mask_error(masker, call, exc.message, exc.data)
            if masked_error is None:
                raise
            raise _with_message(exc, *masked_error) from None
        return self._mask(masker, call, result, "result")

    def _mask(self, masker: Masker, call: Call, message: Result, what: str) -> Result:
        try:
            masked: Result = mask_message(masker, call.method, message)
        except Blocked as exc:
            raise self._denied(call, what, exc) from None
        return masked

    def _mask_tree(self, masker: Masker, call: Call, value: Any, what: str) -> Any:
        try:
            return mask_tree(masker, value)
        except Blocked as exc:
            raise self._denied(call, what, exc) from None

    def _mask_error(self, masker: Masker, call: Call, message: str, data: Any) -> tuple[str, Any] | None:
        """The masked (message, data) of an error, or None if nothing needed masking."""
        new = self._mask_tree(masker, call, [message, data], "error")
        return None if new[0] is message and new[1] is data else (new[0], new[1])

    @staticmethod
    def _denied(call: Call, what: str, exc: Blocked) -> Denied:
        where = f"{call.method} on server {call.server!r}" if call.server else call.method
        logger.warning("masking blocked the %s of %s (found: %s)", what, where, exc.detector)
        return Denied(
            f"{what} of {where} withheld by the masking policy (found: {exc.detector})",
            data={"detector": exc.detector, "server": call.server},
        )

    # -- extras ---------------------------------------------------------------------------------

    def attach(self, fleet: Fleet) -> None:
        for name in self.options.servers:
            if name not in fleet.backends:
                logger.warning("masking: options.servers.%s names no configured server", name)
        if not self.options.backend_stderr:
            return
        for name, backend in fleet.backends.items():
            masker = self.masker(name)
            if masker.enabled:
                backend.log.transform = _line_masker(masker, backend.log.transform)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        if not self.options.gateway_logs or not self.default.enabled:
            yield
            return
        with filtering(MaskingFilter(self.default)):
            yield


def _with_message(exc: GatewayError, message: str, data: Any) -> GatewayError:
    """A copy of `exc` (same class, same attributes) saying `message`. Not `copy.copy`: that calls
    the class again with `args`, which subclasses with other signatures (BackendError) refuse."""
    replacement = type(exc).__new__(type(exc))
    replacement.__dict__.update(exc.__dict__)
    replacement.args = (message,)
    replacement.message, replacement.data = message, data
    return replacement


def _line_masker(masker: Masker, previous: Callable[[str], str] | None) -> Callable[[str], str]:
    def transform(line: str) -> str:
        if previous is not None:
            line = previous(line)
        try:
            return masker.mask(line, blocking=False)
        except Exception:  # runs in the pipe reader's callback: it must not raise, nor leak
            logger.exception("masking a stderr line failed; the line is withheld")
            return "[line withheld: masking failed]"

    return transform


class MaskingFilter(logging.Filter):
    """Masks a log record's message (arguments merged in), traceback and stack in place, once."""

    _formatter = logging.Formatter()

    def __init__(self, masker: Masker) -> None:
        super().__init__("")
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_masked_by", None) is self:
            return True  # several handlers share one record
        setattr(record, "_masked_by", self)  # noqa: B010 (LogRecord declares no such attribute)
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken format string: logging reports it on its own
        masked = self.masker.mask(message, blocking=False)
        if masked is not message:
            self._mask_message(record, masked)
        if record.exc_text:
            record.exc_text = self.masker.mask(record.exc_text, blocking=False)
        elif record.exc_info:
            # Formatters cache the traceback text in exc_text: fill it in, masked, if it needs it.
            text = self._formatter.formatException(record.exc_info)
            masked = self.masker.mask(text, blocking=False)
            if masked is not text:
                record.exc_text = masked
        if record.stack_info:
            record.stack_info = self.masker.mask(record.stack_info, blocking=False)
        return True

    def _mask_message(self, record: logging.LogRecord, masked: str) -> None:
        """Mask the arguments one by one where that suffices: some formatters read `args`
        themselves (uvicorn's access log unpacks (client, method, path, version, status))."""
        mask = self.masker.mask
        if isinstance(record.args, tuple) and isinstance(record.msg, str):
            args = tuple(self._mask_arg(a) for a in record.args)
            msg = mask(record.msg, blocking=False)
            try:
                candidate = msg % args
            except (TypeError, ValueError):  # a masked number no longer fits its %d
                candidate = None
            if candidate is not None and mask(candidate, blocking=False) is candidate:
                record.msg, record.args = msg, args
                return
        record.msg, record.args = masked, None

    def _mask_arg(self, value: object) -> object:
        if value is None or isinstance(value, bool | int | float):
            return value  # a card number logged as an int: the whole-message fallback gets it
        text = value if isinstance(value, str) else str(value)
        masked = self.masker.mask(text, blocking=False)
        return value if masked is text else masked
