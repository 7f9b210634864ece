"""Events the server sends on its own: each one's name, shape, encoder and decoder."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from server.core.events import (
    ActivityLogged,
    ContainerCrashed,
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    Event,
    FlowMessageReceived,
    HealthChanged,
    LogLineReceived,
    NodeStatusReported,
    QueuedMessageDelivered,
    StatsSampled,
    StatusReported,
    now,
)
from server.core.models import ContainerStatus, Health, State
from server.wire.answers import ResourceUsageOut, sample_of
from server.wire.base import Wire, WireModel
from server.wire.times import epoch, from_epoch, from_iso, uptime_of, uptime_text

__all__ = [
    "Push",
    "StatusChangedOut",
    "HealthWarningOut",
    "CrashDetails",
    "ContainerCrashedOut",
    "StatusBody",
    "StatusUpdateOut",
    "ActivityLogOut",
    "MessageReceivedOut",
    "ContainerLogOut",
    "EngineStatusOut",
    "MessageDeliveredOut",
    "ContainerStatsOut",
    "NodeStatusOut",
    "PUSHES",
    "BROADCASTS",
]


class Push(WireModel):
    """A server-initiated event: `event` is its name on the wire."""

    event: ClassVar[str]
    EXT_OPTIONAL: ClassVar[tuple[str, ...]] = ()
    """ext fields left out (not null) when unset, like `seq`."""
    seq: int | None = Field(default=None, ge=0)
    """ext: the event's place in the journal; absent on pushes that are not journalled."""

    @model_serializer(mode="wrap")
    def _seq_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dumped as pushed: a push without a seq has no `seq` key (not `"seq": null`)."""
        out: dict[str, Any] = handler(self)
        for key in ("seq", *self.EXT_OPTIONAL):
            if out.get(key) is None:
                out.pop(key, None)
        return out


class StatusChangedOut(Push):
    """`status_changed` (timestamp: epoch float); a cluster hub adds ext `node` (where the flow
    runs now) and `reason` (why it is `unknown`)."""

    event: ClassVar[str] = "status_changed"
    container_id: str
    old_state: str
    new_state: str
    timestamp: float
    node: str | None = None
    reason: str | None = None
    EXT_OPTIONAL: ClassVar[tuple[str, ...]] = ("node", "reason")

    @staticmethod
    def payload(ev: ContainerStateChanged) -> Wire:
        """From the core event."""
        out: Wire = {
            "container_id": ev.container_id,
            "old_state": ev.old_state,
            "new_state": ev.new_state,
            "timestamp": epoch(ev.at),
        }
        if ev.snapshot.node is not None:
            out["node"] = ev.snapshot.node
        if ev.reason is not None:
            out["reason"] = ev.reason
        return out

    @property
    def at(self) -> datetime:
        """When the server saw the change."""
        return from_epoch(self.timestamp)


class HealthWarningOut(Push):
    """`container_health_warning` (timestamp: epoch float)."""

    event: ClassVar[str] = "container_health_warning"
    container_id: str
    health: Health
    timestamp: float

    @staticmethod
    def payload(ev: HealthChanged) -> Wire:
        """From the core event."""
        return {"container_id": ev.container_id, "health": ev.new_health, "timestamp": epoch(ev.at)}

    def to_core(self, old_health: str) -> HealthChanged:
        """The core event (the warning does not carry the health before: `old_health`)."""
        return HealthChanged(
            container_id=self.container_id,
            old_health=old_health,
            new_health=self.health,
            at=from_epoch(self.timestamp),
        )


class CrashDetails(WireModel):
    """`crash_details`."""

    error: str
    logs: str
    """The tail of the container's output, one line per row."""


class ContainerCrashedOut(Push):
    """`container_crashed` (timestamp: epoch float)."""

    event: ClassVar[str] = "container_crashed"
    container_id: str
    exit_code: int
    crash_details: CrashDetails
    timestamp: float

    @staticmethod
    def payload(ev: ContainerCrashed) -> Wire:
        """From the core event."""
        return {
            "container_id": ev.container_id,
            "exit_code": ev.exit_code,
            "crash_details": {"error": ev.error, "logs": "\n".join(ev.logs)},
            "timestamp": epoch(ev.at),
        }

    def to_core(self, name: str) -> ContainerCrashed:
        """The core event (the crash does not carry the container's `name`)."""
        return ContainerCrashed(
            container_id=self.container_id,
            name=name,
            exit_code=self.exit_code,
            error=self.crash_details.error,
            logs=self.crash_details.logs.splitlines(),
            at=from_epoch(self.timestamp),
        )


