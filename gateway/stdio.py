"""`mcp-gateway serve --stdio`: the same aggregate, over stdin/stdout, for clients that launch it."""

from __future__ import annotations

from contextlib import AsyncExitStack

from mcp.server.stdio import stdio_server

from gateway.config import secrets
from gateway.config.models import GatewayConfig
from gateway.fleet import Fleet
from gateway.middleware import instantiate
from gateway.relay import Relay
from gateway.reload import Reloader


async def serve_stdio(config: GatewayConfig, path: str | None = None) -> None:
    secrets.configure(config.secrets)  # middleware options may hold secret_ref: values
    middlewares = instantiate(config.middleware)
    fleet = Fleet(config)
    relay = Relay(fleet, middlewares, local=True)
    server = relay.build_server()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(Reloader(fleet, relay, path).running(watch=path is not None))
        await stack.enter_async_context(fleet.running())
        await stack.enter_async_context(relay.inputs.running())
        # A launched gateway is asked for its tools at once; answer with the whole fleet.
        await fleet.wait_started()
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
