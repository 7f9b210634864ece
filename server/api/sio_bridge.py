"""Core -> Socket.IO: the only place the server pushes events on its own.

Every push but log lines comes from the journal's listener, after its commit, so a journalled
push carries its `seq` and is on disk before any client sees it. Log lines (not journalled)
and container removals (which end log rooms) still come from the bus."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from server.api.auth import AUTHENTICATED
from server.api.sio_manager import DirectEmitManager, Encoded
from server.core.bus import Subscription
from server.core.events import ContainerRemoved, Event, LogLineReceived, StatsSampled
from server.core.journal.records import JournalRecord
from server.wire.base import Wire
from server.wire.pushes import ContainerLogOut, ContainerStatsOut

if TYPE_CHECKING:
    import socketio

    from server.core.manager import ContainerManager

__all__ = ["SioBridge", "log_room", "push_payload", "Send", "HELD_MAX"]

logger = logging.getLogger(__name__)


def log_room(container_id: str) -> str:
    """The room of one container's log subscribers."""
    return f"logs:{container_id}"


def push_payload(rec: JournalRecord) -> Wire:
    """The payload a record is pushed with: as encoded, plus (ext) its `seq` when journalled."""
    return rec.data if rec.seq is None else {**rec.data, "seq": rec.seq}


Send = Callable[[list[JournalRecord]], Awaitable[None]]
"""Sends records to one client (the catch-up of a resuming client)."""

HELD_MAX = 100_000
"""Live records held at most for one client catching up (see `_overflowed`)."""
_WANTED = (LogLineReceived, ContainerRemoved)
_YIELD_EVERY = 32


