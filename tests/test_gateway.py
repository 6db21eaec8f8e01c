"""How the gateway's parts are connected (`gateway._gateway.Gateway.assemble`), seen from outside."""

from __future__ import annotations

import os

import pytest
from mcp import Client as SdkClient

from gateway.config.models import SecretsConfig
from tests._support import config, misbehave, serve, wait_until

pytestmark = pytest.mark.anyio


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_client_gone_ends_its_per_client_backend_process() -> None:
    # The fleet hears of a client's disconnect (clients.on_disconnect -> fleet.release_client).
    async with serve(config({"mb": misbehave(session="per-client")})) as gw:
        async with SdkClient(gw.url, mode="legacy") as client:
            result = await client.call_tool("mb__pid", {})
            assert result.structured_content is not None
            pid = result.structured_content["pid"]
            assert _alive(pid)
        await wait_until(lambda: not _alive(pid), timeout=30)


async def test_the_fleet_and_the_app_share_one_secrets_object(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a backend is handed is masked in what clients see, by the same object that resolved it.
    monkeypatch.setenv("WIRED_VENDOR", "saffron-lattice-owl")
    spec = misbehave(env={"VENDOR_KEY": "secret_ref:vendor"})
    async with serve(config({"mb": spec}, secrets={"env_prefix": "WIRED_"})) as gw:
        assert gw.fleet.secrets.source == SecretsConfig(env_prefix="WIRED_")
        assert gw.app.state.relay.fleet.secrets is gw.fleet.secrets
        async with SdkClient(gw.url, mode="legacy") as client:
            result = await client.call_tool("mb__env", {"name": "VENDOR_KEY"})
        assert result.structured_content is not None
        assert result.structured_content["value"] == "[secret:vendor]"
        assert "saffron-lattice-owl" not in str(result.model_dump())
