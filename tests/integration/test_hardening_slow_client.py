"""A client that stops reading while a flow floods messages: other clients keep their pace, and
the server's memory stays bounded."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import os
import socket
import time
import tracemalloc
from typing import Any

import pytest

from server.core.config import Settings
from server.core.frames import encode_frame
from server.core.models import CreateSpec
from tests.integration.api_harness import BUSYBOX, RAW_CONNECT, client, running_service

pytestmark = pytest.mark.docker

logger = logging.getLogger(__name__)

FLOOD = 5_000
PAYLOAD = "p" * 4_000
BOUND = 8 * 2**20
"""Packet bytes a client may fall behind before the server drops it (set for this test)."""


def _stalled_client(port: int) -> socket.socket:
    """A raw websocket that completes the Socket.IO connect, then never reads again."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    _read_until(sock, b'"maxPayload"')  # the 101 answer and Engine.IO's open packet
    # a masked text frame "40{token}": the Socket.IO connect
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(RAW_CONNECT.encode()))
    sock.sendall(bytes([0x81, 0x80 | len(body)]) + mask + body)
    _read_until(sock, b'"connected"')  # the Socket.IO connect answer and the welcome event
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> None:
    seen = b""
    sock.settimeout(10)
    while marker not in seen:
        chunk = sock.recv(4096)
        assert chunk, f"closed before {marker!r}: {seen!r}"
        seen += chunk


def _held() -> int:
    """Python memory held right now (tracemalloc), after a collection."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _flood(settings: Settings, name: str, stall: bool) -> tuple[int, list[float], int]:
    """Flood with or without a stalled client: (memory held, another client's request times,
    clients the server dropped)."""
    async with running_service(settings) as svc, client(svc.url) as (sio, _rec):
        # The default bound is max(64 MiB, 16 frames) of packets; a small one shows it acting.
        svc.app.sio.manager.max_pending_bytes = BOUND
        seen = 0

        def count(_data: Any) -> None:
            nonlocal seen  # counted, not kept: this process's memory is the server's measure
            seen += 1

        sio.handlers["/"].pop("*", None)  # the harness's recorder would keep every event
        sio.on("message_received", count)
        flow = await svc.manager.create_container(CreateSpec(name=name, image=BUSYBOX))
        stalled = await asyncio.to_thread(_stalled_client, svc.port) if stall else None
        try:
            async with asyncio.timeout(10):  # the stalled client really is a connected client
                while len(svc.app.sio.eio.sockets) < (2 if stall else 1):
                    await asyncio.sleep(0.05)
            _r, writer = await asyncio.open_unix_connection(flow.socket_path)
            frame = encode_frame({"payload": PAYLOAD}, 1 << 20)
            writer.write(frame * 100)
            while seen < 100:
                await asyncio.sleep(0.05)
            before = _held()
            started = time.monotonic()
            lags: list[float] = []
            for _ in range(FLOOD // 100):  # ~500 messages/s: a reading client keeps up
                writer.write(frame * 100)
                await writer.drain()
                t0 = time.monotonic()
                await sio.call("list_containers", {}, timeout=30)
                lags.append(time.monotonic() - t0)
                await asyncio.sleep(0.2)
            while seen < FLOOD + 100:
                t0 = time.monotonic()
                await sio.call("list_containers", {}, timeout=30)
                lags.append(time.monotonic() - t0)
                await asyncio.sleep(0.05)
                assert time.monotonic() - started < 180, f"only {seen} messages arrived"
            grown = _held() - before
            logger.warning(
                "flood stall=%s: held +%.1f MiB, median request %.3f s, clients %d",
                stall,
                grown / 2**20,
                sorted(lags)[len(lags) // 2],
                len(svc.app.sio.eio.sockets),
            )
            writer.close()
            dropped = svc.app.sio.manager.dropped_clients
        finally:
            if stalled is not None:
                stalled.close()
    return grown, sorted(lags), dropped


@pytest.mark.slow
async def test_a_stalled_client_neither_slows_others_nor_grows_memory(
    settings: Settings, unique_name: Any
) -> None:
    tracemalloc.start()
    try:
        grown, lags, dropped = await _flood(settings, unique_name("flood1"), stall=True)
        _, base_lags, base_dropped = await _flood(settings, unique_name("flood0"), stall=False)
    finally:
        tracemalloc.stop()
    assert (dropped, base_dropped) == (1, 0)  # the stalled client, and only it, was dropped
    median, base_median = lags[len(lags) // 2], base_lags[len(base_lags) // 2]
    assert median < max(0.5, 2 * base_median), (
        f"median request time {median:.2f} s while a client stalls, {base_median:.2f} s without"
    )
    # 5,000 x 4 KB went to the stalled client: without the bound it held +76 MiB of it
    assert grown < 40 * 1024 * 1024, f"memory held grew {grown / 2**20:.1f} MiB"
