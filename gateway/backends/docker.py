"""Docker backends: an MCP server image run as a hardened container, spoken to over stdin/stdout.

Hardened by default; each loosening is an explicit config key:

- network: none (loopback only) - ``network: host``;
- root filesystem read-only, a tmpfs (nosuid, nodev, noexec, 16m) on each ``tmpfs`` path -
  ``read_only: false``;
- all capabilities dropped - ``cap_add: [...]``;
- no-new-privileges (setuid binaries cannot gain privileges) - not loosenable;
- user: the image's own user unless that is root, else 65534:65534 (nobody) - ``user: ...``;
- memory (swap included: memory+swap = memory), pids and cpus from ``resources``;
- docker's init as PID 1 (forwards SIGTERM to the server, reaps orphans).

``network: host`` shares the host's network namespace, for a server that must also serve HTTP:
configure it to bind 127.0.0.1; the gateway still speaks to it over stdio.

Secrets: only ``env`` may hold ``${env:..}``/``${file:..}`` references, resolved at launch into the
container's environment. The command line, image, volumes and user may not, because they are
visible to anyone who can list containers (``docker ps``/``inspect``) and end up in our logs.
(``Config.Env`` is visible to ``docker inspect`` too; whoever can reach the engine is root anyway.)

Volumes: ``"host:container[:ro|rw]"`` (rw by default) bind mounts. A relative host path is resolved
against the gateway's current working directory at launch; it must exist (it is not created).
Named volumes are not supported.

Images: ``pull: never`` (must be present), ``missing`` (pull when absent; the default) or
``always`` (pull at every start). A missing image or a failed pull is a `BackendStartError` naming
the image.

Lifecycle: the container is created with stdin open and StdinOnce, attached *before* it starts
(no output is lost), then started. Its end is seen as the end of the attach stream: its exit code
(and whether the kernel OOM-killed it) is then written into the backend's log buffer and
`LogBuffer.exit_code`; teardown waits for that, so the supervisor's restart and `last_error`,
decided after teardown, can explain it. Teardown is shielded and bounded: half-close stdin (EOF, the MCP
stdio shutdown) -> up to `EXIT_GRACE` for it to exit -> ``docker stop`` (SIGTERM, SIGKILL after
`STOP_TIMEOUT`) -> ``docker rm -f``. The container is removed also when its start is cancelled.
Leftovers of a gateway that died without teardown are removed by the next gateway process on the
same host, or by any gateway sharing the engine once their lease expired (see `_docker_owner`).

Every call into the (blocking) Docker SDK runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import docker  # type: ignore[import-untyped]
import docker.errors  # type: ignore[import-untyped]
import docker.utils  # type: ignore[import-untyped]
import requests.exceptions  # type: ignore[import-untyped, unused-ignore]

from gateway._sdk import attach_socket
from gateway.backends import _docker_owner
from gateway.backends._docker_io import AttachedPipes
from gateway.backends._docker_spec import container_user, describe_exit, host_config, no_secrets
from gateway.backends._logbuffer import LogBuffer
from gateway.backends._pipes import StdinMessages, StdoutMessages
from gateway.backends._process import MAX_LINE
from gateway.backends.transport import Link, PipeTransport
from gateway.config.models import DockerServer
from gateway.config.secrets import Secrets, check_env_schema
from gateway.errors import BackendStartError

logger = logging.getLogger(__name__)

# A well-behaved server exits soon after its stdin closes.
EXIT_GRACE = 2.0
# `docker stop -t`: after SIGTERM, seconds before the engine sends SIGKILL.
STOP_TIMEOUT = 3.0
# The SDK's HTTP timeout: bounds one engine call (create, attach, start, inspect) while starting.
API_TIMEOUT = 30.0
# Teardown's own bounds on engine calls: beyond `docker stop`'s wait, and for `docker rm -f`. A call
# still running then is left to finish in its thread (a removal still happens).
STOP_SLACK = 5.0
REMOVE_TIMEOUT = 10.0
# After the attach stream ends: time for the engine to report the exit code.
STATUS_TIMEOUT = 5.0
# Least seconds between two looks for leftovers while a container runs (`_docker_owner.LEASE` is
# the usual interval).
SWEEP_PAUSE = 1.0
# A pull may legitimately take minutes; one that stalls must not keep the backend starting forever.
PULL_TIMEOUT = 600.0

ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
)
_T = TypeVar("_T")


async def _engine(fn: Callable[..., _T], *args: Any, abandon: bool = False, **kwargs: Any) -> _T:
    """Run a blocking SDK call in a thread. `abandon`: a cancelled caller stops waiting for it."""
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), abandon_on_cancel=abandon)


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc) or type(exc).__name__


# -- the transport ---------------------------------------------------------------------------------


class DockerTransport(PipeTransport):
    """The transport of one Docker backend: a container per session; owns the engine client."""

    def __init__(self, name: str, spec: DockerServer, log: LogBuffer, secrets: Secrets) -> None:
        self.name = name
        self.spec = spec
        self.log = log
        self.secrets = secrets
        self._client: Any = None
        self._lock = threading.Lock()

    def connect(self) -> AbstractAsyncContextManager[Link]:
        return self._open()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.move_on_after(API_TIMEOUT), suppress(*ENGINE_ERRORS):
                await _engine(client.close, abandon=True)

    async def _api(self) -> Any:
        try:
            return await _engine(self._connect)
        except ENGINE_ERRORS as exc:
            raise BackendStartError(
                self.name, f"{self.name}: cannot reach the Docker engine: {_reason(exc)}"
            ) from None

    def _connect(self) -> Any:
        # In a thread (the SDK asks the engine for its API version); per-client sessions of one
        # backend may start at once and must share one client.
        with self._lock:
            if self._client is None:
                self._client = docker.from_env(timeout=int(API_TIMEOUT))
            return self._client.api

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Link]:
        no_secrets(self.name, self.spec)
        config = host_config(self.name, self.spec, os.getcwd())
        api = await self._api()
        try:
            await _engine(_docker_owner.sweep_if_due, api)
        except ENGINE_ERRORS as exc:  # leftovers are a nuisance, not a reason to refuse to start
            logger.warning("could not look for leftover containers: %s", _reason(exc))
        try:
            settings = api.create_host_config(**config)
        except docker.errors.DockerException as exc:  # e.g. a memory size without a unit
            raise BackendStartError(self.name, f"{self.name}: invalid container settings: {exc}") from None
        image_user = await self._ensure_image(api)
        env = check_env_schema(
            self.name,
            self.secrets.resolve_mapping(self.spec.env, where=f"servers.{self.name}.env"),
            self.spec.env_schema,
        )
        container = _Container(self.name, api, self.log, self.spec.resources.memory)
        try:
            conn = await container.launch(
                image=self.spec.image,
                command=list(self.spec.args) or None,
                environment=env,
                user=container_user(self.spec, image_user),
                host_config=settings,
            )
            async with (
                container.attached(conn, stall_after=self.spec.timeout) as link,
                anyio.create_task_group() as sweeping,
            ):
                sweeping.start_soon(self._sweep_while_running, api)
                try:
                    yield link
                finally:
                    sweeping.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await container.remove()

    async def _sweep_while_running(self, api: Any) -> None:
        # A leftover still in its lease at launch goes once the lease expired, with no launch
        # needed: a gateway's shared containers may run for weeks.
        while True:
            await anyio.sleep(max(_docker_owner.next_sweep_in(), SWEEP_PAUSE))
            try:
                await _engine(_docker_owner.sweep_if_due, api, abandon=True)
            except ENGINE_ERRORS as exc:
                logger.debug("server %s: could not look for leftover containers: %s", self.name, _reason(exc))

    async def _ensure_image(self, api: Any) -> str:
        """Apply the pull policy; returns the image's configured user."""
        image, policy = self.spec.image, self.spec.pull
        found = None if policy == "always" else await self._inspect_image(api)
        if found is None:
            if policy == "never":
                raise BackendStartError(
                    self.name,
                    f"{self.name}: image {image!r} is not present and `pull: never` forbids pulling it "
                    "(docker pull or docker load it first)",
                )
            await self._pull(api)
            found = await self._inspect_image(api)
            if found is None:
                raise BackendStartError(
                    self.name, f"{self.name}: image {image!r} is still missing after a pull"
                )
        return str((found.get("Config") or {}).get("User") or "")

    async def _inspect_image(self, api: Any) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await _engine(api.inspect_image, self.spec.image)
        except docker.errors.ImageNotFound:
            return None
        except ENGINE_ERRORS as exc:
            raise BackendStartError(
                self.name, f"{self.name}: cannot inspect image {self.spec.image!r}: {_reason(exc)}"
            ) from None
        return found

    async def _pull(self, api: Any) -> None:
        image = self.spec.image
        repository, tag = docker.utils.parse_repository_tag(image)

        def pull() -> None:
            # Without a tag the engine would pull every tag of the repository.
            for event in api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise docker.errors.DockerException(str(event["error"]))

        logger.info("server %s: pulling image %s", self.name, image)
        try:
            with anyio.fail_after(PULL_TIMEOUT):
                await _engine(pull, abandon=True)
        except TimeoutError:
            raise BackendStartError(
                self.name, f"{self.name}: pulling image {image!r} took longer than {PULL_TIMEOUT:g}s"
            ) from None
        except ENGINE_ERRORS as exc:
            raise BackendStartError(
                self.name, f"{self.name}: cannot pull image {image!r}: {_reason(exc)}"
            ) from None


