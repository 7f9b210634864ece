"""Values the core hands out: snapshots, resource samples, status, create specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from server.core.host_paths import Pin

__all__ = [
    "State",
    "Health",
    "STATES",
    "HEALTHS",
    "ResourceSample",
    "ContainerSnapshot",
    "ContainerStatus",
    "CreateSpec",
    "ChannelInfo",
]

State = Literal[
    "created", "running", "paused", "restarting", "removing", "stopped", "exited", "dead", "unknown"
]
"""Docker's states, `stopped` (exited on request) and, in cluster mode only, `unknown` (the
flow's node has no live agent link: docs/CLUSTER.md)."""
Health = Literal["healthy", "unhealthy", "starting", "none"]
STATES: tuple[str, ...] = (
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "stopped",
    "exited",
    "dead",
    "unknown",
)
HEALTHS: tuple[str, ...] = ("healthy", "unhealthy", "starting", "none")


@dataclass(frozen=True, slots=True)
class ResourceSample:
    """One resource reading of one container, computed as `docker stats` computes it."""

    cpu_percent: float
    """CPU use in percent of one core (200.0 = two cores busy), like `docker stats`."""
    memory_usage: int
    """Bytes in use, page cache (inactive file) excluded."""
    memory_limit: int
    """The container's memory limit in bytes (the host's memory when unlimited)."""
    memory_percent: float
    network_rx_bytes: int
    network_tx_bytes: int
    disk_read_bytes: int
    disk_write_bytes: int
    timestamp: datetime
    """When the sample was taken (aware, UTC)."""


@dataclass(frozen=True, slots=True)
class ContainerSnapshot:
    """What the manager knows of one managed container, from memory, no daemon round trip."""

    id: str
    """Full 64-hex container id."""
    name: str
    image: str
    state: State
    health: Health
    created: datetime
    started_at: datetime | None
    """When it last started (None when it never ran)."""
    socket_path: str
    """Host path of the flow's Unix socket."""
    ports: dict[str, int | None] = field(default_factory=dict)
    """Container port -> host port, the keys as the create request wrote them ("8080",
    "53/udp"; "8080/tcp" for a container created elsewhere or with an unusable label)."""
    exit_code: int | None = None
    socket_connected: bool = False
    last_communication: datetime | None = None
    resources: ResourceSample | None = None
    node: str | None = None
    """Cluster mode (ext): the hostname of the node running the flow's task (None: one host)."""
    node_id: str | None = None
    task_id: str | None = None

    @property
    def short_id(self) -> str:
        """The 12-character id Docker shows."""
        return self.id[:12]


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """The answer to a status query (docs/PROTOCOL.md `container_status`)."""

    container_id: str
    name: str
    state: State
    health: Health
    uptime: timedelta | None
    socket_connected: bool
    last_communication: datetime | None
    resource_usage: ResourceSample | None


@dataclass(frozen=True, slots=True)
class CreateSpec:
    """A validated request to create a managed container."""

    name: str
    image: str | None = None
    """None means `docker.default_image`."""
    environment: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    """Host path -> container path; the container path may end with ":rw" (ask for write)
    or ":ro" (the default)."""
    ports: dict[str, int] = field(default_factory=dict)
    """Container port ("8080" or "8080/tcp") -> host port."""
    command: list[str] | None = None
    """Overrides the image's command (tests and tools; not on the wire)."""
    memory_limit: str | None = None
    """Overrides the configured default (e.g. "64m")."""
    binds: tuple[Pin, ...] = ()
    """Set by `validation.host.validate_create`: the checked host binds (never from a request)."""
    node: str | None = None
    """ext, cluster mode only: the Swarm node (ID or hostname) the flow must run on."""
    labels: dict[str, str] = field(default_factory=dict)
    """ext (RabbitMQ `create_container`): the caller's own container labels; a `flowmgr.*` key
    is refused, so they never override or forge the manager's labels."""
    flow_meta: dict[str, str] = field(default_factory=dict)
    """ext (RabbitMQ): the platform's ids (`FLOW_META` keys), kept as `flowmgr.<key>` labels."""


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """The state of one flow channel."""

    container_id: str
    socket_path: str
    connected: bool
    last_communication: datetime | None
