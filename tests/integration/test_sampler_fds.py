"""The sampler's kept-open files on a real engine: the flow's cgroup files and its pid's
/proc/<pid>/net/dev are held while it runs, re-opened when it restarts (a new pid), closed when
it stops and when it is removed; each counted from /proc/self/fd."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from server.core.config import Settings
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.integration.manager_helpers import BUSYBOX, WAIT, started_manager
from tests.unit.test_sample_files import open_fds

pytestmark = pytest.mark.docker


def _held(cid: str, pid: int | None = None) -> list[str]:
    """This process's descriptors on the flow's cgroup files, or on its pid's /proc files."""
    needle = f"/proc/{pid}/" if pid is not None else cid
    return [t for t in open_fds().values() if needle in t]


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not check():
            await asyncio.sleep(0.05)


def _pid(m: ContainerManager, cid: str) -> int:
    rec = m.registry.records.get(cid)
    return rec.info.pid if rec is not None and rec.state == "running" else 0


async def test_restart_reopens_stop_and_delete_close(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with started_manager(settings) as m:
        m.set_sampling(False)  # rounds by hand: each step is checked right after its read
        snap = await m.create_container(
            CreateSpec(name=unique_name("fds"), image=BUSYBOX, command=["sleep", "3600"])
        )
        cid = snap.id
        await m.start_container(cid)
        await _until(lambda: _pid(m, cid) > 0)
        first = _pid(m, cid)
        assert cid in await m.sampler.sample_all()
        reader = m.sampler._paths[cid][1]
        assert reader is not None and reader.files.kept >= 4
        cgroup_files = _held(cid)
        assert len(cgroup_files) == reader.files.kept - 1, cgroup_files
        assert _held(cid, first) == [f"/proc/{first}/net/dev"]

        await m.restart_container(cid)
        await _until(lambda: _pid(m, cid) not in (0, first))
        second = _pid(m, cid)
        sample = (await m.sampler.sample_all())[cid]
        assert sample.memory_usage > 0
        assert _held(cid, first) == [] and _held(cid, second) == [f"/proc/{second}/net/dev"]
        assert sorted(_held(cid)) == sorted(cgroup_files)  # the same paths, opened anew

        await m.stop_container(cid)
        await _until(lambda: _pid(m, cid) == 0)
        await m.sampler.sample_all()
        assert _held(cid) == [] and _held(cid, second) == []
        assert cid not in m.sampler._paths

        await m.start_container(cid)
        await _until(lambda: _pid(m, cid) > 0)
        await m.sampler.sample_all()
        assert len(_held(cid)) == len(cgroup_files)
        await m.delete_container(cid)
        await m.sampler.sample_all()
        assert _held(cid) == [] and cid not in m.sampler._paths
