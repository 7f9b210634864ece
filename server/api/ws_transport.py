"""Fewer syscalls per websocket: frames written in one event-loop tick leave in one send()."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["CoalescingWebSocketProtocol"]


class _CoalescingTransport:
    """Proxy of a transport: buffers writes until the end of the current loop tick.

    One request answers with several frames (the answer event, the ack, activity lines); a
    `send()` syscall per frame costs more than everything else the server does per request.
    """

    def __init__(self, inner: asyncio.Transport) -> None:
        self._inner = inner
        self._chunks: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data`; the first write of a tick schedules the flush."""
        if not self._chunks:
            self._loop.call_soon(self._flush)
        self._chunks.append(bytes(data))

    def _flush(self) -> None:
        if not self._chunks:
            return
        data = b"".join(self._chunks)
        self._chunks.clear()
        if not self._inner.is_closing():
            self._inner.write(data)

    def close(self) -> None:
        """Flush what is queued, then close (a close frame must not overtake data)."""
        self._flush()
        self._inner.close()

    def get_write_buffer_size(self) -> int:
        """Bytes not yet sent, queued here included."""
        return self._inner.get_write_buffer_size() + sum(len(c) for c in self._chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websocket protocol writing through a `_CoalescingTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Wrap the transport before uvicorn keeps it."""
        super().connection_made(transport)
        self.transport = _CoalescingTransport(self.transport)  # type: ignore[assignment]
