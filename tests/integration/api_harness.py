"""A real service on 127.0.0.1 (uvicorn, port 0) and recording Socket.IO clients, for API tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import socketio

from server.api.app import FlowMgrASGIApp, create_app
from server.api.serving import GracefulServer, uvicorn_config
from server.core.config import Settings
from server.core.manager import ContainerManager

__all__ = [
    "Service",
    "Recorder",
    "running_service",
    "client",
    "docker_cli",
    "BUSYBOX",
    "TEST_TOKEN",
    "AUTH",
    "RAW_CONNECT",
    "with_test_token",
]

BUSYBOX = "flowmgr-test-busybox:latest"

USAGE_FIELDS = {
    "cpu_percent",
    "memory_usage",
    "memory_limit",
    "memory_percent",
    "network_rx_bytes",
    "network_tx_bytes",
    "disk_read_bytes",
    "disk_write_bytes",
    "timestamp",
}
"""The 9 fields of a `resource_usage` object (docs/PROTOCOL.md)."""

TEST_TOKEN = "harness-token-0123456789abcdef"
"""The token every harness service requires (the API always requires one) unless a test
configures its own; `client()` presents it unless given another `auth`."""
AUTH = {"token": TEST_TOKEN}
RAW_CONNECT = '40{"token":"' + TEST_TOKEN + '"}'
"""The Socket.IO connect packet with TEST_TOKEN, for tests speaking raw engine.io."""
_DEFAULT: Any = object()


def with_test_token(settings: Settings) -> Settings:
    """`settings` with TEST_TOKEN as `server.token` when it has no token of its own."""
    if settings.server.token:
        return settings
    return settings.model_copy(
        update={"server": settings.server.model_copy(update={"token": TEST_TOKEN})}
    )


WAIT = 20.0
"""Seconds any one expected event may take (Docker on a busy machine)."""


@dataclass
class Service:
    """A running service: its URL, app and manager."""

    url: str
    port: int
    app: FlowMgrASGIApp
    manager: ContainerManager
    server: GracefulServer


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings, manager: ContainerManager | None = None
) -> AsyncIterator[Service]:
    """Serve `create_app(manager or ContainerManager(settings))` until the block ends.

    With no token in `settings`, the service requires TEST_TOKEN (which `client()` presents).
    """
    settings = with_test_token(settings)
    manager = manager or ContainerManager(settings)
    app = create_app(manager, settings, manage_lifecycle=True)
    server = GracefulServer(uvicorn_config(app, settings, host="127.0.0.1", port=0))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(60):
            while not server.started:
                if task.done():
                    task.result()  # start-up failed: raise why
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Service(f"http://127.0.0.1:{port}", port, app, manager, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


class Recorder:
    """Every event a client receives, waitable by name and predicate."""

    def __init__(self) -> None:
        self.events: dict[str, list[Any]] = defaultdict(list)
        self._changed = asyncio.Condition()
        self.disconnected = asyncio.Event()

    async def record(self, event: str, data: Any = None) -> None:
        """The catch-all handler."""
        async with self._changed:
            self.events[event].append(data)
            self._changed.notify_all()

    async def wait_for(
        self, event: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = WAIT
    ) -> Any:
        """The first `event` payload matching `predicate` (already received or yet to come)."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for data in self.events[event]:
                    if predicate(data):
                        return data
                await self._changed.wait()


@contextlib.asynccontextmanager
async def client(
    url: str,
    *,
    auth: Any = _DEFAULT,
    headers: dict[str, str] | None = None,
    transports: list[str] | None = None,
) -> AsyncIterator[tuple[socketio.AsyncClient, Recorder]]:
    """A connected AsyncClient recording everything; disconnected at the end.

    It presents TEST_TOKEN unless `auth` is given (None: no auth payload at all)."""
    if auth is _DEFAULT:
        auth = AUTH
    # Our own HTTP session, closed here: the client leaks its own when a connect is refused.
    async with aiohttp.ClientSession() as session:
        sio = socketio.AsyncClient(reconnection=False, http_session=session)
        rec = Recorder()
        sio.on("*", rec.record)
        sio.on("disconnect", lambda *_: rec.disconnected.set())
        await sio.connect(
            url,
            auth=auth,
            headers=headers or {},
            transports=transports or ["websocket"],
            wait_timeout=10,
        )
        try:
            yield sio, rec
        finally:
            if sio.connected:
                # Over polling, the client waits for its pending long-poll, which engine.io's
                # server answers only at its ping interval (25 s) after a close: 30 s of CI per
                # test. Past 2 s the wait is cancelled (the poll with it); the close was sent.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sio.disconnect(), 2)


async def docker_cli(*args: str) -> str:
    """Run the docker CLI (behind the manager's back); its stdout."""
    proc = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {err.decode().strip()}")
    return out.decode().strip()
