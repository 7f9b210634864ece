"""PROTOCOL.md payloads -> core values for the remote adapter (server schemas are not ours)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from server.core import errors
from server.core.models import ContainerSnapshot, ResourceSample

__all__ = ["when", "uptime_of", "sample_of", "snapshot_of", "error_of"]

_ERRORS: dict[str, type[errors.FlowMgrError]] = {
    "image_not_found": errors.ImageNotFound,
    "container_not_found": errors.ContainerNotFound,
    "docker_api_error": errors.DockerApiError,
    "socket_error": errors.FlowSocketError,
    "socket_timeout_error": errors.FlowSocketTimeout,
    "socket_connection_error": errors.FlowSocketConnectionError,
    "validation_error": errors.InvalidRequest,
    "system_error": errors.InternalError,
}


def when(value: Any) -> datetime:
    """ISO 8601 or epoch seconds (PROTOCOL.md uses both) -> aware UTC; now when absent."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def uptime_of(value: Any) -> timedelta | None:
    """`"H:MM:SS"` -> timedelta; None for null or anything else."""
    if not isinstance(value, str):
        return None
    try:
        h, m, s = (int(p) for p in value.split(":"))
    except ValueError:
        return None
    return timedelta(hours=h, minutes=m, seconds=s)


def sample_of(usage: Any) -> ResourceSample | None:
    """`resource_usage` -> ResourceSample."""
    if not isinstance(usage, dict):
        return None
    return ResourceSample(
        cpu_percent=float(usage.get("cpu_percent", 0.0)),
        memory_usage=int(usage.get("memory_usage", 0)),
        memory_limit=int(usage.get("memory_limit", 0)),
        memory_percent=float(usage.get("memory_percent", 0.0)),
        network_rx_bytes=int(usage.get("network_rx_bytes", 0)),
        network_tx_bytes=int(usage.get("network_tx_bytes", 0)),
        disk_read_bytes=int(usage.get("disk_read_bytes", 0)),
        disk_write_bytes=int(usage.get("disk_write_bytes", 0)),
        timestamp=when(usage.get("timestamp")))


def snapshot_of(item: dict[str, Any], old: ContainerSnapshot | None = None) -> ContainerSnapshot:
    """A `container_list` item (or `container_created` answer) -> snapshot, keeping what we knew."""
    cid = str(item.get("id") or item.get("container_id"))
    return ContainerSnapshot(
        id=cid, name=str(item.get("name", cid[:12])), image=str(item.get("image", "")),
        state=item.get("status", old.state if old else "created"),
        health=old.health if old else "none",
        created=when(item.get("created")) if item.get("created") else (
            old.created if old else datetime.now(UTC)),
        started_at=old.started_at if old else None,
        socket_path=str(item.get("socket_path", "")),
        ports=dict(item.get("ports") or {}),
        exit_code=old.exit_code if old else None,
        socket_connected=old.socket_connected if old else False,
        last_communication=old.last_communication if old else None,
        resources=old.resources if old else None)


def error_of(payload: dict[str, Any]) -> errors.FlowMgrError:
    """An `error` payload -> the matching exception of the taxonomy."""
    cls = _ERRORS.get(str(payload.get("error_type")), errors.InternalError)
    message = str(payload.get("message", "the server refused the request"))
    details = dict(payload.get("details") or {})
    if cls is errors.InvalidRequest:
        return errors.InvalidRequest(message, field=details.get("field"), details=details)
    return cls(message, details=details)