class _Container:
    """One container's life: launch, attached I/O, bounded stop, removal."""

    def __init__(self, server: str, api: Any, log: LogBuffer, memory: str) -> None:
        self.server = server
        self.api = api
        self.log = log
        self.memory = memory
        # Our own name, known before `create` returns: a create interrupted in flight is still found.
        self.name = f"mcp-gw-{server}-{uuid.uuid4().hex[:12]}"
        self.id: str | None = None
        self.ended = anyio.Event()  # the attach stream ended and the exit status was looked up

    async def launch(self, **create: Any) -> socket.socket:
        """Create, attach, start. The threads run to completion even if we are cancelled meanwhile,
        so `self.id` is set whenever a container exists, and `remove()` finds it."""
        api, step = self.api, "create"
        try:
            created = await _engine(
                api.create_container,
                name=self.name,
                stdin_open=True,  # and, because not detached, StdinOnce: our EOF reaches the server
                tty=False,
                labels=_docker_owner.labels(self.server),
                **create,
            )
            self.id = str(created["Id"])
            step = "attach to"
            sock = await _engine(self._attach_socket)
            try:
                step = "start"
                await _engine(api.start, self.id)
            except BaseException:
                sock.close()
                raise
        except ENGINE_ERRORS as exc:
            raise BackendStartError(
                self.server, f"{self.server}: cannot {step} container for {create['image']!r}: {_reason(exc)}"
            ) from None
        logger.info("server %s: started container %s (%s)", self.server, self.name, create["image"])
        self.log.pid, self.log.exit_code, self.log.exit_detail = None, None, None
        return sock

    def _attach_socket(self) -> socket.socket:
        # Runs in a thread; returns a socket of our own, leaving nothing of the SDK's open.
        raw = self.api.attach_socket(self.id, {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        own = attach_socket(raw)
        own.setblocking(False)
        return own

    @asynccontextmanager
    async def attached(self, sock: socket.socket, *, stall_after: float | None = None) -> AsyncIterator[Link]:
        loop = asyncio.get_running_loop()
        try:
            transport, pipes = await loop.connect_accepted_socket(
                lambda: AttachedPipes(MAX_LINE, self.log, stall_after), sock
            )
        except BaseException:
            sock.close()
            raise
        # Shielded: the end of the connection is how teardown learns that the container exited,
        # so it is watched also while the session around us is being cancelled.
        watch = anyio.CancelScope(shield=True)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_end, pipes, watch)
                try:
                    yield Link(StdoutMessages(pipes), StdinMessages(pipes), pipes.direct)
                finally:
                    try:
                        with anyio.CancelScope(shield=True):
                            await self._stop(pipes)
                    finally:
                        watch.cancel()
        finally:
            transport.abort()  # the container is gone or being removed; nothing left to flush

    async def _watch_end(self, pipes: AttachedPipes, scope: anyio.CancelScope) -> None:
        with scope:
            await pipes.output_ended.wait()
            await self._record_exit()

    async def _stop(self, pipes: AttachedPipes) -> None:
        pipes.close_stdin()
        pipes.stop_listening()
        with anyio.move_on_after(EXIT_GRACE):
            await pipes.output_ended.wait()
        if not pipes.output_ended.is_set():
            with anyio.move_on_after(STOP_TIMEOUT + STOP_SLACK), suppress(*ENGINE_ERRORS):
                await _engine(self.api.stop, self.id, timeout=int(STOP_TIMEOUT), abandon=True)
        with anyio.move_on_after(STATUS_TIMEOUT):
            await self.ended.wait()

    async def _record_exit(self) -> None:
        """The attach stream ended: note how the container ended, for the supervisor and operators."""
        try:
            with anyio.move_on_after(STATUS_TIMEOUT):
                # `wait` returns once the engine has seen the exit; inspect then has the final state.
                await _engine(self.api.wait, self.id, timeout=int(STATUS_TIMEOUT), abandon=True)
                info = await _engine(self.api.inspect_container, self.id, abandon=True)
                state = info.get("State") or {}
                if not state.get("Running"):
                    self.log.exit_code = state.get("ExitCode")
                    if state.get("OOMKilled"):
                        self.log.exit_detail = "OOM-killed"  # else keep the gateway's own reason, if any
                    self.log.append(describe_exit(state, self.memory))
        except ENGINE_ERRORS as exc:
            logger.debug("server %s: no exit status for %s: %s", self.server, self.name, _reason(exc))
        finally:
            self.ended.set()

    async def remove(self) -> None:
        """`docker rm -f`, by id or (if `create` never told us the id) by our name. Bounded."""
        with anyio.move_on_after(REMOVE_TIMEOUT) as scope:
            try:
                await _engine(
                    self.api.remove_container, self.id or self.name, force=True, v=True, abandon=True
                )
            except docker.errors.NotFound:
                pass
            except ENGINE_ERRORS as exc:
                logger.warning(
                    "server %s: could not remove container %s: %s", self.server, self.name, _reason(exc)
                )
        if scope.cancelled_caught:
            logger.warning("server %s: removing container %s timed out", self.server, self.name)
