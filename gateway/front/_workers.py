"""`serve --workers N`: N gateway processes on one listening socket, supervised by uvicorn.

uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`) does the supervising: it spawns the
workers on the socket the parent bound, pings each one, replaces a worker that dies or stops
answering, restarts them one by one on SIGHUP, and on SIGINT/SIGTERM sends each SIGTERM and waits
for it. A worker that fails to start stops the whole thing (it would fail the same way again).

Each worker is a whole gateway, built in the worker from the config: its own fleet (backends
started once per worker), drain, admin API and replica id, `<cluster.replica_id or
host:pid:random of the parent>-w<k>` (k from 1; a replacement gets the next number, being a new
process). Workers are therefore replicas behind a load balancer, the kernel spreading connections
among them; what replicas share goes through `cluster.redis`, which is why several workers need it
(and the same `state.keys`, which a config with `cluster.redis` has).

A worker reads the config file as it starts, so that a worker started later (a replacement, or
SIGHUP's rolling restart) runs what the file says now, as its siblings do after a reload; a file
that no longer validates is logged and the config the parent read at start is used instead.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from gateway import _sdk, logs
from gateway.cluster import default_replica_id
from gateway.config import GatewayConfig
from gateway.config.validation import validate_file
from gateway.errors import ConfigError
from gateway.middleware import Middleware

logger = logging.getLogger("gateway")

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[Any]]

# Seconds a worker has to answer the supervisor's ping before it is killed as hung. uvicorn's 5 s
# is short for a gateway starting its fleet on a loaded machine (the answering thread shares the
# interpreter with the start-up); a worker that is gone, not slow, is seen at once either way.
HEALTHCHECK = 30


@dataclass(frozen=True, slots=True)
class Plan:
    """What a worker needs to build its gateway (pickled to the spawned process)."""

    config: GatewayConfig  # as the parent validated it
    config_path: str | None
    watch: bool
    log_level: str
    log_json: bool
    replica: str  # the base id; each worker appends -w<k>

    def worker_config(self, number: int) -> tuple[GatewayConfig, list[Middleware] | None]:
        """The config of worker `number`, with its replica id: the file as it is now, and the
        middlewares its check made; else the parent's config (middlewares still to make)."""
        config, middlewares = self.config, None
        if self.config_path is not None:
            try:
                validated = validate_file(self.config_path)
                config, middlewares = validated.config, validated.middlewares
            except ConfigError as exc:
                logger.error(
                    "worker %d: %s no longer validates, starting on the config read at start: %s",
                    number,
                    self.config_path,
                    exc.message,
                )
        cluster = config.cluster.model_copy(update={"replica_id": f"{self.replica}-w{number}"})
        return config.model_copy(update={"cluster": cluster}), middlewares


class Worker(Process):
    """uvicorn's worker process, serving the gateway (`gateway.front._uvicorn.Server`: the drain
    first on SIGTERM) rather than a plain uvicorn server."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], plan: Plan, number: int) -> None:
        self.plan = plan
        self.number = number
        super().__init__(config, sockets)

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover - a worker
        # Runs in the spawned worker, before uvicorn's ping-answering thread reads `server`.
        from gateway.app import build_app
        from gateway.front import _uvicorn

        plan = self.plan
        logs.configure(plan.log_level, json=plan.log_json)
        config, middlewares = plan.worker_config(self.number)
        app = build_app(config, config_path=plan.config_path, watch=plan.watch, middlewares=middlewares)
        app.router.lifespan_context = _ready_first(app.router.lifespan_context)
        settings = _uvicorn.settings(app, config.listen, log_level=plan.log_level, log_config=None)
        self._server = _uvicorn.Server(settings, app.state.drain)
        super().target(sockets)


def _ready_first(lifespan: Lifespan) -> Lifespan:
    """`lifespan`, its start-up ending only once every backend has made its first start attempt
    (each bounded by its own timeout).

    A worker shares its port with the others: a load balancer's readiness probe cannot tell one
    worker from another, so a worker started later (a replacement) would take connections before
    its tools exist ("Unknown tool"). Until its start-up ends, uvicorn does not accept on the
    socket in that worker; the others go on taking the connections."""

    @asynccontextmanager
    async def ready_first(app: Starlette) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            await app.state.fleet.wait_started()
            yield state

    return ready_first


class _Workers:
    """Makes the supervisor's workers, numbered in the order they are made."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._made = 0

    def __call__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> Worker:
        self._made += 1
        return Worker(config, sockets, self._plan, self._made)


def plan(
    config: GatewayConfig,
    *,
    config_path: str | None,
    watch: bool,
    log_level: str,
    log_json: bool,
) -> Plan:
    return Plan(
        config=config,
        config_path=config_path,
        watch=watch,
        log_level=log_level,
        log_json=log_json,
        replica=config.cluster.replica_id or default_replica_id(),
    )


def run(plan: Plan, listener: socket.socket, workers: int) -> bool:
    """Serve on `listener` with `workers` processes until SIGINT/SIGTERM; False when a worker
    failed to start (the supervisor then stopped them all)."""
    settings = uvicorn.Config(
        "gateway.app:build_app",  # never loaded: each worker builds its own app (`Worker.target`)
        workers=workers,
        timeout_worker_healthcheck=HEALTHCHECK,
        log_config=None,  # the workers' loggers are set up by `logs.configure`
        log_level=plan.log_level,
    )
    listener.set_inheritable(True)
    supervisor = Multiprocess(settings, [listener])
    with _sdk.uvicorn_worker_class(_Workers(plan)):
        supervisor.run()
    return not any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes)
