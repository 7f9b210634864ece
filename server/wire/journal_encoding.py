"""What the journal stores for a core event: the push the service sends for it, encoded once.

The core is handed `encode_event` by its front end (it never imports `server.wire`), so the
journal holds each event exactly as clients receive it, and a resumed client or a history
reader gets the same payload the live stream carried."""

from __future__ import annotations

from server.core.events import Event, HealthChanged, LogLineReceived, StatsSampled
from server.wire.base import Wire
from server.wire.pushes import BROADCASTS, PUSHES, ContainerLogOut, ContainerStatsOut

__all__ = ["encode_event", "JOURNALLED_PUSHES"]

JOURNALLED_PUSHES: frozenset[str] = frozenset(
    set(PUSHES) - {ContainerLogOut.event, ContainerStatsOut.event}
)
"""The push names the journal may hold (what `get_history`'s `types` may name). Log lines are
not journalled: they go to the container's log room only, and Docker keeps the log itself;
nor are `container_stats` samples (to their watchers only; the periodic status is)."""


def encode_event(event: Event) -> tuple[str, Wire, str | None] | None:
    """(push name, payload without `seq`, container id or None), or None when the event is
    not pushed to every client (log lines, samples, a health change that is not to
    `unhealthy`, the core's internal events)."""
    entry = BROADCASTS.get(type(event))
    if entry is None or isinstance(event, LogLineReceived | StatsSampled):
        return None
    if isinstance(event, HealthChanged) and event.new_health != "unhealthy":
        return None
    name, build = entry
    payload = build(event)
    container_id = payload.get("container_id")
    return name, payload, container_id if isinstance(container_id, str) else None
