"""`mcp-gateway serve --stdio`: the same aggregate, over stdin/stdout, for clients that launch it."""

from __future__ import annotations

from mcp.server.stdio import stdio_server

from gateway.config.models import GatewayConfig
from gateway.fleet import Fleet
from gateway.relay import Relay


async def serve_stdio(config: GatewayConfig) -> None:
    fleet = Fleet(config)
    relay = Relay(fleet)
    server = relay.build_server()
    async with fleet.running(), relay.inputs.running():
        # A launched gateway is asked for its tools at once; answer with the whole fleet.
        await fleet.wait_started()
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
