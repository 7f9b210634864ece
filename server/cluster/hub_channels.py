"""RemoteChannels: the hub's stand-in for the core's FlowChannelHub.

In cluster mode a flow's socket is on the node that runs its task, held by that node's agent;
the hub keeps only what the agent said of it (connected, last frame) and sends through the
agent. The core's outbox, registry and snapshots use this object exactly as they use the
local hub: `info()`, `send()`, `on_control`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from server.core.bus import EventBus
from server.core.events import FlowMessageSent, now
from server.core.models import ChannelInfo

__all__ = ["RemoteChannels"]

Send = Callable[[str, dict[str, Any]], Awaitable[None]]
"""(flow id, message): deliver one frame through the flow's node's agent, or raise."""


class RemoteChannels:
    """Per flow: whether its agent says the flow is connected, and when it last spoke."""

    def __init__(self, bus: EventBus, send: Send) -> None:
        self._bus = bus
        self._send = send
        self._info: dict[str, ChannelInfo] = {}
        self.on_control: Callable[[str, Any], None] | None = None
        """The outbox's hook for a flow's acknowledgements (as on the local hub)."""

    # what the core calls

    async def open(self, container_id: str, socket_path: str) -> None:
        """Nothing to open here: the agent of the flow's node listens."""

    async def close(self, container_id: str) -> None:
        self._info.pop(container_id, None)

    async def aclose(self) -> None:
        self._info.clear()

    def info(self, container_id: str) -> ChannelInfo | None:
        return self._info.get(container_id)

    async def send(self, container_id: str, message: dict[str, Any]) -> None:
        """One frame through the agent (its typed error when it cannot: the flow is not
        connected, the node has no link, the agent timed out)."""
        await self._send(container_id, message)
        stamp = now()
        self._touch(container_id, stamp, connected=True)
        self._bus.publish(FlowMessageSent(container_id=container_id, message=message, at=stamp))

    # what the agents report

    def connected(self, container_id: str, yes: bool) -> None:
        old = self._info.get(container_id)
        self._info[container_id] = ChannelInfo(
            container_id, "", yes, old.last_communication if old else None
        )

    def spoke(self, container_id: str) -> None:
        self._touch(container_id, now(), connected=True)

    def _touch(self, container_id: str, at: datetime, *, connected: bool) -> None:
        self._info[container_id] = ChannelInfo(container_id, "", connected, at)
