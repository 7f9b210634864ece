"""The agent's socket place (server/cluster/agent_place.py): a task's flow socket goes in its
flow's volume ONLY when every fact about the mount is ours. Hostile cases first."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from server.cluster.agent_place import mount_problem, secure_data_dir
from server.core.errors import FlowSocketError

ROOT = "/var/lib/docker"
INSTANCE = "blue"
NAME = "web"
VOLUME = "flowmgr-sock-web"
DATA = f"{ROOT}/volumes/{VOLUME}/_data"
SERVICE = "a1b2c3d4e5f6g7h8i9j0k1l2m"
TASK = "zyxwvutsrqponmlkjihgfedcb"
LABELS = {"flowmgr.managed": "true", "flowmgr.instance": INSTANCE, "flowmgr.name": NAME}


def _container(**mount: Any) -> dict[str, Any]:
    sock = {
        "Type": "volume",
        "Name": VOLUME,
        "Source": DATA,
        "Destination": "/run/flowmgr",
        "Driver": "local",
        "RW": True,
        **mount,
    }
    return {
        "Config": {
            "Labels": {
                **LABELS,
                "com.docker.swarm.service.id": SERVICE,
                "com.docker.swarm.task.id": TASK,
            }
        },
        "Mounts": [sock],
    }


def _volume(**over: Any) -> dict[str, Any]:
    return {
        "Name": VOLUME,
        "Driver": "local",
        "Mountpoint": DATA,
        "Labels": dict(LABELS),
        "Options": None,
        **over,
    }


def _problem(container: dict[str, Any], volume: dict[str, Any] | None) -> str | None:
    return mount_problem(
        container, volume, socket_mount="/run/flowmgr", docker_root=ROOT, instance=INSTANCE
    )


def test_the_flows_own_volume_is_accepted() -> None:
    assert _problem(_container(), _volume()) is None


@pytest.mark.parametrize(
    ("mount", "why"),
    [
        ({"Type": "bind", "Source": "/etc", "Name": None}, "bind"),
        (
            {"Name": "flowmgr-sock-other", "Source": f"{ROOT}/volumes/flowmgr-sock-other/_data"},
            "other",
        ),
        ({"Source": "/etc"}, "mounted from"),
        ({"Source": f"{ROOT}/volumes/{VOLUME}/_data/../../../../etc"}, "mounted from"),
        ({"Driver": "nfs"}, "driver"),
    ],
)
def test_a_socket_mount_that_is_not_the_flows_volume_is_refused(
    mount: dict[str, Any], why: str
) -> None:
    problem = _problem(_container(**mount), _volume())
    assert problem is not None and why in problem


def test_a_second_mount_at_the_socket_place_is_refused() -> None:
    c = _container()
    c["Mounts"].append({**c["Mounts"][0], "Type": "bind", "Source": "/etc"})
    assert "2 mounts" in (_problem(c, _volume()) or "")
    c["Mounts"] = []
    assert "0 mounts" in (_problem(c, _volume()) or "")


@pytest.mark.parametrize(
    "volume",
    [
        None,
        _volume(Labels={}),
        _volume(Labels={**LABELS, "flowmgr.instance": "red"}),
        _volume(Labels={**LABELS, "flowmgr.name": "other"}),
        _volume(Options={"type": "none", "o": "bind", "device": "/etc"}),
        _volume(Driver="nfs"),
        _volume(Mountpoint="/etc"),
        _volume(Name="flowmgr-sock-other"),
    ],
)
def test_a_volume_that_is_not_ours_or_a_bind_in_disguise_is_refused(
    volume: dict[str, Any] | None,
) -> None:
    assert _problem(_container(), volume) is not None


@pytest.mark.parametrize(
    "labels",
    [
        {"flowmgr.managed": "false"},
        {"flowmgr.instance": "red"},
        {"flowmgr.name": "../../etc"},
        {"flowmgr.name": ""},
        {"com.docker.swarm.service.id": ""},
        {"com.docker.swarm.task.id": "not-a-task"},
    ],
)
def test_a_container_without_our_labels_or_swarm_ids_is_refused(labels: dict[str, str]) -> None:
    c = copy.deepcopy(_container())
    c["Config"]["Labels"].update(labels)
    assert _problem(c, _volume()) is not None


def _tree(tmp_path: Path) -> Path:
    data = tmp_path / "root" / "volumes" / VOLUME / "_data"
    data.mkdir(parents=True)
    for d in (tmp_path, *data.relative_to(tmp_path).parents, data.relative_to(tmp_path)):
        os.chmod(tmp_path / d, 0o755)
    return data


@pytest.mark.skipif(os.geteuid() != 0, reason="the walk wants root-owned directories")
def test_the_data_dir_is_walked_without_links_and_made_0711(tmp_path: Path) -> None:
    data = _tree(tmp_path)
    os.chmod(data, 0o777)  # the flow (root in its container) may chmod its own mount
    secure_data_dir(str(data))
    assert data.stat().st_mode & 0o7777 == 0o711


@pytest.mark.skipif(os.geteuid() != 0, reason="the walk wants root-owned directories")
def test_a_data_dir_that_is_a_link_is_refused(tmp_path: Path) -> None:
    data = _tree(tmp_path)
    data.rmdir()
    data.symlink_to("/etc")
    with pytest.raises(FlowSocketError):
        secure_data_dir(str(data))
    assert os.readlink(data) == "/etc"


@pytest.mark.skipif(os.geteuid() != 0, reason="the walk wants root-owned directories")
def test_a_link_or_a_foreign_or_writable_directory_on_the_way_is_refused(tmp_path: Path) -> None:
    data = _tree(tmp_path)
    volumes = data.parent.parent
    os.chown(volumes, 1000, 1000)
    with pytest.raises(FlowSocketError, match="owned by uid 1000"):
        secure_data_dir(str(data))
    os.chown(volumes, 0, 0)
    os.chmod(volumes, 0o777)
    with pytest.raises(FlowSocketError, match="writable"):
        secure_data_dir(str(data))
    os.chmod(volumes, 0o755)
    moved = tmp_path / "elsewhere"
    (tmp_path / "root").rename(moved)
    (tmp_path / "root").symlink_to(moved)
    with pytest.raises(FlowSocketError, match="without links"):
        secure_data_dir(str(data))


def test_a_relative_or_dotted_path_is_refused() -> None:
    for bad in ("relative/_data", "/var/lib/docker/volumes/../../../etc"):
        with pytest.raises(FlowSocketError):
            secure_data_dir(bad)


async def test_an_older_task_of_the_flow_gets_no_socket() -> None:
    """Tasks of one flow on one node share its volume: only the newest may listen there (an
    older one listening again would take the path, and the running flow's connection)."""
    from server.cluster.agent_place import VolumePlace
    from tests.unit.test_agent_requests import _info

    class NoEngine:  # never reached: the refusal comes first
        async def inspect_raw(self, cid: str) -> dict[str, Any]:
            raise AssertionError("inspected an older task")

    place = VolumePlace(
        NoEngine(),  # type: ignore[arg-type]
        docker_root="/var/lib/docker",
        socket_mount="/run/flowmgr",
        instance="x",
        newest=lambda info: False,
    )
    info = _info("c" * 64, swarm=True)
    with pytest.raises(FlowSocketError) as err:
        await place.verify(info)
    assert err.value.details["reason"] == "older_task"
