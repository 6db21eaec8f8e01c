"""How a backend's question reaches the client behind a call: who is asked, and whether it may be.

A backend asks (sampling, elicitation, roots) mid-call (2025-11-25) or by returning
`input_required` (2026-07-28); a client answers on its stream (2025-11-25) or by retrying with
`inputResponses` (2026-07-28). The relay (`Relay._forward`) picks the way; these are the pieces it
uses: the one capability check (`missing_capability`, for every front and revision), the `Caller`
a backend sees, what a `requestState` is bound to, and how a backend's retry is built. The
gateway's own rounds and the sealed state are `_inputs`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from mcp_types import ClientCapabilities

from gateway._inputs import Binding, StateSeal
from gateway.config.models import StateConfig
from gateway.config.secrets import Secrets, SecretValues
from gateway.errors import ConfigError, MissingCapability, as_mcp_error
from gateway.front import Front
from gateway.middleware import Call


class Caller:
    """A client request, as a backend sees it: who to ask when the backend asks back.

    `channel` carries the question: the front's own back channel (a 2025-11-25 client's stream),
    or, for a 2026-07-28 client, the input round that turns it into an `input_required` result."""

    __slots__ = ("channel", "front", "key", "known", "rounds")

    def __init__(
        self,
        front: Front,
        key: Hashable,
        known: SecretValues,
        channel: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.front = front
        self.key = key
        self.known = known
        self.channel = channel  # None: the front's own (looked up only when a backend asks)
        self.rounds = channel is not None

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        # The one check, whatever the front and revision: a client is never asked what it did not
        # declare it can answer; the backend hears so at once instead of waiting out its timeout.
        missing = missing_capability(self.front.client_capabilities, method, params)
        if missing is not None:
            raise as_mcp_error(missing)
        # A backend's question (an elicitation's message) reaches the client as the backend put it.
        channel = self.front.ask if self.channel is None else self.channel
        return await channel(method, self.known.mask_json(params))


def missing_capability(
    declared: ClientCapabilities | None, method: str, params: Mapping[str, Any]
) -> MissingCapability | None:
    """Why a client that declared `declared` cannot be sent `method` (None: it can), by the
    spec's rules: sampling with tools needs `sampling.tools`; an elicitation needs its mode
    (a bare `elicitation: {}` is form mode); roots need `roots`. Other methods (ping) need none."""
    if method == "sampling/createMessage":
        sampling = declared.sampling if declared is not None else None
        tools = params.get("tools") is not None or params.get("toolChoice") is not None
        if sampling is not None and (not tools or sampling.tools is not None):
            return None
        if tools:
            return MissingCapability(method, "sampling.tools", {"sampling": {"tools": {}}})
        return MissingCapability(method, "sampling", {"sampling": {}})
    if method == "elicitation/create":
        elicitation = declared.elicitation if declared is not None else None
        if params.get("mode") == "url":
            if elicitation is not None and elicitation.url is not None:
                return None
            return MissingCapability(method, "url elicitation", {"elicitation": {"url": {}}})
        if elicitation is not None and (elicitation.form is not None or elicitation.url is None):
            return None
        return MissingCapability(method, "form elicitation", {"elicitation": {"form": {}}})
    if method == "roots/list":
        if declared is not None and declared.roots is not None:
            return None
        return MissingCapability(method, "roots", {"roots": {}})
    return None


def state_seal(config: StateConfig, secrets: Secrets, ttl: float | None = None) -> StateSeal:
    """The seal of the gateway's `requestState` (or, with `ttl`, of its session ids), from the
    `state:` section. The keys are secrets: resolved like every reference (so masked wherever a
    string leaves), and a literal one is masked too."""
    keys = []
    for index, key in enumerate(config.keys):
        where = f"state.keys[{index}]"
        value = secrets.resolve(key, where=where)
        if value == key:
            secrets.add(value, where)
        keys.append(value)
    try:
        return StateSeal(keys, config.ttl if ttl is None else ttl)
    except ValueError as exc:  # the SDK's codec: a key under 32 bytes, or one given twice
        raise ConfigError([f"state.keys: {exc}"]) from None


# A backend may ask, be answered, and ask again; past this many rounds in one call it is looping.
MAX_BACKEND_ROUNDS = 32


def binding_of(call: Call) -> Binding:
    """What a `requestState` issued for `call` is bound to: who made it, and on what."""
    identity = call.identity
    return Binding(
        who=(identity.authenticator, identity.issuer, identity.name),
        method=call.method,
        target=call.name or "",
    )


def answering(params: dict[str, Any], answers: Any, state: Any) -> dict[str, Any]:
    """A backend's retry: its own round's answers and state (the client's arguments unchanged)."""
    retry = {**params, "inputResponses": dict(answers) if isinstance(answers, Mapping) else {}}
    if state is not None:
        retry["requestState"] = state
    return retry


def declared_by(front: Front) -> dict[str, Any]:
    """The client's declared capabilities, as a request envelope carries them."""
    capabilities = front.client_capabilities
    if capabilities is None:
        return {}
    declared: dict[str, Any] = capabilities.model_dump(by_alias=True, mode="json", exclude_none=True)
    return declared


def check_capability(front: Front, request: Any) -> None:
    """A 2026-07-28 client is handed only questions it declared it can answer."""
    if isinstance(request, Mapping):
        params = request.get("params")
        missing = missing_capability(
            front.client_capabilities,
            str(request.get("method")),
            params if isinstance(params, Mapping) else {},
        )
        if missing is not None:
            raise missing
