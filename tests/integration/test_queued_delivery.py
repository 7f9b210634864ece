"""Queued delivery with the real engine, a real flow and a manager SIGKILLed mid-delivery.

The flow runs this tree's flow/flowrt.py (an image built FROM flow:latest) and records, in
order, every queued message its handler saw; asked `report`, it answers the list."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.core.config import Settings
from server.core.events import FlowMessageReceived
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from server.wire.journal_encoding import encode_event
from tests.conftest import RUN_ID
from tests.integration.api_harness import client, running_service
from tests.integration.manager_helpers import wait_event

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
IMAGE = f"flowmgr-test-queueflow:{RUN_ID}"
COUNT = 120
FLOW_CODE = """
import time
import flowrt

seen = []

@flowrt.command("q")
def q(message):
    time.sleep(0.02)  # slow enough that the manager is killed mid-delivery
    seen.append(message["n"])

@flowrt.command("report")
def report(message):
    return {"seen": seen}
"""


@pytest.fixture(scope="module")
def queue_image(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[str]:
    """flow:latest with this tree's runtime and the recording flow (removed at the end)."""
    ctx = tmp_path_factory.mktemp("queueflow")
    shutil.copy(ROOT / "flow" / "flowrt.py", ctx / "flowrt.py")
    (ctx / "main.py").write_text(textwrap.dedent(FLOW_CODE))
    (ctx / "Dockerfile").write_text(
        "FROM flow:latest\nCOPY flowrt.py /opt/flowrt/flowrt.py\nCOPY main.py /app/main.py\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", IMAGE, str(ctx)], check=True, capture_output=True
    )
    yield IMAGE
    subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)


async def test_queued_while_stopped_survives_a_sigkill_and_reaches_the_handler_once_in_order(
    settings: Settings, queue_image: str, unique_name: Any
) -> None:
    name = unique_name("queue")
    # every send gets its activity line (counted below), however fast the queue drains
    settings = settings.model_copy(
        update={"flow": settings.flow.model_copy(update={"message_activity_per_second": 0})}
    )
    setup = ContainerManager(settings, journal_encoder=encode_event)
    async with setup:
        await setup.create_container(CreateSpec(name=name, image=queue_image))
        orphan = (await setup.create_container(CreateSpec(name=f"{name}-o", image=queue_image))).id

    # a manager in its own process queues to the created flow, starts it, and is SIGKILLed
    # once a part of the queue is delivered
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.queue_child",
        settings.model_dump_json(),
        name,
        str(COUNT),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    queued: list[str] = []
    delivered: set[str] = set()
    assert child.stdout is not None
    try:
        async with asyncio.timeout(90):
            while len(delivered) < COUNT // 4:
                line = (await child.stdout.readline()).decode().split()
                assert line, "the child manager ended early"
                if line[0] == "queued":
                    assert int(line[1]) == len(queued)
                    queued.append(line[2])
                else:
                    delivered.add(line[1])
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert len(queued) == COUNT and len(delivered) < COUNT  # killed mid-delivery

    # restarted on the same database: the rest is delivered, nothing twice to the handler
    manager = ContainerManager(settings, journal_encoder=encode_event)
    async with manager, manager.bus.subscribe() as sub:
        cid = manager.get(name).id
        async with asyncio.timeout(60):
            while manager.outbox.pending(cid):
                await asyncio.sleep(0.05)
        await manager.send_message(cid, {"command": "report"})
        report = await wait_event(
            sub, FlowMessageReceived, lambda e: e.container_id == cid and "seen" in e.message
        )
        assert report.message["seen"] == list(range(COUNT))
        history = await manager.get_history(types=["message_delivered"], limit=1000)
        acked = [r.data["message_id"] for r in history.events if r.container_id == cid]
        assert set(acked) <= set(queued) and set(acked) >= set(queued) - delivered
        # the restarted manager did send again what was not acknowledged (the flow skipped it)
        log = await manager.get_history(container_id=cid, types=["activity_log"], limit=1000)
        sends = [
            r
            for r in log.events
            if r.data["activity_type"] == "message_sent"
            and "_flowmgr" in r.data["details"]["message"]
        ]
        assert len(sends) > COUNT

        # deleting a flow drops its queue and says how many
        await manager.stop_container(cid)
        for n in range(3):
            await manager.send_message(cid, {"command": "q", "n": n}, queue=True)
        deleted, dropped = await manager.delete_container_counted(cid)
        assert (deleted, dropped) == (cid, 3)
        assert manager.outbox.pending(cid) == []
        lines = [a for a in manager.recent_activity(cid) if a.details.get("queue_dropped") == 3]
        assert lines and "3 queued messages" in lines[0].message
        for n in range(2):
            await manager.send_message(orphan, {"command": "q", "n": n}, queue=True)

    # removed behind the manager's back while it is down: its queue goes at the next start
    subprocess.run(["docker", "rm", "-f", orphan], check=True, capture_output=True)
    third = ContainerManager(settings, journal_encoder=encode_event)
    async with third:
        async with asyncio.timeout(30):
            while orphan in third.outbox.queued_flows():
                await asyncio.sleep(0.05)
        told = [a for a in third.recent_activity(orphan) if a.details.get("queue_dropped") == 2]
        assert told


