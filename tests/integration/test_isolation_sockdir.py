"""Other local users and flows against the flows' socket directories (issue 11, items 2 and 9).

Real processes as user `nobody` (setpriv), a real manager and real containers. The socket dir is
made world-writable as the deployment guide once said (`chmod 777`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from server.core.config import Settings
from server.core.errors import ConfigError, FlowSocketError, InvalidRequest
from server.core.events import FlowMessageReceived
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.integration.manager_helpers import (
    BUSYBOX,
    docker,
    inspect,
    no_event,
    started_manager,
)
from tests.integration.test_flow_manager import ask, start_flow

pytestmark = pytest.mark.docker

SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"]


def as_nobody(script: str, *args: str) -> dict[str, object]:
    """Run `script` (stdlib Python) as user nobody, no groups; it prints one JSON object."""
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            textwrap.dedent(script),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def nobody_does(expr: str, path: str | Path) -> object:
    """Run the statement `expr` as nobody (`p` is `path`): "done" or the OSError's name."""
    script = f"""
import json, os, sys
p = sys.argv[1]
try:
    {expr}
    result = "done"
except OSError as err:
    result = type(err).__name__
print(json.dumps({{"result": result}}))
"""
    return as_nobody(script, str(path))["result"]


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def shared(settings: Settings) -> None:
    """The guide's `chmod 777` on the socket dir."""
    os.chmod(settings.socket_dir, 0o777)


# -- other users cannot reach a flow's socket ----------------------------------------------------

_CONNECT_AND_SEND = """
import json, socket, struct, sys
body = json.dumps({"from": "nobody", "command": "forged"}).encode()
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    s.sendall(struct.pack(">I", len(body)) + body)
    result = "sent"
except OSError as err:
    result = type(err).__name__
print(json.dumps({"result": result}))
"""


async def test_nobody_cannot_connect_to_a_running_flows_socket(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    shared(settings)
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        flow = await start_flow(m, sub, unique_name("reach"))
        assert os.path.exists(flow.socket_path)
        got = await asyncio.to_thread(as_nobody, _CONNECT_AND_SEND, flow.socket_path)
        assert got["result"] == "PermissionError"
        await asyncio.sleep(0.5)
        forged = [
            e
            for e in no_event(sub, FlowMessageReceived, flow.id)
            if isinstance(e, FlowMessageReceived) and e.message.get("from") == "nobody"
        ]
        assert forged == []
        assert (await ask(m, sub, flow.id, {"command": "ping"})) == {"pong": True}
        # the layout that keeps nobody out
        assert flow.socket_path == f"{settings.state_dir}/{flow.name}/flow.sock"
        assert mode(settings.state_dir) == 0o700 and os.stat(settings.state_dir).st_uid == 0
        assert mode(Path(flow.socket_path).parent) == 0o711
        assert mode(flow.socket_path) == 0o666  # only the flow's mount and the manager reach it


# -- the manager's private directory -------------------------------------------------------------


async def test_a_777_socket_dir_gets_the_sticky_bit_and_a_start_up_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    shared(settings)
    caplog.set_level(logging.INFO, logger="server.core.state_dir")
    async with started_manager(settings):
        assert mode(settings.socket_dir) == 0o1777  # chmod 777 keeps working, o+t added
        assert mode(settings.state_dir) == 0o700
        assert os.stat(settings.state_dir).st_uid == os.geteuid()
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(settings.socket_dir in w and "sticky" in w for w in warned), warned
        assert any(f"chmod 0700 {settings.socket_dir}" in w for w in warned), warned
        # nobody can neither rename the manager's directory away nor put anything in it
        state = settings.state_dir
        assert (
            await asyncio.to_thread(nobody_does, "os.rename(p, p + '-away')", state)
            == "PermissionError"
        )
        assert (
            await asyncio.to_thread(nobody_does, "os.mkdir(os.path.join(p, 'victim'))", state)
            == "PermissionError"
        )


async def test_a_socket_dir_the_manager_creates_is_0700(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = settings.model_copy(update={"socket_dir": f"{settings.socket_dir}/n/s"})
    caplog.set_level(logging.WARNING, logger="server.core.state_dir")
    async with started_manager(fresh):
        assert mode(fresh.socket_dir) == 0o700
        assert mode(fresh.state_dir) == 0o700
        assert mode(f"{settings.socket_dir}/n") == 0o755
    problems = [r for r in caplog.records if r.name == "server.core.state_dir"]
    assert not [r for r in problems if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "planted", ["directory", "directory with the flow's name", "symlink to /", "file"]
)
async def test_a_state_dir_pre_created_by_another_user_refuses_start(
    settings: Settings, planted: str
) -> None:
    shared(settings)
    state = settings.state_dir
    plant = {
        "directory": "os.mkdir(p); os.chmod(p, 0o777)",
        "directory with the flow's name": (
            "os.mkdir(p); os.chmod(p, 0o777); os.symlink('/', os.path.join(p, 'web'))"
        ),
        "symlink to /": "os.symlink('/', p)",
        "file": "open(p, 'w').close()",
    }[planted]
    assert await asyncio.to_thread(nobody_does, plant, state) == "done"  # 777 let nobody
    m = ContainerManager(settings)
    try:
        with pytest.raises(ConfigError) as err:
            await m.start()
    finally:
        await m.stop()
    assert state in err.value.message and err.value.error_type == "validation_error"
    assert "remove it" in err.value.message
    assert os.lstat(state).st_uid != 0  # left as found, for the operator to look at


async def test_a_state_dir_of_ours_with_a_loose_mode_is_tightened(settings: Settings) -> None:
    os.mkdir(settings.state_dir, 0o755)
    async with started_manager(settings):
        assert mode(settings.state_dir) == 0o700


async def test_an_unsafe_parent_of_socket_dir_refuses_start(settings: Settings) -> None:
    # the socket dir below a directory nobody may rename things in
    parent = Path(settings.socket_dir, "p")
    parent.mkdir()
    parent.chmod(0o777)
    unsafe = settings.model_copy(update={"socket_dir": str(parent / "s")})
    m = ContainerManager(unsafe)
    try:
        with pytest.raises(ConfigError) as err:
            await m.start()
    finally:
        await m.stop()
    assert str(parent) in err.value.message and "chmod +t" in err.value.message


# -- each mount is re-verified -------------------------------------------------------------------


async def test_a_flow_dir_replaced_by_a_link_between_stop_and_restart_is_refused(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    shared(settings)
    async with started_manager(settings) as m:
        snap = await m.create_container(
            CreateSpec(name=unique_name("swap"), image=BUSYBOX, command=SLEEP)
        )
        await m.start_container(snap.id)
        await m.stop_container(snap.id)
        own = Path(settings.state_dir, snap.name)
        # nobody cannot: the private dir is closed to it
        assert (
            await asyncio.to_thread(nobody_does, "os.rename(p, p + '-x'); os.symlink('/', p)", own)
            == "PermissionError"
        )
        # nor can anyone else short of root: done here as root, the check still holds
        own.rename(own.with_name(snap.name + "-away"))
        own.symlink_to("/")
        for action in (m.restart_container, m.start_container):
            with pytest.raises(FlowSocketError) as err:
                await action(snap.id)
            assert err.value.error_type == "socket_error" and str(own) in err.value.message
            raw = await inspect(snap.id)
            assert raw["State"]["Running"] is False and m.get(snap.id).state == "stopped"
        # a file or a directory of another owner is refused too; the manager's own is fine
        own.unlink()
        own.mkdir()
        os.chown(own, 65534, 65534)
        with pytest.raises(FlowSocketError, match="owned by uid 65534"):
            await m.start_container(snap.id)
        os.chown(own, 0, 0)
        assert (await m.start_container(snap.id)).state == "running"
        assert mode(own) == 0o711


async def test_a_flow_that_loosens_its_own_dir_gets_it_set_back(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m:
        snap = await m.create_container(
            CreateSpec(name=unique_name("loose"), image=BUSYBOX, command=SLEEP)
        )
        await m.start_container(snap.id)
        # root in the flow owns its mounted dir and may chmod it (no capability needed)
        await docker("exec", snap.id, "chmod", "777", "/run/flowmgr")
        own = Path(settings.state_dir, snap.name)
        assert mode(own) == 0o777
        assert (await m.restart_container(snap.id)).state == "running"
        assert mode(own) == 0o711


async def test_a_missing_flow_dir_is_made_again_by_the_manager(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m:
        snap = await m.create_container(
            CreateSpec(name=unique_name("gone"), image=BUSYBOX, command=SLEEP)
        )
        own = Path(settings.state_dir, snap.name)
        (own / "flow.sock").unlink()
        own.rmdir()  # e.g. a tmp cleaner; the engine would make it as root 0755
        assert (await m.start_container(snap.id)).state == "running"
        assert mode(own) == 0o711


async def test_a_link_planted_at_a_new_flows_dir_is_replaced_not_followed(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    name = unique_name("plant")
    async with started_manager(settings) as m:
        # only root can write in the private dir; even so the create mounts a fresh dir
        target = tmp_path / "target"
        target.mkdir()
        (target / "keep").write_text("x")
        Path(settings.state_dir, name).symlink_to(target)
        snap = await m.create_container(CreateSpec(name=name, image=BUSYBOX, command=SLEEP))
        own = Path(settings.state_dir, name)
        assert not own.is_symlink() and own.is_dir() and mode(own) == 0o711
        assert (target / "keep").read_text() == "x" and not (target / "flow.sock").exists()
        raw = await inspect(snap.id)
        mounts = {x["Destination"]: x["Source"] for x in raw["Mounts"]}
        assert mounts[settings.docker.socket_mount] == str(own)


# -- adopted containers --------------------------------------------------------------------------


async def test_an_adopted_container_mounting_another_dir_gets_no_channel(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m:
        victim = await m.create_container(
            CreateSpec(name=unique_name("victim"), image=BUSYBOX, command=SLEEP)
        )
        before = sorted(os.listdir(Path(victim.socket_path).parent))
        # made behind the manager's back, with its labels, mounting the victim's socket dir
        name = unique_name("intruder")
        out = await docker(
            "create",
            "--name",
            name,
            "--label",
            "flowmgr.managed=true",
            "--label",
            f"flowmgr.instance={settings.docker.instance}",
            "-v",
            f"{Path(victim.socket_path).parent}:{settings.docker.socket_mount}",
            BUSYBOX,
            *SLEEP,
        )
        cid = out.stdout.strip()
        for _ in range(100):
            if any(s.id == cid for s in m.snapshot()):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        assert m.hub.info(cid) is None  # not listening for it
        assert sorted(os.listdir(Path(victim.socket_path).parent)) == before
        assert not Path(settings.state_dir, name).exists()
        errors = [a for a in m.recent_activity(cid) if a.activity_type == "container_error"]
        assert errors and "not listening" in errors[0].message
        with pytest.raises(FlowSocketError, match="not the manager's directory"):
            await m.start_container(cid)
        assert (await inspect(cid))["State"]["Running"] is False


async def test_a_new_flow_never_shares_a_live_flows_directory(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m:
        first = await m.create_container(
            CreateSpec(name=unique_name("old"), image=BUSYBOX, command=SLEEP)
        )
        # renamed behind the manager's back: it keeps mounting the old name's directory
        await docker("rename", first.id, unique_name("renamed"))
        for _ in range(100):
            if m.get(first.id).name != first.name:
                break
            await asyncio.sleep(0.1)
        with pytest.raises(InvalidRequest) as err:
            await m.create_container(CreateSpec(name=first.name, image=BUSYBOX, command=SLEEP))
        assert err.value.field == "name" and "in use" in err.value.message
        assert os.path.exists(first.socket_path)  # its channel is left alone
