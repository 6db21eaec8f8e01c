"""Config as the admin API shows it: references as written, literal secrets as `***`.

- A value holding a reference (`${env:NAME}`, `${file:PATH}`, `secret_ref:NAME`) is shown as
  written: it names where the secret lives, never the secret.
- Any other string under a key that looks secret (KEY, TOKEN, SECRET, PASSWORD, PASSWD, AUTH,
  CREDENTIAL, COOKIE, PRIVATE) is `***`, at any depth: `env`, `headers`, `bearer_token`,
  middleware options, hashed API keys too.
- Anywhere: the password of a URL (`https://user:pw@host`), secret-looking query parameters
  (`?api_key=...`), and command-line arguments like `--token=abc` / `--password abc`.
- An `env_schema` entry marked `secret: true` has its `default` hidden.

Whatever an admin response says (config, server details, stderr lines, events, errors, streams),
`MaskSecrets` then masks the gateway's resolved secret values in it by value.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config.secrets import SecretValues, has_reference

MASK = "***"
_SECRET_WORDS = (
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "credential",
    "cookie",
    "private",
)
_FLAG = re.compile(r"^(--?[A-Za-z0-9][A-Za-z0-9_.-]*)(=(.*))?$", re.DOTALL)


def secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact(value: Any, *, secret: bool = False) -> Any:
    """A redacted copy of a JSON-like value; `secret` when an enclosing key looked secret."""
    if isinstance(value, dict):
        out = {str(k): redact(v, secret=secret or secret_key(str(k))) for k, v in value.items()}
        if value.get("secret") is True and isinstance(value.get("default"), str):
            out["default"] = MASK
        return out
    if isinstance(value, list | tuple):
        items = [redact(v, secret=secret) for v in value]
        return _redact_args(items) if not secret else items
    if isinstance(value, str):
        if has_reference(value):
            return value
        if secret:
            return MASK
        return _redact_url(value)
    return value


def _redact_args(items: list[Any]) -> list[Any]:
    """`--token=abc` -> `--token=***`; `--api-key abc` -> `--api-key ***`."""
    out: list[Any] = []
    hide_next = False
    for item in items:
        if hide_next and isinstance(item, str) and not item.startswith("-"):
            out.append(item if has_reference(item) else MASK)
            hide_next = False
            continue
        hide_next = False
        match = _FLAG.match(item) if isinstance(item, str) else None
        if match is not None and secret_key(match.group(1)):
            if match.group(2) is None:
                hide_next = True
                out.append(item)
            else:
                value = match.group(3)
                out.append(item if has_reference(value) else f"{match.group(1)}={MASK}")
            continue
        out.append(item)
    return out


def _redact_url(value: str) -> str:
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(secret_key(k) for k, _ in pairs):
            query = urlencode([(k, MASK if secret_key(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return value
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class MaskSecrets:
    """ASGI middleware: every admin response body with the resolved secret values masked.

    The sources mask too (stderr lines, events, errors); this is the last line for whatever a
    handler puts together, now or later. A streamed response (SSE) is masked chunk by chunk, an
    event being sent whole; any other body is masked whole, and its length set again.
    """

    def __init__(self, app: ASGIApp, known: SecretValues) -> None:
        self.app = app
        self.known = known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.known:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        streaming = False
        parts: list[bytes] = []

        async def masked_send(message: Message) -> None:
            nonlocal start, streaming
            if message["type"] == "http.response.start":
                content_type = MutableHeaders(raw=message["headers"]).get("content-type", "")
                streaming = content_type.startswith("text/event-stream")
                if streaming:
                    await send(message)
                else:
                    start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            if streaming:
                await send({**message, "body": self.known.mask_bytes(message.get("body", b""))})
                return
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = self.known.mask_bytes(b"".join(parts))
            assert start is not None
            headers = MutableHeaders(raw=list(start["headers"]))
            if "content-length" in headers:
                headers["content-length"] = str(len(body))
            await send({**start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, masked_send)
