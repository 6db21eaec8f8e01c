"""Configuration: models, loading and secret references."""

from gateway.config._loader import load_config, parse_config
from gateway.config.admin import AdminConfig, AdminKey, EventsConfig
from gateway.config.models import (
    DockerServer,
    GatewayConfig,
    HttpServer,
    ListenConfig,
    MiddlewareSpec,
    ServerSpec,
    StdioServer,
    ToolFilter,
    namespace_of,
)

__all__ = [
    "AdminConfig",
    "AdminKey",
    "DockerServer",
    "EventsConfig",
    "GatewayConfig",
    "HttpServer",
    "ListenConfig",
    "MiddlewareSpec",
    "ServerSpec",
    "StdioServer",
    "ToolFilter",
    "load_config",
    "namespace_of",
    "parse_config",
]