class StatusBody(WireModel):
    """The `status` object of `container_status_update`."""

    state: State
    health: Health
    socket_connected: bool
    uptime: str | None
    resource_usage: ResourceUsageOut | None


class StatusUpdateOut(Push):
    """`container_status_update` (periodic)."""

    event: ClassVar[str] = "container_status_update"
    container_id: str
    status: StatusBody

    @staticmethod
    def payload(ev: StatusReported) -> Wire:
        """From the core event."""
        st = ev.status
        return {
            "container_id": st.container_id,
            "status": {
                "state": st.state,
                "health": st.health,
                "socket_connected": st.socket_connected,
                "uptime": uptime_text(st.uptime),
                "resource_usage": ResourceUsageOut.payload(st.resource_usage),
            },
        }

    def to_core(self, name: str) -> ContainerStatus:
        """The core's status value (the update carries neither `name` nor the last
        communication)."""
        st = self.status
        return ContainerStatus(
            container_id=self.container_id,
            name=name,
            state=st.state,
            health=st.health,
            uptime=uptime_of(st.uptime),
            socket_connected=st.socket_connected,
            last_communication=None,
            resource_usage=sample_of(st.resource_usage),
        )


class ActivityLogOut(Push):
    """`activity_log` (timestamp: ISO 8601)."""

    event: ClassVar[str] = "activity_log"
    activity_type: str
    container_id: str | None
    message: str
    details: dict[str, Any]
    timestamp: str

    @staticmethod
    def payload(ev: ActivityLogged) -> Wire:
        """From the core event (masked by the core where it wrote the line)."""
        return {
            "activity_type": ev.activity_type,
            "container_id": ev.container_id,
            "message": ev.message,
            "details": dict(ev.details),
            "timestamp": ev.at.isoformat(),
        }

    def to_core(self) -> ActivityLogged:
        """The core event."""
        return ActivityLogged(
            activity_type=self.activity_type,
            container_id=self.container_id,
            message=self.message,
            details=dict(self.details),
            at=from_iso(self.timestamp),
        )


class MessageReceivedOut(Push):
    """`message_received` (timestamp: ISO 8601)."""

    event: ClassVar[str] = "message_received"
    container_id: str
    message: dict[str, Any]
    timestamp: str

    @staticmethod
    def payload(ev: FlowMessageReceived) -> Wire:
        """From the core event."""
        return {
            "container_id": ev.container_id,
            "message": ev.message,
            "timestamp": ev.at.isoformat(),
        }

    def to_core(self) -> FlowMessageReceived:
        """The core event."""
        return FlowMessageReceived(
            container_id=self.container_id, message=dict(self.message), at=from_iso(self.timestamp)
        )


class MessageDeliveredOut(Push):
    """ext `message_delivered`: the flow acknowledged a queued message (timestamp: ISO 8601)."""

    event: ClassVar[str] = "message_delivered"
    container_id: str
    message_id: str
    timestamp: str

    @staticmethod
    def payload(ev: QueuedMessageDelivered) -> Wire:
        """From the core event."""
        return {
            "container_id": ev.container_id,
            "message_id": ev.message_id,
            "timestamp": ev.at.isoformat(),
        }

    def to_core(self) -> QueuedMessageDelivered:
        """The core event."""
        return QueuedMessageDelivered(
            container_id=self.container_id, message_id=self.message_id, at=from_iso(self.timestamp)
        )


class ContainerLogOut(Push):
    """ext `container_log` (to the container's log room; timestamp: ISO 8601)."""

    event: ClassVar[str] = "container_log"
    container_id: str
    line: str
    timestamp: str

    @staticmethod
    def payload(ev: LogLineReceived) -> Wire:
        """From the core event."""
        return {"container_id": ev.container_id, "line": ev.line, "timestamp": ev.at.isoformat()}

    def to_core(self) -> LogLineReceived:
        """The core event."""
        return LogLineReceived(
            container_id=self.container_id, line=self.line, at=from_iso(self.timestamp)
        )


