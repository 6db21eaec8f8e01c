"""The gateway's own image: the repo's Dockerfile built, run and stopped on a real Docker engine.

How the image is built here, and why:
- Base: local/mcp-python:test (tests/fixtures/docker/build-images python: debootstrap bookworm
  minbase + python3-venv), a stand-in for python:3.11-slim-bookworm, which cannot be pulled.
- Dependencies: a build container reaches PyPI only where egress does not re-sign TLS (on this
  kind of sandbox it does, with a CA the image cannot know, and `docker build` cannot mount one).
  So the wheelhouse is made by `pip wheel` run *in the base image* under `docker run` (where the
  host's CA bundle can be mounted), cached per requirement set, and handed to the Dockerfile as
  dist/wheels/: the Dockerfile's documented offline mode. Running pip in the base image, not on
  the host, resolves environment markers for the image's interpreter (Debian's 3.11.2 needs
  async-timeout for redis, a host 3.11.7 does not).
- `docker build --network none`: the build needs nothing beyond the context, which is a copy of
  the working tree's non-ignored files (`git ls-files -co --exclude-standard`) plus the wheels,
  so nothing is written into the repo. Docker's layer cache keys on content: reruns are warm.
- The default path (no dist/wheels: pip asks an index) is built as well, against a PEP 503 index
  on loopback serving the same wheels (--network host, PIP_INDEX_URL build arg).

The build time (and how many steps came from the cache) is printed when the image is built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import docker  # type: ignore[import-untyped]
import httpx
import pytest
import yaml
from mcp import Client as SdkClient

from gateway.config import load_config
from gateway.middleware.chain import instantiate
from gateway.middleware.ratelimit import RateLimit
from tests._infra import REPO_ROOT, require
from tests._support import START_TIMEOUT, free_port, text_of

# The first test to ask for the image pays for a cold build (debootstrap ~70 s, wheels, build).
pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.timeout(900)]

IMAGE = "local/mcp-gateway:test"
INDEX_IMAGE = "local/mcp-gateway:test-index"  # built from a package index instead of dist/wheels
INDEX_PORT = 38617
BASE = "local/mcp-python:test"
BUILD_IMAGES = REPO_ROOT / "tests" / "fixtures" / "docker" / "build-images"
CONFIG_IN_IMAGE = "/etc/mcp-gateway/gateway.yaml"
UID = "10001"
# Every container this module starts carries this label, valued per session, so that the
# leftover check never sees another session's containers.
LABEL = "org.mcp-gateway.test.container"
RUN_ID = uuid.uuid4().hex[:12]
HEALTHY_WITHIN = 90.0
STOP_GRACE = 20  # docker stop -t: SIGKILL after this; a clean exit must come well before


def _unavailable(what: str) -> None:
    """Like tests._infra.require: a missing prerequisite skips loudly outside CI, fails in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"MISSING IN CI (gateway image): {what}", pytrace=False)
    pytest.skip(f"SKIPPED OUTSIDE CI (gateway image): {what}")


