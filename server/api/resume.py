"""Resume (ext): a client that connects with `auth` `{"last_seq": N}` first gets every journalled
push with seq > N, oldest first, then the live stream, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from engineio import json as engineio_json
from engineio import packet as eio_packet

from server.api.errors import error_payload
from server.api.sio_bridge import push_payload
from server.api.sio_manager import event_packet
from server.core.errors import InvalidRequest
from server.core.journal.records import JournalRecord, with_seq
from server.wire.requests import MAX_SEQ

if TYPE_CHECKING:
    import socketio

    from server.api.sio_bridge import SioBridge
    from server.core.manager import ContainerManager

__all__ = ["last_seq_of", "Resume", "PAGE", "BadLastSeq"]

logger = logging.getLogger(__name__)

PAGE = 2000
"""Records read from the journal at a time: a long catch-up is never one huge list."""
_QUEUED_MAX = 20000
"""Packets a catching-up client may have waiting before the next page is read (so a slow
reader slows its catch-up instead of being dropped for falling behind)."""
_YIELD_EVERY = 256
"""Records put in a client's queue between two yields to the loop."""
_OPERATION = "connect"
"""`details.operation` of the errors a resuming client gets."""


class BadLastSeq(ValueError):
    """`auth.last_seq` is not a non-negative integer of at most 2**63-1."""


def last_seq_of(auth: Any) -> int | None:
    """The seq a connecting client resumes after: None when it does not resume (no
    `last_seq`, or null); BadLastSeq for anything but an integer in 0..2**63-1 (a bool, a
    float such as 5.0, a string, a negative or larger number, any other JSON type)."""
    value = auth.get("last_seq") if type(auth) is dict else None
    if value is None:
        return None
    if type(value) is not int:  # bool is a subclass of int: exact type only
        raise BadLastSeq(f"last_seq must be an integer, not {_json_type(value)}")
    if not 0 <= value <= MAX_SEQ:
        raise BadLastSeq(f"last_seq must be between 0 and {MAX_SEQ}")
    return value


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", float: "a number with a fraction", str: "a string"}
    return names.get(type(value), "an array" if isinstance(value, list) else "an object")


class Resume:
    """One resuming client's catch-up: journal pages after its seq, then what the bridge held
    for it meanwhile, then the broadcast room."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        manager: ContainerManager,
        bridge: SioBridge,
        sid: str,
        last_seq: int,
    ) -> None:
        self._sio = sio
        self._journal = manager.journal
        self._bridge = bridge
        self._sid = sid
        self._asked = last_seq
        self.cursor = -1
        """Highest seq sent to the client; records at or below it are never sent again."""
        self.sent = 0

    def start_holding(self) -> None:
        """Hold live records for the client from now on: call before the journal is read."""
        self._bridge.hold_for(self._sid)

    async def run(self) -> None:
        """Catch up, then join the live stream; always ends holding records for the client."""
        try:
            try:
                await self._catch_up()
            except Exception as exc:  # never leave a client outside the live stream
                logger.exception("resume of sid %s after seq %d failed", self._sid, self._asked)
                await self._emit_error(exc)
            if await self._bridge.finish_catch_up(self._sid, self._send):
                logger.debug(
                    "sid %s resumed after seq %d: %d pushes", self._sid, self._asked, self.sent
                )
        finally:
            self._bridge.drop_held(self._sid)

    async def _catch_up(self) -> None:
        n, journal = self._asked, self._journal
        state = journal.health()
        if state != "active":
            await self._refuse(
                f"cannot resume after last_seq {n}: the journal is {state}; "
                "the live stream follows",
                state=state,
            )
            return  # cursor -1: everything held goes out
        newest, oldest = journal.last_seq, journal.oldest_seq
        if n > newest:
            self.cursor = newest
            await self._refuse(
                f"last_seq {n} is past the newest seq this journal holds "
                f"({newest}): the live stream follows",
                newest_seq=newest,
            )
            return
        self.cursor = n
        if n < newest and (oldest == 0 or n + 1 < oldest):
            self.cursor = oldest - 1 if oldest else newest
            await self._refuse(
                f"last_seq {n} is older than the journal keeps: the oldest seq still held is "
                f"{oldest}; resuming from there",
                oldest_seq=oldest,
                newest_seq=newest,
            )
        while self.cursor < newest:
            try:
                page = await journal.read_after_text(self.cursor, PAGE)
            except Exception as exc:  # the journal went unavailable: say so, go live
                logger.warning("resume of sid %s: journal read failed: %s", self._sid, exc)
                await self._emit_error(exc)
                return
            if not page:
                return
            await self._send_stored(page)
            if not await self._drained():
                return

    async def _send(self, records: list[JournalRecord]) -> None:
        """Each record not sent yet, straight into the client's engine.io queue: the packets
        `emit` would build, without its per-packet lookups (a catch-up is one client, many
        events; `_drained` bounds the queue instead of the manager's byte count)."""
        sock = self._socket()
        if sock is None:
            return
        dumps, put = engineio_json.dumps, sock.queue.put_nowait
        for rec in records:
            if rec.seq is not None:
                if rec.seq <= self.cursor:
                    continue  # read from the journal already
                self.cursor = rec.seq
            text = rec.pushed_text()
            if text is None:
                packet = "2" + dumps([rec.event, push_payload(rec)])
            else:
                packet = event_packet(rec.event, text)
            put(eio_packet.Packet(eio_packet.MESSAGE, packet))
            self.sent += 1
            if self.sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the socket's writer and other clients run meanwhile
                if sock.closed:
                    return

    async def _send_stored(self, rows: list[tuple[int, str, str]]) -> None:
        """Journal rows as stored, their JSON text not decoded and encoded again: `seq` is
        spliced in as the payload's last key, where `push_payload` puts it too."""
        sock = self._socket()
        if sock is None:
            return
        put = sock.queue.put_nowait
        for seq, event, text in rows:
            if seq <= self.cursor:
                continue
            self.cursor = seq
            put(eio_packet.Packet(eio_packet.MESSAGE, event_packet(event, with_seq(text, seq))))
            self.sent += 1
            if self.sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if sock.closed:
                    return

    def _socket(self) -> Any:
        """The client's engine.io socket (None once it is gone)."""
        eio_sid = self._sio.manager.eio_sid_from_sid(self._sid, "/")
        sock = self._sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        return None if sock is None or sock.closed or sock.closing else sock

    async def _drained(self) -> bool:
        """Wait until the client has taken most of what it was sent; False when it left."""
        while True:
            sock = self._socket()
            if sock is None:
                return False
            if sock.queue.qsize() < _QUEUED_MAX:
                await asyncio.sleep(0)
                return True
            await asyncio.sleep(0.005)

    async def _refuse(self, message: str, **details: Any) -> None:
        await self._emit_error(InvalidRequest(message, field="last_seq", details=details))

    async def _emit_error(self, exc: Exception) -> None:
        await self._sio.emit(
            "error", error_payload(exc, _OPERATION, {"last_seq": self._asked}), to=self._sid
        )
