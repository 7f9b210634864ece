"""Host binds against the real service and engine (issue 11 items 1 and 2): only beneath the
bind roots, read-only unless asked and allowed, no check-then-use gap between create and start
or stop and restart, the nesting rule between flows, and each flow's own data volume."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from api_harness import BUSYBOX, client, running_service

from server.core.config import DEFAULT_CONFIG_FILE, BindRoot, Settings
from server.core.errors import ConfigError, DockerApiError, InvalidRequest
from server.core.models import CreateSpec
from tests.integration.manager_helpers import docker, inspect, labelled_ids, started_manager

pytestmark = pytest.mark.docker

NEVER = "0001-01-01T00:00:00Z"
"""StartedAt of a container that never ran."""


def _roots(settings: Settings, *roots: BindRoot) -> Settings:
    return settings.model_copy(
        update={"docker": settings.docker.model_copy(update={"bind_roots": list(roots)})}
    )


async def _call(sio: socketio.AsyncClient, event: str, payload: dict[str, Any]) -> Any:
    return await sio.call(event, payload, timeout=90)


def _refused(ack: Any, *match: str) -> str:
    assert ack.get("error") is True and ack["error_type"] == "validation_error", ack
    assert ack["details"]["field"] == "volumes", ack
    for m in match:
        assert m in ack["message"], (m, ack["message"])
    return str(ack["message"])


async def _never_started(cid: str) -> dict[str, Any]:
    raw = await inspect(cid)
    assert raw["State"]["Running"] is False and raw["State"]["StartedAt"] == NEVER, raw["State"]
    return raw


def _host_mounts(raw: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Destination -> (source, rw) of every bind (the socket dir's included)."""
    return {m["Destination"]: (m["Source"], m["RW"]) for m in raw["Mounts"] if m["Type"] == "bind"}


def _swap_for_link(path: Path, to: str = "/") -> Path:
    """Replace the directory `path` by a symlink to `to`, as a flow or user racing would."""
    moved = path.with_name(path.name + ".checked")
    path.rename(moved)
    path.symlink_to(to)
    return moved


HOSTILE = [
    "/root",
    "/usr/local/bin",
    "/home",
    "/etc",
    "/lib/systemd/system",
    "/opt",
    "/var/log",
    "/",
    str(DEFAULT_CONFIG_FILE.parent),
    str(DEFAULT_CONFIG_FILE),
    "/nonexistent-flowmgr-x",
]


@pytest.mark.parametrize("roots", ["none", "elsewhere"])
async def test_host_paths_outside_the_roots_are_refused(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path, roots: str
) -> None:
    (tmp_path / "allowed").mkdir()
    if roots == "elsewhere":
        settings = _roots(settings, BindRoot(path=str(tmp_path / "allowed"), writable=True))
    hostile = [
        *HOSTILE,
        settings.socket_dir,
        f"{settings.socket_dir}/other-flow",
        settings.state_dir,
        settings.token_path,
    ]
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        for host in hostile:
            for target in ("/host", "/host:rw"):
                ack = await _call(
                    sio,
                    "create_container",
                    {"name": unique_name("bind"), "image": BUSYBOX, "volumes": {host: target}},
                )
                if roots == "none":
                    _refused(ack, "host binds are disabled", "docker.bind_roots")
                else:
                    # the same words whether the path exists or not: nothing is probed
                    assert _refused(ack) == (
                        f"host path {host} is not at or beneath any of docker.bind_roots"
                    )
        assert (await _call(sio, "list_containers", {}))["count"] == 0
    assert await labelled_ids(settings) == set()


