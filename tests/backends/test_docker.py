"""Docker backends against a real engine: hardening, secrets, crashes, OOM, teardown, leftovers.

Needs a Docker engine and the images of tests/fixtures/docker/build-images (built once per session).
Every container a test starts is found through the labels naming this process's gateway instance
and the test's own server name, so concurrently running test gateways are never touched.

``python -m tests.backends.test_docker`` prints the benchmark numbers (see `tests.bench.docker_backends`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import docker  # type: ignore[import-untyped]
import pytest
from mcp import Client as SdkClient
from mcp.shared.exceptions import MCPError

from gateway import _sdk
from gateway.backends import State, _docker_owner
from gateway.backends._docker_spec import container_user, describe_exit, mounts
from gateway.backends.docker import EXIT_GRACE, STOP_TIMEOUT
from gateway.config.models import DockerServer
from gateway.errors import BackendStartError, GatewayError
from gateway.fleet import Fleet
from tests._infra import require
from tests._support import (
    BUILD_IMAGES,
    TIME_IMAGE,
    config,
    docker_time,
    serve,
    text_of,
    wait_until,
)
from tests.bench.docker_backends import bench

# The session fixture builds the test images first: a cold debootstrap base takes a minute or two.
pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.timeout(900)]
MISBEHAVE_IMAGE = "local/mcp-misbehave:test"
SECRET = "d0cker-s3cret-Zq81"


@pytest.fixture(scope="session")
def images() -> None:
    require("docker")
    subprocess.run([str(BUILD_IMAGES)], check=True, capture_output=True, timeout=900)


@pytest.fixture
def engine(images: None) -> Iterator[Any]:
    client = docker.from_env(timeout=60)
    try:
        yield client.api
    finally:
        client.close()


def docker_misbehave(*flags: str, **extra: Any) -> dict[str, Any]:
    return {"type": "docker", "image": MISBEHAVE_IMAGE, "pull": "never", "args": list(flags), **extra}


async def ours(api: Any, server: str) -> list[dict[str, Any]]:
    """This process's containers for `server` (running or not), as `docker ps -a --filter label=...`."""
    labels = [
        f"{_docker_owner.LABEL_INSTANCE}={_docker_owner.current_instance()}",
        f"{_docker_owner.LABEL_SERVER}={server}",
    ]
    found: list[dict[str, Any]] = await anyio.to_thread.run_sync(
        lambda: api.containers(all=True, filters={"label": labels})
    )
    return found


async def inspect_one(api: Any, server: str) -> dict[str, Any]:
    found = await ours(api, server)
    assert len(found) == 1, found
    info: dict[str, Any] = await anyio.to_thread.run_sync(api.inspect_container, found[0]["Id"])
    return info


async def call(fleet: Fleet, server: str, tool: str, **args: object) -> dict[str, Any]:
    return await fleet.backends[server].request("tools/call", {"name": tool, "arguments": args})


# -- through the whole gateway ---------------------------------------------------------------------