def _cache_dir() -> Path:
    """The cache build-images uses (same precedence), so both live and are cleaned together."""
    if os.environ.get("MCP_TEST_IMAGE_CACHE"):
        return Path(os.environ["MCP_TEST_IMAGE_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "mcp-gateway-test"
    return Path("/var/cache/mcp-gateway-test")


def _requirements() -> list[str]:
    """What the Dockerfile installs: the same expression it evaluates from pyproject.toml."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    reqs: list[str] = project["dependencies"] + project["optional-dependencies"]["demo"]
    return reqs


def _host_ca_bundle() -> Path | None:
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return Path(os.environ[var])
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    return system if system.is_file() else None


def _wheelhouse(cache: Path) -> Path:
    reqs = [*_requirements(), "setuptools>=68"]  # setuptools: the gateway's build backend
    base_id = _image_id(BASE)
    key = hashlib.sha256("\n".join([str(base_id), *reqs]).encode()).hexdigest()[:16]
    wheels = cache / f"gateway-wheels-{key}"
    if wheels.is_dir():
        return wheels
    work = cache / f"gateway-wheels-{key}.partial"
    shutil.rmtree(work, ignore_errors=True)
    (work / "wheels").mkdir(parents=True)
    (work / "requirements.txt").write_text("\n".join(reqs) + "\n")
    argv = ["docker", "run", "--rm", "--network", "host", "--label", f"{LABEL}={RUN_ID}"]
    argv += ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp", "-e", "PIP_NO_CACHE_DIR=1"]
    argv += ["-e", "PIP_DISABLE_PIP_VERSION_CHECK=1", "-v", f"{work}:/w"]
    ca = _host_ca_bundle()
    if ca is not None:  # the host's trust store: on a TLS-intercepting egress, it knows the CA
        argv += ["-v", f"{ca.resolve()}:/etc/host-ca.crt:ro", "-e", "PIP_CERT=/etc/host-ca.crt"]
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if var in os.environ:
            argv += ["-e", var]
    script = "python3 -m venv /tmp/v && /tmp/v/bin/pip wheel -q --wheel-dir /w/wheels -r /w/requirements.txt"
    done = subprocess.run([*argv, BASE, "sh", "-c", script], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        _unavailable(f"pip wheel in {BASE} failed (needs PyPI):\n{done.stderr[-3000:]}")
    (work / "wheels").rename(wheels)
    shutil.rmtree(work)
    for stale in cache.glob("gateway-wheels-*"):  # earlier requirement sets, or a crashed run
        if stale != wheels:
            shutil.rmtree(stale, ignore_errors=True)
    return wheels


def _context(into: Path, wheels: Path | None) -> Path:
    """The working tree as a fresh clone plus uncommitted files would have it, and dist/wheels."""
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO_ROOT / rel
        if src.is_file():  # listed but deleted in the working tree: skip
            (into / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into / rel, follow_symlinks=False)
    if wheels is not None:
        shutil.copytree(wheels, into / "dist" / "wheels")
    return into


def _say(config: pytest.Config, line: str) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n[test_container] {line}", file=sys.stderr)


@pytest.fixture(scope="session")
def python_base() -> str:
    require("docker")
    done = subprocess.run([str(BUILD_IMAGES), "python"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        _unavailable(f"cannot build {BASE} with {BUILD_IMAGES.name} python:\n{done.stderr[-3000:]}")
    return BASE


@contextlib.contextmanager
def _one_at_a_time() -> Iterator[Path]:
    """Across concurrent sessions: one wheelhouse/build at a time; a waiter then finds it cached."""
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "gateway-image.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield cache


def _build(ctx: Path, tag: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    previous = _image_id(tag)
    argv = ["docker", "build", "--force-rm", "--build-arg", f"BASE={BASE}", *extra, "-t", tag, str(ctx)]
    started = time.monotonic()
    built = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    took = time.monotonic() - started
    if previous not in (None, _image_id(tag)):  # replaced: drop it (refused harmlessly if in use)
        subprocess.run(["docker", "rmi", str(previous)], capture_output=True)
    assert built.returncode == 0, f"docker build failed:\n{built.stdout[-4000:]}\n{built.stderr[-3000:]}"
    return built, took


@pytest.fixture(scope="session")
def wheelhouse(python_base: str) -> Path:
    with _one_at_a_time() as cache:
        return _wheelhouse(cache)


@pytest.fixture(scope="session")
def gateway_image(
    wheelhouse: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    require("git")
    ctx = _context(tmp_path_factory.mktemp("gateway-image-context"), wheelhouse)
    with _one_at_a_time():
        built, took = _build(ctx, IMAGE, "--network", "none")
    shutil.rmtree(ctx, ignore_errors=True)
    steps, cached = built.stdout.count("\nStep "), built.stdout.count("Using cache")
    size = _inspect(IMAGE, "image")["Size"]
    _say(
        request.config,
        f"built {IMAGE} in {took:.1f}s ({cached} of {steps} steps cached), {size / 1e6:.0f} MB",
    )
    return IMAGE


def _image_id(ref: str) -> str | None:
    found = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True, text=True
    )
    return found.stdout.strip() if found.returncode == 0 else None


def _inspect(ref: str, kind: str = "container") -> dict[str, Any]:
    info: dict[str, Any] = json.loads(subprocess.check_output(["docker", kind, "inspect", ref]))[0]
    return info


def _ours() -> list[str]:
    out = subprocess.check_output(["docker", "ps", "-aq", "--filter", f"label={LABEL}={RUN_ID}"], text=True)
    return out.split()


def _wait_healthy(cid: str, since: int) -> str:
    """Block until the container's health_status is healthy (or it dies); bounded by `until`."""
    client = docker.from_env(timeout=HEALTHY_WITHIN + 30)
    try:
        # Replayed from `since`, so an event before we subscribed is not missed.
        for event in client.api.events(
            since=since,
            until=int(time.time() + HEALTHY_WITHIN),
            filters={"container": cid, "event": ["health_status", "die"]},
            decode=True,
        ):
            status: str = event.get("status", "")
            if status in ("health_status: healthy", "die"):
                return status
        return "timeout"
    finally:
        client.close()


def _diagnose(cid: str) -> str:
    logs = subprocess.run(["docker", "logs", "--tail", "40", cid], capture_output=True, text=True)
    health = _inspect(cid)["State"].get("Health")
    return f"health: {json.dumps(health)[-2000:]}\nlogs:\n{logs.stdout}{logs.stderr}"


@contextlib.contextmanager
def _removed_at_exit(cid: str) -> Iterator[str]:
    try:
        yield cid
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", cid], capture_output=True)


# -- the image ------------------------------------------------------------------------------------


def test_image_is_non_root_health_checked_and_small(gateway_image: str) -> None:
    image, base = _inspect(gateway_image, "image"), _inspect(BASE, "image")
    cfg = image["Config"]
    assert cfg["User"] == f"{UID}:{UID}"
    # Arguments are a whole command line (README: `docker run ... serve --config ...`); none: serve.
    assert cfg["Entrypoint"] == ["mcp-gateway"]
    assert cfg["Cmd"] == ["serve", "--config", CONFIG_IN_IMAGE, "--host", "0.0.0.0"]
    assert "8765/tcp" in cfg["ExposedPorts"]
    assert "/var/lib/mcp-gateway" in cfg["Volumes"]  # state stays writable under --read-only
    probe = " ".join(cfg["Healthcheck"]["Test"])
    assert "MCP_GATEWAY_HEALTHCHECK_URL" in probe
    assert "MCP_GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:8765/healthz" in cfg["Env"]
    # What the gateway adds to its base (the venv): a guard against it silently doubling. Tool
    # search's ranking (bm25s, PyStemmer, numpy: ~35 MB, imported only when used) took it past
    # 200 MB (208 MB measured).
    added = image["Size"] - base["Size"]
    assert added < 240e6, f"the gateway's layers take {added / 1e6:.0f} MB"
    # pip/setuptools only build the venv; the runtime image has no installer, and no build tree.
    listing = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--label", f"{LABEL}={RUN_ID}", "--entrypoint", "sh",
         gateway_image, "-c", "ls /opt/mcp-gateway/venv/bin; ls -d /src /tmp/wheels/*.whl || true"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert "mcp-gateway" in listing and "mcp-server-time" in listing
    assert not [name for name in listing if name.startswith(("pip", "easy_install"))], listing
    assert not [name for name in listing if name.startswith(("/src", "/tmp/wheels/"))], listing


def test_compose_config_is_valid_inside_the_image(gateway_image: str) -> None:
    checked = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--label", f"{LABEL}={RUN_ID}",
         "-v", f"{REPO_ROOT / 'config' / 'compose.yaml'}:{CONFIG_IN_IMAGE}:ro",
         "--entrypoint", "mcp-gateway", gateway_image, "check", "--no-start", "--config", CONFIG_IN_IMAGE],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "valid (1 servers)" in checked.stdout


# -- a running container ----------------------------------------------------------------------------


async def _docker(*args: str) -> str:
    with anyio.fail_after(120):
        done = await anyio.run_process(["docker", *args], check=False)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr.decode()}"
    return done.stdout.decode()


