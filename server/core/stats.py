"""ResourceSampler: one background task keeps every running container's usage fresh and cached."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from server.core.cgroups import (
    RawUsage,
    UsageReader,
    compute_sample,
    find_paths,
    host_memory,
    read_system_cpu_ns,
)
from server.core.config import Settings
from server.core.container_info import parse_time
from server.core.docker_adapter import DockerAdapter
from server.core.errors import FlowMgrError
from server.core.events import StatsSampled, now
from server.core.models import ResourceSample
from server.core.registry import Registry

__all__ = ["ResourceSampler", "sample_from_api"]

logger = logging.getLogger(__name__)


def sample_from_api(raw: dict[str, Any]) -> ResourceSample:
    """A Docker stats API answer turned into a sample, with the `docker stats` CLI's arithmetic."""
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
        pre.get("cpu_usage") or {}
    ).get("total_usage", 0)
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = (
        cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    )
    cpu_pct = cpu_delta / sys_delta * online * 100.0 if cpu_delta > 0 and sys_delta > 0 else 0.0
    mem = raw.get("memory_stats") or {}
    stats = mem.get("stats") or {}
    usage = int(mem.get("usage", 0))
    inactive = int(stats.get("total_inactive_file", stats.get("inactive_file", 0)))
    if inactive < usage:
        usage -= inactive
    limit = int(mem.get("limit", 0))
    nets = (raw.get("networks") or {}).values()
    blk = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    read = sum(int(e.get("value", 0)) for e in blk if str(e.get("op")).lower() == "read")
    write = sum(int(e.get("value", 0)) for e in blk if str(e.get("op")).lower() == "write")
    return ResourceSample(
        cpu_percent=round(cpu_pct, 2),
        memory_usage=usage,
        memory_limit=limit,
        memory_percent=round(usage / limit * 100.0, 2) if limit else 0.0,
        network_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in nets),
        network_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in nets),
        disk_read_bytes=read,
        disk_write_bytes=write,
        timestamp=parse_time(str(raw.get("read", ""))) or now(),
    )


class ResourceSampler:
    """Cgroup files every `stats_interval` when local; the stats API as a slow fallback."""

    def __init__(
        self,
        adapter: DockerAdapter,
        registry: Registry,
        settings: Settings,
        proc_root: str = "/proc",
        fs_root: str = "",
    ) -> None:
        self.adapter = adapter
        self.registry = registry
        self.settings = settings
        self.proc_root = proc_root
        self.fs_root = fs_root
        """Prefix of the cgroup mount points (tests point both roots at recorded files)."""
        self._paths: dict[str, tuple[int, UsageReader | None]] = {}
        self._prev: dict[str, RawUsage] = {}
        self._api_due: dict[str, float] = {}
        self._online_cpus = os.cpu_count() or 1
        self._host_mem = 0
        self.sweeps = 0
        self._api_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Sample forever, one sweep per interval."""
        interval = self.settings.monitoring.stats_interval
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.sample_all()
                except Exception:  # one bad sweep must not end sampling for good
                    logger.exception("resource sampling failed; retrying next interval")
                await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))
        finally:
            if self._api_task is not None:
                self._api_task.cancel()

    async def sample_all(self) -> dict[str, ResourceSample]:
        """One sweep over every running container; caches and publishes the samples."""
        running = [
            (cid, rec.info.pid)
            for cid, rec in self.registry.records.items()
            if rec.state == "running" and rec.info.pid > 0
        ]
        samples, unreadable = await asyncio.to_thread(self._read_all, running)
        for cid, sample in samples.items():
            rec = self.registry.records.get(cid)
            if rec is not None and rec.state == "running":
                rec.resources = sample
                self.registry.bus.publish(StatsSampled(container_id=cid, sample=sample))
        live = {cid for cid, _ in running}
        # _paths too: a container whose files were never readable has no _prev entry
        for gone in [c for c in {*self._prev, *self._paths} if c not in live]:
            self._prev.pop(gone, None)
            self._paths.pop(gone, None)
        for gone in [c for c in self._api_due if c not in self.registry.records]:
            del self._api_due[gone]  # a removed container's next stats-API turn
        # a local engine's unreadable container has just exited; only remote ones need the API
        if (
            unreadable
            and not self.adapter.is_local
            and (self._api_task is None or self._api_task.done())
        ):
            # the stats API takes about a second per call: never hold up the cgroup sweep
            self._api_task = asyncio.create_task(
                self._sample_api(unreadable), name="stats-api-fallback"
            )
        self.sweeps += 1
        return samples

    def _read_all(
        self, running: list[tuple[str, int]]
    ) -> tuple[dict[str, ResourceSample], list[str]]:
        """Runs in a worker thread: plain file reads, microseconds per container."""
        if not self._host_mem:
            self._host_mem = host_memory(self.proc_root)
        system_ns = read_system_cpu_ns(self.proc_root)
        when = now()
        samples: dict[str, ResourceSample] = {}
        unreadable: list[str] = []
        mountinfo: str | None = None
        for cid, pid in running:
            known = self._paths.get(cid)
            if known is None or known[0] != pid:
                if mountinfo is None:
                    mountinfo = self._read_text(f"{self.proc_root}/self/mountinfo")
                paths = find_paths(
                    self._read_text(f"{self.proc_root}/{pid}/cgroup"), mountinfo, self.fs_root
                )
                reader = (
                    None
                    if paths is None
                    else UsageReader(paths, f"{self.proc_root}/{pid}/net/dev", self._host_mem)
                )
                known = (pid, reader)
                self._paths[cid] = known
                self._prev.pop(cid, None)
            if known[1] is None:
                unreadable.append(cid)
                continue
            try:
                cur = known[1].read(system_ns)
            except (OSError, ValueError):
                self._paths.pop(cid, None)
                unreadable.append(cid)
                continue
            samples[cid] = compute_sample(self._prev.get(cid), cur, self._online_cpus, when)
            self._prev[cid] = cur
        return samples, unreadable

    @staticmethod
    def _read_text(path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    async def _sample_api(self, ids: list[str]) -> None:
        """Fallback for engines whose cgroup files are not here: the slow stats API, rarely."""
        due_now = time.monotonic()
        due = [c for c in ids if self._api_due.get(c, 0.0) <= due_now]
        if not due:
            return
        for cid in due:
            self._api_due[cid] = due_now + self.settings.monitoring.resource_check_interval
        sem = asyncio.Semaphore(8)

        async def one(cid: str) -> None:
            async with sem:
                try:
                    sample = sample_from_api(await self.adapter.stats_once(cid))
                except FlowMgrError as err:
                    logger.debug("stats API failed for %s: %s", cid[:12], err)
                    return
            rec = self.registry.records.get(cid)
            if rec is not None and rec.state == "running":
                rec.resources = sample
                self.registry.bus.publish(StatsSampled(container_id=cid, sample=sample))

        await asyncio.gather(*(one(c) for c in due))