async def test_time_image_answers_a_real_client_and_runs_hardened(engine: Any) -> None:
    async with serve(config({"dtime": docker_time()})) as gw:
        async with SdkClient(gw.url, mode="legacy") as client:
            result = await client.call_tool("dtime__get_current_time", {"timezone": "UTC"})
        assert not result.is_error
        assert json.loads(text_of(result))["timezone"] == "UTC"
        info = await inspect_one(engine, "dtime")
    host, cfg = info["HostConfig"], info["Config"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024
    assert host["PidsLimit"] == 64 and host["NanoCpus"] == 500_000_000
    assert host["Init"] is True
    assert set(host["Tmpfs"]) == {"/tmp"} and "noexec" in host["Tmpfs"]["/tmp"]
    assert cfg["User"] == "10001"  # the image's own non-root user
    assert cfg["OpenStdin"] and cfg["StdinOnce"] and not cfg["Tty"]
    assert cfg["Labels"][_docker_owner.LABEL_MANAGED] == "true"
    assert cfg["Labels"][_docker_owner.LABEL_SERVER] == "dtime"
    assert cfg["Labels"][_docker_owner.LABEL_INSTANCE] == _docker_owner.current_instance()
    assert await ours(engine, "dtime") == []  # shutdown removed it


async def test_secrets_reach_the_environment_only(
    engine: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GATEWAY_DOCKER_SECRET", SECRET)
    spec = docker_misbehave("--stderr-chatter", "3", env={"API_KEY": "${env:GATEWAY_DOCKER_SECRET}"})
    async with serve(config({"dsec": spec})) as gw:
        starting = caplog.text  # everything logged while the container was created and started
        async with SdkClient(gw.url, mode="legacy") as client:
            result = await client.call_tool("dsec__env", {"name": "API_KEY"})
            called = len(caplog.records)
        # The tool echoes the secret on purpose: the container has it, the client sees it masked.
        assert result.structured_content == {"name": "API_KEY", "value": "[secret:GATEWAY_DOCKER_SECRET]"}
        info = await inspect_one(engine, "dsec")
        log = [line.text for line in gw.fleet.backends["dsec"].log.lines]
    visible = json.dumps([info["Config"]["Cmd"], info["Config"]["Entrypoint"], info["Config"]["Labels"]])
    assert SECRET not in visible and SECRET not in info["Name"] and SECRET not in info["Args"]
    assert "API_KEY=" + SECRET in info["Config"]["Env"]  # where it belongs
    stopping = "\n".join(record.getMessage() for record in caplog.records[called:])
    assert "urllib3" in starting  # the engine calls were logged at DEBUG, and without it
    assert SECRET not in starting and SECRET not in stopping
    assert sum("chatter" in line for line in log) == 3  # container stderr lands in the log buffer


async def test_a_secret_reference_outside_env_is_refused(images: None) -> None:
    fleet = Fleet(config({"dargs": docker_time(args=["--token", "${env:HOME}"], restart="never")}))
    async with fleet.running():
        await fleet.wait_started()
    error = fleet.backends["dargs"].last_error or ""
    assert "servers.dargs.args" in error and "only `env`" in error


# -- failures ----------------------------------------------------------------------------------------


async def test_concurrent_calls_big_answers_and_garbage_share_one_attach_connection(images: None) -> None:
    # The relay's calls are written to the attach socket and answered from its frames directly;
    # answers far larger than a frame, garbage lines between them, and 30 calls at once.
    big = "x" * 300_000
    texts = [f"call {i}" for i in range(30)] + [big]
    async with serve(config({"dmb": docker_misbehave("--garbage")})) as gw:
        answers: dict[str, str] = {}

        async def one(text: str) -> None:
            result = await call(gw.fleet, "dmb", "echo", text=text)
            answers[text] = result["structuredContent"]["text"]

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for text in texts:
                    tg.start_soon(one, text)
    assert answers == {text: f"misbehave: {text}" for text in texts}


async def test_a_crash_is_seen_and_the_backend_restarts(engine: Any) -> None:
    fleet = Fleet(config({"dcrash": docker_misbehave()}))
    async with fleet.running():
        await fleet.wait_started()
        backend = fleet.backends["dcrash"]
        assert backend.available
        first = (await ours(engine, "dcrash"))[0]["Id"]
        with pytest.raises((GatewayError, MCPError)):
            await call(fleet, "dcrash", "crash")
        await wait_until(
            lambda: backend.restarts == 1 and backend.state is State.RUNNING, timeout=60, interval=0.02
        )
        assert "container exited with 3" in [line.text for line in backend.log.lines]
        assert any(e.new == "backoff" and "exited with code 3" in e.reason for e in fleet.events)
        assert (await call(fleet, "dcrash", "echo", text="again"))["structuredContent"] == {
            "text": "misbehave: again"
        }
        remaining = [c["Id"] for c in await ours(engine, "dcrash")]
        assert first not in remaining and len(remaining) == 1  # the crashed one was removed


_OOM_ON_CALL = """
import mcp_server_time.server as s
real = s.TimeServer.get_current_time
def hog(self, tz):
    if tz == "Antarctica/Troll":
        blocks = []
        while True:
            blocks.append(b"x" * (8 << 20))
    return real(self, tz)
s.TimeServer.get_current_time = hog
from mcp_server_time import main
main()
"""


async def test_an_oom_kill_is_explained(engine: Any) -> None:
    spec = docker_time(
        args=["python3", "-c", _OOM_ON_CALL, "--local-timezone", "UTC"],
        resources={"memory": "64m"},
        restart="never",
    )
    fleet = Fleet(config({"doom": spec}))
    async with fleet.running():
        await fleet.wait_started()
        backend = fleet.backends["doom"]
        assert backend.available, backend.last_error
        with pytest.raises((GatewayError, MCPError)):
            await call(fleet, "doom", "get_current_time", timezone="Antarctica/Troll")
        await wait_until(lambda: backend.state is State.FAILED, timeout=60, interval=0.02)
        last = backend.log.lines[-1].text
    assert last.startswith("container exited with 137 (OOM-killed") and "64m" in last, last
    assert "137" in (backend.last_error or "") and "OOM-killed" in (backend.last_error or "")
    assert backend.log.exit_code == 137


async def test_a_missing_image_is_a_clear_start_error(images: None) -> None:
    fleet = Fleet(
        config(
            {
                "dnever": docker_time(image="local/no-such-image:nope", restart="never"),
                "dmissing": docker_time(image="local/no-such-image:nope", pull="missing", restart="never"),
            }
        )
    )
    async with fleet.running():
        await fleet.wait_started()
    never = fleet.backends["dnever"].last_error or ""
    missing = fleet.backends["dmissing"].last_error or ""
    assert "'local/no-such-image:nope'" in never and "pull: never" in never
    assert "cannot pull image 'local/no-such-image:nope'" in missing
    assert fleet.backends["dmissing"].state is State.FAILED


async def test_engine_and_settings_errors_are_start_errors(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet(
        config(
            {
                "dexec": docker_time(args=["/no/such/binary"], restart="never"),
                "duser": docker_time(user="no-such-user", restart="never"),
                "dmem": docker_time(resources={"memory": "lots"}, restart="never"),
            }
        )
    )
    async with fleet.running():
        await fleet.wait_started()
    # The init starts, fails to run the command, and says so on stderr.
    exec_log = [line.text for line in fleet.backends["dexec"].log.lines]
    assert "failed to start" in (fleet.backends["dexec"].last_error or "")
    assert any("/no/such/binary" in line for line in exec_log) and exec_log[-1] == "container exited with 127"
    user_error = fleet.backends["duser"].last_error or ""
    assert "cannot start container for 'local/mcp-time:test'" in user_error and "no-such-user" in user_error
    assert "invalid container settings" in (fleet.backends["dmem"].last_error or "")
    assert await ours(engine, "dexec") == [] and await ours(engine, "duser") == []

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    fleet = Fleet(config({"dnoengine": docker_time(restart="never")}))
    async with fleet.running():
        await fleet.wait_started()
    assert "cannot reach the Docker engine" in (fleet.backends["dnoengine"].last_error or "")


# -- nothing left behind -------------------------------------------------------------------------------


async def test_cancelled_mid_start_leaves_nothing(engine: Any) -> None:
    spec = docker_misbehave("--hang-at-start", startup_timeout=120)
    for delay in (0.0, 0.05, 0.2, 0.5):
        fleet = Fleet(config({"dcancel": spec}))
        with anyio.move_on_after(delay):
            async with fleet.running():
                await anyio.sleep_forever()
        assert await ours(engine, "dcancel") == [], delay
    # and once it certainly exists, hanging in the handshake
    fleet = Fleet(config({"dcancel": spec}))
    async with fleet.running():
        # its stderr: it runs
        await wait_until(lambda: fleet.backends["dcancel"].log.lines, timeout=60, interval=0.02)
        assert len(await ours(engine, "dcancel")) == 1
    assert await ours(engine, "dcancel") == []


async def test_per_client_sessions_get_their_own_container_and_lose_it_with_the_client(engine: Any) -> None:
    async with serve(config({"dper": docker_misbehave(session="per-client")})) as gw:
        async with SdkClient(gw.url, mode="legacy") as one, SdkClient(gw.url, mode="legacy") as two:
            for client in (one, two):
                assert (await client.call_tool("dper__echo", {"text": "x"})).structured_content
            # the shared session (for the catalogue) and one per client
            assert len(await ours(engine, "dper")) == 3
        with anyio.fail_after(30):
            while len(await ours(engine, "dper")) != 1:  # noqa: ASYNC110 - engine state, polled
                await anyio.sleep(0.1)
    assert await ours(engine, "dper") == []


async def test_a_server_that_ignores_eof_and_sigterm_is_killed_within_bounds(engine: Any) -> None:
    spec = docker_misbehave("--hang-at-start", "--ignore-sigterm", startup_timeout=2, restart="never")
    fleet = Fleet(config({"dstub": spec}))
    async with fleet.running():
        await wait_until(lambda: fleet.backends["dstub"].state is State.FAILED, timeout=60, interval=0.02)
    backend = fleet.backends["dstub"]
    assert "no MCP handshake" in (backend.last_error or "")
    assert backend.log.exit_code == 137  # docker stop's SIGKILL
    assert await ours(engine, "dstub") == []
    stopped_at = next(e for e in fleet.events if e.new == "failed").time
    started_at = next(e for e in fleet.events if e.new == "starting").time
    assert stopped_at - started_at < 2 + EXIT_GRACE + STOP_TIMEOUT + 30  # generous: a loaded machine


async def test_leftovers_of_dead_gateways_are_removed_on_start(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    parent = os.getppid()
    owners = {
        "dead": f"{host}:{dead_pid}:1",
        "reused": f"{host}:{os.getpid()}:1",  # our pid, another start time: a dead predecessor
        "alive": _docker_owner.instance_id(parent),  # a live gateway (our parent stands in for it)
        "remote": f"elsewhere.example:{dead_pid}:1",  # another host's: not ours to judge
    }
    created = {}
    for key, owner in owners.items():
        labels = {_docker_owner.LABEL_MANAGED: "true", _docker_owner.LABEL_INSTANCE: owner}
        created[key] = engine.create_container(
            TIME_IMAGE, labels=labels, name=f"leftover-{key}-{os.getpid()}"
        )["Id"]
    try:
        monkeypatch.setattr(_docker_owner, "_next_sweep", 0.0)  # as in a freshly started gateway process
        fleet = Fleet(config({"dsweep": docker_time()}))
        async with fleet.running():
            await fleet.wait_started()
            assert fleet.backends["dsweep"].available
        left = {c["Id"] for c in engine.containers(all=True, filters={"label": _docker_owner.LABEL_MANAGED})}
        assert created["dead"] not in left and created["reused"] not in left
        assert created["alive"] in left and created["remote"] in left
    finally:
        for cid in created.values():
            with contextlib.suppress(docker.errors.NotFound):
                engine.remove_container(cid, force=True)


async def test_leftovers_of_a_dead_replica_on_another_host_go_once_their_lease_expired(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Replicas on other hosts sharing this engine (DOCKER_HOST): their pids mean nothing here.
    def create(key: str, owner: str, **options: Any) -> str:
        labels = {_docker_owner.LABEL_MANAGED: "true", _docker_owner.LABEL_INSTANCE: owner}
        name = f"leftover-{key}-{os.getpid()}"
        return str(engine.create_container(TIME_IMAGE, labels=labels, name=name, **options)["Id"])

    def die_attached(cid: str) -> None:
        """Run `cid` attached as a gateway runs it, then drop the attachment as a dying replica
        does: the engine ends the server's stdin (StdinOnce), and the server exits."""
        attached = _sdk.attach_socket(engine.attach_socket(cid, {"stdin": 1, "stream": 1}))
        engine.start(cid)
        attached.close()
        assert engine.wait(cid, timeout=60)["StatusCode"] == 0

    def engine_now() -> float:
        now = _docker_owner._timestamp(engine.info()["SystemTime"])
        assert now is not None
        return now

    def managed() -> set[str]:
        return {c["Id"] for c in engine.containers(all=True, filters={"label": _docker_owner.LABEL_MANAGED})}

    created = {
        "dead": create("dead", "replica-a.example:7:1", stdin_open=True),
        # A live replica's server: running, its stdin held open as the gateway holds it.
        "live": create("live", "replica-b.example:7:1", stdin_open=True),
        # Created by a replica that died before starting it.
        "unstarted": create("unstarted", "replica-c.example:7:1"),
    }
    try:
        die_attached(created["dead"])
        engine.start(created["live"])
        # A freshly started gateway process, within the lease: a stopped container may still be its
        # live owner's to remove, so everything is kept.
        monkeypatch.setattr(_docker_owner, "_next_sweep", 0.0)
        fleet = Fleet(config({"dlease": docker_time()}))
        async with fleet.running():
            await fleet.wait_started()
            assert fleet.backends["dlease"].available
        assert set(created.values()) <= managed()

        # A lease the test can outlive; the engine's clock decides.
        monkeypatch.setattr(_docker_owner, "LEASE", 2.0)
        finished = _docker_owner._timestamp(engine.inspect_container(created["dead"])["State"]["FinishedAt"])
        assert finished is not None
        await wait_until(lambda: engine_now() - finished > 3.0, timeout=60, interval=0.2)
        monkeypatch.setattr(_docker_owner, "_next_sweep", 0.0)
        fleet = Fleet(config({"dlease": docker_time()}))
        async with fleet.running():
            await fleet.wait_started()
            assert fleet.backends["dlease"].available
            # The next gateway's first look removes the expired ones, whatever host owned them.
            assert created["dead"] not in managed() and created["unstarted"] not in managed()
            # A replica that dies while this gateway runs: its leftover goes once its lease
            # expired, with no launch on this side.
            created["later"] = create("later", "replica-d.example:7:1", stdin_open=True)
            die_attached(created["later"])
            await wait_until(lambda: created["later"] not in managed(), timeout=60, interval=0.2)
            # Running: never touched, whoever owns it.
            assert created["live"] in managed()
            assert engine.inspect_container(created["live"])["State"]["Running"]
    finally:
        for cid in created.values():
            with contextlib.suppress(docker.errors.NotFound):
                engine.remove_container(cid, force=True)


def test_engine_timestamps() -> None:
    assert _docker_owner._timestamp("2026-12-03T11:24:18.022213389Z") == pytest.approx(1796297058.022213)
    assert _docker_owner._timestamp("2026-12-03T11:24:18Z") == 1796297058.0
    assert _docker_owner._timestamp("0001-01-01T00:00:00Z") is None  # the engine's "never"
    assert _docker_owner._timestamp("garbage") is None
    assert _docker_owner._timestamp(None) is None


# -- loosening, volumes, and the pure parts --------------------------------------------------------


async def test_each_loosening_is_explicit(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = docker_misbehave(
        network="host",
        read_only=False,
        cap_add=["NET_BIND_SERVICE"],
        user="12345",
        volumes=["data:/data:ro", f"{tmp_path}:/work"],
        resources={"memory": "128m", "cpus": 0.25, "pids": 32},
    )
    fleet = Fleet(config({"dloose": spec}))
    async with fleet.running():
        await fleet.wait_started()
        assert fleet.backends["dloose"].available, fleet.backends["dloose"].last_error
        info = await inspect_one(engine, "dloose")
    host = info["HostConfig"]
    assert host["NetworkMode"] == "host" and host["ReadonlyRootfs"] is False
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["NET_BIND_SERVICE"]
    assert info["Config"]["User"] == "12345"
    assert host["Memory"] == 128 * 1024 * 1024 and host["PidsLimit"] == 32 and host["NanoCpus"] == 250_000_000
    binds = {m["Destination"]: (m["Source"], m["RW"]) for m in info["Mounts"]}
    assert binds == {"/data": (str(tmp_path / "data"), False), "/work": (str(tmp_path), True)}


def test_volume_specs_are_checked(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    [mount] = mounts("x", ["sub:/in:ro"], str(tmp_path))
    assert mount["Source"] == str(tmp_path / "sub") and mount["Target"] == "/in" and mount["ReadOnly"]
    for bad in ("sub", "sub:relative", "sub:/in:rx", ":/in", "a:b:c:d"):
        with pytest.raises(BackendStartError, match=r"servers\.x\.volumes\[0\]"):
            mounts("x", [bad], str(tmp_path))
    with pytest.raises(BackendStartError, match="does not exist"):
        mounts("x", ["nope:/in"], str(tmp_path))


def test_the_default_user_is_never_root() -> None:
    spec = DockerServer(image="x")
    assert container_user(spec, "10001") == "10001"
    assert container_user(spec, "mcp:mcp") == "mcp:mcp"
    for rootish in ("", "root", "0", "0:0", "root:staff"):
        assert container_user(spec, rootish) == "65534:65534"
    assert container_user(DockerServer(image="x", user="0"), "10001") == "0"  # explicit loosening


def test_exit_descriptions() -> None:
    assert describe_exit({"ExitCode": 0}, "256m") == "container exited with 0"
    assert "OOM-killed" in describe_exit({"ExitCode": 137, "OOMKilled": True}, "64m")
    assert "a process in it" in describe_exit({"ExitCode": 1, "OOMKilled": True}, "64m")
    assert "SIGKILL" in describe_exit({"ExitCode": 137}, "64m")


def test_owner_liveness() -> None:
    me = _docker_owner.current_instance()
    host, pid, start = me.rsplit(":", 2)
    assert int(pid) == os.getpid() and not _docker_owner.owner_is_dead(me)
    assert _docker_owner.owner_is_dead(f"{host}:{pid}:{int(start) + 1}")  # pid reused
    assert not _docker_owner.owner_is_dead(f"other-host:{pid}:1")
    assert not _docker_owner.owner_is_dead("garbage")


# -- benchmark -------------------------------------------------------------------------------------


async def test_benchmark_runs(images: None) -> None:
    numbers = await bench(starts=5, calls=20, warmup=5)
    assert numbers["start_5_concurrent_s"] < 60
    assert 0 < numbers["dk_backend_p50_ms"] < 1000 and 0 < numbers["io_backend_p50_ms"] < 1000


if __name__ == "__main__":
    require("docker")
    subprocess.run([str(BUILD_IMAGES)], check=True, capture_output=True, timeout=900)
    for key, value in anyio.run(bench).items():
        print(f"{key:28} {value:8.2f}")