async def test_container_serves_a_real_client_healthy_as_uid_10001_and_stops_cleanly(
    gateway_image: str, tmp_path: Path
) -> None:
    port = free_port()
    cfg = tmp_path / "gateway.yaml"
    time_server = {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}
    cfg.write_text(yaml.safe_dump({"servers": {"time": time_server}}))
    cfg.chmod(0o644)  # read by uid 10001 through the bind mount
    since = int(time.time()) - 1
    cid = (await _docker(
        "run", "-d", "--label", f"{LABEL}={RUN_ID}",
        # Host networking (the engine has no bridge), so the gateway must bind loopback only.
        "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        # The image's own probe command, polled every second instead of every 10 s to keep this fast.
        "--health-interval", "1s",
        "-e", f"MCP_GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:{port}/healthz",
        "-v", f"{cfg}:{CONFIG_IN_IMAGE}:ro",
        "--entrypoint", "mcp-gateway", gateway_image,
        "serve", "--config", CONFIG_IN_IMAGE, "--host", "127.0.0.1", "--port", str(port),
    )).strip()  # fmt: skip
    with _removed_at_exit(cid):
        status = await anyio.to_thread.run_sync(_wait_healthy, cid, since)
        assert status == "health_status: healthy", (
            f"{status}\n{await anyio.to_thread.run_sync(_diagnose, cid)}"
        )

        # /healthz (the probe) is liveness; a tool is listed once its backend is up, i.e. at /readyz.
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5, trust_env=False) as http:
            with anyio.fail_after(START_TIMEOUT):
                # The fleet's state lives inside the container: /readyz is the way to see it from here.
                while (await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                    await anyio.sleep(0.1)

        async with SdkClient(f"{base}/mcp", mode="legacy") as client:
            result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not result.is_error, result
        assert json.loads(text_of(result))["timezone"] == "UTC"

        # The gateway process itself (PID 1), not just what `docker exec` defaults to.
        proc_status = await _docker("exec", cid, "cat", "/proc/1/status")
        uids = next(line.split()[1:] for line in proc_status.splitlines() if line.startswith("Uid:"))
        assert uids == [UID] * 4
        assert (await _docker("exec", cid, "id", "-u")).strip() == UID
        assert json.loads(await _docker("inspect", cid))[0]["Config"]["User"] == f"{UID}:{UID}"

        # As PID 1 without --init, the gateway must still act on SIGTERM: exit 0, before SIGKILL.
        started = time.monotonic()
        await _docker("stop", "-t", str(STOP_GRACE), cid)
        took = time.monotonic() - started
        state = json.loads(await _docker("inspect", cid))[0]["State"]
        assert state["ExitCode"] == 0 and not state["OOMKilled"], state
        assert took < STOP_GRACE - 5, f"stopping took {took:.1f}s"
        info = json.loads(await _docker("inspect", cid))[0]
        (state_volume,) = [m["Name"] for m in info["Mounts"] if m["Destination"] == "/var/lib/mcp-gateway"]
        await _docker("rm", "-v", cid)
    assert await anyio.to_thread.run_sync(_ours) == []
    assert state_volume not in await _docker("volume", "ls", "-q")


def _documented_run() -> list[str]:
    """The README's `docker run` line that serves a mounted config, split as a shell would."""
    text = (REPO_ROOT / "README.md").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("docker run") and " serve " in ln]
    return shlex.split(line)


