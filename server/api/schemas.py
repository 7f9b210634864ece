"""Pydantic models for every Socket.IO payload; the only place wire time formats are chosen."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.core.errors import InvalidRequest
from server.core.events import (
    ActivityLogged,
    ContainerCrashed,
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    FlowMessageReceived,
    HealthChanged,
    LogLineReceived,
    StatusReported,
    now,
)
from server.core.models import (
    ContainerSnapshot,
    ContainerStatus,
    CreateSpec,
    Health,
    ResourceSample,
    State,
)

__all__ = [
    "Wire", "iso", "epoch", "uptime_text", "parse_request", "request_id_of",
    "RequestIn", "ContainerRef", "CreateContainerRequest", "UpdateContainerRequest",
    "SendMessageRequest", "GetLogsRequest", "ListContainersRequest",
    "ContainerCreatedOut", "ContainerStateOut", "ContainerUpdatedOut", "MessageSentOut",
    "ResourceUsageOut", "ContainerStatusOut", "ContainerItemOut", "ContainerListOut",
    "ContainerLogsOut", "LogSubscriptionOut", "ConnectedOut", "ErrorOut",
    "StatusChangedOut", "HealthWarningOut", "CrashDetails", "ContainerCrashedOut",
    "StatusUpdateOut", "ActivityLogOut", "MessageReceivedOut", "ContainerLogOut",
    "EngineStatusOut",
]

# Docker's own rule for container names, checked here so the error names the field.
_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"


def iso(at: datetime | None) -> str | None:
    """ISO 8601 text of an aware datetime (PROTOCOL.md's "ISO 8601")."""
    return None if at is None else at.isoformat()


def epoch(at: datetime) -> float:
    """Epoch seconds as a float (PROTOCOL.md's "epoch float")."""
    return at.timestamp()


def uptime_text(uptime: timedelta | None) -> str | None:
    """"H:MM:SS" (hours unbounded), or None when not running."""
    if uptime is None:
        return None
    seconds = max(0, int(uptime.total_seconds()))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------- requests (client -> server)


class RequestIn(BaseModel):
    """Fields every request may carry."""

    # Strict: "5" is not a number and 5 is not a name; unknown keys are ignored, as
    # existing clients may send more than the contract lists.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    request_id: str | None = Field(default=None, max_length=256)
    """ext: echoed in the answer or error."""


class ListContainersRequest(RequestIn):
    """`list_containers`: no fields."""


class ContainerRef(RequestIn):
    """A request naming one container (full id, unique prefix or name)."""

    container_id: str = Field(min_length=1, max_length=256)


class UpdateContainerRequest(ContainerRef):
    """`update_container`."""

    code_path: str = Field(min_length=1, max_length=4096)


class SendMessageRequest(ContainerRef):
    """`send_message`."""

    message: dict[str, Any]


class GetLogsRequest(ContainerRef):
    """ext `get_container_logs`."""

    tail: int = Field(default=100, ge=0, le=10_000)


class CreateContainerRequest(RequestIn):
    """`create_container`."""

    name: str = Field(pattern=_NAME_PATTERN)
    image: str | None = Field(default=None, min_length=1, max_length=512)
    environment: dict[str, str] = Field(default_factory=dict)
    volumes: dict[str, str] = Field(default_factory=dict)
    """Host path -> container path."""
    ports: dict[str, int] = Field(default_factory=dict)
    """Container port ("8080" or "8080/tcp") -> host port; the core's policy checks the values."""

    def to_spec(self) -> CreateSpec:
        """The core's create request."""
        return CreateSpec(name=self.name, image=self.image, environment=dict(self.environment),
                          volumes=dict(self.volumes), ports=dict(self.ports))


RequestT = TypeVar("RequestT", bound=RequestIn)


def request_id_of(data: Any) -> str | None:
    """The request's `request_id` when it is a string (only strings are echoed)."""
    if isinstance(data, dict):
        rid = data.get("request_id")
        if isinstance(rid, str) and len(rid) <= 256:
            return rid
    return None


def parse_request(schema: type[RequestT], data: Any) -> RequestT:
    """Validate a payload; raise InvalidRequest naming the first bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidRequest(f"the payload must be a JSON object, not {_json_type(data)}",
                             details={"received": _json_type(data)})
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        problems = [{"field": ".".join(str(p) for p in e["loc"]) or "payload", "message": e["msg"]}
                    for e in err.errors(include_url=False, include_input=False)[:10]]
        first = problems[0]
        raise InvalidRequest(f"{first['field']}: {first['message']}", field=first["field"],
                             details={"errors": problems}) from None


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- answers (server -> requester)
#
# The models below are the contract of every outgoing payload. The `payload()` builders make
# plain dicts of exactly that shape from the core's typed values: validating our own output
# on every emit costs several times more than building it (bench/RESULTS.md), so the unit
# tests validate each builder against its model instead.

Wire = dict[str, Any]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContainerCreatedOut(_Out):
    """`container_created`."""

    container_id: str
    name: str
    image: str
    status: Literal["created"] = "created"
    socket_path: str
    ports: dict[str, int | None]

    @staticmethod
    def payload(snap: ContainerSnapshot) -> Wire:
        """From the new container's snapshot."""
        return {"container_id": snap.id, "name": snap.name, "image": snap.image,
                "status": "created", "socket_path": snap.socket_path, "ports": dict(snap.ports)}


class ContainerStateOut(_Out):
    """`container_started` / `_stopped` / `_restarted` / `_deleted`."""

    container_id: str
    status: Literal["running", "stopped", "deleted"]

    @staticmethod
    def payload(container_id: str, status: Literal["running", "stopped", "deleted"]) -> Wire:
        """The answer to a lifecycle request."""
        return {"container_id": container_id, "status": status}


class ContainerUpdatedOut(_Out):
    """`container_updated`."""

    container_id: str
    code_path: str
    status: Literal["updated"] = "updated"

    @staticmethod
    def payload(container_id: str, code_path: str) -> Wire:
        """The answer to `update_container`."""
        return {"container_id": container_id, "code_path": code_path, "status": "updated"}


class MessageSentOut(_Out):
    """`message_sent`."""

    container_id: str
    message: dict[str, Any]
    status: Literal["sent"] = "sent"

    @staticmethod
    def payload(container_id: str, message: dict[str, Any]) -> Wire:
        """The answer to `send_message`."""
        return {"container_id": container_id, "message": message, "status": "sent"}


class ResourceUsageOut(_Out):
    """`resource_usage`: bytes as integers, percents as floats, timestamp ISO 8601."""

    cpu_percent: float
    memory_usage: int
    memory_limit: int
    memory_percent: float
    network_rx_bytes: int
    network_tx_bytes: int
    disk_read_bytes: int
    disk_write_bytes: int
    timestamp: str

    @staticmethod
    def payload(sample: ResourceSample | None) -> Wire | None:
        """From a core sample (None stays None)."""
        if sample is None:
            return None
        return {"cpu_percent": float(sample.cpu_percent),
                "memory_usage": int(sample.memory_usage),
                "memory_limit": int(sample.memory_limit),
                "memory_percent": float(sample.memory_percent),
                "network_rx_bytes": int(sample.network_rx_bytes),
                "network_tx_bytes": int(sample.network_tx_bytes),
                "disk_read_bytes": int(sample.disk_read_bytes),
                "disk_write_bytes": int(sample.disk_write_bytes),
                "timestamp": sample.timestamp.isoformat()}


class ContainerStatusOut(_Out):
    """`container_status`."""

    container_id: str
    state: State
    health: Health
    uptime: str | None
    socket_connected: bool
    last_communication: str | None
    resource_usage: ResourceUsageOut | None

    @staticmethod
    def payload(status: ContainerStatus) -> Wire:
        """From the core's status value."""
        return {"container_id": status.container_id, "state": status.state,
                "health": status.health, "uptime": uptime_text(status.uptime),
                "socket_connected": status.socket_connected,
                "last_communication": iso(status.last_communication),
                "resource_usage": ResourceUsageOut.payload(status.resource_usage)}


class ContainerItemOut(_Out):
    """One `container_list` item."""

    id: str
    name: str
    status: State
    image: str
    created: str
    socket_path: str
    ports: dict[str, int | None]

    @staticmethod
    def payload(snap: ContainerSnapshot) -> Wire:
        """From a snapshot."""
        return {"id": snap.id, "name": snap.name, "status": snap.state, "image": snap.image,
                "created": snap.created.isoformat(), "socket_path": snap.socket_path,
                "ports": dict(snap.ports)}


class ContainerListOut(_Out):
    """`container_list`."""

    containers: list[ContainerItemOut]
    count: int

    @staticmethod
    def payload(snaps: list[ContainerSnapshot]) -> Wire:
        """From the manager's snapshot."""
        return {"containers": [ContainerItemOut.payload(s) for s in snaps], "count": len(snaps)}


class ContainerLogsOut(_Out):
    """ext `container_logs`."""

    container_id: str
    lines: list[str]
    truncated: bool = False
    """ext: older lines were left out to keep the answer within `docker.max_log_bytes`."""

    @staticmethod
    def payload(container_id: str, lines: list[str], truncated: bool = False) -> Wire:
        """The answer to `get_container_logs`."""
        return {"container_id": container_id, "lines": list(lines), "truncated": truncated}


class LogSubscriptionOut(_Out):
    """ext: the ack of `subscribe_logs` / `unsubscribe_logs` (lines come as `container_log`)."""

    container_id: str
    status: Literal["subscribed", "unsubscribed"]

    @staticmethod
    def payload(container_id: str, status: Literal["subscribed", "unsubscribed"]) -> Wire:
        """The ack of a log (un)subscription."""
        return {"container_id": container_id, "status": status}


class ConnectedOut(_Out):
    """`connected`: the welcome."""

    message: str
    version: str
    server_id: str


class ErrorOut(_Out):
    """`error`: to the requester only."""

    error: Literal[True] = True
    error_type: Literal["image_not_found", "container_not_found", "docker_api_error",
                        "socket_error", "socket_timeout_error", "socket_connection_error",
                        "validation_error", "system_error"]
    message: str
    details: dict[str, Any]
    timestamp: str


# ---------------------------------------------------------------- server push (broadcasts)


class StatusChangedOut(_Out):
    """`status_changed` (timestamp: epoch float)."""

    container_id: str
    old_state: str
    new_state: str
    timestamp: float

    @staticmethod
    def payload(ev: ContainerStateChanged) -> Wire:
        """From the core event."""
        return {"container_id": ev.container_id, "old_state": ev.old_state,
                "new_state": ev.new_state, "timestamp": epoch(ev.at)}


class HealthWarningOut(_Out):
    """`container_health_warning` (timestamp: epoch float)."""

    container_id: str
    health: Health
    timestamp: float

    @staticmethod
    def payload(ev: HealthChanged) -> Wire:
        """From the core event."""
        return {"container_id": ev.container_id, "health": ev.new_health,
                "timestamp": epoch(ev.at)}


class CrashDetails(_Out):
    """`crash_details`."""

    error: str
    logs: str
    """The tail of the container's output, one line per row."""


class ContainerCrashedOut(_Out):
    """`container_crashed` (timestamp: epoch float)."""

    container_id: str
    exit_code: int
    crash_details: CrashDetails
    timestamp: float

    @staticmethod
    def payload(ev: ContainerCrashed) -> Wire:
        """From the core event."""
        return {"container_id": ev.container_id, "exit_code": ev.exit_code,
                "crash_details": {"error": ev.error, "logs": "\n".join(ev.logs)},
                "timestamp": epoch(ev.at)}


class StatusBody(_Out):
    """The `status` object of `container_status_update`."""

    state: State
    health: Health
    socket_connected: bool
    uptime: str | None
    resource_usage: ResourceUsageOut | None


class StatusUpdateOut(_Out):
    """`container_status_update` (periodic)."""

    container_id: str
    status: StatusBody

    @staticmethod
    def payload(ev: StatusReported) -> Wire:
        """From the core event."""
        st = ev.status
        return {"container_id": st.container_id, "status": {
            "state": st.state, "health": st.health, "socket_connected": st.socket_connected,
            "uptime": uptime_text(st.uptime),
            "resource_usage": ResourceUsageOut.payload(st.resource_usage)}}


class ActivityLogOut(_Out):
    """`activity_log` (timestamp: ISO 8601)."""

    activity_type: str
    container_id: str | None
    message: str
    details: dict[str, Any]
    timestamp: str

    @staticmethod
    def payload(ev: ActivityLogged) -> Wire:
        """From the core event (masked by the core where it wrote the line)."""
        return {"activity_type": ev.activity_type, "container_id": ev.container_id,
                "message": ev.message, "details": dict(ev.details),
                "timestamp": ev.at.isoformat()}


class MessageReceivedOut(_Out):
    """`message_received` (timestamp: ISO 8601)."""

    container_id: str
    message: dict[str, Any]
    timestamp: str

    @staticmethod
    def payload(ev: FlowMessageReceived) -> Wire:
        """From the core event."""
        return {"container_id": ev.container_id, "message": ev.message,
                "timestamp": ev.at.isoformat()}


class ContainerLogOut(_Out):
    """ext `container_log` (to the container's log room; timestamp: ISO 8601)."""

    container_id: str
    line: str
    timestamp: str

    @staticmethod
    def payload(ev: LogLineReceived) -> Wire:
        """From the core event."""
        return {"container_id": ev.container_id, "line": ev.line,
                "timestamp": ev.at.isoformat()}


class EngineStatusOut(_Out):
    """ext `engine_status` (to every client; timestamp: ISO 8601 of when the manager learned it)."""

    available: bool
    reason: str | None
    timestamp: str

    @staticmethod
    def payload(ev: DockerConnectionLost | DockerConnectionRestored) -> Wire:
        """From the core's loss or return event."""
        reason = ev.reason if isinstance(ev, DockerConnectionLost) else None
        return {"available": reason is None, "reason": reason, "timestamp": ev.at.isoformat()}

    @staticmethod
    def current(available: bool, change: DockerConnectionLost | DockerConnectionRestored | None
                ) -> Wire:
        """For a client just connected: the last change while it still holds, else `now`."""
        if change is not None and isinstance(change, DockerConnectionRestored) == available:
            return EngineStatusOut.payload(change)
        # no change published yet: up from the start, or not reached yet
        return {"available": available,
                "reason": None if available else "the Docker Engine has not answered yet",
                "timestamp": now().isoformat()}
