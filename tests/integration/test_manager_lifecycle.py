"""ContainerManager lifecycle against a real engine, checked with `docker inspect`."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from server.core.config import BindRoot, Settings
from server.core.events import ContainerStateChanged, LogLineReceived, StatsSampled
from server.core.models import CreateSpec
from tests.conftest import with_code_roots
from tests.integration.manager_helpers import (
    BUSYBOX,
    docker,
    inspect,
    started_manager,
    wait_event,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """These tests update flows from tmp_path: allow it as the code root (issue 11: with no
    docker.code_roots every update is refused)."""
    return with_code_roots(settings, tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_lifecycle_end_to_end(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    name, port = unique_name("life"), free_port()
    (tmp_path / "data.txt").write_text("hello")
    # host binds need a bind root now (issue 11), and /data is the flow's own volume
    settings = settings.model_copy(
        update={
            "docker": settings.docker.model_copy(
                update={"bind_roots": [BindRoot(path=str(tmp_path))]}
            )
        }
    )
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await m.create_container(
            CreateSpec(
                name=name,
                image=BUSYBOX,
                environment={"GREETING": "hi", "API_TOKEN": "s3cret"},
                volumes={str(tmp_path): "/srv"},
                ports={"8080": port},
            )
        )
        assert snap.state == "created" and snap.name == name
        assert snap.socket_path == f"{settings.state_dir}/{name}/flow.sock"
        assert m.get(name).id == snap.id == m.get(snap.id[:12]).id

        raw = await inspect(snap.id)
        env = dict(e.split("=", 1) for e in raw["Config"]["Env"])
        assert env["GREETING"] == "hi"
        assert env["FLOW_SOCKET"] == f"{settings.docker.socket_mount}/flow.sock"
        assert raw["Config"]["Labels"]["flowmgr.managed"] == "true"
        assert raw["Config"]["Labels"]["flowmgr.instance"] == settings.docker.instance
        assert raw["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] == str(port)
        binds = {m_["Destination"]: m_["Source"] for m_ in raw["Mounts"]}
        assert binds["/srv"] == str(tmp_path)
        assert binds[settings.docker.socket_mount] == f"{settings.state_dir}/{name}"
        assert settings.docker.network in raw["NetworkSettings"]["Networks"]
        assert raw["HostConfig"]["Memory"] == 512 * 1024 * 1024
        assert raw["HostConfig"]["NanoCpus"] == int(settings.docker.cpu_limit * 1e9)
        net = await docker("network", "inspect", settings.docker.network)
        assert f'"flowmgr.instance": "{settings.docker.instance}"' in net.stdout
        created = [a for a in m.recent_activity(snap.id) if a.activity_type == "container_created"]
        assert created and created[0].details["environment"]["API_TOKEN"] == "***"

        started = await m.start_container(snap.id[:12])
        assert started.state == "running"
        await wait_event(
            sub,
            ContainerStateChanged,
            lambda e: e.container_id == snap.id and e.new_state == "running",
        )
        assert (await docker("exec", snap.id, "cat", "/srv/data.txt")).stdout == "hello"
        published = (await inspect(snap.id))["NetworkSettings"]["Ports"]["8080/tcp"]
        assert published and published[0]["HostPort"] == str(port)
        await wait_event(sub, StatsSampled, lambda e: e.container_id == snap.id)
        status = await m.get_status(name)
        assert status.state == "running" and status.uptime is not None
        assert status.resource_usage is not None
        assert 0 < status.resource_usage.memory_usage < status.resource_usage.memory_limit

        stopped = await m.stop_container(name)
        assert stopped.state == "stopped"
        assert (await m.get_status(name)).uptime is None
        assert (await m.restart_container(name)).state == "running"
        assert (await inspect(snap.id))["State"]["Running"] is True

        assert await m.delete_container(name) == snap.id
        assert not Path(settings.state_dir, name).exists()
        assert all(s.id != snap.id for s in m.snapshot())
        gone = await docker("inspect", snap.id, check=False)
        assert gone.returncode != 0
        kinds = [a.activity_type for a in m.recent_activity(snap.id)]
        for kind in (
            "container_created",
            "container_started",
            "container_stopped",
            "container_restarted",
            "container_deleted",
            "status_change",
        ):
            assert kind in kinds


async def test_logs_tail_and_follow(settings: Settings, unique_name: Callable[[str], str]) -> None:
    script = (
        "echo first; echo second; trap 'exit 0' TERM; "
        "while true; do echo tick; sleep 1 & wait $!; done"
    )
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await m.create_container(
            CreateSpec(name=unique_name("logs"), image=BUSYBOX, command=["sh", "-c", script])
        )
        cid = await m.follow_logs(snap.name)
        await m.start_container(cid)
        line = await wait_event(sub, LogLineReceived, lambda e: e.container_id == cid)
        assert line.line in ("first", "second", "tick")
        lines = await m.get_logs(cid, tail=100)
        assert lines[:2] == ["first", "second"]
        assert len(await m.get_logs(cid, tail=1)) == 1
        await m.unfollow_logs(cid)
        assert not m.logs.followed(cid)


async def test_update_keeps_files_outside_code_dir(
    settings: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    (v1 / "old.py").write_text("old")
    (v2 / "main.py").write_text("print('v2')")
    (v2 / "pkg").mkdir()
    (v2 / "pkg" / "mod.py").write_text("x = 1")
    async with started_manager(settings) as m:
        snap = await m.create_container(CreateSpec(name=unique_name("upd"), image=BUSYBOX))
        await m.update_container(snap.id, str(v1))  # not running: copied, not restarted
        assert m.get(snap.id).state == "created"
        await m.start_container(snap.id)
        await docker("exec", snap.id, "sh", "-c", "mkdir -p /state && echo kept > /state/keep")
        before = (await inspect(snap.id))["State"]["StartedAt"]
        updated = await m.update_container(snap.name, str(v2))
        assert updated.state == "running"
        after = await inspect(snap.id)
        assert after["State"]["StartedAt"] != before  # it was restarted
        ls = await docker(
            "exec", snap.id, "sh", "-c", "ls /app; cat /app/pkg/mod.py; cat /state/keep"
        )
        assert "main.py" in ls.stdout and "old.py" not in ls.stdout
        assert "x = 1" in ls.stdout and "kept" in ls.stdout
        kinds = [a.activity_type for a in m.recent_activity(snap.id)]
        assert "container_updated" in kinds
