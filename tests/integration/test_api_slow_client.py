"""A client that stops reading is dropped once too far behind; the others keep everything."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import websockets
from api_harness import RAW_CONNECT, client, running_service

from server.core.config import Settings
from server.core.events import ActivityLogged

pytestmark = pytest.mark.docker

BOUND = 1024 * 1024
BATCH = 50
BATCHES = 40  # 40 x 50 x ~4 KB = ~8 MB: eight times the bound


async def test_a_stalled_client_is_dropped_and_the_others_get_everything(
    settings: Settings,
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        manager = svc.app.sio.manager
        manager.max_pending_bytes = BOUND
        got = 0
        batch_done = asyncio.Event()

        def count(_data: Any) -> None:
            nonlocal got
            got += 1
            if got % BATCH == 0:
                batch_done.set()

        sio.on("activity_log", count)
        url = svc.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        # max_queue=1 and no reads: the stalled client's TCP window fills, then its queue does.
        async with websockets.connect(url, max_queue=1) as stalled:
            await stalled.recv()
            await stalled.send(RAW_CONNECT)
            async with asyncio.timeout(10):
                while len(svc.app.sio.eio.sockets) < 2:
                    await asyncio.sleep(0.02)
            for b in range(BATCHES):
                batch_done.clear()
                for i in range(BATCH):
                    svc.manager.bus.publish(
                        ActivityLogged(
                            activity_type="message_received",
                            container_id=None,
                            message=f"{b}-{i}",
                            details={"blob": "x" * 4000},
                        )
                    )
                async with asyncio.timeout(20):
                    await batch_done.wait()  # the reading client is never far behind
            assert got == BATCH * BATCHES and sio.connected
            assert manager.dropped_clients == 1
            # its Socket.IO session is gone and its Engine.IO socket closed, queue emptied
            assert len(list(manager.get_participants("/", None))) == 1
            dropped = [s for s in svc.app.sio.eio.sockets.values() if s.closed]
            assert len(dropped) == 1 and dropped[0].queue.qsize() <= 1
            with contextlib.suppress(websockets.ConnectionClosed):
                await stalled.send("3")
        assert (await sio.call("list_containers", {}))["count"] == 0
        assert not rec.disconnected.is_set()
