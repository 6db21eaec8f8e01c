"""The built-ins together, as an operator would stack them, through a real client and backend."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client as SdkClient
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import DENIED, RATE_LIMITED
from gateway.middleware.audit import Audit
from tests._support import config, misbehave, serve, text_of

pytestmark = pytest.mark.anyio
KEY = "reader-key-123"
ADMIN_KEY = "admin-key-456"
SECRET = "AKIAIOSFODNN7EXAMPLE"


async def test_the_default_chain_end_to_end(tmp_path: Path) -> None:
    digest = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    cfg = config(
        {"mb": misbehave()},
        middleware=[
            {"use": "telemetry"},
            {
                "use": "auth",
                "options": {
                    "api_keys": [{"name": "reader", "key": digest, "roles": ["reader"]}],
                    "rules": [{"roles": ["reader"], "tools": ["mb__echo", "mb__add"]}],
                },
            },
            {"use": "ratelimit", "options": {"per_tool": "3/minute"}},
            {"use": "masking"},
            {"use": "audit", "options": {"path": str(tmp_path / "audit.db"), "arguments": "full"}},
        ],
        admin={"api_keys": ["sha256:" + hashlib.sha256(ADMIN_KEY.encode()).hexdigest()]},
    )
    async with serve(cfg) as gw, httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        async with SdkClient(streamable_http_client(gw.url, http_client=http), mode="legacy") as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"mb__echo", "mb__add"}
            result = await client.call_tool("mb__echo", {"text": f"key={SECRET}"})
            assert SECRET not in str(result.model_dump())
            assert "[REDACTED:aws_access_key]" in text_of(result)
            with pytest.raises(MCPError) as denied:
                await client.call_tool("mb__fail", {})
            assert denied.value.code in (DENIED, -32602)
            for _ in range(2):
                await client.call_tool("mb__echo", {"text": "x"})
            with pytest.raises(MCPError) as limited:
                await client.call_tool("mb__echo", {"text": "x"})
            assert limited.value.code == RATE_LIMITED and limited.value.error.data["retry_after"] > 0
        async with httpx.AsyncClient() as plain:
            # With auth on, the metrics (who calls what) are not for anyone: an admin key reads them.
            assert (await plain.get(f"{gw.base}/metrics")).status_code == 401
            scrape = (await plain.get(f"{gw.base}/metrics", headers={"X-API-Key": ADMIN_KEY})).text
        audit = next(m for m in gw.app.state.relay.middlewares if isinstance(m, Audit))
        await audit.log.flush()
        records = await audit.log.query(limit=50)
    assert SECRET not in scrape and KEY not in scrape and ADMIN_KEY not in scrape
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }
    masked = [v for (name, labels), v in samples.items() if name == "mcp_gateway_masked_total"]
    assert masked and sum(masked) >= 1
    outcomes = {
        dict(labels).get("outcome")
        for (name, labels), _ in samples.items()
        if name == "mcp_gateway_calls_total"
    }
    assert {"ok", "rate_limited"} <= outcomes
    assert records, "audit recorded nothing"
    assert all(SECRET not in str(r) for r in records)
    assert any(getattr(r, "identity", None) == "reader" or "reader" in str(r) for r in records)