async def test_tricks_beneath_a_root_are_refused(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "d" / "sub").mkdir(parents=True)
    (root / "file").write_text("x")
    os.link(root / "file", root / "hardlink")
    (root / "tolink").symlink_to("/")
    (root / "toetc").symlink_to("/etc")
    (root / "up").symlink_to("..")
    (root / "otherflows").symlink_to(settings.socket_dir)
    (root / "nobodys" / "d").mkdir(parents=True)
    os.chown(root / "nobodys", 65534, 65534)  # CI runs as root (it starts dockerd)
    (root / "groupw").mkdir(mode=0o775)
    os.chmod(root / "groupw", 0o775)
    (root / "groupw" / "d").mkdir()
    os.mkfifo(root / "fifo")
    settings = _roots(settings, BindRoot(path=str(root), writable=True))
    r = str(root)
    cases = {
        f"{r}/d/": "ends with '/'",
        f"{r}//d": "plain form",
        f"{r}/./d": "plain form",
        f"{r}/d/../d": "plain form",
        f"{r}/d/..": "plain form",
        f"{r}/..": "plain form",
        f"{r}/hardlink": "2 hard links",
        f"{r}/file": "2 hard links",
        f"{r}/tolink": "symbolic link",
        f"{r}/tolink/etc": "symbolic link",
        f"{r}/toetc": "symbolic link",
        f"{r}/up/root": "symbolic link",
        f"{r}/otherflows": "symbolic link",
        f"{r}/nobodys/d": "owned by uid",
        f"{r}/groupw/d": "writable by its group or others",
        f"{r}/fifo": "regular file",
        f"{r}/missing": "does not exist",
        f"{r}/d\n": "line break",
        f"{r}/d,ro": "','",
    }
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        for host, why in cases.items():
            ack = await _call(
                sio,
                "create_container",
                {"name": unique_name("trick"), "image": BUSYBOX, "volumes": {host: "/host"}},
            )
            _refused(ack, why)
        for target in ("/data", "/data/x:rw", settings.docker.socket_mount, "/run", "/x:z"):
            ack = await _call(
                sio,
                "create_container",
                {"name": unique_name("trick"), "image": BUSYBOX, "volumes": {f"{r}/d": target}},
            )
            _refused(ack)
        assert (await _call(sio, "list_containers", {}))["count"] == 0
    assert await labelled_ids(settings) == set()
    assert not (root / "missing").exists()  # Docker never created it


@pytest.mark.parametrize("swap", ["source", "component", "other_inode", "removed"])
async def test_a_swap_between_create_and_start_is_refused(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path, swap: str
) -> None:
    """Issue 11 item 2: the checked directory becomes a symlink to / before the start."""
    root = tmp_path / "root"
    (root / "a" / "etc").mkdir(parents=True)
    settings = _roots(settings, BindRoot(path=str(root), writable=True))
    source = root / "a" / "etc"
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        ack = await _call(
            sio,
            "create_container",
            {"name": unique_name("swap"), "image": BUSYBOX, "volumes": {str(source): "/host:rw"}},
        )
        assert ack.get("error") is not True, ack
        cid = ack["container_id"]
        if swap == "source":
            moved = _swap_for_link(source)
        elif swap == "component":
            moved = _swap_for_link(root / "a")  # root/a/etc is the host's /etc now
        elif swap == "other_inode":
            moved = source.with_name("etc.checked")
            source.rename(moved)
            source.mkdir()
        else:
            moved = source.with_name("etc.checked")
            source.rename(moved)
        ack = await _call(sio, "start_container", {"container_id": cid})
        _refused(ack, "was not started", str(source))
        raw = await _never_started(cid)
        assert _host_mounts(raw) == {
            "/host": (str(source), True),
            settings.docker.socket_mount: (f"{settings.state_dir}/{raw['Name'][1:]}", True),
        }
        assert [m["Type"] for m in raw["Mounts"]].count("volume") == 1  # its /data, nothing else
        ack = await _call(sio, "restart_container", {"container_id": cid})
        _refused(ack, "was not started")
        await _never_started(cid)
        # the checked directory back in place: the pin matches again, and it starts
        if swap == "component":
            (root / "a").unlink()
            moved.rename(root / "a")
        else:
            if swap == "source":
                source.unlink()
            elif swap == "other_inode":
                source.rmdir()
            moved.rename(source)
        ack = await _call(sio, "start_container", {"container_id": cid})
        assert ack.get("status") == "running", ack


