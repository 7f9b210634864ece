"""Cluster mode (a hub over Docker Swarm, docs/CLUSTER.md): the nodes the panel shows, their
agent links, and each node's flows, CPU and memory summed from the rows."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.core.events import Event, NodeStatusReported
from server.core.models import ContainerSnapshot

__all__ = ["NodeLink", "NodeUsage", "NodesListed", "link_of", "usage_by_node", "node_link"]

_LONGEST_DOWN = 10 * 365 * 86400.0
"""A `down_for` beyond this (or not a number) is not believed: the node counts as down since
the push arrived."""


@dataclass(frozen=True, slots=True)
class NodeLink:
    """One Swarm node as the hub last said: its hostname, Swarm's state and its agent link."""

    node_id: str
    node: str
    """Hostname."""
    state: str
    """Swarm's view: ready, down, unknown, disconnected."""
    agent: str
    """connected or disconnected."""
    reason: str = ""
    """Why the link is as it is (`heartbeat_timeout`, ...); empty when the list said it."""
    down_since: datetime | None = None
    """When the agent link was lost (None while connected, or not known)."""

    @property
    def connected(self) -> bool:
        """Whether the node's agent link is up."""
        return self.agent == "connected"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodesListed(Event):
    """Panel-side event: a hub's `container_list` carried its `nodes` (every Swarm node), so the
    summary lists all of them, not only those a `node_status` named."""

    nodes: tuple[NodeLink, ...] = field(default_factory=tuple)


@dataclass(slots=True)
class NodeUsage:
    """One node's flows and the sum of their last samples."""

    flows: int = 0
    cpu_percent: float = 0.0
    memory_usage: int = 0
    sampled: bool = False
    """Whether any of its flows has a sample (else CPU and memory read `-`)."""


def node_link(ev: NodeStatusReported, old: NodeLink | None) -> NodeLink:
    """The node as a `node_status` push leaves it."""
    down_since = None
    if ev.agent != "connected":
        down = ev.down_for
        if down is None or not math.isfinite(down) or not 0 <= down <= _LONGEST_DOWN:
            down_since = old.down_since if old is not None and old.down_since else ev.at
        else:
            down_since = ev.at - timedelta(seconds=down)
    return NodeLink(ev.node_id, ev.node, ev.state, ev.agent, ev.reason, down_since)


def link_of(listed: NodeLink, old: NodeLink | None) -> NodeLink:
    """A node as a list says it, keeping the reason and time a push told of a link still down."""
    if old is None or listed.connected or old.connected:
        return listed
    return NodeLink(
        listed.node_id, listed.node, listed.state, listed.agent, old.reason, old.down_since
    )


def usage_by_node(snapshots: Iterable[ContainerSnapshot]) -> dict[str, NodeUsage]:
    """Node id and hostname -> its flows' count and summed last samples (a flow counted under
    both keys, so a node is found by either)."""
    out: dict[str, NodeUsage] = {}
    for snap in snapshots:
        keys = {k for k in (snap.node_id, snap.node) if k}
        for key in keys:
            usage = out.get(key)
            if usage is None:
                usage = out[key] = NodeUsage()
            usage.flows += 1
            res = snap.resources
            if res is not None:
                usage.sampled = True
                usage.cpu_percent += res.cpu_percent
                usage.memory_usage += res.memory_usage
    return out
