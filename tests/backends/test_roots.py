"""Roots a backend learns (gateway/backends/backend.py): configured per server for its shared
session, the client's own for a per-client session, the configured ones when that client has none.

The backend is the npm reference server-filesystem, which replaces its allowed directories with
the roots its client gives (asking right after the handshake, with no call in flight).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client import ClientRequestContext
from pydantic import FileUrl

from tests import _infra
from tests._support import config, serve, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.node]
WAIT = 60.0


def filesystem(*directories: Path, **extra: Any) -> dict[str, Any]:
    cmd = _infra.npm_server_command("server-filesystem", *map(str, directories))
    return {"command": cmd[0], "args": cmd[1:], **extra}


async def allowed(client: SdkClient, wanted: Path) -> str:
    """The server's allowed directories, once they include `wanted` (it learns roots a moment after
    its handshake, so the answer is awaited, bounded)."""
    with anyio.fail_after(WAIT):
        while True:
            result = await client.call_tool("fs__list_allowed_directories", {})
            text = text_of(result)
            if str(wanted) in text:
                return text
            await anyio.sleep(0.1)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    configured, started = (tmp_path / "configured").resolve(), (tmp_path / "started").resolve()
    configured.mkdir()
    started.mkdir()
    (configured / "hello.txt").write_text("from the configured root\n")
    return configured, started


async def test_a_shared_session_gets_the_configured_roots(dirs: tuple[Path, Path]) -> None:
    """server-filesystem started with no directory at all: without roots it cannot work (shared
    backends never saw roots); with `roots:` it serves the configured directory."""
    configured, _ = dirs
    spec = filesystem(roots=[configured.as_uri()])
    async with serve(config({"fs": spec})) as gw, SdkClient(gw.url, mode="legacy") as client:
        listing = await allowed(client, configured)
        read = await client.call_tool("fs__read_text_file", {"path": str(configured / "hello.txt")})
    assert str(configured) in listing
    assert "from the configured root" in text_of(read)


async def test_a_per_client_session_gets_its_clients_roots_else_the_configured_ones(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    configured, started = dirs
    own = (tmp_path / "own").resolve()
    own.mkdir()

    async def roots(context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=FileUrl(own.as_uri()))])

    spec = filesystem(started, session="per-client", roots=[configured.as_uri()])
    async with serve(config({"fs": spec})) as gw:
        async with SdkClient(gw.url, mode="legacy", list_roots_callback=roots) as client:
            listing = await allowed(client, own)
            assert str(configured) not in listing and str(started) not in listing
        async with SdkClient(gw.url, mode="legacy") as bare:  # declares no roots: never asked
            listing = await allowed(bare, configured)
            assert str(own) not in listing and str(started) not in listing


def test_roots_must_be_file_uris() -> None:
    with pytest.raises(ValueError, match="file:// URI"):
        config({"fs": {"command": "x", "roots": ["https://example.com/"]}})
