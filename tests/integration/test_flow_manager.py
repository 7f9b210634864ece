"""Talking to real flow containers through the ContainerManager."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.core.bus import EventBus, Subscription
from server.core.config import Settings
from server.core.errors import FlowSocketConnectionError
from server.core.events import (
    ActivityLogged,
    FlowChannelConnected,
    FlowChannelLost,
    FlowMessageReceived,
    FlowMessageSent,
)
from server.core.manager import ContainerManager
from server.core.models import ContainerSnapshot, CreateSpec
from tests.conftest import with_code_roots
from tests.integration.manager_helpers import docker, started_manager, wait_event

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """These tests update flows from tmp_path and the example flows: allow them as code roots
    (issue 11: with no docker.code_roots every update is refused)."""
    return with_code_roots(
        settings, tmp_path, Path(__file__).resolve().parents[2] / "flow" / "examples"
    )


REPLY_V = """
import flowrt

@flowrt.command("version")
def version(message):
    return {{"version": "{v}"}}
"""


def code_dir(tmp_path: Path, name: str, source: str) -> Path:
    """A directory holding main.py, as update_container expects."""
    code = tmp_path / name
    code.mkdir()
    (code / "main.py").write_text(textwrap.dedent(source))
    return code


async def start_flow(
    m: ContainerManager, sub: Subscription, name: str, code: Path | None = None
) -> ContainerSnapshot:
    """Create and start a flow:latest container (with `code`), wait for its channel."""
    snap = await m.create_container(CreateSpec(name=name))
    if code is not None:
        await m.update_container(snap.id, str(code))
    await m.start_container(snap.id)
    await wait_event(sub, FlowChannelConnected, lambda e: e.container_id == snap.id)
    return snap


async def ask(
    m: ContainerManager, sub: Subscription, cid: str, message: dict[str, Any]
) -> dict[str, Any]:
    """send_message, then the flow's next message as seen on the bus."""
    await m.send_message(cid, message)
    got = await wait_event(sub, FlowMessageReceived, lambda e: e.container_id == cid)
    return got.message


async def test_a_flow_answers_a_message_seen_as_events(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await m.create_container(CreateSpec(name=unique_name("echo")))
        with pytest.raises(FlowSocketConnectionError):
            await m.send_message(snap.id, {"command": "echo"})  # created, not running
        await m.start_container(snap.id)
        await wait_event(sub, FlowChannelConnected, lambda e: e.container_id == snap.id)
        await m.send_message(snap.name, {"command": "echo", "text": "hi", "token": "t0p"})
        sent = await wait_event(sub, FlowMessageSent, lambda e: e.container_id == snap.id)
        assert sent.message["text"] == "hi"
        got = await wait_event(sub, FlowMessageReceived, lambda e: e.container_id == snap.id)
        assert got.message["echo"]["text"] == "hi"
        status = await m.get_status(snap.id)
        assert status.socket_connected and status.last_communication is not None
        assert m.get(snap.id).socket_connected


async def test_activity_is_logged_for_both_directions_with_secrets_masked(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await start_flow(m, sub, unique_name("act"))
        await m.send_message(snap.id, {"command": "echo", "token": "t0p"})
        kinds: dict[str, ActivityLogged] = {}
        while set(kinds) != {"message_sent", "message_received"}:
            ev = await wait_event(sub, ActivityLogged, lambda e: e.container_id == snap.id)
            if ev.activity_type.startswith("message_"):
                kinds[ev.activity_type] = ev
        assert kinds["message_sent"].details["message"]["token"] == "***"
        assert kinds["message_received"].details["message"]["echo"]["token"] == "***"


async def test_update_container_changes_the_reply(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    v1 = code_dir(tmp_path, "v1", REPLY_V.format(v="v1"))
    v2 = code_dir(tmp_path, "v2", REPLY_V.format(v="v2"))
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await start_flow(m, sub, unique_name("upd"), v1)
        assert await ask(m, sub, snap.id, {"command": "version"}) == {"version": "v1"}
        await m.update_container(snap.id, str(v2))
        await wait_event(sub, FlowChannelConnected, lambda e: e.container_id == snap.id)
        assert await ask(m, sub, snap.id, {"command": "version"}) == {"version": "v2"}
        assert m.get(snap.id).id == snap.id  # the same container, new code


async def test_restarted_flow_container_reconnects(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    counter = Path(__file__).resolve().parents[2] / "flow" / "examples" / "counter"
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await start_flow(m, sub, unique_name("rst"), counter)
        assert await ask(m, sub, snap.id, {"command": "increment"}) == {"count": 1}
        await m.restart_container(snap.id)
        await wait_event(sub, FlowChannelLost, lambda e: e.container_id == snap.id)
        await wait_event(sub, FlowChannelConnected, lambda e: e.container_id == snap.id)
        # A new process: the in-memory count starts again.
        assert await ask(m, sub, snap.id, {"command": "increment"}) == {"count": 1}
        await docker("restart", "-t", "2", snap.id)  # behind the manager's back
        await wait_event(sub, FlowChannelConnected, lambda e: e.container_id == snap.id)
        assert await ask(m, sub, snap.id, {"command": "get"}) == {"count": 0}


async def test_flows_reconnect_to_a_restarted_manager(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        first = await start_flow(m, sub, unique_name("mgr"))
        second = await start_flow(m, sub, unique_name("mgr"))
    bus = EventBus()
    async with bus.subscribe() as sub:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        async with ContainerManager(settings, bus=bus) as m2:
            seen: set[str] = set()
            while seen != {first.id, second.id}:
                ev = await wait_event(sub, FlowChannelConnected)
                seen.add(ev.container_id)
            # Backoff is capped at 0.5 s, so 2 s is the promise; allow a busy machine slack.
            assert loop.time() - begin < 10
            for snap in (first, second):
                reply = await ask(m2, sub, snap.id, {"command": "echo", "n": snap.name})
                assert reply["echo"]["n"] == snap.name


async def test_a_flow_cannot_reach_another_flows_socket(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        a = await start_flow(m, sub, unique_name("iso"))
        b = await start_flow(m, sub, unique_name("iso"))
        probe = textwrap.dedent(f"""
            import os, socket
            print(sorted(os.listdir("/run/flowmgr")))
            for path in ({b.socket_path!r}, "/run/flowmgr/../{b.name}/flow.sock"):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(path)
                    print("REACHED", path)
                except OSError as err:
                    print("refused", type(err).__name__)
        """)
        out = await docker("exec", a.id, "python3", "-c", probe)
        lines = out.stdout.splitlines()
        assert lines[0] == "['flow.sock']"
        assert not any(line.startswith("REACHED") for line in lines), out.stdout
        assert lines[1:] == ["refused FileNotFoundError"] * 2
        # B is still connected and answering.
        assert (await ask(m, sub, b.id, {"command": "ping"})) == {"pong": True}