class SioBridge:
    """Listens to the journal and the bus once, broadcasts, keeps per-container log rooms, and
    holds the live pushes of each client still catching up (see `finish_catch_up`)."""

    def __init__(self, sio: socketio.AsyncServer, manager: ContainerManager) -> None:
        self._sio = sio
        self._manager = manager
        self._task: asyncio.Task[None] | None = None
        self._followers: dict[str, set[str]] = {}
        """Container id -> sids subscribed to its log room."""
        self.forwarded = 0
        """Events handled so far (for tests and debugging)."""
        self._held: dict[str, list[JournalRecord]] = {}
        """Sid of a client catching up -> the live records pushed meanwhile, not yet sent it."""
        self._fanout = asyncio.Lock()
        """Held while a batch goes out: a client joins the broadcast room between batches."""
        self._unlisten: Callable[[], None] | None = None
        self._hangups: set[asyncio.Task[None]] = set()
        self._watching: dict[str, frozenset[str]] = {}
        """Sid -> the container ids it watches (ext `watch_stats`)."""
        self._watchers: dict[str, set[str]] = {}
        """Container id -> the sids watching it: whose samples come through the bus at all."""

    async def start(self) -> None:
        """Listen to the journal; subscribe to the bus and forward log lines in one task."""
        sub = self._manager.bus.subscribe_raw(maxsize=50_000, predicate=self._wanted)
        self._task = asyncio.create_task(self._forward(sub), name="sio-bridge")
        self._unlisten = self._manager.journal.listen(self._broadcast)

    async def stop(self) -> None:
        """Stop forwarding and release every log stream this bridge started."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
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

    def _wanted(self, event: Event) -> bool:
        """Log lines and removals; a sample only of a container some client watches (the
        bus asks this for every sample of every flow: it must stay a lookup)."""
        if isinstance(event, StatsSampled):
            return event.container_id in self._watchers
        return isinstance(event, _WANTED)

    async def _dispatch(self, event: Event) -> None:
        if isinstance(event, StatsSampled):
            sids = self._watchers.get(event.container_id)
            if sids:  # encoded once for all its watchers
                payload = Encoded(ContainerStatsOut.payload(event))
                for sid in list(sids):
                    await self._sio.emit(ContainerStatsOut.event, payload, to=sid)
            return
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

    async def _broadcast(self, records: list[JournalRecord]) -> None:
        """The journal's listener: push each record to every authenticated client, and hold it
        for the clients still catching up. (ActivityLogged was masked by the core where it
        wrote the line; engine losses go out as `engine_status`, so clients learn of one now.)"""
        async with self._fanout:
            for sid, held in list(self._held.items()):
                held.extend(records)
                if len(held) > HELD_MAX:
                    self._overflowed(sid)
            manager = self._sio.manager
            direct = isinstance(manager, DirectEmitManager)
            for rec in records:
                name = rec.event
                try:
                    text = rec.pushed_text() if direct else None
                    if text is not None:
                        await manager.emit_json(name, text, AUTHENTICATED)
                    else:
                        await self._sio.emit(name, push_payload(rec), to=AUTHENTICATED)
                except Exception:  # one bad record must not end the forwarding
                    logger.exception("could not push %s to Socket.IO clients", name)
                # An emit does not suspend: yield now and then, or a burst (a status update
                # of every container to every client) would hold requests back.
                self.forwarded += 1
                if self.forwarded % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)

    # resuming clients (server/api/resume.py)

    def hold_for(self, sid: str) -> None:
        """From now on, keep every live record for `sid` (catching up, not yet in the room)."""
        self._held[sid] = []

    def take_held(self, sid: str) -> list[JournalRecord]:
        """The records held for `sid` so far (and hold the next ones afresh)."""
        held = self._held.get(sid)
        if not held:
            return []
        self._held[sid] = []
        return held

    async def finish_catch_up(self, sid: str, send: Send) -> bool:
        """Send `sid` what was held for it, then join it to the broadcast room with no batch
        in between (no gap, no duplicate). False when the client left meanwhile."""
        while held := self.take_held(sid):  # most of it without holding up the broadcasts
            await send(held)
        async with self._fanout:
            if sid not in self._held:
                return False  # it left, or overflowed (being hung up): never join with a gap
            held = self.take_held(sid)
            if held:
                await send(held)
            self._held.pop(sid, None)
            if not self._sio.manager.is_connected(sid, "/"):
                return False
            # synchronous: no batch can slip between the last held record and the join
            self._sio.manager.basic_enter_room(sid, "/", AUTHENTICATED)
            return True

    def _overflowed(self, sid: str) -> None:
        """A client catching up far slower than events arrive: hang up rather than hold an
        unbounded backlog for it (it reconnects with its last seq and resumes from there)."""
        self._held.pop(sid, None)
        logger.warning(
            "disconnecting Socket.IO client %s: more than %d live events arrived while it "
            "caught up; it may resume from its last seq",
            sid,
            HELD_MAX,
        )
        task = asyncio.create_task(self._sio.disconnect(sid))
        self._hangups.add(task)
        task.add_done_callback(self._hangups.discard)

    def drop_held(self, sid: str) -> None:
        """Stop holding records for `sid` (it left, or its catch-up ended)."""
        self._held.pop(sid, None)

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

    def watch_stats(self, sid: str, refs: list[str]) -> tuple[list[str], list[str]]:
        """`sid` watches these containers now (replacing its set): the core samples them at
        full rate and their samples are pushed to it. (full ids watched, refs naming none)."""
        watched, unknown = self._manager.registry.resolve_many(refs, "container_ids")
        self._manager.watch_stats(f"sio:{sid}", watched)  # InvalidRequest: no change
        self._set_watching(sid, frozenset(watched))
        return watched, unknown

    def _set_watching(self, sid: str, ids: frozenset[str]) -> None:
        for cid in self._watching.pop(sid, frozenset()) - ids:
            sids = self._watchers.get(cid)
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    del self._watchers[cid]
        if ids:
            self._watching[sid] = ids
            for cid in ids:
                self._watchers.setdefault(cid, set()).add(sid)

    async def client_left(self, sid: str) -> None:
        """A client disconnected: release the log streams it alone kept alive, and stop
        sampling at full rate what it alone watched."""
        self.drop_held(sid)
        if sid in self._watching:
            self._set_watching(sid, frozenset())
            self._manager.unwatch_stats(f"sio:{sid}")
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