async def test_the_readme_docker_run_line_serves(gateway_image: str, tmp_path: Path) -> None:
    argv = _documented_run()
    image_at = argv.index("serve") - 1
    assert argv[image_at] == "mcp-gateway", argv
    # As documented, but with the image under test, detached, labelled, and the config in $PWD.
    argv[image_at] = gateway_image
    argv[2:2] = ["-d", "--label", f"{LABEL}={RUN_ID}"]
    argv = [arg.replace("$PWD", str(tmp_path)) for arg in argv]
    port = free_port()
    cfg = tmp_path / "gateway.yaml"
    time_server = {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}
    cfg.write_text(yaml.safe_dump({"listen": {"port": port}, "servers": {"time": time_server}}))
    cfg.chmod(0o644)  # read by uid 10001 through the bind mount
    assert argv[0] == "docker"
    cid = (await _docker(*argv[1:])).strip()
    with _removed_at_exit(cid):
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5, trust_env=False) as http:
            with anyio.fail_after(START_TIMEOUT):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    assert _inspect(cid)["State"]["Running"], await anyio.to_thread.run_sync(_diagnose, cid)
                    await anyio.sleep(0.2)
        async with SdkClient(f"{base}/mcp", mode="legacy") as client:
            result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not result.is_error, result
        await _docker("stop", "-t", str(STOP_GRACE), cid)


async def test_without_arguments_the_image_serves_its_default_config(gateway_image: str) -> None:
    since = int(time.time()) - 1
    # Its own network namespace: the default listens on 0.0.0.0:8765, reachable only inside.
    cid = (await _docker(
        "run", "-d", "--label", f"{LABEL}={RUN_ID}", "--network", "none", "--health-interval", "1s",
        gateway_image,
    )).strip()  # fmt: skip
    with _removed_at_exit(cid):
        status = await anyio.to_thread.run_sync(_wait_healthy, cid, since)
        assert status == "health_status: healthy", await anyio.to_thread.run_sync(_diagnose, cid)
        logs = await anyio.run_process(["docker", "logs", cid], check=False)
        assert "running on http://0.0.0.0:8765" in (logs.stdout + logs.stderr).decode()


def _step_cached(output: str, fragment: str) -> bool:
    (step,) = [block for block in output.split("\nStep ") if fragment in block.split("\n", 1)[0]]
    return "Using cache" in step


def _pep503_index(root: Path, wheels: Path) -> None:
    """A static "simple" index of `wheels` under `root`: what pip asks PyPI for, served locally."""
    (root / "files").mkdir(parents=True)
    for wheel in sorted(wheels.glob("*.whl")):
        shutil.copy2(wheel, root / "files")
        page = root / "simple" / re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower() / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        with page.open("a") as out:
            out.write(f'<a href="../../files/{wheel.name}">{wheel.name}</a><br>\n')


