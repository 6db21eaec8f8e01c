"""The declarative shape of `gateway.yaml`: one pydantic model per backend kind.

Everything is validated before anything starts. Values may hold `${env:NAME}` / `${file:PATH}`
references; they stay unresolved here (so a config can be printed safely) and are resolved when a
backend launches (`gateway.config.secrets`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gateway.config.admin import AdminConfig
from gateway.config.cluster import ClusterConfig

# A namespace must survive in tool names ([A-Za-z0-9_.-], the charset clients accept) and must not
# contain the separator, or `a` + `b__x` and `a__b` + `x` would be the same name.
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SEPARATOR = "__"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolFilter(_Model):
    """Which of a server's tools are exposed: globs matched against the server's own names."""

    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)


# A tool's public name: the characters clients accept in tool names, within their 64-character cap.
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ToolOverride(_Model):
    """How one of a server's tools is shown to clients, and what the gateway adds to its calls.

    Keyed by the server's own tool name; the backend always receives that name and the full
    arguments (hidden and defaulted ones filled in)."""

    # `schema` is the key users write; the attribute is named apart from pydantic's `BaseModel.schema`.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    name: str | None = Field(
        default=None,
        description="The tool's public name instead of its own; the server's `prefix` still applies "
        '(`prefix: ""` to choose the whole name).',
    )
    title: str | None = Field(default=None, description="The tool's `title`.")
    description: str | None = Field(default=None, description="Replaces the tool's description.")
    description_append: str | None = Field(
        default=None, description="Added after the (possibly replaced) description, as a new paragraph."
    )
    hide: dict[str, Any] = Field(
        default_factory=dict,
        description="argument: fixed value. The argument leaves the client's inputSchema and the gateway "
        "sends the value in every call; a client that sends it gets an invalid-params error.",
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="argument: value. Shown as the argument's `default` (and no longer required); sent "
        "when the client omits the argument.",
    )
    tighten: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        alias="schema",
        description="argument: JSON Schema keywords (enum, maximum, pattern, ...) merged into the "
        "argument's schema; the gateway checks the client's value against them before the call.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not _TOOL_NAME.match(value):
            raise ValueError(f"name {value!r} must be 1-64 letters, digits, '_', '.' or '-'")
        return value

    # Fields are validated in order (hide, defaults, schema): each check sees the ones before it,
    # and its error is keyed (and lined) where the conflict is written.
    @field_validator("defaults")
    @classmethod
    def _check_defaults(cls, defaults: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for arg in defaults:
            if arg in info.data.get("hide", {}):
                raise ValueError(f"argument {arg!r} is hidden too; keep it in one of `hide` and `defaults`")
        return defaults

    @field_validator("tighten")
    @classmethod
    def _check_fragments(
        cls, tighten: dict[str, dict[str, Any]], info: ValidationInfo
    ) -> dict[str, dict[str, Any]]:
        if not tighten:
            return tighten
        from jsonschema import Draft202012Validator, SchemaError  # on use: ~70 ms to import

        for arg, fragment in tighten.items():
            if arg in info.data.get("hide", {}):
                raise ValueError(
                    f"argument {arg!r} is hidden: the client never sends it, so it cannot be checked"
                )
            try:
                Draft202012Validator.check_schema(fragment)
            except SchemaError as exc:
                # Where, not the offending value: values are never shown (a misplaced secret).
                where = ".".join(str(p) for p in (arg, *exc.path))
                raise ValueError(f"`{where}` is not valid JSON Schema") from None
            defaults = info.data.get("defaults", {})
            if arg in defaults and not Draft202012Validator(fragment).is_valid(defaults[arg]):
                raise ValueError(f"the default of {arg!r} does not pass its own schema here")
        return tighten


class HealthCheck(_Model):
    """MCP `ping` (`server/discover` in 2026-07-28, which has no ping) on an interval; `failures`
    misses in a row restart the backend."""

    interval: float = Field(default=30.0, gt=0)
    timeout: float = Field(default=5.0, gt=0)
    failures: int = Field(default=3, ge=1)
    enabled: bool = True


class EnvVar(_Model):
    name: str
    type: Literal["string", "integer", "number", "boolean", "url", "path"] = "string"
    required: bool = True
    secret: bool = False
    default: str | None = None
    description: str | None = None


class _ServerBase(_Model):
    prefix: str | None = Field(
        default=None,
        description="Namespace for this server's tools, prompts and resources. Defaults to the server "
        'name; "" exposes names unchanged.',
    )
    tools: ToolFilter = Field(default_factory=ToolFilter)
    timeout: float = Field(default=60.0, gt=0, description="Seconds a request may take before it fails.")
    startup_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to launch and finish the MCP handshake (npx may download)."
    )
    required: bool = Field(default=True, description="Whether /readyz waits for this server.")
    enabled: bool = True
    session: Literal["shared", "per-client"] = Field(
        default="shared",
        description="shared: one backend session serves every client (stateless servers). per-client: each "
        "client connection gets its own backend session (stateful servers; one process each for stdio).",
    )
    protocol: Literal["auto", "2026-07-28", "2025-11-25"] = Field(
        default="auto",
        description="MCP revision spoken to this server. auto: probe `server/discover`, fall back to the "
        "`initialize` handshake, and speak the newest revision both sides know. A revision pins it (for a "
        "server that misbehaves when probed).",
    )
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    max_restarts: int = Field(
        default=5, ge=0, description="Consecutive failed starts before the server is left `failed`."
    )
    backoff: tuple[float, float] = Field(
        default=(0.5, 30.0),
        description="Restart delay: [first, max] seconds; doubles per failure in a row, with ±20% jitter.",
    )
    autostart: bool = Field(default=True, description="Start with the gateway (else: on demand or by admin).")
    lazy: bool = Field(
        default=False,
        description="Start on the first call; until then its catalogue is the one learned at its last start.",
    )
    idle_timeout: float | None = Field(default=None, gt=0, description="Stop after this many idle seconds.")
    health: HealthCheck = Field(default_factory=lambda: HealthCheck())
    env_schema: list[EnvVar] = Field(
        default_factory=list, description="Environment the server needs; checked before it starts."
    )
    roots: list[str] = Field(
        default_factory=list,
        description="Roots (file:// URIs) the gateway declares to this server and answers its `roots/list` "
        "with itself, when no client can: on the shared session, and for a client that declared no roots. "
        "A per-client session otherwise gets its client's own roots.",
    )

    overrides: dict[str, ToolOverride] = Field(
        default_factory=dict,
        description="Per tool (the server's own name): rename it, change its description or title, hide "
        "or default arguments, tighten their schema.",
    )

    @field_validator("overrides")
    @classmethod
    def _check_override_names(cls, overrides: dict[str, ToolOverride]) -> dict[str, ToolOverride]:
        # Two tools under one name: one of them would be unreachable.
        shown: dict[str, str] = {}
        for tool, override in overrides.items():
            name = override.name or tool
            if name in shown:
                raise ValueError(f"tools {shown[name]!r} and {tool!r} would both be named {name!r}")
            shown[name] = tool
        return overrides

    @field_validator("roots")
    @classmethod
    def _check_roots(cls, roots: list[str]) -> list[str]:
        for root in roots:
            if not root.startswith("file://"):
                raise ValueError(f"root {root!r} must be a file:// URI (as the spec requires of roots)")
        return roots

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return value
        if not _PREFIX.match(value) or SEPARATOR in value:
            raise ValueError(
                f"prefix {value!r} must use letters, digits, '_', '.', '-' and must not contain {SEPARATOR!r}"
            )
        return value


class StdioServer(_ServerBase):
    """A local process speaking MCP over stdin/stdout."""

    type: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment; values may be ${env:NAME} or ${file:PATH}."
    )
    inherit_env: list[str] = Field(
        default_factory=list,
        description="Names of gateway environment variables passed through, on top of the safe defaults "
        "(HOME, LOGNAME, PATH, SHELL, TERM, USER).",
    )
    cwd: str | None = None


class HttpServer(_ServerBase):
    """A remote MCP server reached by URL (streamable HTTP, or legacy SSE)."""

    type: Literal["http", "sse"] = "http"
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict, description="Values may hold secret references.")
    bearer_token: str | None = Field(
        default=None, description="Sent as `Authorization: Bearer`; a reference."
    )
    health_check: str | None = Field(
        default=None, description="An HTTP path (e.g. /health) checked instead of MCP ping."
    )
    verify_tls: bool = True
    connect_timeout: float = Field(default=10.0, gt=0)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for key, value in headers.items():
            if not (key.isascii() and value.isascii()) or "\n" in value or "\r" in value:
                raise ValueError(f"header {key!r}: HTTP header names and values must be ASCII on one line")
        return headers


class DockerResources(_Model):
    memory: str = "256m"
    cpus: float = Field(default=0.5, gt=0)
    pids: int = Field(default=64, ge=1)


class DockerServer(_ServerBase):
    """An MCP server image run as a hardened container, spoken to over its stdin/stdout."""

    type: Literal["docker"] = "docker"
    image: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list, description="Arguments after the image's entrypoint.")
    env: dict[str, str] = Field(default_factory=dict, description="Container environment; may hold secrets.")
    volumes: list[str] = Field(
        default_factory=list, description='"host:container[:ro]"; relative to the working dir.'
    )
    resources: DockerResources = Field(default_factory=DockerResources)
    network: Literal["none", "host"] = Field(
        default="none",
        description="none (default) or host, for a container that must serve HTTP on 127.0.0.1.",
    )
    user: str | None = Field(default=None, description="Default: the image's user if not root, else 65534.")
    read_only: bool = True
    tmpfs: list[str] = Field(default_factory=lambda: ["/tmp"])
    pull: Literal["never", "missing", "always"] = "missing"
    cap_add: list[str] = Field(default_factory=list, description="Loosening: capabilities to keep.")


ServerSpec = Annotated[StdioServer | HttpServer | DockerServer, Field(discriminator="type")]


class MiddlewareSpec(_Model):
    use: str = Field(description='A built-in name ("auth", "ratelimit", ...) or "module:attr".')
    options: dict[str, Any] = Field(default_factory=dict)


class EventStoreConfig(_Model):
    """What a 2025-11-25 client can resume after its connection drops (`Last-Event-ID`): the SSE
    events the gateway keeps, oldest forgotten first."""

    max_events: int = Field(
        default=10_000, ge=1, description="SSE events kept for resumption, across all sessions."
    )
    max_age: float = Field(
        default=300.0, gt=0, description="Seconds an SSE event stays resumable after it was sent."
    )
    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Bytes of relayed messages (results, notifications) kept for resumption, across "
        "all sessions: a few large results cannot hold the gateway's memory.",
    )
    retry: int | None = Field(
        default=1000,
        ge=0,
        description="Milliseconds a client is told (SSE `retry:`) to wait before it reconnects; "
        "null sends none.",
    )


class ListenConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    path: str = "/mcp"
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host header values accepted (DNS-rebinding protection); loopback always is.",
    )
    allowed_origins: list[str] = Field(default_factory=list, description="Extra Origin values accepted.")
    drain_timeout: float = Field(
        default=5.0,
        ge=0,
        description="On SIGTERM/SIGINT: seconds running calls may take to finish (new ones are refused) "
        "before they are ended with an error and the fleet is stopped. Keep it well under the "
        "grace period of whatever stops the gateway (Docker and systemd: 10 s).",
    )
    max_sessions: int = Field(
        default=1000,
        ge=1,
        description="2025-11-25 sessions open at once; past it a new `initialize` gets HTTP 503 and a "
        "JSON-RPC error (open sessions are never evicted).",
    )
    session_idle_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a 2025-11-25 session may stay unused before this process lets go of it "
        "(its next request restores it, as on another replica, until `session_max_age`).",
    )
    session_max_age: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds a 2025-11-25 session id stays good (it is sealed under `state.keys`, so "
        "any replica with the same keys serves the session); after it, the client opens a new one.",
    )
    header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client has to send a request's headers (slowloris guard)."
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a client has to send a request's body after its headers."
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1, description="Largest request body the MCP endpoint reads."
    )
    event_store: EventStoreConfig = Field(
        default_factory=EventStoreConfig,
        description="Resumable SSE streams for 2025-11-25 clients (2026-07-28 has none).",
    )


# The seal derives its AES-256 key from each secret: less than this is too little randomness.
STATE_KEY_BYTES = 32


class StateConfig(_Model):
    """The `requestState` of the input rounds the gateway runs for 2026-07-28 clients (a backend
    of the handshake era asks for sampling, elicitation or roots mid-call): sealed under `keys`."""

    keys: list[str] = Field(
        default_factory=list,
        description="Secrets of at least 32 bytes, as references (${env:NAME}, ${file:PATH}, "
        "secret_ref:NAME). The first seals, every one opens (rotation: [old, new], then [new, old], "
        "then [new]). Empty: a random key per process, so a state is good only in the process that "
        "issued it; several gateway processes behind one address need the same keys.",
    )
    ttl: float = Field(
        default=600.0, gt=0, description="Seconds a client has to answer an input round before it expires."
    )

    @field_validator("keys")
    @classmethod
    def _check_keys(cls, keys: list[str]) -> list[str]:
        for index, key in enumerate(keys):
            # A reference's value is checked when it is resolved, at start.
            if "${" not in key and not key.startswith("secret_ref:") and len(key.encode()) < STATE_KEY_BYTES:
                raise ValueError(
                    f"keys[{index}] is shorter than 32 bytes (use a reference to a random secret)"
                )
        return keys


class SecretsConfig(_Model):
    """Where `secret_ref:<name>` values come from: a YAML/JSON file of name: value, then the environment."""

    file: str | None = None
    env_prefix: str = Field(default="MCP_SECRET_", description="secret_ref:api_key -> $MCP_SECRET_API_KEY")


class ToolSearchConfig(_Model):
    """Tool search mode (`gateway.search`): past `after` tools, `tools/list` shows three meta-tools
    (search, describe, call) and the pinned tools instead of the whole catalogue."""

    after: int = Field(
        default=50,
        ge=0,
        description="Show the meta-tools instead of the tools when a client would see more than this "
        "many; 0: always.",
    )
    pinned: list[str] = Field(
        default_factory=list, description="Public tool names or globs always listed beside the meta-tools."
    )
    limit: int = Field(default=8, ge=1, le=50, description="How many results a search returns by default.")
    expose_found: bool = Field(
        default=False,
        description="2025-11-25 sessions: the tools a search found join that session's tools/list, and "
        "the session is sent notifications/tools/list_changed.",
    )


class Selection(_Model):
    """Which of one server's tools, prompts or resources an endpoint exposes: globs matched against
    the server's own names (URIs for resources), like a server's `tools:` filter, and explicit
    names. An item is exposed if an `allow` glob or `names` has it and no `deny` glob matches it."""

    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)
    names: list[str] = Field(
        default_factory=list, description="Exact names (or URIs), exposed even when `allow` does not match."
    )

    @model_validator(mode="before")
    @classmethod
    def _listed(cls, data: Any) -> Any:
        # `tools: [a, b*]` is short for `tools: {allow: [a, b*]}` (a name is a glob of itself).
        if isinstance(data, list):
            return {"allow": data}
        return data


class ServerSelection(_Model):
    """What an endpoint takes from one server; an omitted kind is all of that kind."""

    tools: Selection = Field(default_factory=Selection)
    prompts: Selection = Field(default_factory=Selection)
    resources: Selection = Field(
        default_factory=Selection, description="Resources and resource templates, by (backend) URI."
    )


class EndpointAuth(_Model):
    """Who may use an endpoint (identities as the `auth` middleware names them). Unset: whoever may
    use the gateway. A caller matching neither list is refused with HTTP 403."""

    roles: list[str] | None = Field(
        default=None, description="Roles (a JWT's scopes count as roles) any of which admits a caller."
    )
    identities: list[str] | None = Field(default=None, description="Identity names admitted.")


_RESERVED_PATHS = ("/admin", "/healthz", "/readyz", "/metrics", "/.well-known")


class EndpointConfig(_Model):
    """An extra MCP endpoint (a virtual server): its own path, name and curated catalogue."""

    path: str = Field(
        pattern=r"^/[A-Za-z0-9._~/-]*$", description='Where it is served, e.g. "/mcp/research".'
    )
    name: str | None = Field(
        default=None, description="Its `serverInfo.name`; default: the gateway's `name`."
    )
    instructions: str | None = Field(default=None, description="The `instructions` clients are given.")
    servers: dict[str, ServerSelection | None] = Field(
        default_factory=dict,
        description="The servers it takes items from, each with what it takes (null: everything).",
    )
    auth: EndpointAuth = Field(default_factory=EndpointAuth)
    overrides: dict[str, ToolOverride] = Field(
        default_factory=dict,
        description="Per-tool overrides on this endpoint, by public tool name (over the server's own "
        "`overrides:`): rename, describe, hide or default arguments, tighten their schema.",
    )
    tool_search: ToolSearchConfig | None = Field(
        default=None,
        description="Tool search mode on this endpoint (the top-level `tool_search:` is the default "
        "endpoint's); unset: off.",
    )

    @property
    def route(self) -> str:
        return self.path.rstrip("/") or "/"


class GatewayConfig(_Model):
    name: str = "mcp-gateway"
    listen: ListenConfig = Field(default_factory=ListenConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    servers: dict[str, ServerSpec] = Field(default_factory=dict)
    middleware: list[MiddlewareSpec] = Field(default_factory=list)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    endpoints: list[EndpointConfig] = Field(
        default_factory=list,
        description="Extra MCP endpoints, each serving a curated part of the fleet on its own path.",
    )
    tool_search: ToolSearchConfig | None = Field(
        default=None, description="Tool search mode for large fleets; unset: off (the full list)."
    )

    @model_validator(mode="before")
    @classmethod
    def _infer_server_types(cls, data: Any) -> Any:
        # Desktop-client configs omit `type`: a `command` means stdio, a `url` means HTTP.
        if isinstance(data, dict) and isinstance(data.get("servers"), dict):
            servers = {}
            for name, spec in data["servers"].items():
                if isinstance(spec, dict) and "type" not in spec:
                    spec = {
                        **spec,
                        "type": "http" if "url" in spec else "docker" if "image" in spec else "stdio",
                    }
                elif isinstance(spec, dict) and spec.get("type") == "streamable-http":
                    spec = {**spec, "type": "http"}
                servers[name] = spec
            data = {**data, "servers": servers}
        return data

    @model_validator(mode="after")
    def _replicas_share_keys(self) -> GatewayConfig:
        if self.cluster.redis is not None and not self.state.keys:
            raise ValueError(
                "cluster.redis is set (several replicas) but state.keys is empty: each replica would "
                "seal session ids and requestState under a key of its own, and the others could not "
                "open them; set state.keys to the same secret on every replica, e.g. "
                "keys: ['${env:MCP_STATE_KEY}']"
            )
        return self

    @field_validator("servers")
    @classmethod
    def _check_names(cls, servers: dict[str, ServerSpec]) -> dict[str, ServerSpec]:
        owners: dict[str, str] = {}
        for name, spec in servers.items():
            if not _PREFIX.match(name) or SEPARATOR in name:
                raise ValueError(
                    f"server name {name!r} must use letters, digits, '_', '.', '-' and must not contain "
                    f"{SEPARATOR!r} (set `prefix:` to choose the namespace independently)"
                )
            # Checked here, not on the whole model, so that the error is keyed `servers`.
            prefix = name if spec.prefix is None else spec.prefix
            if prefix == "":
                continue  # unprefixed servers collide only by tool name; checked when catalogues merge
            if prefix in owners:
                raise ValueError(
                    f"servers {owners[prefix]!r} and {name!r} both use the namespace {prefix!r}; "
                    "give one of them a different `prefix:`"
                )
            owners[prefix] = name
        return servers

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, endpoints: list[EndpointConfig], info: ValidationInfo) -> list[EndpointConfig]:
        # Checked here, not on the whole model, so that the error is keyed `endpoints`.
        listen = info.data.get("listen")
        servers = info.data.get("servers")
        main = (listen.path.rstrip("/") or "/mcp") if isinstance(listen, ListenConfig) else "/mcp"
        taken = {main: "listen.path"}
        for index, endpoint in enumerate(endpoints):
            where = f"endpoints[{index}] ({endpoint.path})"
            route = endpoint.route
            if route in taken:
                raise ValueError(f"{where}: path {route!r} is already {taken[route]}'s; give it another path")
            for reserved in _RESERVED_PATHS:
                if route == reserved or route.startswith(reserved + "/"):
                    raise ValueError(
                        f"{where}: path {route!r} is the gateway's own {reserved}; use another path"
                    )
            taken[route] = f"endpoints[{index}]"
            if isinstance(servers, dict):
                unknown = [name for name in endpoint.servers if name not in servers]
                if unknown:
                    declared = ", ".join(servers) or "none"
                    raise ValueError(f"{where}: unknown server {unknown[0]!r} (declared servers: {declared})")
        return endpoints


def namespace_of(name: str, spec: StdioServer | HttpServer | DockerServer) -> str:
    return name if spec.prefix is None else spec.prefix