class ContainerStatsOut(Push):
    """ext `container_stats` (to the clients that watch the container, `watch_stats`; not
    journalled): each fresh sample of a watched container."""

    event: ClassVar[str] = "container_stats"
    container_id: str
    resource_usage: ResourceUsageOut

    @staticmethod
    def payload(ev: StatsSampled) -> Wire:
        """From the core event."""
        return {
            "container_id": ev.container_id,
            "resource_usage": ResourceUsageOut.payload(ev.sample),
        }

    def to_core(self) -> StatsSampled:
        """The core event."""
        return StatsSampled(container_id=self.container_id, sample=self.resource_usage.to_core())


class EngineStatusOut(Push):
    """ext `engine_status` (to every client; timestamp: ISO 8601 of when the manager learned it)."""

    event: ClassVar[str] = "engine_status"
    available: bool
    reason: str | None
    timestamp: str

    @staticmethod
    def payload(ev: DockerConnectionLost | DockerConnectionRestored) -> Wire:
        """From the core's loss or return event."""
        reason = ev.reason if isinstance(ev, DockerConnectionLost) else None
        return {"available": reason is None, "reason": reason, "timestamp": ev.at.isoformat()}

    @staticmethod
    def current(
        available: bool, change: DockerConnectionLost | DockerConnectionRestored | None
    ) -> Wire:
        """For a client just connected: the last change while it still holds, else `now`."""
        if change is not None and isinstance(change, DockerConnectionRestored) == available:
            return EngineStatusOut.payload(change)
        # no change published yet: up from the start, or not reached yet
        return {
            "available": available,
            "reason": None if available else "the Docker Engine has not answered yet",
            "timestamp": now().isoformat(),
        }

    def to_core(self) -> DockerConnectionLost | DockerConnectionRestored:
        """The core's loss or return event."""
        at = from_iso(self.timestamp)
        if self.available:
            return DockerConnectionRestored(at=at)
        return DockerConnectionLost(reason=self.reason or "unreachable", at=at)


class NodeStatusOut(Push):
    """ext, cluster hub: `node_status` when a node's agent link goes up or down (to every
    client, journalled; timestamp: epoch float)."""

    event: ClassVar[str] = "node_status"
    node_id: str
    node: str
    state: str
    agent: str
    reason: str
    down_for: float | None = None
    timestamp: float

    @staticmethod
    def payload(ev: NodeStatusReported) -> Wire:
        """From the core event."""
        return {
            "node_id": ev.node_id,
            "node": ev.node,
            "state": ev.state,
            "agent": ev.agent,
            "reason": ev.reason,
            "down_for": ev.down_for,
            "timestamp": epoch(ev.at),
        }

    def to_core(self) -> NodeStatusReported:
        """The core event (the panel's node summary)."""
        return NodeStatusReported(
            at=from_epoch(self.timestamp),
            node_id=self.node_id,
            node=self.node,
            state=self.state,
            agent=self.agent,
            reason=self.reason,
            down_for=self.down_for,
        )


PUSHES: dict[str, type[Push]] = {
    model.event: model
    for model in (
        MessageReceivedOut,
        StatusChangedOut,
        HealthWarningOut,
        ContainerCrashedOut,
        StatusUpdateOut,
        ActivityLogOut,
        ContainerLogOut,
        EngineStatusOut,
        MessageDeliveredOut,
        ContainerStatsOut,
        NodeStatusOut,
    )
}
"""Every event the server sends on its own, by name."""

Encoder = Callable[[Any], Wire]

BROADCASTS: dict[type[Event], tuple[str, Encoder]] = {
    FlowMessageReceived: (MessageReceivedOut.event, MessageReceivedOut.payload),
    ContainerStateChanged: (StatusChangedOut.event, StatusChangedOut.payload),
    HealthChanged: (HealthWarningOut.event, HealthWarningOut.payload),
    ContainerCrashed: (ContainerCrashedOut.event, ContainerCrashedOut.payload),
    StatusReported: (StatusUpdateOut.event, StatusUpdateOut.payload),
    ActivityLogged: (ActivityLogOut.event, ActivityLogOut.payload),
    LogLineReceived: (ContainerLogOut.event, ContainerLogOut.payload),
    DockerConnectionLost: (EngineStatusOut.event, EngineStatusOut.payload),
    DockerConnectionRestored: (EngineStatusOut.event, EngineStatusOut.payload),
    QueuedMessageDelivered: (MessageDeliveredOut.event, MessageDeliveredOut.payload),
    StatsSampled: (ContainerStatsOut.event, ContainerStatsOut.payload),
    NodeStatusReported: (NodeStatusOut.event, NodeStatusOut.payload),
}
"""The core event each push is encoded from: (its name, its encoder)."""
