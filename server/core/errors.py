"""Every error flowmgr raises: one class per docs/PROTOCOL.md error type."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "FlowMgrError",
    "ImageNotFound",
    "ContainerNotFound",
    "DockerApiError",
    "DockerUnavailable",
    "ServerUnreachable",
    "FlowSocketError",
    "DescriptorBudgetExhausted",
    "FlowSocketTimeout",
    "FlowSocketConnectionError",
    "FrameError",
    "InvalidRequest",
    "InternalError",
    "ConfigError",
]


class FlowMgrError(Exception):
    """Root of the taxonomy; `error_type` is the docs/PROTOCOL.md code sent on the wire."""

    error_type: ClassVar[str] = "system_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class ImageNotFound(FlowMgrError):
    """The image is not present on the engine (and nothing may be pulled)."""

    error_type = "image_not_found"


class ContainerNotFound(FlowMgrError):
    """No managed container matches the reference (unmanaged ones are invisible)."""

    error_type = "container_not_found"


class DockerApiError(FlowMgrError):
    """The engine refused or failed a call; `details` keeps its status and explanation."""

    error_type = "docker_api_error"


class DockerUnavailable(DockerApiError):
    """The engine cannot be reached at all."""


class ServerUnreachable(DockerApiError):
    """A remote panel's link to its manager is down or the manager did not answer in time
    (the engine behind it is unknown; its wire code stays `docker_api_error`)."""


class FlowSocketError(FlowMgrError):
    """The flow channel failed (bad frame, protocol violation)."""

    error_type = "socket_error"


class DescriptorBudgetExhausted(FlowSocketError):
    """No descriptors left for a new flow's socket (server/core/fd_budget.py): the flow is
    refused, the flows that have sockets keep them."""


class FrameError(FlowSocketError):
    """A frame broke the channel's rules (too large, not JSON, not an object, truncated)."""


class FlowSocketTimeout(FlowMgrError):
    """The flow did not take a frame within the send timeout."""

    error_type = "socket_timeout_error"


class FlowSocketConnectionError(FlowMgrError):
    """The flow is not connected to its socket."""

    error_type = "socket_connection_error"


class InvalidRequest(FlowMgrError):
    """Bad input; `details["field"]` names the offending field when there is one."""

    error_type = "validation_error"

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        merged = dict(details or {})
        if field is not None:
            merged.setdefault("field", field)
        super().__init__(message, details=merged)
        self.field = field


class InternalError(FlowMgrError):
    """Anything unexpected: a bug, reported as `system_error`."""

    error_type = "system_error"


class ConfigError(FlowMgrError):
    """The configuration cannot be honoured; start-up stops with this message."""

    error_type = "validation_error"