async def test_queue_over_the_api(settings: Settings, queue_image: str, unique_name: Any) -> None:
    """Hostile `queue` values, `queued` answers, `message_delivered` pushed with its seq, the
    bound, and the count of dropped messages in `container_deleted`."""
    small = settings.model_copy(
        update={"journal": settings.journal.model_copy(update={"queue_max_per_flow": 3})}
    )
    async with running_service(small) as svc, client(svc.url) as (sio, rec):
        name = unique_name("apiq")
        await sio.call("create_container", {"image": queue_image, "name": name}, timeout=60)
        hostile: list[Any] = ["true", 1, 0, None, [], {}, 1.0]
        for bad in hostile:
            err = await sio.call(
                "send_message", {"container_id": name, "message": {"n": 1}, "queue": bad}
            )
            assert err["error_type"] == "validation_error" and err["details"]["field"] == "queue"
        plain = await sio.call("send_message", {"container_id": name, "message": {"n": 1}})
        assert plain["error_type"] == "socket_connection_error"  # today's behaviour stays
        ids = []
        for n in range(3):
            msg = {"command": "q", "n": n}
            ok = await sio.call(
                "send_message", {"container_id": name, "message": msg, "queue": True}
            )
            assert set(ok) == {"container_id", "message", "status", "message_id"}
            assert ok["status"] == "queued" and ok["message"] == msg
            ids.append(ok["message_id"])
        full = await sio.call(
            "send_message", {"container_id": name, "message": {"n": 9}, "queue": True}
        )
        assert full["error_type"] == "validation_error"
        assert full["details"]["setting"] == "journal.queue_max_per_flow"
        await sio.call("start_container", {"container_id": name}, timeout=60)
        for mid in ids:
            pushed = await rec.wait_for("message_delivered", _names(mid))
            assert isinstance(pushed["seq"], int) and pushed["timestamp"]
        seqs = [d["seq"] for d in rec.events["message_delivered"]]
        assert seqs == sorted(seqs) and len(seqs) == 3
        # no control frame became a `message_received`
        assert not [d for d in rec.events["message_received"] if "_flowmgr" in d["message"]]
        await sio.call("stop_container", {"container_id": name}, timeout=60)
        for n in range(2):
            await sio.call(
                "send_message",
                {"container_id": name, "message": {"command": "q", "n": n}, "queue": True},
            )
        gone = await sio.call("delete_container", {"container_id": name}, timeout=60)
        assert gone["status"] == "deleted" and gone["queue_dropped"] == 2


def _names(message_id: str) -> Callable[[Any], bool]:
    return lambda data: bool(data["message_id"] == message_id)
