"""flowrt run as a host process (3.11, 3.12, 3.13) against a real FlowChannelHub: no Docker."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from server.core.bus import EventBus, Subscription
from server.core.config import FlowSettings
from server.core.events import Event, FlowChannelConnected, FlowMessageReceived
from server.core.flow_channel import FlowChannelHub

FLOW_DIR = Path(__file__).resolve().parents[2] / "flow"
PYENV = Path("/root/.pyenv/versions")
INTERPRETERS = {
    v: str(path)
    for v in ("3.11", "3.12", "3.13")
    if (path := next(iter(sorted(PYENV.glob(f"{v}.*/bin/python{v}"))), None)) is not None
} or {"default": "python3"}


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(f"/tmp/fmx-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def hub_events(sock_dir: Path) -> AsyncIterator[tuple[FlowChannelHub, Subscription]]:
    bus = EventBus()
    hub = FlowChannelHub(bus, FlowSettings())
    await hub.open("f", str(sock_dir / "flow.sock"))
    async with bus.subscribe() as sub:
        yield hub, sub
    await hub.aclose()


async def next_of(sub: Subscription, kind: type[Event]) -> Event:
    async with asyncio.timeout(15):
        while not isinstance(event := await sub.get(), kind):
            pass
    return event


@pytest.mark.parametrize("python", sorted(INTERPRETERS))
async def test_runtime_serves_the_counter_and_exits_zero_on_sigterm(
    hub_events: tuple[FlowChannelHub, Subscription], sock_dir: Path, python: str
) -> None:
    hub, sub = hub_events
    env = {
        **os.environ,
        "FLOW_SOCKET": str(sock_dir / "flow.sock"),
        "PYTHONPATH": str(FLOW_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
        "FLOW_CODE_DIR": str(FLOW_DIR / "examples" / "counter"),
    }
    proc = await asyncio.create_subprocess_exec(
        INTERPRETERS[python],
        str(FLOW_DIR / "entrypoint.py"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await next_of(sub, FlowChannelConnected)
        for expected in (1, 2):
            await hub.send("f", {"command": "increment", "request_id": f"r{expected}"})
            reply = await next_of(sub, FlowMessageReceived)
            assert isinstance(reply, FlowMessageReceived)
            assert reply.message == {"count": expected, "request_id": f"r{expected}"}
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            output, _ = await proc.communicate()
        assert proc.returncode == 0, output.decode()
        assert b"flow runtime stopped" in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_runtime_reconnects_after_the_hub_restarts(
    hub_events: tuple[FlowChannelHub, Subscription], sock_dir: Path
) -> None:
    hub, sub = hub_events
    env = {
        **os.environ,
        "FLOW_SOCKET": str(sock_dir / "flow.sock"),
        "PYTHONPATH": str(FLOW_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
        "FLOW_CODE_DIR": str(FLOW_DIR / "examples" / "echo"),
    }
    proc = await asyncio.create_subprocess_exec(
        "python3",
        str(FLOW_DIR / "entrypoint.py"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await next_of(sub, FlowChannelConnected)
        for _ in range(3):
            await hub.close("f")
            await hub.open("f", str(sock_dir / "flow.sock"))
            await next_of(sub, FlowChannelConnected)
            await hub.send("f", {"command": "ping"})
            reply = await next_of(sub, FlowMessageReceived)
            assert isinstance(reply, FlowMessageReceived) and reply.message == {"pong": True}
    finally:
        proc.terminate()
        await proc.wait()
