"""The OpenAPI document is valid and true: schemathesis, over real HTTP, finds no 5xx and no response
that contradicts it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
import yaml
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.admin.api import AdminAPI
from gateway.admin.openapi import document
from gateway.config import GatewayConfig, load_config
from gateway.fleet import Fleet
from tests._infra import REPO_ROOT
from tests._support import misbehave
from tests.admin._helpers import ADMIN_KEY, serve_admin

pytestmark = pytest.mark.anyio
ST = Path(sys.executable).parent / "st"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "ignored_auth",
    ]
)


def test_document_describes_exactly_the_routes_served() -> None:
    api = AdminAPI(Fleet(GatewayConfig()))
    app = api.mount.app
    assert isinstance(app, Starlette)
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    doc = document()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert documented == served
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": "/admin"}]
    assert "StdioServer" in doc["components"]["schemas"]  # spec schemas come from the config models


@pytest.mark.timeout(240)
async def test_schemathesis_finds_no_server_errors_and_no_schema_violations(tmp_path: Path) -> None:
    if not ST.exists():
        pytest.fail(f"schemathesis is not installed in {ST.parent} (pip install -e '.[test]')")
    path = tmp_path / "gateway.yaml"
    endpoint = {"path": "/mcp/x", "servers": {"mb": {"tools": ["echo"]}}, "auth": {"roles": ["x"]}}
    path.write_text(yaml.safe_dump({"servers": {"mb": misbehave()}, "endpoints": [endpoint]}))
    async with serve_admin(load_config(path), config_path=path) as gw:
        argv = [
            str(ST), "run", f"{gw.base}/admin/openapi.json",
            "--header", f"Authorization: Bearer {ADMIN_KEY}",
            "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "20",
            "--exclude-operation-id", "streamEvents",  # a stream never ends; tested on its own
            "--workers", "1",  # hypothesis inspects lambdas with ast.parse, not thread-safe on 3.11
            "--request-timeout", "30",
            "--seed", "20260728",
            "--suppress-health-check", "all",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ]  # fmt: skip
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.admin._schemathesis_hooks",
            "PYTHONPATH": str(REPO_ROOT),
            "NO_COLOR": "1",
        }
        with anyio.fail_after(200):
            # cwd: schemathesis keeps a cache directory (.schemathesis) where it runs
            result = await anyio.run_process(argv, check=False, env=env, cwd=tmp_path)
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output[-12000:]
    assert "No issues found" in output or "passed" in output.lower()
