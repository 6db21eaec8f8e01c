"""Every error the gateway raises, and the one place they become JSON-RPC errors.

Hierarchy::

    GatewayError                      base; carries a JSON-RPC code and a client-safe message
    ├── ConfigError                   a config file is wrong (file, key path, what to do)
    ├── SecretError                   a ${env:...}/${file:...} reference cannot be resolved
    ├── BadArguments                  a gateway tool's (tool search's) arguments are not valid
    ├── RoutingError                  no such tool / resource / prompt in the merged catalogue
    │   ├── UnknownName               "Unknown tool: X": the one wording of a name that is not there
    │   └── TaskGone                  a task whose backend restarted since (the task went with it)
    ├── InvalidArguments              a tool call's arguments break the tool's overrides
    ├── MissingCapability             a capability was not declared (by the client a backend asks,
    │                                 or by a client using an extension's methods)
    ├── InvalidRequestState           a `requestState` the gateway will not continue
    ├── ShuttingDown                  the gateway is draining: no new work; what is left is ended
    ├── ClusterUnavailable            the replicas' shared store (Redis) is unreachable: a change
    │                                 that must reach every replica is refused, not half applied
    ├── BackendError                  something about one backend
    │   ├── BackendUnavailable        not running (starting, crashed, stopped, circuit open)
    │   ├── BackendTimeout            no answer within the server's `timeout`
    │   └── BackendStartError         failed to launch or to complete the MCP handshake
    └── MiddlewareError               the request was refused by the chain
        ├── Denied                    authorization said no
        │   └── Hidden                a name the identity may not see: worded as `UnknownName`
        ├── RateLimited               a limit was hit (retry-after in `data`)
        └── ChainFailure              a middleware raised: the chain fails closed

Third-party exceptions (the `mcp` SDK's `MCPError`, `OSError` from spawning, pydantic's
`ValidationError`) are translated where they enter the gateway; `to_jsonrpc_error` is the only
function that turns any exception into an `ErrorData` for a client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    REQUEST_TIMEOUT,
    ErrorData,
)

if TYPE_CHECKING:
    # Imported where used: `import mcp` loads the whole SDK (~0.4 s), and the command line's config
    # check needs this module, not the SDK. Whoever raises an MCPError has loaded it already.
    from mcp.shared.exceptions import MCPError

logger = logging.getLogger(__name__)

# Server-defined codes live in -32000..-32099 (JSON-RPC 2.0 §5.1). They are part of the public
# contract: clients and scripts may switch on them, so they never change meaning.
BACKEND_UNAVAILABLE = -32010
DENIED = -32003
RATE_LIMITED = -32029
CHAIN_FAILURE = INTERNAL_ERROR


class GatewayError(Exception):
    """Base class. `message` is safe to show a client; `data` is structured detail."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str, *, data: Any = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code


class ConfigError(GatewayError):
    """A configuration problem found before anything starts.

    `problems` holds one line per problem, each naming the file, the key path and the fix.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class SecretError(GatewayError):
    """A secret reference could not be resolved. The message names the reference, never a value."""


class BadArguments(GatewayError):
    """Arguments the gateway's own tools (`gateway.search`) cannot take: the message says which."""

    code = INVALID_PARAMS


class RoutingError(GatewayError):
    code = INVALID_PARAMS


