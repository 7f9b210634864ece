"""The hub's errors for requests to agents, in the core's taxonomy (docs/PROTOCOL.md codes)."""

from __future__ import annotations

from typing import Any

from server.core.errors import (
    ContainerNotFound,
    DockerApiError,
    FlowMgrError,
    FlowSocketConnectionError,
    FlowSocketError,
    FlowSocketTimeout,
    ImageNotFound,
    InternalError,
    InvalidRequest,
    ServerUnreachable,
)

__all__ = ["NodeNotConnected", "AgentTimeout", "agent_error"]


class NodeNotConnected(ServerUnreachable):
    """The node's agent has no live link to the hub (wire code `docker_api_error`,
    `details.reason`: "node_not_connected", plus the node and why its link is down)."""


class AgentTimeout(ServerUnreachable):
    """The agent did not reply within the request's deadline (`details.reason`:
    "agent_timeout")."""


_BY_TYPE: dict[str, type[FlowMgrError]] = {
    "container_not_found": ContainerNotFound,
    "docker_api_error": DockerApiError,
    "image_not_found": ImageNotFound,
    "socket_error": FlowSocketError,
    "socket_timeout_error": FlowSocketTimeout,
    "socket_connection_error": FlowSocketConnectionError,
    "validation_error": InvalidRequest,
    "system_error": InternalError,
}


def agent_error(
    error_type: str, message: str, details: dict[str, Any], node_id: str
) -> FlowMgrError:
    """An agent's failed reply as the error the same failure raises on one host, so a client
    sees the same `error_type`; `details.node_id` says which node's agent answered."""
    cls = _BY_TYPE.get(error_type, InternalError)
    merged = {**details, "node_id": node_id}
    return cls(message, details=merged)
