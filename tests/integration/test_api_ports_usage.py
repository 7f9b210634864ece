"""Over Socket.IO (real uvicorn, real client, real engine): `ports` echo the request's keys,
also after a manager restart, and a running flow's `resource_usage` is never null, also on
its first status right after `start_container`, also when its cgroup files are not visible."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from api_harness import BUSYBOX, USAGE_FIELDS, client, docker_cli, running_service

from server.core.config import Settings
from server.core.manager import ContainerManager
from server.core.validation.shapes import PORTS_LABEL
from tests.conftest import RUN_ID

pytestmark = pytest.mark.docker


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _items(listed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in listed["containers"]}


async def test_ports_echo_as_written_also_after_a_restart(
    settings: Settings, unique_name: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tcp, udp, other = _free_ports(3)
    written = {"8080": tcp, "53/udp": udp}
    name, forged = unique_name("ports"), unique_name("forged")
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        created = await sio.call(
            "create_container", {"name": name, "image": BUSYBOX, "ports": written}, timeout=60
        )
        assert created["ports"] == written, created
        assert _items(await sio.call("list_containers", {}))[name]["ports"] == written
    # Hostile: a container given this manager's labels behind its back, with a ports label
    # that does not match what it publishes: adopted, its ports in the engine's spelling.
    await docker_cli(
        "create",
        "--name",
        forged,
        "--label",
        "flowmgr.managed=true",
        "--label",
        f"flowmgr.instance={RUN_ID}",
        "--label",
        PORTS_LABEL + '={"80": 1}',
        "-p",
        f"{other}:80",
        BUSYBOX,
    )
    with caplog.at_level(logging.WARNING, logger="server.core.manager"):
        async with running_service(settings) as svc, client(svc.url) as (sio, _):
            items = _items(await sio.call("list_containers", {}))
    assert items[name]["ports"] == written  # kept in its label across the restart
    assert items[forged]["ports"] == {"80/tcp": other}
    assert any(
        forged in r.getMessage() and "does not match" in r.getMessage() for r in caplog.records
    )


async def _first_status(svc_url: str, name: str) -> dict[str, Any]:
    """Create and start a flow, then ask its status at once."""
    async with client(svc_url) as (sio, _):
        created = await sio.call("create_container", {"name": name, "image": BUSYBOX}, timeout=60)
        cid = created["container_id"]
        before = await sio.call("get_container_status", {"container_id": cid})
        assert before["state"] == "created" and before["resource_usage"] is None
        started = await sio.call("start_container", {"container_id": cid}, timeout=60)
        assert started["status"] == "running", started
        status: dict[str, Any] = await sio.call("get_container_status", {"container_id": cid})
        stopped = await sio.call("stop_container", {"container_id": cid}, timeout=60)
        assert stopped["status"] == "stopped", stopped
        after = await sio.call("get_container_status", {"container_id": cid})
        assert after["resource_usage"] is None  # not running: null, as the contract says
        return status


async def test_first_status_after_start_carries_usage(settings: Settings, unique_name: Any) -> None:
    async with running_service(settings) as svc:
        svc.manager.set_sampling(False)  # no sweep to race with: the status reads on demand
        status = await _first_status(svc.url, unique_name("usage"))
    usage = status["resource_usage"]
    assert status["state"] == "running" and set(usage) == USAGE_FIELDS, status
    assert 0 < usage["memory_usage"] < usage["memory_limit"]


async def test_usage_from_the_stats_api_when_cgroup_files_are_not_visible(
    settings: Settings, unique_name: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As in a container run without --pid=host and the cgroup mount: nothing of /proc or the
    cgroup tree is visible. Usage comes from the engine's stats API and the log says why."""
    empty = tmp_path / "nothing-visible"
    empty.mkdir()
    manager = ContainerManager(settings)
    manager.sampler.proc_root = manager.sampler.fs_root = str(empty)
    with caplog.at_level(logging.WARNING, logger="server.core.stats"):
        async with running_service(settings, manager) as svc:
            status = await _first_status(svc.url, unique_name("api"))
            calls = manager.sampler.api.calls
    usage = status["resource_usage"]
    assert status["state"] == "running" and set(usage) == USAGE_FIELDS, status
    assert 0 < usage["memory_usage"] < usage["memory_limit"]
    assert 1 <= calls <= 2  # the on-demand read (and at most the round-robin's first turn)
    why = [r.getMessage() for r in caplog.records if "stats API" in r.getMessage()]
    assert len(why) == 1 and "--pid=host" in why[0] and str(empty) in why[0], why
