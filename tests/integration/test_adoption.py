"""Adoption at start without a thundering herd, the API listening meanwhile (issue 15).

A real engine and a real service; the adapter adds 160 fake labelled containers to the engine's
list whose inspects take 0.4 s each (sleeps, so a loaded machine does not shorten the adoption),
so adopting them takes about 4 s. The port listens after the lifespan's 1 s, `/health` says 503
"adopting" with the progress, a Socket.IO client connects and its request waits for the
adoption, at most ADOPT_INSPECTS inspects are in flight, and the list is asked for once.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from server.core.config import Settings
from server.core.container_info import ContainerInfo
from server.core.docker_adapter import DockerAdapter
from server.core.errors import DockerApiError
from server.core.manager import ContainerManager
from server.core.monitor import ADOPT_INSPECTS
from tests.integration.api_harness import client, running_service

pytestmark = pytest.mark.docker

FAKES = 160
INSPECT_DELAY = 0.4


class SlowEngine(DockerAdapter):
    """The real engine, plus FAKES labelled containers that are slow to inspect."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.docker.call_timeout)
        self.settings = settings
        self.fakes = {uuid.uuid4().hex * 2: f"adopt-{n:04d}" for n in range(FAKES)}
        self.lists = 0
        self.in_flight = 0
        self.most_in_flight = 0

    async def list_ids(self, labels: list[str], *, running_only: bool = False) -> list[str]:
        self.lists += 1
        return [*await super().list_ids(labels, running_only=running_only), *self.fakes]

    async def inspect(self, container_id: str) -> ContainerInfo:
        name = self.fakes.get(container_id)
        if name is None:
            return await super().inspect(container_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(INSPECT_DELAY)
        finally:
            self.in_flight -= 1
        dk, at = self.settings.docker, datetime.now(UTC)
        labels = {"flowmgr.managed": "true", "flowmgr.instance": dk.instance}
        mounts = {dk.socket_mount: f"{self.settings.socket_dir}/.flowmgr-{dk.instance}/{name}"}
        return ContainerInfo(
            container_id, name, "img", "created", "none", at, None, None, 0, False, 0,
            labels=labels, mounts=mounts, asked_ns=time.time_ns(),
        )  # fmt: skip


async def test_the_port_listens_and_says_adopting_while_a_slow_engine_is_adopted(
    settings: Settings,
) -> None:
    engine = SlowEngine(settings)
    manager = ContainerManager(settings, adapter=engine)
    began = time.monotonic()
    async with running_service(settings, manager) as svc:
        listening = time.monotonic() - began
        async with httpx.AsyncClient(base_url=svc.url, timeout=10) as http:
            health = await http.get("/health")
        body = health.json()
        assert health.status_code == 503, body
        assert body["status"] == "unhealthy" and body["reason"] == "adopting"
        adopted, total = body["adoption"]["adopted"], body["adoption"]["total"]
        assert total == FAKES and 0 < adopted < FAKES, body
        assert re.fullmatch(rf"adopted \d+ of {FAKES}", body["progress"])
        assert body["components"]["container_manager"] == "adopting"
        assert 0 < len(manager.snapshot()) < FAKES  # rows appear as they are inspected
        # a request now waits (bounded) for the adoption, then a typed error
        with pytest.raises(DockerApiError) as waited:
            await manager.until_adopted(0.2)
        assert waited.value.details["reason"] == "adopting"
        assert waited.value.details["total"] == FAKES
        async with client(svc.url) as (sio, rec):  # connected, not refused
            await rec.wait_for("connected")
            listed = await sio.call("list_containers", {}, timeout=30)
        assert listed["count"] == FAKES  # answered once all were adopted
        took = time.monotonic() - began
        async with httpx.AsyncClient(base_url=svc.url, timeout=10) as http:
            health = await http.get("/health")
        assert health.status_code == 200, health.text
        assert "reason" not in health.json() and "adoption" not in health.json()
    # about 4 s of inspects, 16 at a time; the port listened a second in, not at the end
    assert took >= FAKES / ADOPT_INSPECTS * INSPECT_DELAY * 0.9
    assert listening < took - 1.0, (listening, took)
    assert engine.most_in_flight == ADOPT_INSPECTS
    assert engine.lists == 1


async def test_an_engine_away_is_not_adopting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests do not wait for an adoption that cannot run: /health gives the engine's reason."""
    monkeypatch.setenv("DOCKER_HOST", f"unix:///tmp/fm-dead-{uuid.uuid4().hex[:8]}.sock")
    manager = ContainerManager(settings)
    assert manager.adoption() is None  # not started: nothing to wait for
    async with manager:
        assert manager.adoption() is None
        await asyncio.wait_for(manager.until_adopted(5.0), 0.5)
    async with running_service(settings) as svc, httpx.AsyncClient(base_url=svc.url) as http:
        body = (await http.get("/health")).json()
    assert body["status"] == "unhealthy" and body["reason"] != "adopting", body
    assert "adoption" not in body