async def test_a_swap_between_stop_and_restart_is_refused(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    settings = _roots(settings, BindRoot(path=str(root)))
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        ack = await _call(
            sio,
            "create_container",
            {"name": unique_name("rs"), "image": BUSYBOX, "volumes": {str(root / "d"): "/host"}},
        )
        cid = ack["container_id"]
        assert (await _call(sio, "start_container", {"container_id": cid}))["status"] == "running"
        started = (await inspect(cid))["State"]["StartedAt"]
        moved = _swap_for_link(root / "d")
        # running: a refused restart leaves it running, untouched
        _refused(await _call(sio, "restart_container", {"container_id": cid}), "symbolic link")
        state = (await inspect(cid))["State"]
        assert state["Running"] is True and state["StartedAt"] == started
        assert (await _call(sio, "stop_container", {"container_id": cid}))["status"] == "stopped"
        for event in ("start_container", "restart_container"):
            _refused(await _call(sio, event, {"container_id": cid}), "symbolic link")
            state = (await inspect(cid))["State"]
            assert state["Running"] is False and state["StartedAt"] == started
        (root / "d").unlink()
        moved.rename(root / "d")
        ack = await _call(sio, "restart_container", {"container_id": cid})
        assert ack.get("status") == "running", ack


async def test_a_flow_cannot_reach_what_another_flow_mounts(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Flow A writes the host directory R/shared: no other bind may lie beneath it (A could
    replace any component there), and no writable bind may hold A's."""
    root = tmp_path / "root"
    (root / "shared" / "sub").mkdir(parents=True)
    (root / "other").mkdir()
    settings = _roots(settings, BindRoot(path=str(root), writable=True))
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        ack = await _call(
            sio,
            "create_container",
            {
                "name": unique_name("a"),
                "image": BUSYBOX,
                "volumes": {str(root / "shared"): "/srv:rw"},
            },
        )
        a = ack["container_id"]
        await _call(sio, "start_container", {"container_id": a})
        # A does what the attacker did, from inside, with every capability dropped
        await docker("exec", a, "sh", "-c", "mv /srv/sub /srv/old && ln -s / /srv/sub")
        assert (root / "shared" / "sub").is_symlink()
        for volumes, why in (
            ({str(root / "shared" / "sub"): "/host"}, "symbolic link"),
            ({str(root / "shared" / "old"): "/host"}, "lies beneath"),
            ({str(root): "/host:rw"}, "holds"),
            ({str(root / "other"): "/o:rw", str(root / "shared" / "old"): "/x"}, "lies beneath"),
        ):
            ack = await _call(
                sio,
                "create_container",
                {"name": unique_name("b"), "image": BUSYBOX, "volumes": volumes},
            )
            _refused(ack, why)
        # the same directory may be shared, and the root above it read-only (A cannot rename
        # its own mount point)
        for volumes in ({str(root / "shared"): "/srv:rw"}, {str(root): "/all"}):
            ack = await _call(
                sio,
                "create_container",
                {"name": unique_name("ok"), "image": BUSYBOX, "volumes": volumes},
            )
            assert ack.get("error") is not True, ack


async def test_concurrent_creates_cannot_race_the_nesting_rule(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "w" / "sub").mkdir(parents=True)
    settings = _roots(settings, BindRoot(path=str(root), writable=True))
    async with started_manager(settings) as m:
        for _ in range(3):
            writer = CreateSpec(
                name=unique_name("w"), image=BUSYBOX, volumes={str(root / "w"): "/w:rw"}
            )
            reader = CreateSpec(
                name=unique_name("r"), image=BUSYBOX, volumes={str(root / "w" / "sub"): "/r"}
            )
            out = await asyncio.gather(
                m.create_container(writer), m.create_container(reader), return_exceptions=True
            )
            assert sum(isinstance(o, InvalidRequest) for o in out) == 1, out
            for o in out:
                if not isinstance(o, BaseException):
                    await m.delete_container(o.id)


async def test_read_only_unless_asked_and_the_root_allows(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    ro_root, rw_root = tmp_path / "ro", tmp_path / "rw"
    (ro_root / "d").mkdir(parents=True)
    (rw_root / "d").mkdir(parents=True)
    settings = _roots(
        settings, BindRoot(path=str(ro_root)), BindRoot(path=str(rw_root), writable=True)
    )
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        _refused(
            await _call(
                sio,
                "create_container",
                {
                    "name": unique_name("rw"),
                    "image": BUSYBOX,
                    "volumes": {str(ro_root / "d"): "/ro:rw"},
                },
            ),
            f"bind root {ro_root} is not writable",
        )
        ack = await _call(
            sio,
            "create_container",
            {
                "name": unique_name("modes"),
                "image": BUSYBOX,
                "volumes": {
                    str(ro_root / "d"): "/ro",
                    str(rw_root / "d"): "/rw:rw",
                    str(rw_root): "/rw-root:ro",
                },
            },
        )
        cid = ack["container_id"]
        mounts = _host_mounts(await inspect(cid))
        assert mounts["/ro"] == (str(ro_root / "d"), False)
        assert mounts["/rw"] == (str(rw_root / "d"), True)
        assert mounts["/rw-root"] == (str(rw_root), False)
        assert mounts[settings.docker.socket_mount][1] is True  # the flow's socket stays rw
        await _call(sio, "start_container", {"container_id": cid})
        for path in ("/ro/x", "/rw-root/x"):
            out = await docker("exec", cid, "touch", path, check=False)
            assert out.returncode != 0 and "Read-only file system" in out.stderr, out
        await docker("exec", cid, "sh", "-c", "echo written > /rw/x")
        assert (rw_root / "d" / "x").read_text() == "written\n"
        assert not (ro_root / "d" / "x").exists() and not (rw_root / "x").exists()


async def test_each_flow_has_its_own_data_volume(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("data")
    volume = f"flowmgr-data-{name}"
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        cid = (await _call(sio, "create_container", {"name": name, "image": BUSYBOX}))[
            "container_id"
        ]
        info = json.loads((await docker("volume", "inspect", volume)).stdout)[0]
        assert info["Labels"]["flowmgr.managed"] == "true"
        assert info["Labels"]["flowmgr.instance"] == settings.docker.instance
        (mount,) = [m for m in (await inspect(cid))["Mounts"] if m["Type"] == "volume"]
        assert (mount["Name"], mount["Destination"], mount["RW"]) == (volume, "/data", True)
        await _call(sio, "start_container", {"container_id": cid})
        await docker("exec", cid, "sh", "-c", "echo kept > /data/state")
        assert (await _call(sio, "restart_container", {"container_id": cid}))["status"] == "running"
        assert (await docker("exec", cid, "cat", "/data/state")).stdout == "kept\n"
        await _call(sio, "stop_container", {"container_id": cid})
        await _call(sio, "start_container", {"container_id": cid})
        assert (await docker("exec", cid, "cat", "/data/state")).stdout == "kept\n"
        ack = await _call(sio, "delete_container", {"container_id": cid})
        assert ack.get("error") is not True, ack
    gone = await docker("volume", "inspect", volume, check=False)
    assert gone.returncode != 0 and "no such volume" in gone.stderr.lower()


async def test_a_foreign_volume_of_the_flows_name_is_not_used(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("foreign")
    volume = f"flowmgr-data-{name}"
    # a volume someone else made (here: one that would bind-mount the host's /etc)
    await docker(
        "volume",
        "create",
        "--label",
        f"flowmgr.test={settings.docker.instance}",
        "--opt",
        "type=none",
        "--opt",
        "device=/etc",
        "--opt",
        "o=bind",
        volume,
    )
    try:
        async with started_manager(settings) as m:
            with pytest.raises(DockerApiError, match="not this manager's own"):
                await m.create_container(CreateSpec(name=name, image=BUSYBOX))
            assert all(s.name != name for s in m.snapshot())
    finally:
        await docker("volume", "rm", volume, check=False)


async def test_adopted_binds_are_walked_again(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "kept").mkdir(parents=True)
    (root / "swapped").mkdir()
    settings = _roots(settings, BindRoot(path=str(root)))
    async with started_manager(settings) as m:
        kept = await m.create_container(
            CreateSpec(name=unique_name("kept"), image=BUSYBOX, volumes={str(root / "kept"): "/k"})
        )
        swapped = await m.create_container(
            CreateSpec(
                name=unique_name("swapped"), image=BUSYBOX, volumes={str(root / "swapped"): "/s"}
            )
        )
    _swap_for_link(root / "swapped")  # while no manager runs
    async with started_manager(settings) as m:
        with pytest.raises(InvalidRequest, match="adopted") as info:
            await m.start_container(swapped.id)
        assert info.value.field == "volumes"
        await _never_started(swapped.id)
        assert (await m.start_container(kept.id)).state == "running"
        await m.stop_container(kept.id)
        _swap_for_link(root / "kept")  # after adoption: the rebuilt pin catches it
        with pytest.raises(InvalidRequest, match="symbolic link"):
            await m.start_container(kept.id)
        assert (await inspect(kept.id))["State"]["Running"] is False
    # a root no longer configured: adopted, never started
    (root / "kept").unlink()
    (root / "kept.checked").rename(root / "kept")
    async with started_manager(_roots(settings)) as m:
        with pytest.raises(InvalidRequest, match="not beneath any of docker.bind_roots"):
            await m.start_container(kept.id)


async def test_a_bad_bind_root_stops_the_start(settings: Settings, tmp_path: Path) -> None:
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    (tmp_path / "link").symlink_to(tmp_path)
    for root, why in (
        (Path(settings.socket_dir).parent, "protected path"),
        (Path(settings.state_dir), "protected path"),
        (Path("/etc"), "protected path"),
        (tmp_path / "link", "symbolic link"),
        (tmp_path / "missing", "does not exist"),
    ):
        with pytest.raises(ConfigError, match=why):
            async with started_manager(_roots(settings, BindRoot(path=str(root)))):
                pass
