"""The engine goes away and comes back: a real Unix-socket relay to dockerd is cut and restored."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from pathlib import Path

import pytest

from server.core.config import Settings
from server.core.docker_adapter import DockerAdapter
from server.core.errors import DockerUnavailable
from server.core.events import (
    ContainerRemoved,
    DockerConnectionLost,
    DockerConnectionRestored,
    Event,
)
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.integration.engine_relay import Relay
from tests.integration.manager_helpers import BUSYBOX, WAIT, docker, wait_event

pytestmark = pytest.mark.docker


async def test_engine_loss_and_resync(
    settings: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    relay = Relay(Path(settings.socket_dir) / "engine.sock")
    await relay.open()
    adapter = DockerAdapter(settings.docker.call_timeout, base_url=f"unix://{relay.path}")
    m = ContainerManager(settings, adapter=adapter)
    async with m, m.bus.subscribe() as sub:
        keep = await m.create_container(CreateSpec(name=unique_name("keep"), image=BUSYBOX))
        await m.start_container(keep.id)
        gone = await m.create_container(CreateSpec(name=unique_name("gone"), image=BUSYBOX))
        assert m.docker_available

        await relay.cut()
        lost = await wait_event(sub, DockerConnectionLost)
        assert lost.reason
        assert not m.docker_available
        assert m.health()["container_manager"] != "active"
        assert m.health()["event_handler"] != "active"
        with pytest.raises(DockerUnavailable):
            await m.stop_container(keep.id)
        assert m.get(keep.id).state == "running"  # reads still answer from memory

        # changes made while the manager is blind
        await docker("stop", "-t", "1", keep.id)
        await docker("rm", "-f", gone.id)

        await relay.open()
        seen: list[Event] = []
        async with asyncio.timeout(WAIT):
            async for event in sub:
                seen.append(event)
                if isinstance(event, DockerConnectionRestored):
                    break
        assert m.docker_available and m.health()["container_manager"] == "active"
        # the resync before the announcement noticed the container removed behind its back
        removed = [e for e in seen if isinstance(e, ContainerRemoved)]
        assert [e.container_id for e in removed] == [gone.id]
        assert m.get(keep.id).state in ("exited", "stopped")
        await m.start_container(keep.id)
        assert m.get(keep.id).state == "running"
    await relay.cut()
    gc.collect()  # a socket left open by a refused connect would warn (an error) here


async def test_start_without_engine_then_engine_arrives(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    relay = Relay(Path(settings.socket_dir) / "late.sock")
    adapter = DockerAdapter(settings.docker.call_timeout, base_url=f"unix://{relay.path}")
    m = ContainerManager(settings, adapter=adapter)
    async with m.bus.subscribe() as sub:
        async with asyncio.timeout(15):
            await m.start()  # returns promptly: the engine is retried in the background
        try:
            assert not m.docker_available
            assert m.health()["container_manager"] == "unavailable"
            await wait_event(sub, DockerConnectionLost)
            name = unique_name("late")
            with pytest.raises(DockerUnavailable):
                await m.create_container(CreateSpec(name=name, image=BUSYBOX))
            assert not Path(settings.state_dir, name).exists()  # nothing left behind
            await relay.open()
            await wait_event(sub, DockerConnectionRestored)
            assert m.health()["container_manager"] == "active"
            snap = await m.create_container(CreateSpec(name=name, image=BUSYBOX))
            assert snap.state == "created"
        finally:
            await m.stop()
            await relay.cut()
    gc.collect()
