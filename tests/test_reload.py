"""Live reload: a valid config is applied as a diff without disturbing untouched servers or their
clients; an invalid one is refused and the running config stays."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import yaml
from mcp import Client as SdkClient

from gateway.config import load_config
from gateway.errors import ConfigError
from tests._support import misbehave, serve, text_of, wait_until

pytestmark = pytest.mark.anyio


def write(path: Path, servers: dict[str, Any], middleware: list[Any] | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"servers": servers, "middleware": middleware or []}))
    tmp.replace(path)  # atomic, like an editor's save


async def pid(client: SdkClient, tool: str) -> int:
    result = await client.call_tool(tool, {})
    assert result.structured_content is not None
    value: int = result.structured_content["pid"]
    return value


async def test_reload_applies_a_diff_while_a_client_keeps_calling(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    write(path, {"keep": misbehave(), "gone": misbehave(), "chg": misbehave("--name", "before")})
    async with serve(load_config(path), config_path=path) as gw, SdkClient(gw.url, mode="legacy") as client:
        keep_pid = await pid(client, "keep__pid")
        chg_pid = await pid(client, "chg__pid")
        errors: list[BaseException] = []
        calls = 0
        done = anyio.Event()

        async def hammer() -> None:
            nonlocal calls
            while not done.is_set():
                try:
                    result = await client.call_tool("keep__echo", {"text": str(calls)})
                    assert text_of(result) == f"misbehave: {calls}"
                    calls += 1
                except BaseException as exc:  # every failure counts against the reload
                    errors.append(exc)
                    return

        write(path, {"keep": misbehave(), "chg": misbehave("--name", "after"), "new": misbehave()})
        async with anyio.create_task_group() as tg:
            tg.start_soon(hammer)
            with anyio.fail_after(60):
                report = await gw.app.state.reloader.reload("test")
            # The hammer goes on past the reload: a few more calls, each one checked.
            after_reload = calls
            await wait_until(lambda: calls >= after_reload + 5 or errors, timeout=30)
            done.set()
        assert errors == []
        assert calls > 5
        assert report["servers"] == {
            "added": ["new"],
            "removed": ["gone"],
            "changed": ["chg"],
            "unchanged": ["keep"],
        }
        assert set(gw.fleet.backends) == {"keep", "chg", "new"}
        await wait_until(
            lambda: gw.fleet.backends["new"].available and gw.fleet.backends["chg"].available,
            timeout=30,
            interval=0.02,
        )
        assert await pid(client, "keep__pid") == keep_pid  # untouched: same process, same session
        assert await pid(client, "chg__pid") != chg_pid
        echo = await client.call_tool("chg__echo", {"text": "x"})
        assert text_of(echo) == "after: x"
        names = {t.name for t in (await client.list_tools()).tools}
        assert "new__echo" in names and not any(n.startswith("gone__") for n in names)


async def test_invalid_file_is_refused_and_the_running_config_stays(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    write(path, {"keep": misbehave()})
    async with serve(load_config(path), config_path=path) as gw, SdkClient(gw.url, mode="legacy") as client:
        path.write_text("servers:\n  keep:\n    comand: nope\n")
        with pytest.raises(ConfigError) as err:
            await gw.app.state.reloader.reload("test")
        assert f"{path}:3: servers.keep.comand: unknown key" in err.value.message
        bad_mw = {"keep": misbehave()}
        write(path, bad_mw, middleware=[{"use": "nosuch:Thing"}])
        with pytest.raises(ConfigError):
            await gw.app.state.reloader.reload("test")
        assert set(gw.fleet.backends) == {"keep"} and gw.fleet.config.middleware == []
        assert (await client.call_tool("keep__echo", {"text": "ok"})).is_error is not True


async def test_file_change_and_sighup_trigger_reload(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    write(path, {"a": misbehave()})
    async with serve(load_config(path), config_path=path, watch=True) as gw:
        write(path, {"a": misbehave(), "b": misbehave()})
        await wait_until(lambda: "b" in gw.fleet.backends, timeout=30, interval=0.05)
        # SIGHUP: change the file under a watcher that may be debouncing, then signal.
        write(path, {"a": misbehave()})
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: "b" not in gw.fleet.backends, timeout=30, interval=0.05)
        assert gw.fleet.backends["a"].available


async def test_reload_adds_changes_and_removes_endpoints(tmp_path: Path) -> None:
    """An added endpoint serves once the reload returns; a changed selection applies to the open
    session at once, and its client is told; a removed endpoint's path answers 404."""
    path = tmp_path / "gateway.yaml"
    servers = {"mb": misbehave()}

    def save(*endpoints: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"servers": servers, "endpoints": list(endpoints)}))
        tmp.replace(path)

    def desk(*tools: str) -> dict[str, Any]:
        return {"path": "/mcp/desk", "name": "desk", "servers": {"mb": {"tools": list(tools)}}}

    save()
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with serve(load_config(path), config_path=path) as gw, httpx.AsyncClient(timeout=60) as http:
        desk_url = gw.base + "/mcp/desk"
        assert (await http.post(desk_url, json={})).status_code == 404
        save(desk("echo"))
        with anyio.fail_after(60):
            report = await gw.app.state.reloader.reload("test")
        assert report["endpoints"] == ["/mcp/desk"]
        async with SdkClient(desk_url, mode="legacy", message_handler=on_message) as client:
            with anyio.fail_after(60):
                assert [t.name for t in (await client.list_tools()).tools] == ["mb__echo"]
                assert client.server_info is not None and client.server_info.name == "desk"
                save(desk("echo", "add"))
                await gw.app.state.reloader.reload("test")
                await changed.wait()
                assert {t.name for t in (await client.list_tools()).tools} == {"mb__echo", "mb__add"}
        save()
        with anyio.fail_after(60):
            report = await gw.app.state.reloader.reload("test")
        assert report["endpoints"] == []
        assert (await http.post(desk_url, json={})).status_code == 404
        # The default endpoint was never disturbed.
        async with SdkClient(gw.url, mode="legacy") as client:
            with anyio.fail_after(60):
                assert "mb__echo" in {t.name for t in (await client.list_tools()).tools}
