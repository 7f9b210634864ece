"""Core bus -> Socket.IO: the only place the server pushes events on its own."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from server.api.auth import AUTHENTICATED
from server.core.bus import Subscription
from server.core.events import ContainerRemoved, Event, HealthChanged, LogLineReceived
from server.wire.pushes import BROADCASTS, ContainerLogOut

if TYPE_CHECKING:
    import socketio

    from server.core.manager import ContainerManager

__all__ = ["SioBridge", "log_room"]

logger = logging.getLogger(__name__)


def log_room(container_id: str) -> str:
    """The room of one container's log subscribers."""
    return f"logs:{container_id}"


_WANTED = (*BROADCASTS, ContainerRemoved)
_YIELD_EVERY = 32


class SioBridge:
    """Subscribes to the bus once, broadcasts, and keeps per-container log rooms."""

    def __init__(self, sio: socketio.AsyncServer, manager: ContainerManager) -> None:
        self._sio = sio
        self._manager = manager
        self._task: asyncio.Task[None] | None = None
        self._followers: dict[str, set[str]] = {}
        """Container id -> sids subscribed to its log room."""
        self.forwarded = 0
        """Events handled so far (for tests and debugging)."""

    async def start(self) -> None:
        """Subscribe to the bus and forward in one task until `stop()`."""
        sub = self._manager.bus.subscribe_raw(maxsize=50_000, predicate=_wanted)
        self._task = asyncio.create_task(self._forward(sub), name="sio-bridge")

    async def stop(self) -> None:
        """Stop forwarding and release every log stream this bridge started."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for container_id in list(self._followers):
            self._followers.pop(container_id)
            await self._unfollow(container_id)

    @property
    def running(self) -> bool:
        """True while the forwarding task is alive."""
        return self._task is not None and not self._task.done()

    async def _forward(self, sub: Subscription) -> None:
        try:
            async for event in sub:
                try:
                    await self._dispatch(event)
                except Exception:  # one bad event must not end the forwarding
                    logger.exception(
                        "could not forward %s to Socket.IO clients", type(event).__name__
                    )
                # Neither a queued event nor an emit suspends: yield now and then, or a
                # burst (a status update of every container to every client) would hold
                # requests back until it is all sent.
                self.forwarded += 1
                if self.forwarded % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            self._manager.bus.unsubscribe(sub)

    async def _dispatch(self, event: Event) -> None:
        if isinstance(event, LogLineReceived):
            if event.container_id in self._followers:
                await self._sio.emit(
                    ContainerLogOut.event,
                    ContainerLogOut.payload(event),
                    to=log_room(event.container_id),
                )
            return
        if isinstance(event, ContainerRemoved):
            if self._followers.pop(event.container_id, None) is not None:
                await self._unfollow(event.container_id)
            return
        if isinstance(event, HealthChanged) and event.new_health != "unhealthy":
            return
        # ActivityLogged arrives masked: the core masks once, where it writes the line.
        # ext: DockerConnectionLost/Restored go out as `engine_status`, so clients learn of an
        # engine loss now, not from their next failing request.
        name, build = BROADCASTS[type(event)]
        await self._sio.emit(name, build(event), to=AUTHENTICATED)

    async def subscribe_logs(self, sid: str, ref: str) -> str:
        """Join `sid` to the container's log room, starting its log stream for the first one."""
        container_id = self._manager.get(ref).id
        sids = self._followers.setdefault(container_id, set())
        first = not sids
        sids.add(sid)
        if first:
            try:
                await self._manager.follow_logs(container_id)
            except BaseException:
                self._drop(container_id, sid)
                raise
        await self._sio.enter_room(sid, log_room(container_id))
        return container_id

    async def unsubscribe_logs(self, sid: str, ref: str) -> str:
        """Leave the room; the last subscriber leaving stops the log stream."""
        container_id = self._manager.get(ref).id
        await self._sio.leave_room(sid, log_room(container_id))
        if self._drop(container_id, sid):
            await self._unfollow(container_id)
        return container_id

    async def client_left(self, sid: str) -> None:
        """A client disconnected: release the log streams it alone kept alive."""
        for container_id in [c for c, sids in self._followers.items() if sid in sids]:
            if self._drop(container_id, sid):
                await self._unfollow(container_id)

    def _drop(self, container_id: str, sid: str) -> bool:
        """Forget one subscriber; True when it was the last of that container."""
        sids = self._followers.get(container_id)
        if sids is None or sid not in sids:
            return False
        sids.discard(sid)
        if sids:
            return False
        del self._followers[container_id]
        return True

    async def _unfollow(self, container_id: str) -> None:
        try:
            await self._manager.unfollow_logs(container_id)
        except Exception:  # the container may be gone already; nothing left to release
            logger.debug("unfollow_logs(%s) failed", container_id[:12], exc_info=True)


def _wanted(event: Event) -> bool:
    return isinstance(event, _WANTED)
