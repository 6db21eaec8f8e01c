"""Structured logs: one JSON object per line, tagged with the request being handled."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from gateway import logs


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_request_id_server_and_extra_fields() -> None:
    out = io.StringIO()
    logs.configure("debug", json=True, stream=out)
    log = logging.getLogger("gateway.test")
    with logs.request_scope("req-1", server="mb") as rid:
        assert rid == "req-1" and logs.current_request_id() == "req-1" and logs.current_server() == "mb"
        log.warning("tool %s changed", "echo", extra={"tool": "echo", "count": 2, "obj": object()})
    log.debug("outside")
    first, second = lines(out)
    assert first["msg"] == "tool echo changed"
    assert first["level"] == "WARNING" and first["logger"] == "gateway.test"
    assert first["request_id"] == "req-1" and first["server"] == "mb"
    assert first["tool"] == "echo" and first["count"] == 2 and first["obj"].startswith("<object")
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert "args" not in first and "levelno" not in first  # LogRecord internals stay out
    assert second["msg"] == "outside" and second["request_id"] is None and second["server"] is None
    assert logs.current_request_id() is None


def test_explicit_extra_server_wins_over_the_context() -> None:
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    with logs.request_scope(7, server="front"):
        logging.getLogger("x").info("backend event", extra={"server": "mb"})
    (entry,) = lines(out)
    assert entry["server"] == "mb" and entry["request_id"] == "7"


def test_exceptions_are_one_line_with_the_traceback_inside() -> None:
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    (entry,) = lines(out)  # the traceback did not break the one-object-per-line rule
    assert entry["msg"] == "failed" and "RuntimeError: boom" in entry["exc"]


def test_level_filters_and_configure_twice_replaces_the_handler() -> None:
    root = logging.getLogger()
    basic = logging.StreamHandler(io.StringIO())  # what logging.basicConfig installs
    root.addHandler(basic)
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    logs.configure("warning", json=True, stream=out)
    assert basic not in root.handlers
    assert len([h for h in root.handlers if isinstance(h, logs._Handler)]) == 1
    log = logging.getLogger("y")
    log.info("hidden")
    log.warning("shown")
    assert [e["msg"] for e in lines(out)] == ["shown"]  # once: no second handler


def test_text_mode_names_the_request(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", json=False)  # default stream: stderr
    with logs.request_scope("abc", server="mb"):
        logging.getLogger("z").info("hello")
    logging.getLogger("z").info("bye")
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("INFO z [request_id=abc server=mb]: hello")
    assert err[1].endswith("INFO z: bye")


def test_minted_ids_are_unique_and_scopes_nest() -> None:
    with logs.request_scope() as outer:
        with logs.request_scope() as inner:
            assert logs.current_request_id() == inner != outer
        assert logs.current_request_id() == outer
    assert len({logs.new_request_id() for _ in range(1000)}) == 1000


@pytest.mark.anyio
async def test_concurrent_requests_keep_their_own_ids() -> None:
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    both_inside = anyio.Event()
    inside = 0

    async def handle(rid: str) -> None:
        nonlocal inside
        with logs.request_scope(rid):
            inside += 1
            if inside == 2:
                both_inside.set()
            with anyio.fail_after(10):
                await both_inside.wait()  # both scopes are open at the same time
            logging.getLogger("r").info(rid)

    async with anyio.create_task_group() as tg:
        tg.start_soon(handle, "first")
        tg.start_soon(handle, "second")
    entries = lines(out)
    assert len(entries) == 2 and all(e["msg"] == e["request_id"] for e in entries)


def test_caplog_still_captures_after_configure(caplog: pytest.LogCaptureFixture) -> None:
    logs.configure("info", json=True, stream=io.StringIO())
    with caplog.at_level(logging.INFO), logs.request_scope("q"):
        logging.getLogger("c").info("captured", extra={"tool": "t"})
    (record,) = [r for r in caplog.records if r.name == "c"]
    assert record.getMessage() == "captured" and record.__dict__["tool"] == "t"
