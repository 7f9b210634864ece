"""What the panel needs from a core: the local ContainerManager and the remote adapter both fit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from server.core.bus import EventBus
from server.core.events import ActivityLogged, ContainerCrashed
from server.core.flow_config import FlowConfig
from server.core.journal.records import HistoryPage
from server.core.models import ContainerSnapshot, CreateSpec

__all__ = ["Backend", "Shell"]


class Shell(Protocol):
    """A shell in a flow's container on a pseudo-terminal (the core's ShellSession, or one
    driven over the API): bytes both ways."""

    def output(self) -> AsyncIterator[bytes]:
        """The terminal's output until the shell ends."""
        ...

    def write(self, data: bytes) -> None:
        """Queue keys for the terminal, in order (raises FlowMgrError when refused)."""
        ...

    async def resize(self, cols: int, rows: int) -> None: ...

    async def exit_code(self) -> int | None:
        """Once the output ended: how the shell exited (None: not known)."""
        ...

    async def close(self) -> None:
        """End the shell (its processes too); safe after it ended."""
        ...


@runtime_checkable
class Backend(Protocol):
    """The slice of `ContainerManager` the screens use; nothing here may call Docker directly."""

    bus: EventBus

    @property
    def docker_available(self) -> bool:
        """Whether the engine answered last time the core looked."""
        ...

    async def start(self) -> None:
        """Connect and begin publishing events."""
        ...

    async def stop(self) -> None:
        """Stop publishing; managed containers keep running."""
        ...

    def snapshot(self) -> list[ContainerSnapshot]:
        """Every managed container, from memory."""
        ...

    def get(self, ref: str) -> ContainerSnapshot:
        """One container by full id, unique prefix or name."""
        ...

    def recent_activity(
        self, container_id: str | None = None, limit: int = 200
    ) -> list[ActivityLogged]:
        """The newest activity lines (oldest first)."""
        ...

    def recent_crashes(
        self, container_id: str | None = None, limit: int = 50
    ) -> list[ContainerCrashed]:
        """The newest crash reports (oldest first)."""
        ...

    async def get_history(
        self,
        since_seq: int | None = None,
        container_id: str | None = None,
        types: list[str] | None = None,
        limit: int = 100,
    ) -> HistoryPage:
        """Journalled events with seq > since_seq, oldest first (docs/PROTOCOL.md get_history);
        read only when a screen asks, never before the first rows are painted."""
        ...

    def watch_stats(self, owner: str, container_ids: list[str]) -> None:
        """The containers `owner` shows now (replacing what it told before; empty: none):
        the core samples them at full rate, the rest at its background rate. Returns at once
        (a remote backend sends it in the background); unknown ids are ignored."""
        ...

    async def create_container(self, spec: CreateSpec) -> ContainerSnapshot: ...
    async def start_container(self, ref: str) -> ContainerSnapshot: ...
    async def stop_container(self, ref: str) -> ContainerSnapshot: ...
    async def restart_container(self, ref: str) -> ContainerSnapshot: ...
    async def update_container(self, ref: str, code_path: str) -> ContainerSnapshot: ...
    async def delete_container(self, ref: str) -> str: ...
    async def get_logs(
        self, ref: str, tail: int = 100, *, since: float | None = None, timestamps: bool = False
    ) -> list[str]:
        """The newest lines; ext `since` seconds back only, `timestamps` prefixing each with
        the engine's RFC 3339 time and a space."""
        ...

    async def inspect_container(self, ref: str) -> FlowConfig:
        """ext: its configuration, secrets masked by the core."""
        ...

    async def pause_container(self, ref: str) -> ContainerSnapshot: ...
    async def unpause_container(self, ref: str) -> ContainerSnapshot: ...
    async def kill_container(self, ref: str, signal: str) -> ContainerSnapshot:
        """Send an allowed signal (server/core/validation/signals.py); the state after it."""
        ...

    async def follow_logs(self, ref: str) -> str: ...
    async def unfollow_logs(self, container_id: str) -> None: ...
    async def open_shell(self, ref: str, cols: int, rows: int) -> Shell:
        """A shell (bash, else sh) in a running flow's container, on a terminal of this size."""
        ...

    async def send_message(self, ref: str, message: dict[str, Any]) -> str | None:
        """Write one frame to the flow (None: sent; a core may return a queued message's id)."""
        ...
