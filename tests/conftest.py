from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._infra import Redis, require
from tests._support import free_port


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis() -> Iterator[Redis]:
    """A real redis-server of the test's own, on a free port."""
    require("redis")
    server = Redis(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
