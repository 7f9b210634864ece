"""`error` (server -> the requesting client): its shape, and the exception it decodes to."""

from __future__ import annotations

from typing import Any, Literal

from server.core import errors
from server.wire.base import WireModel

__all__ = ["ErrorOut", "ERROR_TYPES"]

ERROR_TYPES: dict[str, type[errors.FlowMgrError]] = {
    "image_not_found": errors.ImageNotFound,
    "container_not_found": errors.ContainerNotFound,
    "docker_api_error": errors.DockerApiError,
    "socket_error": errors.FlowSocketError,
    "socket_timeout_error": errors.FlowSocketTimeout,
    "socket_connection_error": errors.FlowSocketConnectionError,
    "validation_error": errors.InvalidRequest,
    "system_error": errors.InternalError,
}
"""Each `error_type` on the wire and the class of the taxonomy it names."""


class ErrorOut(WireModel):
    """`error`: to the requester only (built by `server.api.errors.error_payload`)."""

    error: Literal[True] = True
    error_type: Literal[
        "image_not_found",
        "container_not_found",
        "docker_api_error",
        "socket_error",
        "socket_timeout_error",
        "socket_connection_error",
        "validation_error",
        "system_error",
    ]
    message: str
    details: dict[str, Any]
    timestamp: str

    def to_core(self) -> errors.FlowMgrError:
        """The matching exception of the taxonomy."""
        cls = ERROR_TYPES[self.error_type]
        details = dict(self.details)
        if cls is errors.InvalidRequest:
            return errors.InvalidRequest(self.message, field=details.get("field"), details=details)
        return cls(self.message, details=details)
