"""What the hub publishes when a node's agent link changes (docs/CLUSTER.md "Failures are said,
never hidden"): the lead turns these into `node_status` and `status_changed` pushes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["NodeStatusChanged", "FlowsUnknown", "LinkEvent", "Reason"]

Reason = Literal["agent_connected", "agent_link_lost", "heartbeat_timeout", "replaced", "stopped"]
"""Why: a new link, the transport closed, no heartbeat within `agent_timeout`, the same agent's
new connection took over its old one, the hub is shutting down."""


@dataclass(frozen=True, slots=True)
class NodeStatusChanged:
    """A node's agent link went up or down."""

    node_id: str
    hostname: str
    agent: Literal["connected", "disconnected"]
    reason: Reason
    at: float
    """time.monotonic() on the hub when it was decided."""
    down_for: float | None = None
    """When down: seconds since the last heartbeat (how stale the node's picture is)."""


@dataclass(frozen=True, slots=True)
class FlowsUnknown:
    """The flows of a node whose link dropped: their state is `unknown` from `at` on."""

    node_id: str
    flow_ids: tuple[str, ...]
    reason: Reason
    at: float


LinkEvent = NodeStatusChanged | FlowsUnknown
