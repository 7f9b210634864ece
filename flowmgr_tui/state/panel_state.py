"""The panel's view of the core, rebuilt from events: rows, sample history, messages, activity."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from flowmgr_tui.state.activity_keys import activity_key, merge_activity
from flowmgr_tui.state.nodes import NodeLink, NodesListed, link_of, node_link
from flowmgr_tui.state.rules import settle
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
    NodeStatusReported,
    StatsSampled,
    StatusReported,
)
from server.core.models import ContainerSnapshot, ResourceSample

__all__ = ["PanelState", "FlowMessage", "Changes", "HISTORY_SAMPLES", "ShowsChanges"]

HISTORY_SAMPLES = 180
"""Samples kept per container for the graphs (three minutes at one per second)."""
HISTORY_SPAN = timedelta(seconds=HISTORY_SAMPLES)
"""...and none older than this: a flow off screen is sampled every 10 s (the core's background
rate), so 1,000 such flows keep ~18 samples each, not 180 (~35 MB less), and a detail view
opened on one shows the last three minutes, not the last half hour."""
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
    recalled: bool = False
    """History from before the panel opened was folded in: activity lists are redrawn whole."""
    docker: bool = False
    nodes: bool = False
    """Cluster mode: a node's link changed, the hub listed its nodes, or the panel learned it
    speaks to a hub (the node column and summary are due)."""


@runtime_checkable
class ShowsChanges(Protocol):
    """A screen that redraws from the state after each batch (the dashboard, the detail)."""

    def show_changes(self, changes: Changes, events: Sequence[Event]) -> None:
        """Redraw what `changes` touched; `events` are the batch that caused them."""
        ...


class PanelState:
    """Latest snapshot per container, actions in flight and bounded histories.

    The only copy the panel keeps: fed by core events, which come from the local core's bus
    or, in remote mode, are decoded from the wire onto the remote backend's bus.
    """

    def __init__(self, snapshots: list[ContainerSnapshot], docker_available: bool) -> None:
        self.containers: dict[str, ContainerSnapshot] = {s.id: settle(s, None) for s in snapshots}
        self.busy: dict[str, str] = {}
        """Container id -> the action in flight on it ("stopping")."""
        self.history: dict[str, deque[ResourceSample]] = {}
        self.messages: dict[str, deque[FlowMessage]] = {}
        self.activity: deque[ActivityLogged] = deque(maxlen=ACTIVITY_KEPT)
        self.crashes: deque[ContainerCrashed] = deque(maxlen=ACTIVITY_KEPT)
        self._recalled: set[tuple[object, ...]] = set()
        """Keys of what `recall` folded in (a page: a few hundred at most)."""
        self.docker_available = docker_available
        self.docker_problem = ""
        """Why the engine was last lost (empty while it answers)."""
        self.nodes: dict[str, NodeLink] = {}
        """Cluster mode: node id -> the node as the hub last said (empty on one host)."""
        self.cluster = any(s.node_id or s.node for s in self.containers.values())
        """Whether the core is a cluster hub: a flow has a node, or the hub listed nodes."""
        for snap in self.containers.values():
            if snap.resources is not None:
                self._sample(snap.id, snap.resources)

    def seed(self, activity: list[ActivityLogged], crashes: list[ContainerCrashed]) -> None:
        """Load the history the core kept from before the panel opened."""
        self.activity.extend(activity)
        self.crashes.extend(crashes)

    def recall(self, items: Sequence[ActivityLogged | ContainerCrashed]) -> Changes:
        """Fold in activity and crashes read back from the core's journal once it started (the
        state was seeded before): each kept once, in time order, and their live copies still
        on their way through the bridge are dropped by `fresh`."""
        self._recalled.update(activity_key(item) for item in items)
        merged = merge_activity([*self.activity, *self.crashes], items)
        self.activity.clear()
        self.crashes.clear()
        self.activity.extend(e for e in merged if isinstance(e, ActivityLogged))
        self.crashes.extend(e for e in merged if isinstance(e, ContainerCrashed))
        return Changes(activity=True, recalled=True)

    def fresh(self, events: list[Event]) -> list[Event]:
        """`events` without the activity and crashes `recall` already holds."""
        if not self._recalled:
            return events
        return [
            e
            for e in events
            if not isinstance(e, ActivityLogged | ContainerCrashed)
            or activity_key(e) not in self._recalled
        ]

    def set_busy(self, container_id: str, doing: str | None) -> Changes:
        """Mark an action in flight on a container (None: it ended); return what changed."""
        changes = Changes()
        if doing is None:
            self.busy.pop(container_id, None)
        else:
            self.busy[container_id] = doing
        if container_id in self.containers:
            changes.rows.add(container_id)
        return changes

    def names(self) -> dict[str, str]:
        """Container id -> name, for activity lines."""
        return {cid: snap.name for cid, snap in self.containers.items()}

    def name_of(self, container_id: str) -> str:
        """The container's name, or its short id once it is gone."""
        snap = self.containers.get(container_id)
        return snap.name if snap else container_id[:12]

    def apply(self, events: Sequence[Event]) -> Changes:
        """Fold a batch of events in; return what changed."""
        changes = Changes()
        for event in events:
            self._apply_one(event, changes)
        return changes

    def _apply_one(self, ev: Event, ch: Changes) -> None:
        if isinstance(ev, ContainerAdded | ContainerStateChanged):
            snap = settle(ev.snapshot, self.containers.get(ev.snapshot.id))
            self.containers[snap.id] = snap
            ch.rows.add(snap.id)
            ch.removed.discard(snap.id)
            if not self.cluster and (snap.node_id or snap.node):
                self.cluster = ch.nodes = True
        elif isinstance(ev, ContainerRemoved):
            self.containers.pop(ev.container_id, None)
            self.history.pop(ev.container_id, None)
            self.busy.pop(ev.container_id, None)
            ch.removed.add(ev.container_id)
            ch.rows.discard(ev.container_id)
        elif isinstance(ev, StatsSampled):
            self._update(ev.container_id, ch, resources=ev.sample)  # settled: running only
            self._sample(ev.container_id, ev.sample)
            ch.samples.add(ev.container_id)
        elif isinstance(ev, HealthChanged):
            self._update(ev.container_id, ch, health=ev.new_health)
        elif isinstance(ev, StatusReported):
            st = ev.status
            extra = {} if st.resource_usage is None else {"resources": st.resource_usage}
            self._update(
                st.container_id,
                ch,
                state=st.state,
                health=st.health,
                socket_connected=st.socket_connected,
                last_communication=st.last_communication,
                **extra,
            )
        elif isinstance(ev, FlowChannelConnected | FlowChannelLost):
            self._update(ev.container_id, ch, socket_connected=isinstance(ev, FlowChannelConnected))
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
        elif isinstance(ev, NodeStatusReported):
            self.nodes[ev.node_id] = node_link(ev, self.nodes.get(ev.node_id))
            self.cluster = ch.nodes = True
        elif isinstance(ev, NodesListed):
            old = self.nodes
            self.nodes = {n.node_id: link_of(n, old.get(n.node_id)) for n in ev.nodes}
            self.cluster = ch.nodes = True

    def _update(self, container_id: str, ch: Changes, **fields: object) -> None:
        snap = self.containers.get(container_id)
        if snap is None:
            return
        new = replace(snap, **fields)  # type: ignore[arg-type]
        self.containers[container_id] = settle(new, snap)
        ch.rows.add(container_id)

    def _sample(self, container_id: str, sample: ResourceSample) -> None:
        hist = self.history.setdefault(container_id, deque(maxlen=HISTORY_SAMPLES))
        if not hist or hist[-1].timestamp != sample.timestamp:
            hist.append(sample)
            horizon = sample.timestamp - HISTORY_SPAN
            while hist[0].timestamp < horizon:
                hist.popleft()

    def ordered(self) -> list[ContainerSnapshot]:
        """Containers by name."""
        return sorted(self.containers.values(), key=lambda s: s.name)