@contextlib.contextmanager
def _serve_dir(root: Path, requests: list[str]) -> Iterator[int]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            requests.append(self.path)

    # A fixed port when free: the URL is a build arg, part of the layer cache key of the install
    # step, so a random port would make every run a cold build.
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", INDEX_PORT), Handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_without_a_wheelhouse_the_build_installs_from_an_index(wheelhouse: Path, tmp_path: Path) -> None:
    # The default path (no dist/wheels: pip asks an index), here against a PEP 503 index on
    # loopback serving the same wheels, since PyPI is not reachable from every build container.
    _pep503_index(tmp_path / "index", wheelhouse)
    ctx = _context(tmp_path / "context", None)
    requests: list[str] = []
    with _serve_dir(tmp_path / "index", requests) as port, _one_at_a_time():
        index = f"http://127.0.0.1:{port}/simple/"
        built, _ = _build(ctx, INDEX_IMAGE, "--network", "host", "--build-arg", f"PIP_INDEX_URL={index}")
    try:
        # A step that ran (not cached) must have asked the loopback index.
        if not _step_cached(built.stdout, "-r /tmp/wheels/requirements.txt"):
            assert f"Looking in indexes: {index}" in built.stdout
            assert any(path.startswith("/files/mcp-2.") for path in requests), requests
        if not _step_cached(built.stdout, "pip install --no-deps"):  # setuptools, for build isolation
            assert any(path.startswith("/files/setuptools-") for path in requests), requests
        history = subprocess.check_output(["docker", "history", "--no-trunc", INDEX_IMAGE], text=True)
        assert index not in history  # a build-stage ARG: a private index URL does not ship
        version = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "--label", f"{LABEL}={RUN_ID}",
             "--entrypoint", "mcp-gateway", INDEX_IMAGE, "--version"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert version.returncode == 0 and version.stdout.startswith("mcp-gateway "), version
    finally:
        subprocess.run(["docker", "rmi", INDEX_IMAGE], capture_output=True)


# -- the build context and the compose example --------------------------------------------------------


def test_dockerignore_keeps_local_state_out_of_the_build_context(python_base: str) -> None:
    # The real repo as context, as `docker build .` would send it, listed by a throwaway build.
    dockerfile = f"FROM {python_base}\nCOPY . /ctx\nRUN cd /ctx && find . -maxdepth 3 | sort\n"
    built = subprocess.run(
        ["docker", "build", "--no-cache", "--force-rm", "--network", "none", "-f", "-", str(REPO_ROOT)],
        input=dockerfile, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    image_id = re.search(r"^Successfully built (\w+)$", built.stdout, re.MULTILINE)
    assert image_id, built.stdout[-2000:]
    subprocess.run(["docker", "rmi", image_id[1]], capture_output=True)
    listed = {line.strip() for line in built.stdout.splitlines() if line.startswith("./")}
    for needed in ("./pyproject.toml", "./README.md", "./gateway/app.py", "./plugins", "./gateway.yaml"):
        assert needed in listed, needed
    for excluded in ("./.git", "./.venv", "./tests/node/node_modules", "./.mypy_cache", "./artifacts"):
        assert excluded not in listed, excluded
    assert not [p for p in listed if "__pycache__" in p or p.endswith(".egg-info")]


def test_compose_example_binds_loopback_mounts_the_config_and_uses_redis() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    gateway = compose["services"]["gateway"]
    assert all(str(p).startswith("127.0.0.1:") for p in gateway["ports"])
    assert f"./config/compose.yaml:{CONFIG_IN_IMAGE}:ro" in gateway["volumes"]
    assert gateway["command"][:3] == ["serve", "--config", CONFIG_IN_IMAGE]  # the entrypoint: mcp-gateway
    # The engine socket is documented, not mounted: mounting it is the reader's decision.
    assert not [v for v in gateway["volumes"] if "docker.sock" in v]
    assert "redis" in compose["services"] and gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    config = load_config(REPO_ROOT / "config" / "compose.yaml")
    (ratelimit,) = instantiate(config.middleware, source="config/compose.yaml")  # no connection yet
    assert isinstance(ratelimit, RateLimit) and ratelimit.storage_label == "redis://redis:6379/0"
    for cli in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cli[0]) is None or subprocess.run([*cli, "version"], capture_output=True).returncode:
            continue  # this compose is not installed
        # The full schema check of whichever compose exists; `config` pulls and builds nothing.
        checked = subprocess.run(
            [*cli, "-f", str(REPO_ROOT / "docker-compose.yml"), "config", "-q"],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr
