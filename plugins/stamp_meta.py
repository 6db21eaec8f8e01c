"""`plugins.stamp_meta:StampMeta`: add fixed key/values to `_meta`, towards backends and/or clients.

    middleware:
      - use: plugins.stamp_meta:StampMeta
        options:
          request: {example.com/tenant: acme, example.com/caller: "{identity}"}  # sent to backends
          result: {example.com/via: mcp-gateway}                               # returned to clients
          servers: ['crm']            # only requests to these backends (globs); default: all

String values may use the placeholders `{identity}`, `{identity_source}`, `{server}`, `{name}` (the
public tool/prompt name or resource URI) and `{request_id}` (the gateway's, as in its logs), so a
backend can tie its own logs to the gateway's. By default the gateway's values replace keys of the
same name that a client sent, so a client cannot pose as another tenant.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.logs import current_request_id
from gateway.middleware import Call, CallNext, Result, compile_globs

# The protocol's own keys: the gateway strips or owns them on the way to a backend.
_RESERVED_PREFIX = "io.modelcontextprotocol/"
_RESERVED = {"progressToken"}
_PLACEHOLDER = re.compile(r"\{(identity|identity_source|server|name|request_id)\}")


class StampMetaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: dict[str, Any] = Field({}, description="_meta keys added to requests sent to backends")
    result: dict[str, Any] = Field({}, description="_meta keys added to results returned to clients")
    methods: list[str] = Field(["*"], min_length=1, description="globs of the methods to stamp")
    servers: list[str] = Field(["*"], min_length=1, description="globs of the backends to stamp")
    overwrite: bool = Field(True, description="replace keys of the same name already present")

    @field_validator("request", "result")
    @classmethod
    def _keys_are_ours(cls, stamps: dict[str, Any]) -> dict[str, Any]:
        for key in stamps:
            if not key or key in _RESERVED or key.startswith(_RESERVED_PREFIX):
                raise ValueError(f"{key!r} is reserved by the protocol; use a key of your own domain")
        return stamps


class StampMeta:
    def __init__(self, **options: Any) -> None:
        self.options = StampMetaOptions(**options)
        if not self.options.request and not self.options.result:
            raise ValueError("nothing to stamp: set `options.request`, `options.result` or both")
        self.methods = compile_globs(self.options.methods)
        self.servers = compile_globs(self.options.servers)

    async def __call__(self, call: Call, call_next: CallNext) -> Result:
        if call.kind != "request" or not self.methods.match(call.method):
            return await call_next(call)
        # `servers` selects calls routed to a backend; lists (no server) are the gateway's own answers.
        server_ok = call.server is None or bool(self.servers.match(call.server))
        if self.options.request and call.server is not None and server_ok:
            meta = call.params.get("_meta")
            # A new dict: the client's own `_meta` is read elsewhere (its progress token).
            call.params["_meta"] = self._merge(
                meta if isinstance(meta, dict) else {}, self.options.request, call
            )
        result = await call_next(call)
        if self.options.result and server_ok:
            meta = result.get("_meta")
            result = {
                **result,
                "_meta": self._merge(meta if isinstance(meta, dict) else {}, self.options.result, call),
            }
        return result

    def _merge(self, meta: dict[str, Any], stamps: dict[str, Any], call: Call) -> dict[str, Any]:
        values = {key: self._fill(value, call) for key, value in stamps.items()}
        return {**meta, **values} if self.options.overwrite else {**values, **meta}

    @staticmethod
    def _fill(value: Any, call: Call) -> Any:
        if not isinstance(value, str) or "{" not in value:
            return value
        fills = {
            "identity": call.identity.name,
            "identity_source": call.identity.source,
            "server": call.server or "",
            "name": call.name or "",
            "request_id": current_request_id() or "",
        }
        # One pass: a filled-in value (an identity name holding "{server}") is not expanded again.
        return _PLACEHOLDER.sub(lambda m: fills[m.group(1)], value)
