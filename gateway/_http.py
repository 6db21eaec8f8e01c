"""The HTTP/1.1 connection, with deadlines for reading a request (uvicorn has none).

uvicorn waits as long as a client likes for a request's headers and body: fifty clients sending a
byte now and then (slowloris) each hold a connection and its buffers for as long as they keep
going. `http_protocol` is uvicorn's own protocol (httptools) with two deadlines, through uvicorn's
public extension point (`uvicorn.Config(http=<protocol class>)`) and its parser callbacks:

- `header_timeout`: from a connection's first moment, or from the first byte of a request on a
  kept-alive connection, to the end of the request's headers. Past it the client gets a 408 and
  the connection is closed. (An idle kept-alive connection is closed by uvicorn's own
  `timeout_keep_alive`.)
- `body_timeout`: from the end of the headers to the end of the body. Past it the connection is
  closed; the app reading the body sees the client disconnect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config.models import ListenConfig

logger = logging.getLogger("gateway")

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class DeadlineHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines above (set on a subclass: `http_protocol`)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, headers=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a new request on a kept-alive connection
            self._arm(self.header_timeout, headers=True)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self.body_timeout, headers=False)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, *, headers: bool) -> None:
        self._disarm()
        self._reading_headers = headers
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        what = "headers" if self._reading_headers else "body"
        logger.info("closed a connection from %s: its request %s took too long", client, what)
        if self._reading_headers and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_TIMED_OUT)  # nothing else is being answered on this connection
        self.transport.close()


def http_protocol(listen: ListenConfig) -> type[DeadlineHttp]:
    """The protocol class to give uvicorn (`http=`), with `listen`'s deadlines."""
    deadlines = {"header_timeout": listen.header_timeout, "body_timeout": listen.body_timeout}
    return type("DeadlineHttp", (DeadlineHttp,), deadlines)


def uvicorn_options(listen: ListenConfig) -> dict[str, Any]:
    """The `uvicorn.Config` options that harden the listening side."""
    return {"http": http_protocol(listen)}
