"""Every docs/PROTOCOL.md request and its answer, over a real server, with a real client."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from api_harness import BUSYBOX, USAGE_FIELDS, Recorder, client, running_service

from server.core.config import Settings
from server.core.events import ACTIVITY_TYPES
from server.core.models import HEALTHS, STATES
from tests.conftest import with_code_roots

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """These tests update flows from tmp_path: allow it as the code root (issue 11: with no
    docker.code_roots every update is refused)."""
    return with_code_roots(settings, tmp_path)


STATE_ANSWER = {"container_id", "status"}
STATUS_FIELDS = {
    "container_id",
    "state",
    "health",
    "uptime",
    "socket_connected",
    "last_communication",
    "resource_usage",
}
ITEM_FIELDS = {"id", "name", "status", "image", "created", "socket_path", "ports"}
ACTIVITY_FIELDS = {"activity_type", "container_id", "message", "details", "timestamp"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)$")


async def _ask(
    sio: socketio.AsyncClient,
    rec: Recorder,
    request: str,
    answer: str,
    payload: dict[str, Any],
    fields: set[str],
) -> dict[str, Any]:
    """Call with an ack and a request_id; the answer event must equal the ack."""
    rid = f"{request}-{len(rec.events[answer])}"
    ack = await sio.call(request, {**payload, "request_id": rid}, timeout=90)
    assert ack.get("error") is not True, ack
    assert set(ack) == fields | {"request_id"}, (request, ack)
    assert ack["request_id"] == rid
    event = await rec.wait_for(answer, lambda d: d.get("request_id") == rid)
    assert event == ack
    return ack  # type: ignore[no-any-return]


def _activity(rec: Recorder, kind: str, cid: str) -> Callable[[Any], bool]:
    return lambda d: d["activity_type"] == kind and d["container_id"] == cid


async def test_every_request_has_its_answer(
    settings: Settings, unique_name: Any, tmp_path: Path
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        welcome = await rec.wait_for("connected")
        assert isinstance(welcome["message"], str) and welcome["message"]

        name = unique_name("api")
        created = await _ask(
            sio,
            rec,
            "create_container",
            "container_created",
            {
                "image": BUSYBOX,
                "name": name,
                "environment": {"MODE": "test", "DB_PASSWORD": "hunter2-secret"},
            },
            {"container_id", "name", "image", "status", "socket_path", "ports"},
        )
        cid = created["container_id"]
        assert re.fullmatch(r"[0-9a-f]{64}", cid)
        assert created["name"] == name and created["image"] == BUSYBOX
        assert created["status"] == "created" and created["socket_path"]

        started = await _ask(
            sio, rec, "start_container", "container_started", {"container_id": name}, STATE_ANSWER
        )
        assert started == {
            "container_id": cid,
            "status": "running",
            "request_id": started["request_id"],
        }

        status = await _ask(
            sio,
            rec,
            "get_container_status",
            "container_status",
            {"container_id": cid[:12]},
            STATUS_FIELDS,
        )
        assert status["container_id"] == cid and status["state"] == "running"
        assert status["health"] in HEALTHS and isinstance(status["socket_connected"], bool)
        assert re.fullmatch(r"\d+:\d\d:\d\d", status["uptime"])
        usage = status["resource_usage"]
        if usage is not None:  # the first sample may not be taken yet
            assert set(usage) == USAGE_FIELDS and ISO.match(usage["timestamp"])
            assert isinstance(usage["memory_usage"], int)
            assert isinstance(usage["cpu_percent"], float)

        listed = await _ask(
            sio, rec, "list_containers", "container_list", {}, {"containers", "count"}
        )
        assert listed["count"] == len(listed["containers"]) >= 1
        item = next(i for i in listed["containers"] if i["id"] == cid)
        assert set(item) == ITEM_FIELDS and item["status"] == "running"
        assert item["status"] in STATES and ISO.match(item["created"])

        logs = await _ask(
            sio,
            rec,
            "get_container_logs",
            "container_logs",
            {"container_id": cid, "tail": 5},
            {"container_id", "lines", "truncated"},
        )
        assert isinstance(logs["lines"], list) and logs["truncated"] is False

        code = tmp_path / "code"
        code.mkdir()
        (code / "main.py").write_text("print('v2')\n")
        updated = await _ask(
            sio,
            rec,
            "update_container",
            "container_updated",
            {"container_id": cid, "code_path": str(code)},
            {"container_id", "code_path", "status"},
        )
        assert updated["status"] == "updated" and updated["code_path"] == str(code)

        restarted = await _ask(
            sio,
            rec,
            "restart_container",
            "container_restarted",
            {"container_id": cid},
            STATE_ANSWER,
        )
        assert restarted["status"] == "running"

        stopped = await _ask(
            sio, rec, "stop_container", "container_stopped", {"container_id": cid}, STATE_ANSWER
        )
        assert stopped["status"] == "stopped"
        after = await sio.call("get_container_status", {"container_id": cid})
        assert after["state"] == "stopped" and after["uptime"] is None

        deleted = await _ask(
            sio, rec, "delete_container", "container_deleted", {"container_id": cid}, STATE_ANSWER
        )
        assert deleted == {
            "container_id": cid,
            "status": "deleted",
            "request_id": deleted["request_id"],
        }
        gone = await sio.call("get_container_status", {"container_id": cid})
        assert gone["error_type"] == "container_not_found"

        for kind in (
            "container_created",
            "container_started",
            "container_updated",
            "container_restarted",
            "container_stopped",
            "container_deleted",
        ):
            entry = await rec.wait_for("activity_log", _activity(rec, kind, cid))
            assert set(entry) == ACTIVITY_FIELDS | {"seq"} and ISO.match(entry["timestamp"])
            assert isinstance(entry["details"], dict)
        assert all(e["activity_type"] in ACTIVITY_TYPES for e in rec.events["activity_log"])
        assert "hunter2-secret" not in repr(rec.events)


async def test_send_message_without_a_flow_is_a_socket_error(
    settings: Settings, unique_name: Any
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        name = unique_name("nosock")
        created = await sio.call("create_container", {"image": BUSYBOX, "name": name}, timeout=60)
        await sio.call("start_container", {"container_id": name}, timeout=60)
        err = await sio.call(
            "send_message", {"container_id": name, "message": {"n": 1}, "request_id": "m1"}
        )
        assert err["error"] is True and err["request_id"] == "m1"
        assert err["error_type"] in {"socket_connection_error", "socket_timeout_error"}
        assert err["details"]["operation"] == "send_message"
        assert err["details"]["container_id"] == name
        await sio.call("delete_container", {"container_id": created["container_id"]}, timeout=60)


async def test_log_subscription_streams_to_the_room_only(
    settings: Settings, unique_name: Any
) -> None:
    from server.core.models import CreateSpec

    async with running_service(settings) as svc:
        # The wire has no `command`; make a chatty container through the core itself.
        snap = await svc.manager.create_container(
            CreateSpec(
                name=unique_name("chatty"),
                image=BUSYBOX,
                command=[
                    "sh",
                    "-c",
                    "trap 'exit 0' TERM; while true; do echo tick; sleep 0.2 & wait $!; done",
                ],
            )
        )
        await svc.manager.start_container(snap.id)
        async with client(svc.url) as (sub, sub_rec), client(svc.url) as (other, other_rec):
            ack = await sub.call("subscribe_logs", {"container_id": snap.name, "request_id": "s1"})
            assert ack == {"container_id": snap.id, "status": "subscribed", "request_id": "s1"}
            line = await sub_rec.wait_for("container_log")
            assert set(line) == {"container_id", "line", "timestamp"}
            assert line["container_id"] == snap.id and "tick" in line["line"]
            assert ISO.match(line["timestamp"])
            ack = await sub.call("unsubscribe_logs", {"container_id": snap.id})
            assert ack["status"] == "unsubscribed"
            assert other_rec.events["container_log"] == []
            assert not svc.manager.logs.followed(snap.id)  # the last one left: stream stopped

            await sub.call("subscribe_logs", {"container_id": snap.id})
            await other.call("subscribe_logs", {"container_id": snap.id})
            await sub.disconnect()
            assert svc.manager.logs.followed(snap.id)  # `other` still listens
            await other_rec.wait_for("container_log")
            await other.disconnect()
        async with asyncio.timeout(10):
            while svc.manager.logs.followed(snap.id):  # released when the last one disconnects
                await asyncio.sleep(0.05)
        await svc.manager.delete_container(snap.id)
