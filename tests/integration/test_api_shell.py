"""ext shells through the real service: hostile input first, then a shell doing its work."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import socketio
from api_harness import BUSYBOX, Recorder, Service, client, docker_cli, running_service

from server.core.config import Settings
from server.core.errors import InvalidRequest
from server.core.manager import ContainerManager

pytestmark = pytest.mark.docker

WAIT = 20.0


@asynccontextmanager
async def flow(settings: Settings, name: str) -> AsyncIterator[tuple[Service, str]]:
    """A service with one running busybox flow (only `sh`: the fallback is what runs)."""
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        made = await sio.call("create_container", {"image": BUSYBOX, "name": name}, timeout=60)
        cid = made["container_id"]
        await sio.call("start_container", {"container_id": cid}, timeout=60)
        yield svc, cid


async def shell_text(rec: Recorder, session_id: str) -> str:
    return "".join(d["data"] for d in rec.events["shell_output"] if d["session_id"] == session_id)


async def until_output(rec: Recorder, session_id: str, marker: str) -> None:
    async with asyncio.timeout(WAIT):
        while marker not in await shell_text(rec, session_id):
            await rec.wait_for("shell_output", lambda _: True, WAIT)
            await asyncio.sleep(0.05)


async def execs_running(cid: str) -> list[bool]:
    """Whether each exec the engine keeps for the container still runs (exec_inspect)."""
    ids = json.loads(await docker_cli("inspect", "--format", "{{json .ExecIDs}}", cid)) or []
    out = []
    for exec_id in ids:
        inspect = await asyncio.to_thread(_exec_inspect, exec_id)
        out.append(bool(inspect.get("Running")))
    return out


def _exec_inspect(exec_id: str) -> dict[str, Any]:
    import docker

    api = docker.APIClient()
    try:
        return dict(api.exec_inspect(exec_id))
    finally:
        api.close()


async def until_no_shell(cid: str, marker: str) -> None:
    """The container holds no process of `marker` and no exec that runs (the shell ended)."""
    async with asyncio.timeout(WAIT):
        while True:
            ps = await docker_cli("exec", cid, "ps", "-o", "pid,args")
            running = await execs_running(cid)
            if marker not in ps and not any(running):  # our `ps` has ended by now
                return
            await asyncio.sleep(0.2)


def error_of(answer: Any) -> tuple[str, dict[str, Any]]:
    assert isinstance(answer, dict) and answer.get("error") is True, answer
    return answer["error_type"], answer["details"]


async def test_bad_requests_are_typed_errors(settings: Settings, unique_name: Any) -> None:
    async with flow(settings, unique_name("shbad")) as (svc, cid), client(svc.url) as (sio, rec):
        # unknown container, an unmanaged one's name, a reference too long
        for ref in ("nope-not-here", "dockerd", "x" * 300):
            kind, details = error_of(
                await sio.call("open_shell", {"container_id": ref, "cols": 80, "rows": 24})
            )
            assert kind in ("container_not_found", "validation_error"), (ref, kind)
        # sizes: 0x0, negative, huge, strings, floats, booleans, null, missing
        for cols, rows in [(0, 0), (-1, 24), (80, -5), (10**9, 24), ("80", 24), (80.0, 24)]:
            kind, details = error_of(
                await sio.call("open_shell", {"container_id": cid, "cols": cols, "rows": rows})
            )
            assert kind == "validation_error" and details["field"] in ("cols", "rows")
        for body in ({"container_id": cid, "cols": True, "rows": 2}, {"container_id": cid}):
            kind, details = error_of(await sio.call("open_shell", body))
            assert kind == "validation_error"
        # sessions that do not exist: every shell request is refused alike
        for event, extra in (
            ("write_shell", {"data": "id\n"}),
            ("resize_shell", {"cols": 80, "rows": 24}),
            ("close_shell", {}),
        ):
            for sid_value in ("no-such-session", "", 5, None, "x" * 100):
                kind, details = error_of(await sio.call(event, {"session_id": sid_value, **extra}))
                assert kind == "validation_error", (event, sid_value)
                assert details.get("field") == "session_id", (event, details)
        # a stopped flow: a clear refusal, no exec made
        await sio.call("stop_container", {"container_id": cid}, timeout=60)
        kind, details = error_of(
            await sio.call("open_shell", {"container_id": cid, "cols": 80, "rows": 24})
        )
        assert (kind, details["reason"], details["state"]) == (
            "validation_error",
            "not_running",
            "exited",
        ) or details["reason"] == "not_running"
        assert json.loads(await docker_cli("inspect", "--format", "{{json .ExecIDs}}", cid)) in (
            None,
            [],
        )
        assert not rec.events["shell_output"]


async def test_a_shell_runs_resizes_and_exits(settings: Settings, unique_name: Any) -> None:
    async with flow(settings, unique_name("shok")) as (svc, cid), client(svc.url) as (sio, rec):
        opened = await sio.call("open_shell", {"container_id": cid, "cols": 80, "rows": 24})
        assert set(opened) == {"session_id", "container_id", "cols", "rows"}
        assert opened["container_id"] == cid and rec.events["shell_opened"] == [opened]
        sid = opened["session_id"]
        ack = await sio.call("write_shell", {"session_id": sid, "data": "echo hello-$((6*7))\n"})
        assert ack == {"session_id": sid, "bytes": len("echo hello-$((6*7))\n")}
        await until_output(rec, sid, "hello-42")
        # bad sizes on a live session: refused, the terminal keeps its size
        for cols, rows in [(0, 0), (-3, 10), (1001, 10), ("wide", 10)]:
            kind, details = error_of(
                await sio.call("resize_shell", {"session_id": sid, "cols": cols, "rows": rows})
            )
            assert kind == "validation_error" and details["field"] in ("cols", "rows")
        resized = await sio.call("resize_shell", {"session_id": sid, "cols": 100, "rows": 30})
        assert resized == {"session_id": sid, "cols": 100, "rows": 30}
        await sio.emit("write_shell", {"session_id": sid, "data": "stty size\n"})
        await until_output(rec, sid, "30 100")
        # lone surrogates cannot reach the terminal
        kind, details = error_of(
            await sio.call("write_shell", {"session_id": sid, "data": "\ud800"})
        )
        assert (kind, details["field"]) == ("validation_error", "data")
        await sio.emit("write_shell", {"session_id": sid, "data": "exit 3\n"})
        exited = await rec.wait_for("shell_exited", lambda d: d["session_id"] == sid)
        assert exited == {"session_id": sid, "container_id": cid, "exit_code": 3}
        # input after exit
        kind, details = error_of(await sio.call("write_shell", {"session_id": sid, "data": "id\n"}))
        assert (kind, details["reason"]) == ("validation_error", "unknown_session")
        kind, _ = error_of(
            await sio.call("resize_shell", {"session_id": sid, "cols": 5, "rows": 5})
        )
        assert kind == "validation_error"
        assert not any(await execs_running(cid))


async def test_a_session_is_its_owners_alone(settings: Settings, unique_name: Any) -> None:
    async with (
        flow(settings, unique_name("showner")) as (svc, cid),
        client(svc.url) as (alice, arec),
        client(svc.url) as (mallory, mrec),
    ):
        opened = await alice.call("open_shell", {"container_id": cid, "cols": 80, "rows": 24})
        sid = opened["session_id"]
        for event, extra in (
            ("write_shell", {"data": "echo pwned > /tmp/pwned\n"}),
            ("resize_shell", {"cols": 10, "rows": 10}),
            ("close_shell", {}),
        ):
            kind, details = error_of(await mallory.call(event, {"session_id": sid, **extra}))
            assert (kind, details["reason"]) == ("validation_error", "unknown_session")
        await alice.emit("write_shell", {"session_id": sid, "data": "echo only-$((1+1))-alice\n"})
        await until_output(arec, sid, "only-2-alice")
        assert "pwned" not in await docker_cli("exec", cid, "ls", "/tmp")
        assert not mrec.events["shell_output"] and not mrec.events["shell_opened"]
        # at most 4 shells per client
        more = [
            await alice.call("open_shell", {"container_id": cid, "cols": 80, "rows": 24})
            for _ in range(4)
        ]
        assert [m.get("error") for m in more[:3]] == [None, None, None]
        kind, details = error_of(more[3])
        assert (kind, details["limit"]) == ("validation_error", 4)
        closed = await alice.call("close_shell", {"session_id": sid})
        assert closed == {"session_id": sid, "status": "closed"}
        await arec.wait_for("shell_exited", lambda d: d["session_id"] == sid)
        assert not mrec.events["shell_exited"]


async def test_large_input_is_refused_and_10_mb_drops_the_client(
    settings: Settings, unique_name: Any
) -> None:
    async with flow(settings, unique_name("shbig")) as (svc, cid), client(svc.url) as (sio, rec):
        opened = await sio.call("open_shell", {"container_id": cid, "cols": 80, "rows": 24})
        sid = opened["session_id"]
        kind, details = error_of(
            await sio.call("write_shell", {"session_id": sid, "data": "a" * 100_000})
        )
        assert (kind, details["field"]) == ("validation_error", "data")
        # 65,536 characters of 2 bytes each: within the length, over the byte limit
        kind, details = error_of(
            await sio.call("write_shell", {"session_id": sid, "data": "é" * 40_000})
        )
        assert (kind, details["limit"]) == ("validation_error", 65536)
        await sio.emit("write_shell", {"session_id": sid, "data": "sleep 4321\n"})
        async with asyncio.timeout(WAIT):
            while "sleep 4321" not in await docker_cli("exec", cid, "ps", "-o", "pid,args"):
                await asyncio.sleep(0.1)
        await sio.emit("write_shell", {"session_id": sid, "data": "x" * 10_000_000})
        async with asyncio.timeout(WAIT):
            await rec.disconnected.wait()  # server.max_message_bytes closes this client
        await until_no_shell(cid, "sleep 4321")
        # the service still serves others
        async with client(svc.url) as (other, _):
            answer = await other.call("list_containers", {})
            assert answer["count"] >= 1


async def test_a_client_that_leaves_mid_session_ends_its_shell(
    settings: Settings, unique_name: Any
) -> None:
    async with flow(settings, unique_name("shgone")) as (svc, cid):
        sio = socketio.AsyncClient(reconnection=False)
        rec = Recorder()
        sio.on("*", rec.record)
        await sio.connect(svc.url, auth={"token": svc.manager.settings.server.token})
        opened = await sio.call("open_shell", {"container_id": cid, "cols": 80, "rows": 24})
        sid = opened["session_id"]
        # a foreground job and a background one, in a shell that ignores the hang-up (and
        # its jobs with it): killed after the grace
        line = "trap '' HUP; sleep 4322 & sleep 4321\n"
        await sio.emit("write_shell", {"session_id": sid, "data": line})
        async with asyncio.timeout(WAIT):
            while "sleep 4321" not in await docker_cli("exec", cid, "ps", "-o", "pid,args"):
                await asyncio.sleep(0.1)
        await sio.disconnect()
        await until_no_shell(cid, "sleep 432")
        assert svc.app.sio.namespace_handlers["/"].shells.count() == 0


async def test_cluster_mode_refuses_shells(settings: Settings) -> None:
    class Hubish(ContainerManager):
        def cluster_nodes(self) -> list[dict[str, Any]] | None:
            return []

    with pytest.raises(InvalidRequest) as err:
        await Hubish(settings).open_shell("any", 80, 24)
    assert err.value.details["reason"] == "not_in_cluster_mode"


async def test_output_waits_for_its_reader(settings: Settings, unique_name: Any) -> None:
    """A shell printing without end while nobody reads: at most OUTPUT_QUEUE chunks are held,
    the shell blocks on its terminal; closed, nothing of it stays."""
    from server.core.shell import OUTPUT_QUEUE, ShellSession

    async with flow(settings, unique_name("shflood")) as (svc, cid):
        session = await ShellSession.open(svc.manager.adapter, cid, 80, 24)
        try:
            session.write(b"yes flood-flood-flood\n")
            held = []
            for _ in range(10):
                await asyncio.sleep(0.2)
                held.append(session._out.qsize())
            assert max(held) <= OUTPUT_QUEUE + 1  # + the end mark
            chunks = 0
            async for _ in session.output():  # a reader again: output flows
                chunks += 1
                if chunks > 3 * OUTPUT_QUEUE:
                    break
        finally:
            await session.close()
        assert session.ended
        await until_no_shell(cid, "yes flood")


async def test_a_client_that_leaves_while_its_shell_opens_leaves_no_exec(
    settings: Settings, unique_name: Any
) -> None:
    async with flow(settings, unique_name("shrace")) as (svc, cid):
        shells = svc.app.sio.namespace_handlers["/"].shells
        for _ in range(3):  # before, during or after the exec starts: never left behind
            sio = socketio.AsyncClient(reconnection=False)
            await sio.connect(svc.url, auth={"token": svc.manager.settings.server.token})
            await sio.emit("open_shell", {"container_id": cid, "cols": 80, "rows": 24})
            await sio.disconnect()
        async with asyncio.timeout(WAIT):
            while shells.count() or any(await execs_running(cid)):
                await asyncio.sleep(0.2)
