"""Facts the core publishes on its bus; every front end subscribes to these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from server.core.models import ContainerSnapshot, ContainerStatus, ResourceSample

__all__ = [
    "now",
    "Event",
    "ContainerAdded",
    "ContainerRemoved",
    "ContainerStateChanged",
    "ContainerCrashed",
    "HealthChanged",
    "StatsSampled",
    "StatusReported",
    "LogLineReceived",
    "log_gap_line",
    "FlowMessageReceived",
    "FlowMessageSent",
    "FlowChannelConnected",
    "FlowChannelLost",
    "FlowFrameRejected",
    "QueuedMessageDelivered",
    "NodeStatusReported",
    "ActivityLogged",
    "DockerConnectionLost",
    "DockerConnectionRestored",
    "ACTIVITY_TYPES",
]

ACTIVITY_TYPES: tuple[str, ...] = (
    "container_created",
    "container_started",
    "container_stopped",
    "container_restarted",
    "container_updated",
    "container_deleted",
    "message_sent",
    "message_received",
    "status_change",
    "health_warning",
    "container_crash",
    "container_error",
    # ext (issue 17)
    "container_paused",
    "container_unpaused",
    "container_killed",
)


def now() -> datetime:
    """An aware UTC timestamp: every event carries one."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every core event."""

    at: datetime = field(default_factory=now)
    """When the core learned the fact (aware, UTC)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerAdded(Event):
    """A managed container appeared (created, adopted at start, or seen after a resync)."""

    snapshot: ContainerSnapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRemoved(Event):
    """A managed container is gone."""

    container_id: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerStateChanged(Event):
    """The state of a managed container changed; `snapshot` is the new view."""

    container_id: str
    old_state: str
    new_state: str
    snapshot: ContainerSnapshot
    reason: str | None = None
    """Cluster mode: why the state is `unknown` (agent_link_lost, heartbeat_timeout)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerCrashed(Event):
    """A container ended on its own with a non-zero exit code, or was OOM-killed."""

    container_id: str
    name: str
    exit_code: int
    error: str
    """The cause when known: "Out of memory", "Killed by signal 9", "Exited with code 3"."""
    logs: list[str]
    """The tail of its output."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthChanged(Event):
    """The health of a container changed (a warning when it becomes unhealthy)."""

    container_id: str
    old_health: str
    new_health: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSampled(Event):
    """A fresh resource sample; a latest-value event the bus may coalesce per container."""

    container_id: str
    sample: ResourceSample


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReported(Event):
    """The periodic status of one container (every `monitoring.health_check_interval`)."""

    status: ContainerStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class LogLineReceived(Event):
    """One line a container printed (published only while someone follows its logs)."""

    container_id: str
    line: str


def log_gap_line(skipped: int) -> str:
    """The line a log follower gets in place of lines it fell too far behind to receive."""
    return f"[flowmgr: {skipped} log lines skipped: this follower could not keep up]"


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowMessageReceived(Event):
    """A flow sent a message (one frame) over its socket."""

    container_id: str
    message: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowMessageSent(Event):
    """A message was written to a flow's socket."""

    container_id: str
    message: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowChannelConnected(Event):
    """A flow connected to its socket."""

    container_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowChannelLost(Event):
    """A flow's connection ended (it closed, or the manager reset it)."""

    container_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowFrameRejected(Event):
    """A flow sent a frame that broke the rules; its connection was reset."""

    container_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedMessageDelivered(Event):
    """A flow acknowledged a queued message (`send_message` with `queue: true`)."""

    container_id: str
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityLogged(Event):
    """One line of the activity log (docs/PROTOCOL.md `activity_log`); secrets already masked."""

    activity_type: str
    container_id: str | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatusReported(Event):
    """Cluster mode: a node's agent link went up or down (the hub's `node_status` push)."""

    node_id: str
    node: str
    state: str
    """Swarm's view of the node when it was said (ready, down, unknown, disconnected)."""
    agent: str
    """connected or disconnected."""
    reason: str
    down_for: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerConnectionLost(Event):
    """The engine stopped answering."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerConnectionRestored(Event):
    """The engine answers again and the manager has resynchronised."""
