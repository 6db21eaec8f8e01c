"""The SDK's server wired to the relay (`gateway/front/sdk.py`)."""

from __future__ import annotations

from gateway.catalogue import Catalogue
from gateway.fleet import Fleet
from gateway.front.sdk import build_server
from gateway.relay import Relay
from tests._support import config, misbehave


def test_header_schemas_are_read_from_the_catalogue_of_the_moment() -> None:
    """The catalogue is replaced whenever a backend's listing changes: the schema the SDK checks
    `Mcp-Param-*` headers against must be the current one, never the one at start-up."""
    fleet = Fleet(config({"mb": misbehave()}))
    server = build_server(Relay(fleet))
    lookup = server.get_tool_input_schema
    assert lookup is not None and lookup("mb__pinned") is None
    schema = {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}
    fleet.catalogue = Catalogue(header_schemas={"mb__pinned": schema})
    assert lookup("mb__pinned") == schema