class UnknownName(RoutingError):
    """No tool, prompt or resource of that name (`kind`: tool | prompt | resource)."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"Unknown {kind}: {name}")


class EndpointGone(GatewayError):
    """The endpoint a request came in on was removed (a reload) while the request was on its way."""

    code = INVALID_REQUEST

    def __init__(self, path: str) -> None:
        super().__init__(f"the endpoint {path} no longer exists (removed by a configuration reload)")


class TaskGone(RoutingError):
    """A task (tasks extension) whose backend restarted since it was created: the task is lost."""

    def __init__(self, task_id: str, server: str) -> None:
        super().__init__(
            f"Unknown task: {task_id} (server {server!r} restarted since it was created; its tasks are gone)",
            data={"server": server},
        )


class InvalidArguments(GatewayError):
    """A call's arguments that the tool's overrides refuse (`gateway.overrides`): a hidden argument
    the client sent, or a value outside a tightened schema. Refused before the backend is called."""

    code = INVALID_PARAMS

    def __init__(self, tool: str, argument: str, reason: str) -> None:
        super().__init__(
            f"Invalid arguments for tool {tool}: {reason}", data={"tool": tool, "argument": argument}
        )


class MissingCapability(GatewayError):
    """A backend asked the client for something (sampling, elicitation, roots) that the client did
    not declare it can do: the backend is told at once, as the spec's SEP-2133 error, with the
    capabilities it would need (`required`, the `ClientCapabilities` shape). Also what a client
    gets for a request of an extension it did not declare (`tasks/*`)."""

    code = MISSING_REQUIRED_CLIENT_CAPABILITY

    def __init__(self, method: str, name: str, required: dict[str, Any]) -> None:
        super().__init__(
            f"The client did not declare the {name} capability that {method} needs",
            data={"requiredCapabilities": required},
        )


class InvalidRequestState(GatewayError):
    """A client's `requestState` is not one this gateway can continue: tampered with, expired,
    replayed, another identity's, or sealed with a key it does not hold. The client is told only
    what the SDK's own boundary says; `reason` is for the gateway's log."""

    code = INVALID_PARAMS

    def __init__(self, reason: str, message: str = "Invalid or expired requestState") -> None:
        self.reason = reason
        super().__init__(message, data={"reason": "invalid_request_state"})


class HeldElsewhere(InvalidRequestState):
    """A `requestState` continuing a call another gateway process holds (`process`): continued
    there over the cluster's bus when there is one, else refused as invalid."""

    def __init__(self, process: str) -> None:
        self.process = process
        super().__init__(
            "the call is held by another gateway process",
            "This requestState continues a call held by another gateway process; start the call again",
        )


class ShuttingDown(GatewayError):
    """The gateway is shutting down: a new request is refused, a call still running at the drain
    deadline is ended. Same code as an unavailable backend: retry elsewhere or later."""

    code = BACKEND_UNAVAILABLE

    def __init__(self, message: str = "gateway shutting down") -> None:
        super().__init__(message)


class ClusterUnavailable(GatewayError):
    """The shared store the replicas agree through (`cluster.redis`) is unreachable, so a change
    that must apply to every replica (a registration, a removal, a pin approval) is refused rather
    than applied to this replica only."""


class BackendError(GatewayError):
    def __init__(self, server: str, message: str, *, data: Any = None, code: int | None = None) -> None:
        self.server = server
        super().__init__(message, data={"server": server, **(data or {})}, code=code)


class BackendUnavailable(BackendError):
    code = BACKEND_UNAVAILABLE


class BackendTimeout(BackendError):
    code = REQUEST_TIMEOUT


class ClientTimeout(GatewayError):
    """The client did not answer a backend's question (on its stream) within the backend's
    `timeout`: the call ends rather than wait on it for ever."""

    code = REQUEST_TIMEOUT


class EndlessRounds(BackendError):
    """A backend kept answering `input_required` past the gateway's bound on rounds for one call."""

    def __init__(self, server: str, rounds: int) -> None:
        super().__init__(server, f"server {server!r} asked for input more than {rounds} times in one call")


class BackendStartError(BackendError):
    code = BACKEND_UNAVAILABLE


class MiddlewareError(GatewayError):
    pass


class Denied(MiddlewareError):
    code = DENIED


class Hidden(Denied):
    """Authorization refused a name the identity may not even see (its lists leave it out).

    Inside the gateway it is a denial like any other (`code` stays DENIED, so audit and telemetry
    record it as one); a client gets `public`, exactly the error of a name that does not exist,
    so a refusal never tells it which hidden names exist.
    """

    def __init__(self, kind: str, name: str) -> None:
        self.public = UnknownName(kind, name)
        super().__init__(self.public.message)


class RateLimited(MiddlewareError):
    code = RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float, limit: str) -> None:
        super().__init__(message, data={"retry_after": round(retry_after, 3), "limit": limit})


class ChainFailure(MiddlewareError):
    code = CHAIN_FAILURE


def to_jsonrpc_error(exc: BaseException) -> ErrorData:
    """Map any exception to the JSON-RPC error a client sees.

    Backend errors pass through with their own code and message (that is the backend talking to
    the client, as if the gateway were not there); unknown exceptions become a generic internal
    error, because their text may hold paths or secrets.
    """
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, Hidden):
        exc = exc.public
    if isinstance(exc, GatewayError):
        return ErrorData(code=exc.code, message=exc.message, data=exc.data)
    if isinstance(exc, MCPError):
        return exc.error
    logger.error("unexpected error", exc_info=exc)
    return ErrorData(code=INTERNAL_ERROR, message="Internal gateway error")


def as_mcp_error(exc: BaseException) -> MCPError:
    """`to_jsonrpc_error` in the form the SDK's server runner sends on the wire."""
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, MCPError):
        return exc
    return MCPError.from_error_data(to_jsonrpc_error(exc))
