"""A python-socketio client manager whose emits hand packets straight to the recipients."""

from __future__ import annotations

from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

__all__ = ["DirectEmitManager"]


class DirectEmitManager(socketio.AsyncManager):  # type: ignore[misc]
    """Emits without a task per recipient.

    The stock manager starts one task per recipient and waits for them all, so every emit
    costs at least one event-loop cycle; at a few thousand events per second the bus bridge
    then falls behind. Handing a packet to a recipient only appends it to that client's
    queue, which never blocks, so doing it inline keeps the order and costs no cycle.
    """

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None,
                   skip_sid: Any = None, callback: Any = None, to: Any = None,
                   **kwargs: Any) -> None:
        """Encode once, enqueue for every participant of `room` (all clients when None)."""
        if callback is not None:  # acks addressed to a group need per-recipient ids
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                               callback=callback, to=to, **kwargs)
            return
        room = to or room
        if namespace not in self.rooms:
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace,
                                           data=[event, *args]).encode()
        frames = [eio_packet.Packet(eio_packet.MESSAGE, part)
                  for part in (encoded if isinstance(encoded, list) else [encoded])]
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid not in skipped:
                for frame in frames:
                    await self.server._send_eio_packet(eio_sid, frame)
