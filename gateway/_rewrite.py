"""Pure helpers of the relay: what goes to a backend, and how its answers are shown to clients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mcp_types.version import MODERN_PROTOCOL_VERSIONS

Result = dict[str, Any]

# Keys of the 2026-07-28 request envelope describe the client's connection to the gateway, not ours
# to the backend; the backend session stamps its own.
_ENVELOPE_PREFIX = "io.modelcontextprotocol/"
# A 2026-07-28 retry carries these for the gateway's own input rounds; the backend never sees them.
_INPUT_ROUND_KEYS = ("inputResponses", "requestState")


def forward_params(raw: Mapping[str, Any] | None, **replace: Any) -> dict[str, Any]:
    """The params a backend receives: the client's, minus what only concerned the gateway."""
    params = {k: v for k, v in (raw or {}).items() if k not in _INPUT_ROUND_KEYS}
    params.update(replace)
    meta = params.get("_meta")
    if meta:
        # The backend session mints its own progress token (and maps progress back to ours).
        kept = {k: v for k, v in meta.items() if k != "progressToken" and not k.startswith(_ENVELOPE_PREFIX)}
        if kept:
            params["_meta"] = kept
        else:
            del params["_meta"]
    return params


def finish(protocol_version: str, result: Result) -> Result:
    # 2026-07-28 results must say they are complete; backends reached over the handshake era
    # never do, and 2025-11-25 clients must not see the field (the SDK's per-version sieve drops it).
    if protocol_version in MODERN_PROTOCOL_VERSIONS:
        result.setdefault("resultType", "complete")
    return result


def rewrite_content(items: list[Any] | None, public_uri: Callable[[str], str]) -> None:
    """Put the namespace on resource URIs inside content blocks, so reads route back."""
    for item in items or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "resource_link" and isinstance(item.get("uri"), str):
            item["uri"] = public_uri(item["uri"])
        elif (
            item.get("type") == "resource"
            and isinstance(res := item.get("resource"), dict)
            and isinstance(res.get("uri"), str)
        ):
            res["uri"] = public_uri(res["uri"])
