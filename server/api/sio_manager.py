"""A python-socketio client manager whose emits hand packets straight to the recipients."""

from __future__ import annotations

import functools
import json
import logging
from collections import deque
from typing import Any

import socketio
from engineio import json as engineio_json
from engineio import packet as eio_packet
from pydantic_core import to_json
from socketio import packet as sio_packet

from server.api.auth import AUTHENTICATED

__all__ = ["DirectEmitManager", "Encoded", "compact_json", "event_packet", "packet_data_json"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _event_json(event: str) -> str:
    return json.dumps(event)


def event_packet(event: str, payload_json: str) -> str:
    """The Socket.IO packet of one event in the default namespace whose payload is JSON text
    already: what `emit` would encode, without encoding the payload again."""
    return f"{sio_packet.EVENT}[{_event_json(event)},{payload_json}]"


def compact_json(value: Any) -> str:
    """Compact JSON (what `separators=(",", ":")` asks for) by pydantic's Rust encoder, several
    times faster than the standard library's on every packet sent. A string UTF-8 cannot hold
    (a lone surrogate echoed from a request) is escaped by the standard library's instead."""
    try:
        return to_json(value).decode()
    except ValueError:
        return str(engineio_json.dumps(value, separators=(",", ":")))


class Encoded(dict[str, Any]):
    """An answer with its JSON text, encoded once: the answer event and the ack (an event's
    data `[name, answer]`, an ack's `[answer]`) are both written from `text` (a 1,000-flow
    `container_list` is over 100 KB of JSON: encoding it twice cost as much as building it)."""

    __slots__ = ("text",)

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload)
        self.text = compact_json(payload)


def packet_data_json(value: Any) -> str:
    """The JSON of a packet's data, an `Encoded` answer at its end spliced in as it is: an
    event's `[name, answer]` (the name's JSON cached), an ack's `[answer]`."""
    if type(value) is list and value and type(value[-1]) is Encoded:
        text = value[-1].text
        if len(value) == 1:
            return f"[{text}]"
        if len(value) == 2 and type(value[0]) is str:
            return f"[{_event_json(value[0])},{text}]"
        return f"[{compact_json(value[:-1])[1:-1]},{text}]"
    return compact_json(value)


class _Pending:
    """Sizes of the packets we put in one client's FIFO queue and it has not taken yet."""

    __slots__ = ("sizes", "total")

    def __init__(self) -> None:
        self.sizes: deque[int] = deque()
        self.total = 0

    def add(self, size: int) -> None:
        self.sizes.append(size)
        self.total += size

    def consumed_down_to(self, queued: int) -> None:
        """The queue holds `queued` packets: the older ones of ours were taken."""
        while len(self.sizes) > queued:
            self.total -= self.sizes.popleft()


class DirectEmitManager(socketio.AsyncManager):  # type: ignore[misc]
    """Emits without a task per recipient, and drops a client that stops reading.

    The stock manager starts one task per recipient and waits for them all, so every emit
    costs at least one event-loop cycle; at a few thousand events per second the bus bridge
    then falls behind. Handing a packet to a recipient only appends it to that client's
    queue, which never blocks, so doing it inline keeps the order and costs no cycle.

    That queue has no bound, so a client that stops reading would hold every broadcast
    until its ping times out; one that falls `max_pending_bytes` behind is disconnected
    instead (a byte bound, not a time: on a loaded machine a healthy client can pause).
    """

    def __init__(self, max_pending_bytes: int = 64 * 2**20) -> None:
        super().__init__()
        self.max_pending_bytes = max_pending_bytes
        self._pending: dict[str, _Pending] = {}
        """eio sid -> the sizes of our packets still in its queue."""
        self.dropped_clients = 0

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Encode once, enqueue for every participant of `room`.

        A broadcast (no room) reaches the AUTHENTICATED room only, never a client whose
        connect is still being checked or was refused."""
        room = to or room
        if room is None:
            room = AUTHENTICATED
        if callback is not None:  # acks addressed to a group need per-recipient ids
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        if namespace not in self.rooms:
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        await self._fan_out(
            encoded if isinstance(encoded, list) else [encoded], namespace, room, skip_sid
        )

    async def emit_json(self, event: str, payload_json: str, room: str) -> None:
        """Emit one event whose payload is JSON text already (the journal's), in the default
        namespace: the packet `emit` would send, without encoding the payload again."""
        if "/" in self.rooms:
            await self._fan_out([event_packet(event, payload_json)], "/", room, None)

    async def _fan_out(self, parts: list[Any], namespace: str, room: Any, skip_sid: Any) -> None:
        """Put the encoded packet in the queue of every participant of `room`."""
        frames = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
        size = sum(len(part) for part in parts)
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        for sid, eio_sid in list(self.get_participants(namespace, room)):
            if sid not in skipped and await self._reserve_or_drop(eio_sid, size):
                for frame in frames:
                    await self.server._send_eio_packet(eio_sid, frame)

    async def _reserve_or_drop(self, eio_sid: str, size: int) -> bool:
        """Whether `eio_sid` may take `size` more bytes; a client over the bound is dropped."""
        sock = self.server.eio.sockets.get(eio_sid)
        if sock is None or sock.closed or sock.closing:
            self._pending.pop(eio_sid, None)
            return False
        sizes = self._pending.setdefault(eio_sid, _Pending())
        sizes.consumed_down_to(sock.queue.qsize())
        behind = sizes.total + size
        if behind <= self.max_pending_bytes:
            sizes.add(size)
            return True
        self._pending.pop(eio_sid, None)
        self.dropped_clients += 1
        logger.warning(
            "disconnecting Socket.IO client %s: it stopped reading (%d bytes "
            "waiting for it, limit %d)",
            eio_sid,
            behind,
            self.max_pending_bytes,
        )
        while not sock.queue.empty():  # free what it would never read
            sock.queue.get_nowait()
            sock.queue.task_done()
        await sock.close(wait=False, abort=True)
        sock.queue.put_nowait(None)  # ends its writer once the blocked send returns
        return False

    def pending_bytes(self, sid: str, namespace: str = "/") -> int:
        """Bytes of our packets in a client's queue, not yet sent (0 for a client gone)."""
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        sock = self.server.eio.sockets.get(eio_sid) if eio_sid is not None else None
        sizes = self._pending.get(eio_sid) if eio_sid is not None else None
        if sock is None or sizes is None:
            return 0
        sizes.consumed_down_to(sock.queue.qsize())
        return sizes.total

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> Any:
        """Forget the byte count of a client that leaves."""
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        if eio_sid is not None:
            self._pending.pop(eio_sid, None)
        return await super().disconnect(sid, namespace, **kwargs)
