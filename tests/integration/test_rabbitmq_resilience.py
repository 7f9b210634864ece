"""The RabbitMQ interface when things fail: a manager killed with a command in flight, the
broker restarted, and two managers on one broker (each flow's commands reach its owner)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.core.config import Settings
from tests.conftest import RUN_ID
from tests.integration.api_harness import BUSYBOX, client, docker_cli, running_service
from tests.integration.rabbit_harness import (
    delete_topology,
    platform,
    rabbitmqctl,
    with_messaging,
)

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
READY = b"RabbitMQ interface ready"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The interface on, with queues of its own."""
    return with_messaging(settings)


class ManagerProcess:
    """`python -m server` with the interface on; killable, restartable."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.workdir = workdir
        self.config = workdir / "config.json"
        data = settings.model_dump(mode="json", exclude={"config_file"})
        self.config.write_text(json.dumps(data))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start it and wait until its interface consumes."""
        env = {k: v for k, v in os.environ.items() if k != "CONFIG_FILE"}
        env.update(PYTHONPATH=str(ROOT), FLOWMGR_TOKEN="rabbit-test-token-0123456789")
        self.starts += 1
        self.log = self.workdir / f"manager-{self.starts}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "0"]
                + ["--config", str(self.config)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 60
        while READY not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the manager."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the broker, unacknowledged deliveries go back."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        """Stop it if it runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def manager_process(settings: Settings, tmp_path: Path) -> Iterator[ManagerProcess]:
    """A manager process (stopped at the end, then its queues deleted)."""
    proc = ManagerProcess(settings, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()
        asyncio.run(delete_topology(settings))


async def _containers_named(name: str) -> list[str]:
    return (await docker_cli("ps", "-aq", "--filter", f"name=^{name}$")).split()


async def test_a_command_in_flight_to_a_killed_manager_is_answered_by_the_next(
    settings: Settings, manager_process: ManagerProcess, unique_name: Any
) -> None:
    async with platform(settings, cleanup=False) as p:
        await asyncio.to_thread(manager_process.start)
        manager_process.signal(signal.SIGSTOP)  # it takes the delivery but never answers
        name = unique_name("frozen")
        await p.send("create_container", {"name": name, "image": BUSYBOX}, cid="frozen-1")
        await asyncio.sleep(1.0)
        manager_process.kill()
        assert not p.answers.get("frozen-1")
        await asyncio.to_thread(manager_process.start)
        answer = await p.answer("frozen-1")
        assert answer["ok"] is True, answer
        assert len(await _containers_named(name)) == 1


async def test_a_manager_killed_mid_create_does_not_create_twice(
    settings: Settings, manager_process: ManagerProcess, unique_name: Any
) -> None:
    name = unique_name("midway")
    events = await asyncio.create_subprocess_exec(
        "docker",
        "events",
        "--filter",
        "event=create",
        "--filter",
        f"container={name}",
        "--format",
        "{{.Actor.Attributes.name}}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with platform(settings, cleanup=False) as p:
            await asyncio.to_thread(manager_process.start)
            await asyncio.sleep(0.2)  # `docker events` is listening
            await p.send("create_container", {"name": name, "image": BUSYBOX}, cid="mid-1")
            assert events.stdout is not None
            async with asyncio.timeout(60):
                line = await events.stdout.readline()
            manager_process.kill()  # the engine made it; the answer is likely not out yet
            assert line.decode().strip() == name
            await asyncio.to_thread(manager_process.start)
            answer = await p.answer("mid-1")
            assert answer["ok"] is True, answer  # answered once, from the record or the label
            await asyncio.sleep(0.5)
            assert len(p.answers["mid-1"]) in (1, 2)  # one before the kill at most, then again
            assert all(a == answer for a in p.answers["mid-1"])
            assert len(await _containers_named(name)) == 1
    finally:
        events.kill()
        await events.wait()


async def _health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        body: dict[str, Any] = (await http.get(f"{url}/health")).json()
        return body


async def test_a_broker_restart_leaves_socketio_working_and_loses_no_command_or_event(
    settings: Settings, unique_name: Any
) -> None:
    held = f"{settings.messaging.event_exchange}.held"  # durable: outlives the restart
    async with running_service(settings) as svc:
        async with platform(settings, cleanup=False) as p:
            await p.until_consuming(svc)
            queue = await p.channel.declare_queue(held, durable=True)
            await queue.bind(settings.messaging.event_exchange, "event.activity_log")
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            async with asyncio.timeout(30):
                while (await _health(svc.url))["components"]["messaging"] == "active":
                    await asyncio.sleep(0.1)
            health = await _health(svc.url)
            assert health["components"]["messaging"] == "unavailable"
            assert health["status"] == "degraded" and health["failing"] == ["messaging"]
            async with client(svc.url) as (sio, _):
                listed = await sio.call("list_containers", {})
                assert "containers" in listed
                name = unique_name("outage")  # its events wait for the broker
                made = await sio.call("create_container", {"name": name, "image": BUSYBOX})
                assert made["name"] == name
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
        # sent before the manager is back (its backoff): the durable queue keeps it
        async with platform(settings, cleanup=False) as p:
            cid = await p.send("list_containers", {})
            assert (await p.answer(cid))["ok"] is True
            async with asyncio.timeout(30):  # quorum queues elect their leader after a restart
                while (await _health(svc.url))["components"]["messaging"] != "active":
                    await asyncio.sleep(0.1)
            queue = await p.channel.get_queue(held)
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(30):
                while not any(e.get("container_id") == made["container_id"] for e in seen):
                    msg = await queue.get(fail=False)
                    if msg is None:
                        await asyncio.sleep(0.05)
                    else:
                        seen.append(json.loads(msg.body))
                        await msg.ack()
            await p.channel.queue_delete(held)
    await delete_topology(settings)


async def test_two_managers_on_one_broker_route_each_flows_commands_to_its_owner(
    settings: Settings, unique_name: Any
) -> None:
    second = settings.model_copy(
        update={
            "socket_dir": f"/tmp/fm/{uuid.uuid4().hex[:8]}",  # a socket path is short
            "docker": settings.docker.model_copy(
                update={"instance": f"{RUN_ID}b", "network": f"flowmgr-{RUN_ID}b"}
            ),
        }
    )
    os.makedirs(second.socket_dir)
    own = {
        s.docker.instance: f"{settings.messaging.command_queue}.{s.docker.instance}"
        for s in (settings, second)
    }
    try:
        async with (
            platform(settings) as p,
            running_service(settings) as a,
            running_service(second) as b,
        ):
            await p.until_consuming(a)
            await p.until_consuming(b)
            flows: dict[str, str] = {}
            for instance, queue in own.items():  # one flow on each, through its own queue
                made = await p.call(
                    "create_container",
                    {"name": unique_name("two"), "image": BUSYBOX, "command": ["sleep", "600"]},
                    queue=queue,
                )
                assert made.get("instance") == instance, made
                flows[made["data"]["name"]] = instance
            for _ in range(4):  # through the shared queue: whoever takes it, the owner answers
                for name, instance in flows.items():
                    status = await p.call("get_status", {"container_id": name})
                    assert status.get("ok") is True, status
                    assert status["instance"] == instance
            for name, instance in flows.items():
                started = await p.call("start_container", {"container_id": name})
                assert started["instance"] == instance and started["data"]["status"] == "running"
            unknown = await p.call("get_status", {"container_id": "nobody-has-this"})
            assert unknown["error_type"] == "container_not_found"
            made = await p.call("create_container", {"name": unique_name("any"), "image": BUSYBOX})
            assert made["instance"] in own  # a create without placement: any one manager
    finally:
        shutil.rmtree(second.socket_dir, ignore_errors=True)
        for s in (second,):
            ids = (
                await docker_cli(
                    "ps", "-aq", "--filter", f"label=flowmgr.instance={s.docker.instance}"
                )
            ).split()
            if ids:
                await docker_cli("rm", "-f", *ids)
            nets = (
                await docker_cli(
                    "network", "ls", "-q", "--filter", f"label=flowmgr.instance={s.docker.instance}"
                )
            ).split()
            if nets:
                await docker_cli("network", "rm", *nets)


async def test_a_command_queue_deleted_under_the_manager_is_declared_again(
    settings: Settings,
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        await p.channel.queue_delete(settings.messaging.command_queue)
        async with asyncio.timeout(30):  # a command to a missing queue is dropped: ask again
            while True:
                cid = await p.send("list_containers", {})
                with contextlib.suppress(TimeoutError):
                    assert (await p.answer(cid, timeout=0.5))["ok"] is True
                    break


def test_sigterm_with_the_interface_on_exits_0_within_5_s(
    manager_process: ManagerProcess,
) -> None:
    manager_process.start()
    assert manager_process.proc is not None
    began = time.monotonic()
    manager_process.signal(signal.SIGTERM)
    assert manager_process.proc.wait(10) == 0
    assert time.monotonic() - began < 5.0
