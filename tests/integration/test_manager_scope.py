"""Only labelled containers exist for the manager; a fresh manager re-adopts them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.core.config import Settings
from server.core.errors import ContainerNotFound
from server.core.models import CreateSpec
from tests.conftest import RUN_ID, TEST_LABEL
from tests.integration.manager_helpers import BUSYBOX, docker, inspect, started_manager

pytestmark = pytest.mark.docker


async def test_plain_docker_run_is_invisible(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("foreign")
    # no network: the test needs none, and it must not depend on the default bridge
    out = await docker(
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
        "--label",
        f"{TEST_LABEL}={RUN_ID}",
        "--label",
        "flowmgr.managed=true",
        BUSYBOX,
    )
    cid = out.stdout.strip()
    try:
        async with started_manager(settings) as m:
            assert all(s.id != cid for s in m.snapshot())
            for ref in (cid, cid[:12], name):
                with pytest.raises(ContainerNotFound):
                    m.get(ref)
                with pytest.raises(ContainerNotFound):
                    await m.stop_container(ref)
                with pytest.raises(ContainerNotFound):
                    await m.delete_container(ref)
                with pytest.raises(ContainerNotFound):
                    await m.get_status(ref)
                with pytest.raises(ContainerNotFound):
                    await m.get_logs(ref)
            assert (await inspect(cid))["State"]["Running"] is True
    finally:
        await docker("rm", "-f", cid, check=False)


async def test_fresh_manager_readopts(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as first:
        running = await first.create_container(CreateSpec(name=unique_name("a"), image=BUSYBOX))
        await first.start_container(running.id)
        stopped = await first.create_container(CreateSpec(name=unique_name("b"), image=BUSYBOX))
        await first.start_container(stopped.id)
        await first.stop_container(stopped.id)
        exited = await first.create_container(
            CreateSpec(name=unique_name("c"), image=BUSYBOX, command=["sh", "-c", "exit 0"])
        )
        await first.start_container(exited.id)
        idle = await first.create_container(CreateSpec(name=unique_name("d"), image=BUSYBOX))
    async with started_manager(settings) as second:
        states = {s.id: s.state for s in second.snapshot()}
        assert states[running.id] == "running"
        assert states[stopped.id] == "stopped"  # stopped on request survives the restart
        assert states[exited.id] == "exited"
        assert states[idle.id] == "created"
        status = await second.get_status(running.name)
        assert status.uptime is not None
        assert second.get(running.id).socket_path == running.socket_path
        await second.stop_container(running.id)
        assert second.get(running.id).state == "stopped"
