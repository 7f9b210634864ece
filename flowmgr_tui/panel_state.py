"""The panel's view of the core, rebuilt from events: rows, sample history, messages, activity."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from server.core.events import (
    ActivityLogged,
    ContainerAdded,
    ContainerCrashed,
    ContainerRemoved,
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    Event,
    FlowChannelConnected,
    FlowChannelLost,
    FlowMessageReceived,
    FlowMessageSent,
    HealthChanged,
    StatsSampled,
    StatusReported,
)
from server.core.models import ContainerSnapshot, ResourceSample

__all__ = ["PanelState", "FlowMessage", "Changes", "HISTORY_SAMPLES"]

HISTORY_SAMPLES = 180
"""Samples kept per container for the graphs (three minutes at one per second)."""
MESSAGES_KEPT = 200
ACTIVITY_KEPT = 500


@dataclass(frozen=True, slots=True)
class FlowMessage:
    """One message that crossed a flow's socket."""

    container_id: str
    direction: str
    """"in" (the flow sent it) or "out" (the panel or a client sent it)."""
    message: dict[str, object]
    at: datetime


@dataclass(slots=True)
class Changes:
    """What one batch of events touched, so screens redraw only that."""

    rows: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    samples: set[str] = field(default_factory=set)
    messages: set[str] = field(default_factory=set)
    activity: bool = False
    docker: bool = False


class PanelState:
    """Latest snapshot per container plus bounded histories; fed only by core events."""

    def __init__(self, snapshots: list[ContainerSnapshot], docker_available: bool) -> None:
        self.containers: dict[str, ContainerSnapshot] = {s.id: s for s in snapshots}
        self.history: dict[str, deque[ResourceSample]] = {}
        self.messages: dict[str, deque[FlowMessage]] = {}
        self.activity: deque[ActivityLogged] = deque(maxlen=ACTIVITY_KEPT)
        self.crashes: deque[ContainerCrashed] = deque(maxlen=ACTIVITY_KEPT)
        self.docker_available = docker_available
        self.docker_problem = ""
        """Why the engine was last lost (empty while it answers)."""
        for snap in snapshots:
            if snap.resources is not None:
                self._sample(snap.id, snap.resources)

    def seed(self, activity: list[ActivityLogged], crashes: list[ContainerCrashed]) -> None:
        """Load the history the core kept from before the panel opened."""
        self.activity.extend(activity)
        self.crashes.extend(crashes)

    def apply(self, events: Sequence[Event]) -> Changes:
        """Fold a batch of events in; return what changed."""
        changes = Changes()
        for event in events:
            self._apply_one(event, changes)
        return changes

    def _apply_one(self, ev: Event, ch: Changes) -> None:
        if isinstance(ev, ContainerAdded | ContainerStateChanged):
            old = self.containers.get(ev.snapshot.id)
            snap = ev.snapshot
            if old is not None and snap.resources is None and old.resources is not None:
                snap = replace(snap, resources=old.resources)
            self.containers[snap.id] = snap
            ch.rows.add(snap.id)
            ch.removed.discard(snap.id)
        elif isinstance(ev, ContainerRemoved):
            self.containers.pop(ev.container_id, None)
            self.history.pop(ev.container_id, None)
            ch.removed.add(ev.container_id)
            ch.rows.discard(ev.container_id)
        elif isinstance(ev, StatsSampled):
            self._update(ev.container_id, ch, resources=ev.sample)
            self._sample(ev.container_id, ev.sample)
            ch.samples.add(ev.container_id)
        elif isinstance(ev, HealthChanged):
            self._update(ev.container_id, ch, health=ev.new_health)
        elif isinstance(ev, StatusReported):
            st = ev.status
            extra = {} if st.resource_usage is None else {"resources": st.resource_usage}
            self._update(st.container_id, ch, state=st.state, health=st.health,
                         socket_connected=st.socket_connected,
                         last_communication=st.last_communication, **extra)
        elif isinstance(ev, FlowChannelConnected | FlowChannelLost):
            self._update(ev.container_id, ch,
                         socket_connected=isinstance(ev, FlowChannelConnected))
        elif isinstance(ev, FlowMessageReceived | FlowMessageSent):
            direction = "in" if isinstance(ev, FlowMessageReceived) else "out"
            box = self.messages.setdefault(ev.container_id, deque(maxlen=MESSAGES_KEPT))
            box.append(FlowMessage(ev.container_id, direction, ev.message, ev.at))
            self._update(ev.container_id, ch, last_communication=ev.at)
            ch.messages.add(ev.container_id)
        elif isinstance(ev, ActivityLogged):
            self.activity.append(ev)
            ch.activity = True
        elif isinstance(ev, ContainerCrashed):
            self.crashes.append(ev)
            ch.activity = True
        elif isinstance(ev, DockerConnectionLost):
            self.docker_available, self.docker_problem = False, ev.reason
            ch.docker = True
        elif isinstance(ev, DockerConnectionRestored):
            self.docker_available, self.docker_problem = True, ""
            ch.docker = True

    def _update(self, container_id: str, ch: Changes, **fields: object) -> None:
        snap = self.containers.get(container_id)
        if snap is None:
            return
        self.containers[container_id] = replace(snap, **fields)  # type: ignore[arg-type]
        ch.rows.add(container_id)

    def _sample(self, container_id: str, sample: ResourceSample) -> None:
        hist = self.history.setdefault(container_id, deque(maxlen=HISTORY_SAMPLES))
        if not hist or hist[-1].timestamp != sample.timestamp:
            hist.append(sample)

    def ordered(self) -> list[ContainerSnapshot]:
        """Containers by name."""
        return sorted(self.containers.values(), key=lambda s: s.name)
