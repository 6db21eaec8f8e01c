"""URL backends: a remote MCP server over streamable HTTP, or legacy SSE.

One HTTP client per backend, kept for the backend's whole life: one connection pool and one SSL
context, however many sessions and calls (FIELD-NOTES §3: a client per request spent 79% of a
proxy's CPU creating SSL contexts). Header values and the bearer token may hold secret references;
they are resolved when the client is built and only ever sent to this backend (the client's own
credentials are never forwarded).

A backend that forgets our session (HTTP 404 on its session id, or a 400 saying so: it restarted,
or expired the session) ends the session; the supervisor re-establishes it at once, the call that
met the 404 gets a clear error, and later calls work.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx2
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from gateway.backends._logbuffer import LogBuffer
from gateway.backends.transport import HealthCheck, Link
from gateway.config.models import HttpServer
from gateway.config.secrets import Secrets

logger = logging.getLogger(__name__)


def _headers(name: str, spec: HttpServer, secrets: Secrets) -> dict[str, str]:
    headers = secrets.resolve_mapping(spec.headers, where=f"servers.{name}.headers")
    if spec.bearer_token:
        token = secrets.resolve(spec.bearer_token, where=f"servers.{name}.bearer_token")
        # A literal token (no reference) is as secret as a resolved one.
        secrets.add(token, "bearer_token")
        headers["Authorization"] = f"Bearer {token}"
    return headers


class HttpTransport:
    """The transport of one URL backend (a `Transport`); owns the backend's HTTP client."""

    def __init__(self, name: str, spec: HttpServer, log: LogBuffer, secrets: Secrets) -> None:
        self.name = name
        self.spec = spec
        self.log = log
        self.secrets = secrets
        self._client: httpx2.AsyncClient | None = None
        self.expired = False  # the server answered 404 to our session id; the session must be redone
        self.health_check: HealthCheck | None = self._health if spec.health_check else None

    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = self._new_client(headers=_headers(self.name, self.spec, self.secrets))
        return self._client

    def _new_client(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        """An HTTP client with this backend's settings; also the SSE transport's client factory
        (which passes its own timeouts: `connect_timeout` for requests, the SDK's for SSE reads)."""
        if timeout is None:
            timeout = httpx2.Timeout(self.spec.timeout, connect=self.spec.connect_timeout)
        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout,
            auth=auth,
            verify=self.spec.verify_tls,
            event_hooks={"response": [self._on_response]},
        )

    async def _on_response(self, response: httpx2.Response) -> None:
        if "mcp-session-id" not in response.request.headers or response.status_code not in (400, 404):
            return
        # The spec says 404 for an unknown session; some servers (server-everything) answer 400
        # "No valid session ID". Both mean the same: this session is gone.
        if response.status_code == 400:
            body = (await response.aread())[:2048].decode("utf-8", "replace").lower()
            if "session" not in body:
                return
        self.log.append(f"session expired (HTTP {response.status_code}); reconnecting")
        self.expired = True

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def connect(self) -> AbstractAsyncContextManager[Link]:
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Link]:
        self.expired = False
        if self.spec.type == "sse":
            headers = _headers(self.name, self.spec, self.secrets)
            async with sse_client(
                self.spec.url,
                headers=headers,
                timeout=self.spec.connect_timeout,
                httpx_client_factory=self._new_client,
            ) as (read, write):
                yield Link(read, write)
            return
        async with streamable_http_client(self.spec.url, http_client=self.client()) as (read, write):
            yield Link(read, write)

    async def _health(self) -> None:
        """GET the configured health path; raises on anything but 2xx."""
        assert self.spec.health_check is not None
        url = httpx2.URL(self.spec.url).join(self.spec.health_check)
        response = await self.client().get(url, timeout=self.spec.health.timeout)
        if response.status_code >= 300:
            raise OSError(f"health check {self.spec.health_check} answered HTTP {response.status_code}")
