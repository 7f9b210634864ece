"""ext `pause_container`, `unpause_container`, `kill_container` (issue 17): a real service, a
real Socket.IO client, real containers; hostile input first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import socketio
from api_harness import BUSYBOX, Recorder, client, docker_cli, running_service

from server.cluster.hub import HubManager
from server.core.config import Settings
from server.core.errors import InvalidRequest
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.conftest import RUN_ID, TEST_LABEL

pytestmark = pytest.mark.docker

HOSTILE_SIGNALS: list[Any] = [
    9,
    "9",
    "-9",
    9999,
    "9999",
    "",
    None,
    True,
    ["SIGKILL"],
    {"name": "SIGKILL"},
    "SIGKILL; rm -rf /",
    "SIGKILL\x00",
    " SIGKILL",
    "SIG",
    "SIGSTOP",  # would freeze the flow behind the manager's back
    "SIGCONT",
    "SIGRTMIN+3",
    "\u017figkill",  # "ſ": str.upper() makes it "SIGKILL"
    "x" * 10240,
    1.5,
]


async def _call(sio: socketio.AsyncClient, event: str, payload: Any) -> dict[str, Any]:
    answer = await sio.call(event, payload, timeout=60)
    assert isinstance(answer, dict), answer
    return answer


def _refused(answer: dict[str, Any], error_type: str, **details: Any) -> None:
    assert answer.get("error") is True, answer
    assert answer["error_type"] == error_type, answer
    for key, value in details.items():
        assert answer["details"].get(key) == value, (key, answer)


def _changed(cid: str, new: str) -> Callable[[Any], bool]:
    return lambda d: d["container_id"] == cid and d["new_state"] == new


async def _running(manager: ContainerManager, name: str, command: list[str] | None = None) -> str:
    snap = await manager.create_container(CreateSpec(name=name, image=BUSYBOX, command=command))
    await manager.start_container(snap.id)
    return snap.id


async def test_pause_unpause_and_kill_answer_push_and_log(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        cid = await _running(svc.manager, unique_name("pk"))
        paused = await _call(sio, "pause_container", {"container_id": cid[:12], "request_id": "p1"})
        assert paused == {"container_id": cid, "status": "paused", "request_id": "p1"}
        assert await rec.wait_for("container_paused") == paused
        await rec.wait_for("status_changed", _changed(cid, "paused"))
        await rec.wait_for("activity_log", lambda d: d["activity_type"] == "container_paused")
        assert (await docker_cli("inspect", "-f", "{{.State.Status}}", cid)) == "paused"
        # a paused flow cannot be paused again, nor a running one unpaused
        again = await _call(sio, "pause_container", {"container_id": cid})
        _refused(again, "validation_error", reason="not_running", state="paused")
        assert again["details"]["operation"] == "pause_container"

        unpaused = await _call(sio, "unpause_container", {"container_id": cid})
        assert unpaused == {"container_id": cid, "status": "running"}
        await rec.wait_for("status_changed", _changed(cid, "running"))
        again = await _call(sio, "unpause_container", {"container_id": cid})
        _refused(again, "validation_error", reason="not_paused", state="running")

        # the image traps TERM and exits 0: "term" is SIGTERM, the answer says so
        killed = await _call(sio, "kill_container", {"container_id": cid, "signal": "term"})
        assert killed["container_id"] == cid and killed["signal"] == "SIGTERM"
        assert killed["status"] in ("running", "stopped")
        await rec.wait_for("status_changed", _changed(cid, "stopped"))
        line = await rec.wait_for(
            "activity_log", lambda d: d["activity_type"] == "container_killed"
        )
        assert line["details"]["signal"] == "SIGTERM"
        # a stopped flow cannot be paused or killed
        for event in ("pause_container", "kill_container"):
            answer = await _call(sio, event, {"container_id": cid})
            _refused(answer, "validation_error", reason="not_running", state="stopped")


async def test_sigkill_is_a_request_not_a_crash(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        cid = await _running(svc.manager, unique_name("kill9"))
        killed = await _call(sio, "kill_container", {"container_id": cid})  # SIGKILL by default
        assert killed == {"container_id": cid, "signal": "SIGKILL", "status": "stopped"}
        await rec.wait_for("status_changed", _changed(cid, "stopped"))
        assert (await docker_cli("inspect", "-f", "{{.State.ExitCode}}", cid)) == "137"
        await asyncio.sleep(1.0)  # the die event has been handled: no crash was said
        assert rec.events["container_crashed"] == []
        # a killed flow starts again like a stopped one
        assert (await _call(sio, "start_container", {"container_id": cid}))["status"] == "running"


async def test_a_paused_flow_can_be_killed_and_a_survived_signal_leaves_it_running(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        hardy = await _running(
            svc.manager,
            unique_name("hup"),
            ["sh", "-c", 'trap "echo got-hup" HUP; while true; do sleep 1 & wait $!; done'],
        )
        survived = await _call(sio, "kill_container", {"container_id": hardy, "signal": "SIGHUP"})
        assert survived == {"container_id": hardy, "signal": "SIGHUP", "status": "running"}
        assert not svc.manager.registry.stopped_on_request(hardy)  # its own exit: a crash again

        frozen = await _running(svc.manager, unique_name("frozen"))
        await _call(sio, "pause_container", {"container_id": frozen})
        killed = await _call(sio, "kill_container", {"container_id": frozen, "signal": "KILL"})
        assert killed["status"] == "stopped"
        await asyncio.sleep(1.0)
        assert rec.events["container_crashed"] == []


async def test_hostile_signals_are_validation_errors_and_nothing_is_sent(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        cid = await _running(svc.manager, unique_name("hostile"))
        for signal in HOSTILE_SIGNALS:
            answer = await _call(sio, "kill_container", {"container_id": cid, "signal": signal})
            _refused(answer, "validation_error", field="signal")
            assert len(answer["message"]) < 400, answer["message"]  # no 10 kB echo in the text
        # and the core's own check, for a front end that calls it directly (the local panel)
        for signal in HOSTILE_SIGNALS:
            with pytest.raises(InvalidRequest) as err:
                await svc.manager.kill_container(cid, signal)
            assert err.value.details["field"] == "signal"
        assert svc.manager.get(cid).state == "running"
        assert (await docker_cli("inspect", "-f", "{{.State.Status}}", cid)) == "running"
        assert rec.events["container_killed"] == []


async def test_unknown_foreign_and_malformed_references_are_typed(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    foreign = unique_name("foreign")
    await docker_cli(
        "run", "-d", "--name", foreign, "--network", "none",
        "--label", "flowmgr.managed=true", "--label", "flowmgr.instance=someone-else",
        "--label", f"{TEST_LABEL}={RUN_ID}", BUSYBOX,
    )  # fmt: skip
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        for event in ("pause_container", "unpause_container", "kill_container"):
            for ref in ("no-such-flow", foreign, "0" * 64):
                answer = await _call(sio, event, {"container_id": ref, "signal": "SIGTERM"})
                _refused(answer, "container_not_found")
            for bad in ({"container_id": ""}, {"container_id": 5}, {"container_id": "a" * 300}):
                _refused(await _call(sio, event, bad), "validation_error", field="container_id")
            _refused(await _call(sio, event, {}), "validation_error", field="container_id")
            _refused(await _call(sio, event, ["x"]), "validation_error", received="an array")
    # the foreign container was never touched
    assert (await docker_cli("inspect", "-f", "{{.State.Status}}", foreign)) == "running"


async def test_cluster_hub_refuses_pause_and_kill(settings: Settings) -> None:
    cluster = settings.cluster.model_copy(update={"mode": "swarm"})
    hub = HubManager(settings.model_copy(update={"cluster": cluster}))
    for call in (
        hub.pause_container("any"),
        hub.unpause_container("any"),
        hub.kill_container("any", "SIGTERM"),
    ):
        with pytest.raises(InvalidRequest) as err:
            await call
        assert err.value.error_type == "validation_error"
        assert err.value.details["reason"] == "not_in_cluster_mode"


async def test_answers_are_acked_and_emitted_once(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        cid = await _running(svc.manager, unique_name("once"))
        await _call(sio, "pause_container", {"container_id": cid})
        await _call(sio, "unpause_container", {"container_id": cid})
        await rec.wait_for("container_unpaused")
        assert len(rec.events["container_paused"]) == len(rec.events["container_unpaused"]) == 1
        assert _recorded(rec, "error") == []


def _recorded(rec: Recorder, event: str) -> list[Any]:
    return list(rec.events[event])


async def test_a_paused_flow_stops_restarts_and_deletes_as_asked(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        cid = await _running(svc.manager, unique_name("frozen-stop"))
        await _call(sio, "pause_container", {"container_id": cid})
        stopped = await _call(sio, "stop_container", {"container_id": cid})
        assert stopped == {"container_id": cid, "status": "stopped"}
        assert svc.manager.get(cid).state == "stopped"
        other = await _running(svc.manager, unique_name("frozen-restart"))
        await _call(sio, "pause_container", {"container_id": other})
        restarted = await _call(sio, "restart_container", {"container_id": other})
        assert restarted["status"] == "running" and svc.manager.get(other).state == "running"
        await _call(sio, "pause_container", {"container_id": other})
        deleted = await _call(sio, "delete_container", {"container_id": other})
        assert deleted["status"] == "deleted"
        await asyncio.sleep(1.0)
        assert rec.events["container_crashed"] == []


async def test_a_slow_end_after_sigterm_is_still_the_kills(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    """The flow is alive when the answer goes (it cleans up for a second), then exits 3: the
    exit is the kill's (stopped), not a crash."""
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        cid = await _running(
            svc.manager,
            unique_name("slow"),
            ["sh", "-c", "trap 'sleep 1; exit 3' TERM; while true; do sleep 1 & wait $!; done"],
        )
        killed = await _call(sio, "kill_container", {"container_id": cid, "signal": "SIGTERM"})
        assert killed["status"] == "running"
        await rec.wait_for("status_changed", _changed(cid, "stopped"))
        assert (await docker_cli("inspect", "-f", "{{.State.ExitCode}}", cid)) == "3"
        await asyncio.sleep(1.0)
        assert rec.events["container_crashed"] == []
