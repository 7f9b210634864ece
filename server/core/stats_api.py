"""Resource usage from the Docker stats API, for flows whose cgroup files are not visible here.

Each call waits for the engine's next collection tick (about 1 s, longer with many flows:
bench/RESULTS.md), so the budget is calls in flight: at most `monitoring.stats_api_concurrency`
at once. A flow's first sample is taken as soon as a slot is free (or on demand, `sample_now`,
through the same slots); after that each flow is asked once per
`monitoring.resource_check_interval`, the calls spread evenly over it, the oldest sample first.
More flows than the budget can serve in one interval stretch the interval; calls never pile up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from server.core.container_info import parse_time
from server.core.docker_adapter import DockerAdapter
from server.core.errors import FlowMgrError
from server.core.events import now
from server.core.models import ResourceSample

__all__ = ["StatsApiFallback", "sample_from_api", "CpuMark"]

logger = logging.getLogger(__name__)

CpuMark = tuple[int, int]
"""(container CPU ns, host CPU ns) of one answer: the next answer's CPU % is measured from it."""

CALL_TIMEOUT = 15.0
"""Seconds one stats call may take (the engine answers at its next tick, ~1 s)."""


def _cpu_mark(stats: dict[str, Any]) -> CpuMark:
    return (
        int((stats.get("cpu_usage") or {}).get("total_usage") or 0),
        int(stats.get("system_cpu_usage") or 0),
    )


def sample_from_api(raw: dict[str, Any], prev: CpuMark | None = None) -> ResourceSample:
    """A Docker stats API answer turned into a sample, with the `docker stats` CLI's arithmetic.

    A one-shot answer has no `precpu_stats`: CPU % is then measured from `prev`, the previous
    answer's mark (0.0 for the first one, as the cgroup reader's first sample)."""
    cpu = raw.get("cpu_stats") or {}
    cur_cpu, cur_sys = _cpu_mark(cpu)
    pre_cpu, pre_sys = _cpu_mark(raw.get("precpu_stats") or {})
    if not pre_sys and prev is not None:
        pre_cpu, pre_sys = prev
    cpu_delta, sys_delta = cur_cpu - pre_cpu, cur_sys - pre_sys
    online = (
        cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    )
    cpu_pct = 0.0
    if pre_sys and cpu_delta > 0 and sys_delta > 0:
        cpu_pct = cpu_delta / sys_delta * online * 100.0
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


class StatsApiFallback:
    """Round-robin over the containers handed to `assign`, within the call budget."""

    def __init__(
        self,
        adapter: DockerAdapter,
        concurrency: int,
        interval: float,
        publish: Callable[[str, ResourceSample], None],
    ) -> None:
        self.adapter = adapter
        self.interval = interval
        self._publish = publish
        self._slots = asyncio.Semaphore(concurrency)
        self._last: dict[str, float] = {}
        """Containers on the fallback -> monotonic time of their last sample (0.0: none yet)."""
        self._marks: dict[str, CpuMark] = {}
        self._inflight: dict[str, asyncio.Task[ResourceSample | None]] = {}
        self._changed = asyncio.Event()
        self.calls = 0
        """Stats API calls made (benchmarks count them)."""

    @property
    def assigned(self) -> frozenset[str]:
        """The containers whose usage comes from the API now."""
        return frozenset(self._last)

    @property
    def never_asked(self) -> int:
        """How many assigned containers have not had their first call yet."""
        return sum(1 for last in self._last.values() if not last)

    def assign(self, container_ids: set[str] | frozenset[str]) -> None:
        """These containers (and only these) are sampled through the API from now on."""
        for gone in [c for c in self._last if c not in container_ids]:
            del self._last[gone]
            self._marks.pop(gone, None)
        added = False
        for cid in container_ids:
            if cid not in self._last:
                self._last[cid] = 0.0
                added = True
        if added:
            self._changed.set()

    async def run(self) -> None:
        """Start one call every interval/n seconds, oldest sample first, within the budget."""
        tasks: set[asyncio.Task[ResourceSample | None]] = set()
        try:
            while True:
                if not self._last:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                cid, last = min(self._last.items(), key=lambda kv: kv[1])
                wait = last + self.interval - time.monotonic() if last else 0.0
                if wait > 0:
                    self._changed.clear()
                    try:
                        async with asyncio.timeout(wait):
                            await self._changed.wait()  # a new container goes first
                    except TimeoutError:
                        pass
                    continue
                # a free slot first: calls never queue up behind the budget (an on-demand
                # one waits for one slot at most)
                await self._slots.acquire()
                if cid not in self._last or cid in self._inflight:
                    self._slots.release()  # removed, or asked on demand meanwhile
                    continue
                self._last[cid] = time.monotonic()  # its turn is taken, even if the call fails
                task = self._start(cid, held=True)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if last:
                    # spread evenly; a first sample goes as soon as a slot is free
                    await asyncio.sleep(self.interval / max(1, len(self._last)))
        finally:
            for task in tasks:
                task.cancel()

    async def sample_now(self, container_id: str) -> ResourceSample | None:
        """One sample now (shared with a call already in flight for it); None when it fails."""
        task = self._inflight.get(container_id) or self._start(container_id)
        if container_id in self._last:
            self._last[container_id] = time.monotonic()
        return await asyncio.shield(task)

    def _start(self, cid: str, *, held: bool = False) -> asyncio.Task[ResourceSample | None]:
        task = asyncio.create_task(self._call(cid, held), name=f"stats-api-{cid[:12]}")
        self._inflight[cid] = task
        task.add_done_callback(lambda _: self._inflight.pop(cid, None))
        return task

    async def _call(self, cid: str, held: bool) -> ResourceSample | None:
        """One call; `held`: the caller took its slot already (released here)."""
        if not held:
            await self._slots.acquire()
        try:
            self.calls += 1
            raw = await self.adapter.stats_once(cid, timeout=CALL_TIMEOUT)
        except FlowMgrError as err:
            logger.debug("stats API failed for %s: %s", cid[:12], err)
            return None
        finally:
            self._slots.release()
        sample = sample_from_api(raw, self._marks.get(cid))
        if cid in self._last:
            self._marks[cid] = _cpu_mark(raw.get("cpu_stats") or {})
        self._publish(cid, sample)
        return sample
