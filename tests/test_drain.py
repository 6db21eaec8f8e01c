"""Shutdown is bounded (`gateway/_drain.py`, `gateway/front/_uvicorn.py`): a real gateway process, real
clients over HTTP, SIGTERM while a long call runs and streams are open.

A running call may finish until `listen.drain_timeout`; then its client gets a JSON-RPC error on
its own stream. Listen streams and 2025-11-25 GET streams end at the start of the drain (nothing
waits for a client that merely listens), new requests are refused at once (503 and a JSON-RPC
error), and the process exits with nothing of the fleet left behind.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest

from gateway.errors import BACKEND_UNAVAILABLE
from tests._gateway_process import GatewayProcess, gateway_process, marked_processes
from tests._support import LEGACY, initialize, misbehave
from tests.front.test_exchange import post

pytestmark = pytest.mark.anyio

DRAIN = 4.0
# Beyond the drain deadline: stopping the fleet and the interpreter, on a loaded 2-core machine.
MARGIN = 10.0
SLOW_CALL = post(
    "tools/call", {"name": "mb__sleep", "arguments": {"seconds": 300}, "_meta": {"progressToken": "p"}}, rid=7
)


class Stream:
    """One streamed response: its JSON-RPC messages, when it started and when it ended."""

    def __init__(self) -> None:
        self.status = 0
        self.messages: list[dict[str, Any]] = []
        self.open = anyio.Event()
        self.ended = anyio.Event()
        self.ended_at = 0.0

    async def read(self, http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> None:
        try:
            async with http.stream(method, url, **kw) as resp:
                self.status = resp.status_code
                if method == "GET":
                    self.open.set()  # it says nothing until there is something to say
                async for line in resp.aiter_lines():
                    if line.startswith("data: ") and line != "data: ":  # not a priming event
                        self.messages.append(json.loads(line.removeprefix("data: ")))
                        self.open.set()  # the first event: a progress note, the listen ack
        except httpx.TransportError:
            pass  # a torn connection: the assertions on `messages` say what was missing
        finally:
            self.ended_at = anyio.current_time()
            self.ended.set()


async def _legacy_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    resp = await http.post(url, headers=base, json=initialize(rid=0))
    headers = {**base, "mcp-session-id": resp.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, headers=headers, json=note)).status_code == 202
    return headers


async def _open_everything(
    gw: GatewayProcess, http: httpx.AsyncClient, tg: Any
) -> tuple[Stream, Stream, Stream]:
    call, listen, get = Stream(), Stream(), Stream()
    headers, body = SLOW_CALL
    tg.start_soon(lambda: call.read(http, "POST", gw.url, headers=headers, content=body))
    listen_headers, listen_body = post(
        "subscriptions/listen", {"notifications": {"toolsListChanged": True}}, rid=9
    )
    tg.start_soon(lambda: listen.read(http, "POST", gw.url, headers=listen_headers, content=listen_body))
    legacy = await _legacy_session(http, gw.url)
    get_headers = {**legacy, "accept": "text/event-stream"}
    tg.start_soon(lambda: get.read(http, "GET", gw.url, headers=get_headers))
    with anyio.fail_after(60):
        for stream in (call, listen, get):
            await stream.open.wait()
    return call, listen, get


def _shutting_down(message: dict[str, Any], rid: int) -> bool:
    error = message.get("error") or {}
    return (
        message.get("id") == rid
        and error.get("code") == BACKEND_UNAVAILABLE
        and "shutting down" in error.get("message", "")
    )


async def test_sigterm_ends_a_running_call_with_an_error_at_the_deadline_and_exits(tmp_path: Path) -> None:
    cfg = {"servers": {"mb": misbehave("--spawn-child")}, "listen": {"drain_timeout": DRAIN}}
    async with (
        gateway_process(tmp_path, cfg) as gw,
        httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10)) as http,
        anyio.create_task_group() as tg,
    ):
        fleet = gw.descendants()
        call, listen, get = await _open_everything(gw, http, tg)
        began = anyio.current_time()
        gw.process.send_signal(signal.SIGTERM)

        # The drain began: streams that only listen are ended at once, each the way its protocol
        # says (the listen stream with its final result)...
        with anyio.fail_after(DRAIN):
            await listen.ended.wait()
            await get.ended.wait()
        assert listen.messages[-1].get("id") == 9 and "result" in listen.messages[-1]
        # ...and new work is refused at once, in JSON-RPC terms.
        headers, body = post("tools/list", rid=11)
        refused = await http.post(gw.url, headers=headers, content=body)
        assert refused.status_code == 503
        assert _shutting_down(refused.json(), 11)
        assert (await http.get(f"{gw.base}/readyz")).status_code == 503  # probes stop sending work

        # The running call had until the deadline, then got its error on its own stream.
        with anyio.fail_after(DRAIN + MARGIN):
            await call.ended.wait()
        assert call.status == 200 and _shutting_down(call.messages[-1], 7), call.messages[-3:]
        assert call.ended_at - began >= DRAIN * 0.9  # it was given its time

        status = await gw.wait(DRAIN + MARGIN)
        assert status in (0, -signal.SIGTERM)
        assert anyio.current_time() - began < DRAIN + MARGIN
    _gone, alive = psutil.wait_procs(fleet, timeout=10)
    assert alive == [] and marked_processes(gw.pid) == [], f"left behind: {alive}"
    assert "Traceback" not in gw.log_text()


async def test_a_second_signal_ends_the_drain_at_once(tmp_path: Path) -> None:
    patient = 120.0  # a drain deadline the test would notice being waited out
    cfg = {"servers": {"mb": misbehave()}, "listen": {"drain_timeout": patient}}
    async with (
        gateway_process(tmp_path, cfg) as gw,
        httpx.AsyncClient(timeout=httpx.Timeout(180, connect=10)) as http,
        anyio.create_task_group() as tg,
    ):
        fleet = gw.descendants()
        call, listen, _get = await _open_everything(gw, http, tg)
        began = anyio.current_time()
        gw.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await listen.ended.wait()  # the drain is under way
        gw.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(MARGIN):
            await call.ended.wait()
        assert _shutting_down(call.messages[-1], 7), call.messages[-3:]
        await gw.wait(MARGIN * 2)
        assert anyio.current_time() - began < patient / 2
    _gone, alive = psutil.wait_procs(fleet, timeout=10)
    assert alive == []


async def test_the_idle_streams_of_every_endpoint_end_when_the_drain_begins(tmp_path: Path) -> None:
    desk = {"path": "/mcp/desk", "servers": {"mb": None}}
    cfg = {"servers": {"mb": misbehave()}, "endpoints": [desk], "listen": {"drain_timeout": DRAIN}}
    async with (
        gateway_process(tmp_path, cfg) as gw,
        httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10)) as http,
        anyio.create_task_group() as tg,
    ):
        url = gw.base + "/mcp/desk"
        listen, get = Stream(), Stream()
        listen_headers, listen_body = post(
            "subscriptions/listen", {"notifications": {"toolsListChanged": True}}, rid=9
        )
        tg.start_soon(lambda: listen.read(http, "POST", url, headers=listen_headers, content=listen_body))
        get_headers = {**await _legacy_session(http, url), "accept": "text/event-stream"}
        tg.start_soon(lambda: get.read(http, "GET", url, headers=get_headers))
        with anyio.fail_after(60):
            for stream in (listen, get):
                await stream.open.wait()
        gw.process.send_signal(signal.SIGTERM)
        # Nothing runs: the streams end at once, and so does the gateway, well before the deadline.
        with anyio.fail_after(DRAIN):
            await listen.ended.wait()
            await get.ended.wait()
        assert listen.messages[-1].get("id") == 9 and "result" in listen.messages[-1]
        assert get.status == 200
        assert await gw.wait(DRAIN + MARGIN) in (0, -signal.SIGTERM)
    assert "Traceback" not in gw.log_text()
