"""FlowChannelHub: one Unix socket per managed container (STUB until the flow-channel work lands)."""

from __future__ import annotations

from typing import Any

from server.core.bus import EventBus
from server.core.config import FlowSettings
from server.core.errors import FlowSocketConnectionError
from server.core.models import ChannelInfo

__all__ = ["FlowChannelHub"]


class FlowChannelHub:
    """Interface stub: see docs/ARCHITECTURE.md."""

    def __init__(self, bus: EventBus, settings: FlowSettings) -> None:
        self._bus = bus
        self._settings = settings
        self._paths: dict[str, str] = {}

    async def open(self, container_id: str, socket_path: str) -> None:
        """Listen on `socket_path` for the flow of `container_id` (idempotent)."""
        self._paths[container_id] = socket_path

    async def close(self, container_id: str) -> None:
        """Stop listening and remove the socket file."""
        self._paths.pop(container_id, None)

    async def send(self, container_id: str, message: dict[str, Any]) -> None:
        """Write one frame to the flow."""
        raise FlowSocketConnectionError(f"flow {container_id[:12]} is not connected")

    def info(self, container_id: str) -> ChannelInfo | None:
        """The channel's state, or None when there is none."""
        path = self._paths.get(container_id)
        if path is None:
            return None
        return ChannelInfo(container_id, path, False, None)

    async def aclose(self) -> None:
        """Close every channel."""
        self._paths.clear()
