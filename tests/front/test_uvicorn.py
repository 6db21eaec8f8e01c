"""Deadlines for reading a request (`gateway/front/_uvicorn.py`), against real sockets: slowloris clients
that never finish their headers, or their body, are cut off after the configured timeouts, while
a normal client is served meanwhile."""

from __future__ import annotations

import time

import anyio
import anyio.abc
import httpx
import pytest

from tests._support import config, misbehave, rpc, serve, session

pytestmark = pytest.mark.anyio

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
SLOW_CLIENTS = 50
BOUND = 60.0  # every wait below; generous for a loaded machine


async def read_until_closed(stream: anyio.abc.ByteStream) -> bytes:
    received = b""
    try:
        while True:
            received += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        return received


async def slow_client(port: int, kind: str, closed: list[tuple[str, float, bytes]]) -> None:
    """Open a connection, send part of a request, and wait (bounded) for the gateway to close it."""
    began = time.monotonic()
    with anyio.fail_after(BOUND):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            if kind == "headers":
                await stream.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            elif kind == "body":
                head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                await stream.send(head + b"Content-Length: 100\r\n\r\n" + b'{"jsonrpc": "2.0"')
            async with anyio.create_task_group() as tg:
                if kind == "dribbled headers":  # a byte now and then is no reprieve

                    async def dribble() -> None:
                        await stream.send(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                        with pytest.raises((anyio.BrokenResourceError, ConnectionResetError, OSError)):
                            while True:
                                await anyio.sleep(0.2)
                                await stream.send(b"x")

                    tg.start_soon(dribble)
                received = await read_until_closed(stream)
                tg.cancel_scope.cancel()
    closed.append((kind, time.monotonic() - began, received))


async def test_slow_clients_are_cut_off_and_others_are_served_meanwhile() -> None:
    cfg = config({"mb": misbehave()}, listen={"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT})
    async with serve(cfg) as gw, httpx.AsyncClient(timeout=BOUND) as http:
        port = int(gw.base.rsplit(":", 1)[1])
        kinds = ["headers", "body"] * (SLOW_CLIENTS // 2 - 1) + ["dribbled headers"] * 2
        closed: list[tuple[str, float, bytes]] = []
        async with anyio.create_task_group() as tg:
            for kind in kinds:
                tg.start_soon(slow_client, port, kind, closed)
            # Meanwhile, a normal client is served, on the SDK's path and the exchange.
            async with session(http, gw.url) as headers:
                call = rpc("tools/call", {"name": "mb__echo", "arguments": {"text": "hi"}})
                for _ in range(3):
                    answer = await http.post(gw.url, headers=headers, json=call)
                    assert answer.status_code == 200 and "misbehave: hi" in answer.text
            assert (await http.get(f"{gw.base}/healthz")).status_code == 200
        assert len(closed) == SLOW_CLIENTS
        for kind, took, received in closed:
            # Closed by the gateway, not before its deadline (a timer never fires early).
            assert took >= (BODY_TIMEOUT if kind == "body" else HEADER_TIMEOUT) * 0.9, (kind, took)
            if kind != "body":
                assert received.startswith(b"HTTP/1.1 408 "), (kind, received[:80])


async def test_a_kept_alive_connection_gets_a_new_header_deadline_per_request() -> None:
    cfg = config({}, listen={"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT})
    async with serve(cfg) as gw:
        port = int(gw.base.rsplit(":", 1)[1])
        with anyio.fail_after(BOUND):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                first = b""
                while b'"ok"' not in first:
                    first += await stream.receive()
                assert first.startswith(b"HTTP/1.1 200 ")
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 12")  # then nothing more
                began = time.monotonic()
                rest = await read_until_closed(stream)
                assert rest.startswith(b"HTTP/1.1 408 ") and time.monotonic() - began >= HEADER_TIMEOUT * 0.9
