"""Who may use the admin API: its own hashed keys, or an identity holding the admin role.

Credentials are `Authorization: Bearer <key>` or `X-API-Key: <key>`. A key is compared by its
SHA-256 against every configured hash in constant time. Failing that, an `Identity` already set on
the request (`request.state.identity`) or produced by the gateway's authenticator (the auth
middleware: API keys or JWTs) is accepted when it holds the admin role. No credentials: 401. An
authenticated identity without the role: 403. Anonymous identities never count. With no admin keys
and no authenticator, nobody gets in (fail closed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin._errors import error_response
from gateway.config.admin import AdminConfig
from gateway.middleware._keys import match_digest, presented_credential
from gateway.middleware.base import Identity

logger = logging.getLogger("gateway.admin")

# The gateway's authenticator (the auth middleware's), looked up per request; None when there is none.
Authenticator = Callable[[Request], Awaitable["Identity | Response | None"]]
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mcp-gateway admin"'}


class AdminAuth:
    """`role`: the role that admits an identity (default: the admin API's, `config.role`); `what`
    names what is guarded in refusals."""

    def __init__(
        self,
        config: AdminConfig,
        authenticate: Authenticator | None = None,
        *,
        role: str | None = None,
        what: str = "the admin API",
    ) -> None:
        self.role = role or config.role
        self.what = what
        self._keys = [(bytes.fromhex(digest), who) for who, digest in config.credentials()]
        self.authenticate = authenticate

    async def admit(self, request: Request) -> tuple[str | None, int, str]:
        """(who, 0, "") when admitted, else (None, status, message)."""
        lacking: Identity | None = None
        given = request.scope.get("state", {}).get("identity")
        if isinstance(given, Identity) and given.source != "anonymous":
            if self.role in given.roles:
                return given.name, 0, ""
            lacking = given
        token = presented_credential(request, skip_empty=True)[0]  # an empty token counts as none
        if token is not None:
            who = match_digest(token, self._keys)
            if who is not None:
                return who, 0, ""
        # None: the gateway has no authenticator now (no auth middleware; it may come with a reload).
        outcome = await self.authenticate(request) if self.authenticate is not None else None
        if isinstance(outcome, Identity) and outcome.source != "anonymous":
            if self.role in outcome.roles:
                return outcome.name, 0, ""
            lacking = outcome
        if lacking is not None:
            return None, 403, f"{lacking.name!r} does not have the {self.role!r} role {self.what} requires"
        if not self._keys and outcome is None:
            return None, 401, f"{self.what} has no credentials configured (set admin.api_keys)"
        if token is None:
            return None, 401, "admin credentials required (Authorization: Bearer <key> or X-API-Key)"
        return None, 401, "unknown admin credentials"


class AuthMiddleware:
    """Admits a request or answers 401/403 in the common error shape; records who it was."""

    def __init__(self, app: ASGIApp, auth: AdminAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        who, status, message = await self.auth.admit(request)
        if who is None:
            client = request.client.host if request.client else "?"
            what, method, path = self.auth.what, request.method, request.url.path
            logger.info("%s: refused %s %s from %s: %s", what, method, path, client, message)
            code = "forbidden" if status == 403 else "unauthorized"
            headers = _CHALLENGE if status == 401 else None
            await error_response(request, status, code, message, headers=headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["admin"] = who
        await self.app(scope, receive, send)
