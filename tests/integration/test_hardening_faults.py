"""Faults from outside: a flow whose process is SIGKILLed on the host or by `docker kill` is a
crash (137), not an OOM, while `docker stop` is a stop; with the restart policy "no", one
failure is one crash."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest

from server.core.config import Settings
from server.core.events import ContainerCrashed
from server.core.models import CreateSpec
from tests.integration.manager_helpers import (
    BUSYBOX,
    docker,
    no_event,
    started_manager,
    wait_event,
)

pytestmark = pytest.mark.docker


async def test_sigkill_is_reported_as_137_not_oom(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        snap = await m.create_container(CreateSpec(name=unique_name("kill9"), image=BUSYBOX))
        await m.start_container(snap.id)
        pid = int((await docker("inspect", "-f", "{{.State.Pid}}", snap.id)).stdout)
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # from the host: Docker sees no kill request, only a death
        crash = await wait_event(sub, ContainerCrashed, lambda e: e.container_id == snap.id)
        took = time.monotonic() - began
        assert crash.exit_code == 137
        assert crash.error == "Killed by signal 9"  # not "Out of memory"
        assert m.get(snap.id).state == "exited"
        # PROTOCOL/issue: within 2 s; the margin is for this shared, heavily loaded machine
        assert took < 5.0, f"the crash was reported {took:.1f} s after the kill"
        # absence cannot be awaited: give a restart policy time to restart (and re-crash) it
        await asyncio.sleep(1.5)
        assert no_event(sub, ContainerCrashed, snap.id) == []
        assert (await docker("inspect", "-f", "{{.RestartCount}}", snap.id)).stdout.strip() == "0"


async def test_docker_kill_is_exited_137_and_docker_stop_is_stopped(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m, m.bus.subscribe() as sub:
        killed = await m.create_container(CreateSpec(name=unique_name("dkill"), image=BUSYBOX))
        stopped = await m.create_container(CreateSpec(name=unique_name("dstop"), image=BUSYBOX))
        for snap in (killed, stopped):
            await m.start_container(snap.id)
        await docker("kill", killed.id)  # SIGKILL through Docker, behind the manager's back
        crash = await wait_event(sub, ContainerCrashed, lambda e: e.container_id == killed.id)
        assert (crash.exit_code, crash.error) == (137, "Killed by signal 9")
        assert m.get(killed.id).state == "exited"
        await docker("stop", "-t", "1", stopped.id)  # TERM ignored by sleep, KILL after 1 s
        async with asyncio.timeout(30):
            while m.get(stopped.id).state != "stopped":
                await asyncio.sleep(0.05)
        assert no_event(sub, ContainerCrashed, stopped.id) == []
