"""Test helpers: run a real gateway in-process on a loopback port, and build configs."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.fleet import Fleet

HERE = Path(__file__).parent
MISBEHAVE = str(HERE / "servers" / "misbehave.py")
VENV_BIN = Path(sys.executable).parent

# Bounds for waits in tests: generous for a loaded 2-core CI machine, but never unbounded.
START_TIMEOUT = 60.0


def misbehave(*flags: str, **extra: Any) -> dict[str, Any]:
    """A stdio server spec for our own misbehaving test server."""
    return {"type": "stdio", "command": sys.executable, "args": [MISBEHAVE, *flags], **extra}


def time_server(**extra: Any) -> dict[str, Any]:
    return {"command": str(VENV_BIN / "mcp-server-time"), "args": ["--local-timezone", "UTC"], **extra}


def config(servers: dict[str, Any], **rest: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({"servers": servers, **rest})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Running:
    url: str  # the MCP endpoint
    base: str
    fleet: Fleet
    app: Any = None


@asynccontextmanager
async def serve(
    cfg: GatewayConfig,
    *,
    wait: bool = True,
    config_path: Path | None = None,
    watch: bool = False,
    fast_path: bool = True,
) -> AsyncIterator[Running]:
    """The real gateway app under uvicorn on 127.0.0.1, in this event loop."""
    fleet = Fleet(cfg)
    app = build_app(cfg, fleet, config_path=config_path, watch=watch, fast_path=fast_path)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(START_TIMEOUT):
            while not server.started:  # noqa: ASYNC110 - uvicorn's `started` is a flag; no event marks it
                await anyio.sleep(0.01)
            if wait:
                await fleet.wait_started()
        base = f"http://127.0.0.1:{port}"
        try:
            yield Running(url=f"{base}/mcp", base=base, fleet=fleet, app=app)
        finally:
            server.should_exit = True


def process_tree(root: int | None = None) -> list[int]:
    """PIDs of all live descendants of `root` (default: this process), zombies included."""
    import psutil

    proc = psutil.Process(root or os.getpid())
    return [p.pid for p in proc.children(recursive=True)]
