"""Every action over RabbitMQ against a real broker and engine: its answer (the Socket.IO
answer's payload), its events on the exchange, and a redelivered command answered once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.core.config import Settings
from tests.conftest import with_code_roots
from tests.integration.api_harness import BUSYBOX, client, docker_cli, running_service
from tests.integration.rabbit_harness import platform, with_messaging

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The interface on, with queues of its own; flows may be updated from tmp_path."""
    return with_messaging(with_code_roots(settings, tmp_path))


def _ok(answer: dict[str, Any], action: str) -> dict[str, Any]:
    assert answer.get("ok") is True, answer
    assert answer["action"] == action
    data: dict[str, Any] = answer["data"]
    return data


async def test_every_action_answers_like_socketio_and_publishes_events(
    settings: Settings, unique_name: Any, tmp_path: Path
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{svc.url}/health")).json()
        assert health["components"]["messaging"] == "active"

        name = unique_name("mq")
        created = await p.call(
            "create_container",
            {
                "name": name,
                "command": ["sh", "-c", "echo hello; sleep 3600"],
                "image": BUSYBOX,
                "labels": {"team": "data", "com.example/owner": "ana"},
                "flow_id": "f-1",
                "flow_run_id": "r-1",
                "flow_name": "etl",
                "graph_hash": "abc123",
            },
        )
        assert created["instance"] == settings.docker.instance
        made = _ok(created, "create_container")
        cid = made["container_id"]
        assert set(made) == {"container_id", "name", "image", "status", "socket_path", "ports"}

        assert _ok(await p.call("start_container", {"container_id": name}), "start_container") == {
            "container_id": cid,
            "status": "running",
        }
        await p.event("status_changed", lambda d: d["container_id"] == cid)
        await p.event("activity_log", lambda d: d["container_id"] == cid)
        await p.event("container_status_update", lambda d: d["container_id"] == cid)

        status = _ok(await p.call("get_status", {"container_id": cid[:12]}), "get_status")
        assert status["state"] == "running"
        assert status["labels"] == {
            "team": "data",
            "com.example/owner": "ana",
            "flowmgr.flow_id": "f-1",
            "flowmgr.flow_run_id": "r-1",
            "flowmgr.flow_name": "etl",
            "flowmgr.graph_hash": "abc123",
            "flowmgr.correlation_id": status["labels"]["flowmgr.correlation_id"],
        }
        async with client(svc.url) as (sio, _):
            # the same payload as Socket.IO's (plus the echoed labels)
            via_sio = await sio.call("get_container_status", {"container_id": cid})
            assert set(via_sio) | {"labels"} == set(status)
            listed_sio = await sio.call("list_containers", {})
        listed = _ok(await p.call("list_containers", {}), "list_containers")
        assert set(listed) == set(listed_sio) and listed["count"] == listed_sio["count"]
        assert [c["id"] for c in listed["containers"]] == [
            c["id"] for c in listed_sio["containers"]
        ]

        sent = await p.call("send_message", {"container_id": cid, "message": {"n": 1}})
        assert sent.get("error") is True and sent["error_type"] in (
            "socket_error",
            "socket_connection_error",
        )
        assert sent["details"]["operation"] == "send_message"
        assert sent["details"]["data"] == {"container_id": cid, "message": {"n": 1}}

        code = tmp_path / "code"
        code.mkdir()
        (code / "main.py").write_text("print('v2')\n")
        updated = await p.call("update_container", {"container_id": cid, "code_path": str(code)})
        assert _ok(updated, "update_container")["status"] == "updated"
        restarted = _ok(
            await p.call("restart_container", {"container_id": cid}), "restart_container"
        )
        assert restarted["status"] == "running"
        stopped = _ok(await p.call("stop_container", {"container_id": cid}), "stop_container")
        assert stopped == {"container_id": cid, "status": "stopped"}
        await p.event(
            "status_changed", lambda d: d["container_id"] == cid and d["new_state"] != "running"
        )
        deleted = _ok(await p.call("delete_container", {"container_id": cid}), "delete_container")
        assert deleted == {"container_id": cid, "status": "deleted"}
        missing = await p.call("get_status", {"container_id": cid})
        assert missing["error_type"] == "container_not_found"
        assert set(missing) == {"error", "error_type", "message", "details", "timestamp"}


async def test_a_flow_message_is_published_as_message_received(
    settings: Settings, unique_name: Any
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        made = _ok(
            await p.call("create_container", {"name": unique_name("echo")}), "create_container"
        )
        cid = made["container_id"]
        _ok(await p.call("start_container", {"container_id": cid}), "start_container")
        await p.wait(lambda: svc.manager.get(cid).socket_connected)
        message = {"command": "echo", "n": 42}
        sent = _ok(
            await p.call("send_message", {"container_id": cid, "message": message}),
            "send_message",
        )
        assert sent == {"container_id": cid, "message": message, "status": "sent"}
        got = await p.event("message_received", lambda d: d["container_id"] == cid)
        assert "42" in json.dumps(got["message"]) and isinstance(got["seq"], int)


async def test_an_answered_command_sent_again_is_answered_from_the_record(
    settings: Settings, unique_name: Any
) -> None:
    name = unique_name("once")
    data = {"name": name, "image": BUSYBOX, "command": ["sleep", "3600"]}
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        first = await p.call("create_container", data, cid="corr-1")
        _ok(first, "create_container")
        p.answers.clear()
        again = await p.call("create_container", data, cid="corr-1")
        assert again == first
        # two copies at once (a platform retrying early): the second waits for the first
        twin = {"name": f"{name}-2", "image": BUSYBOX, "command": ["sleep", "3600"]}
        await p.send("create_container", twin, cid="corr-3")
        await p.send("create_container", twin, cid="corr-3")
        await p.wait(lambda: len(p.answers.get("corr-3", ())) == 2)
        assert p.answers["corr-3"][0] == p.answers["corr-3"][1]
        assert p.answers["corr-3"][0]["ok"] is True
    # a new manager process reads the same record (the state dir survives it)
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        assert await p.call("create_container", data, cid="corr-1") == first
        other = await p.call("create_container", data, cid="corr-2")
        assert other["error_type"] == "validation_error"  # the name exists: not run twice
        # another command under a used correlation_id gets neither a run nor that answer
        p.answers.clear()
        reused = await p.call("list_containers", {}, cid="corr-1")
        assert reused["error_type"] == "validation_error"
        assert reused["details"]["field"] == "correlation_id"
    for made in (name, f"{name}-2"):
        found = await docker_cli("ps", "-aq", "--filter", f"name=^{made}$")
        assert len(found.split()) == 1


async def test_a_crash_is_published_as_container_crashed(
    settings: Settings, unique_name: Any
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        command = ["sh", "-c", "sleep 1; exit 3"]
        made = await p.call(
            "create_container", {"name": unique_name("crash"), "image": BUSYBOX, "command": command}
        )
        cid = _ok(made, "create_container")["container_id"]
        _ok(await p.call("start_container", {"container_id": cid}), "start_container")
        crashed = await p.event("container_crashed", lambda d: d["container_id"] == cid)
        assert crashed["exit_code"] == 3 and isinstance(crashed["seq"], int)
