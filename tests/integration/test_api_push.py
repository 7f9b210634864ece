"""Events the server sends on its own: every client gets them, forwarded from the core's bus."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from api_harness import BUSYBOX, client, docker_cli, running_service

from server.core.config import Settings
from server.core.events import FlowChannelConnected
from tests.conftest import with_code_roots

pytestmark = pytest.mark.docker

FLOW_EXAMPLES = Path(__file__).resolve().parents[2] / "flow" / "examples"


async def test_both_clients_see_a_stop_made_behind_the_managers_back(
    settings: Settings, unique_name: Any
) -> None:
    async with (
        running_service(settings) as svc,
        client(svc.url) as (one, rec1),
        client(svc.url) as (_, rec2),
    ):
        name = unique_name("behind")
        cid = (await one.call("create_container", {"image": BUSYBOX, "name": name}, timeout=60))[
            "container_id"
        ]
        await one.call("start_container", {"container_id": cid}, timeout=60)
        before = time.time()
        await docker_cli("stop", "-t", "2", cid)

        def stopped(d: dict[str, Any]) -> bool:
            return bool(d["container_id"] == cid and d["old_state"] == "running")

        for rec in (rec1, rec2):
            ev = await rec.wait_for("status_changed", stopped)
            # ext `seq`: journalled first (issue 14)
            assert set(ev) == {"container_id", "old_state", "new_state", "timestamp", "seq"}
            assert ev["new_state"] == "stopped"  # a docker stop is a stop on request
            assert isinstance(ev["timestamp"], float) and ev["timestamp"] >= before - 1
        # a stop is never a crash
        assert not any(c["container_id"] == cid for c in rec1.events["container_crashed"])


async def test_periodic_status_update_and_health_warning(
    settings: Settings, unique_name: Any
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        name = unique_name("sick")
        cid = (
            await sio.call(
                "create_container",
                {"image": "flowmgr-test-unhealthy:latest", "name": name},
                timeout=60,
            )
        )["container_id"]
        await sio.call("start_container", {"container_id": cid}, timeout=60)
        update = await rec.wait_for("container_status_update", lambda d: d["container_id"] == cid)
        assert set(update) - {"seq"} == {"container_id", "status"}  # ext seq: when journalled
        assert set(update["status"]) == {
            "state",
            "health",
            "socket_connected",
            "uptime",
            "resource_usage",
        }
        warning = await rec.wait_for(
            "container_health_warning", lambda d: d["container_id"] == cid, timeout=40
        )
        assert warning["health"] == "unhealthy" and isinstance(warning["timestamp"], float)
        await rec.wait_for(
            "activity_log",
            lambda d: d["activity_type"] == "health_warning" and d["container_id"] == cid,
        )


async def _connected_flow(svc: Any, sio: Any, name: str, **extra: Any) -> str:
    """Create and start a flow:latest container; return its id once its flow has connected."""
    async with svc.manager.bus.subscribe(
        predicate=lambda e: isinstance(e, FlowChannelConnected)
    ) as sub:
        created = await sio.call("create_container", {"name": name, **extra}, timeout=60)
        cid: str = created["container_id"]
        assert created["image"] == "flow:latest"  # docker.default_image when none is named
        await sio.call("start_container", {"container_id": cid}, timeout=60)
        async with asyncio.timeout(60):
            async for event in sub:
                if event.container_id == cid:
                    return cid
    raise AssertionError("unreachable")


async def test_message_received_when_a_flow_sends(settings: Settings, unique_name: Any) -> None:
    async with (
        running_service(settings) as svc,
        client(svc.url) as (sio, rec),
        client(svc.url) as (_, rec2),
    ):
        cid = await _connected_flow(svc, sio, unique_name("echo"))
        ack = await sio.call(
            "send_message",
            {"container_id": cid, "request_id": "m1", "message": {"command": "echo", "n": 42}},
        )
        assert ack == {
            "container_id": cid,
            "message": {"command": "echo", "n": 42},
            "status": "sent",
            "request_id": "m1",
        }
        for r in (rec, rec2):
            got = await r.wait_for("message_received", lambda d: d["container_id"] == cid)
            assert set(got) == {"container_id", "message", "timestamp", "seq"}
            assert isinstance(got["message"], dict) and "42" in repr(got["message"])
        for kind in ("message_sent", "message_received"):
            await rec.wait_for(
                "activity_log",
                lambda d, k=kind: d["activity_type"] == k and d["container_id"] == cid,
            )
        status = await sio.call("get_container_status", {"container_id": cid})
        assert status["socket_connected"] is True and status["last_communication"]


async def test_container_crashed_when_a_flow_exits_non_zero(
    settings: Settings, unique_name: Any
) -> None:
    # the example flows are its code root (issue 11: no docker.code_roots, no update)
    async with (
        running_service(with_code_roots(settings, FLOW_EXAMPLES)) as svc,
        client(svc.url) as (sio, rec),
    ):
        cid = await _connected_flow(
            svc, sio, unique_name("crash"), environment={"API_TOKEN": "tok-very-secret"}
        )
        async with svc.manager.bus.subscribe(
            predicate=lambda e: isinstance(e, FlowChannelConnected)
        ) as sub:
            ack = await sio.call(
                "update_container",
                {"container_id": cid, "code_path": str(FLOW_EXAMPLES / "crasher")},
                timeout=90,
            )
            assert ack["status"] == "updated"
            async with asyncio.timeout(60):
                async for event in sub:
                    if event.container_id == cid:
                        break
        sent = await sio.call(
            "send_message", {"container_id": cid, "message": {"command": "crash", "exit_code": 3}}
        )
        assert sent["status"] == "sent", sent
        crash = await rec.wait_for(
            "container_crashed", lambda d: d["container_id"] == cid, timeout=40
        )
        assert set(crash) == {"container_id", "exit_code", "crash_details", "timestamp", "seq"}
        assert crash["exit_code"] == 3 and isinstance(crash["timestamp"], float)
        assert set(crash["crash_details"]) == {"error", "logs"}
        assert "crashing on request" in crash["crash_details"]["logs"]
        await rec.wait_for(
            "status_changed", lambda d: d["container_id"] == cid and d["new_state"] == "exited"
        )
        await rec.wait_for(
            "activity_log",
            lambda d: d["activity_type"] == "container_crash" and d["container_id"] == cid,
        )
        assert "tok-very-secret" not in repr(rec.events)
