"""The revision the gateway speaks to each backend, as the admin API reports it."""

from __future__ import annotations

import pytest

from tests._support import config, misbehave, modern, time_server
from tests.admin._helpers import serve_admin

pytestmark = pytest.mark.anyio


async def test_server_records_and_the_connection_test_name_the_revision() -> None:
    cfg = config(
        {
            "modern": modern(),
            "time": time_server(protocol="2025-11-25"),
            "dead": misbehave("--crash-at-start", restart="never"),
        }
    )
    async with serve_admin(cfg) as gw, gw.client() as http:
        r = await http.get("/servers")
        assert r.status_code == 200
        servers = {s["name"]: s for s in r.json()["servers"]}
        assert servers["modern"]["protocol_version"] == "2026-07-28"
        assert servers["time"]["protocol_version"] == "2025-11-25"
        assert servers["dead"]["protocol_version"] is None  # never got that far
        assert (await http.get("/servers/modern")).json()["protocol_version"] == "2026-07-28"

        r = await http.post("/servers/modern/test")
        assert r.status_code == 200
        report = r.json()
        assert report["ok"] is True, report
        assert report["protocol_version"] == "2026-07-28"
        assert report["server_info"]["name"] == "modern"  # from discovery's serverInfo stamp
        report = (await http.post("/servers/time/test")).json()
        assert report["ok"] is True and report["protocol_version"] == "2025-11-25", report
