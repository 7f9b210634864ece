"""ResourceSampler: one background task keeps every running container's usage fresh and cached.

Each container is read from its cgroup files (microseconds) when the manager can see them: its
pid's `/proc/<pid>/cgroup` must name the container, and the files it points to must be
readable. Run in a container, the manager sees them only with `--pid=host` (the flows' pids) and
`-v /sys/fs/cgroup:/sys/fs/cgroup:ro` (the host's cgroup tree; Docker's own mount shows the
manager's cgroup only): either alone is not enough (checked in bench/RESULTS.md). A container
whose files are not visible, or any container of a remote engine, is sampled through the
Docker stats API instead (`stats_api.py`, a bounded budget), and the first time that happens
the log says why, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

from server.core.cgroups import (
    RawUsage,
    UsageReader,
    compute_sample,
    find_paths,
    host_memory,
    read_system_cpu_ns,
)
from server.core.config import Settings
from server.core.docker_adapter import DockerAdapter
from server.core.errors import FlowMgrError
from server.core.events import StatsSampled, now
from server.core.models import ResourceSample
from server.core.registry import Record, Registry
from server.core.stats_api import StatsApiFallback, sample_from_api

__all__ = ["ResourceSampler", "sample_from_api"]

logger = logging.getLogger(__name__)


FLAGS_HINT = (
    "for per-second samples from cgroup files, run the manager on the engine's host, or in "
    "its container with --pid=host and -v /sys/fs/cgroup:/sys/fs/cgroup:ro"
)


def zero_sample(limit: int = 0) -> ResourceSample:
    """What a running container shows when no reading could be taken at all (it exited
    between the check and the read, or the engine did not answer): zeros, stamped now."""
    return ResourceSample(0.0, 0, limit, 0.0, 0, 0, 0, 0, now())


class ResourceSampler:
    """Cgroup files every `stats_interval` where visible; else the stats API, within budget."""

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
        """Container -> (pid, its reader, or None when its files are not visible here)."""
        self._prev: dict[str, RawUsage] = {}
        self._online_cpus = os.cpu_count() or 1
        self._host_mem = 0
        self._read_lock = threading.Lock()
        """The sweep and an on-demand read share the readers: one thread at a time."""
        mon = settings.monitoring
        self.api = StatsApiFallback(
            adapter, mon.stats_api_concurrency, mon.resource_check_interval, self._store
        )
        self.why_api: str | None = None
        """Why the first container went to the stats API (logged once), None until then."""
        self.sweeps = 0
        self._local: bool | None = None

    async def run(self) -> None:
        """Sample forever, one sweep per interval; the API fallback runs beside it."""
        interval = self.settings.monitoring.stats_interval
        api_task = asyncio.create_task(self.api.run(), name="stats-api-fallback")
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.sample_all()
                except Exception:  # one bad sweep must not end sampling for good
                    logger.exception("resource sampling failed; retrying next interval")
                await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))
        finally:
            api_task.cancel()

    def _store(self, cid: str, sample: ResourceSample) -> None:
        rec = self.registry.records.get(cid)
        if rec is not None and rec.state == "running":
            rec.resources = sample
            self.registry.bus.publish(StatsSampled(container_id=cid, sample=sample))

    def _is_local(self) -> bool:
        if self._local is None:
            try:
                self._local = self.adapter.is_local
            except FlowMgrError:
                return True  # the engine is away: ask again next time
        return self._local

    def _running(self) -> list[tuple[str, int]]:
        return [
            (cid, rec.info.pid)
            for cid, rec in self.registry.records.items()
            if rec.state == "running" and rec.info.pid > 0
        ]

    async def sample_all(self) -> dict[str, ResourceSample]:
        """One sweep over every running container; caches and publishes the samples."""
        running = self._running()
        # (records exist only once the engine answered: its client is made, no call here)
        if not running or self._is_local():
            samples, hidden = await asyncio.to_thread(self._read_all, running)
        else:
            samples = {}
            why = f"the Docker Engine ({self.adapter.base_url}) is not on this host"
            hidden = {cid: why for cid, _ in running}
        for cid, sample in samples.items():
            self._store(cid, sample)
        live = {cid for cid, _ in running}
        # _paths too: a container whose files were never readable has no _prev entry
        for gone in [c for c in {*self._prev, *self._paths} if c not in live]:
            self._prev.pop(gone, None)
            self._paths.pop(gone, None)
        self._to_api(hidden)
        self.sweeps += 1
        return samples

    def _to_api(self, hidden: dict[str, str], *, only: bool = True) -> None:
        """Hand the containers whose files are not visible to the API (`only`: these and no
        others, as a sweep sees them all); say why, once."""
        fresh = {c: why for c, why in hidden.items() if c not in self.api.assigned}
        self.api.assign(set(hidden) if only else {*self.api.assigned, *hidden})
        if not fresh or self.why_api is not None:
            return
        cid, why = next(iter(fresh.items()))
        rec = self.registry.records.get(cid)
        self.why_api = why
        mon = self.settings.monitoring
        logger.warning(
            "resource usage of %s comes from the Docker stats API (each flow once per %.0f s, "
            "at most %d calls at a time: monitoring.resource_check_interval, "
            "monitoring.stats_api_concurrency) because %s%s",
            rec.info.name if rec else cid[:12],
            mon.resource_check_interval,
            mon.stats_api_concurrency,
            why,
            f"; {FLAGS_HINT}" if self._local else "",
        )

    async def ensure_sample(self, rec: Record) -> ResourceSample | None:
        """The cached sample of a running container, or one taken now (None when it is not
        running): from its cgroup files when visible (microseconds), else one stats API call
        within the budget; zeros when neither answers (it has just exited)."""
        if rec.state != "running":
            return None
        if rec.resources is not None:
            return rec.resources
        cid = rec.info.id
        sample: ResourceSample | None = None
        if not self._is_local():
            self._to_api(
                {cid: f"the Docker Engine ({self.adapter.base_url}) is not on this host"},
                only=False,
            )
        elif cid not in self.api.assigned and rec.info.pid > 0:
            samples, hidden = await asyncio.to_thread(self._read_all, [(cid, rec.info.pid)])
            sample = samples.get(cid)
            self._to_api(hidden, only=False)
        if sample is None and cid in self.api.assigned:
            sample = await self.api.sample_now(cid)
        if rec.state != "running":
            return None
        if rec.resources is None:
            self._store(cid, sample or zero_sample())
        return rec.resources

    def _read_all(
        self, running: list[tuple[str, int]]
    ) -> tuple[dict[str, ResourceSample], dict[str, str]]:
        """Runs in a worker thread: plain file reads, microseconds per container. Returns the
        samples and the containers whose files are not visible here (-> why)."""
        with self._read_lock:
            return self._read_locked(running)

    def _read_locked(
        self, running: list[tuple[str, int]]
    ) -> tuple[dict[str, ResourceSample], dict[str, str]]:
        if not self._host_mem:
            self._host_mem = _or_zero(host_memory, self.proc_root)
        system_ns = _or_zero(read_system_cpu_ns, self.proc_root)
        when = now()
        samples: dict[str, ResourceSample] = {}
        hidden: dict[str, str] = {}
        mountinfo: str | None = None
        for cid, pid in running:
            known = self._paths.get(cid)
            if known is None or known[0] != pid:
                if mountinfo is None:
                    mountinfo = self._read_text(f"{self.proc_root}/self/mountinfo")[0]
                reader, why = self._locate(cid, pid, mountinfo, system_ns)
                known = (pid, reader)
                self._paths[cid] = known
                self._prev.pop(cid, None)
                if reader is None:
                    hidden[cid] = why
            reader = known[1]
            if reader is None:
                hidden.setdefault(cid, "its cgroup files are not visible")
                continue
            try:
                cur = reader.read(system_ns)
            except (OSError, ValueError):
                # readable before: it has just exited (or restarted); located again next sweep
                self._paths.pop(cid, None)
                continue
            samples[cid] = compute_sample(self._prev.get(cid), cur, self._online_cpus, when)
            self._prev[cid] = cur
        return samples, hidden

    def _locate(
        self, cid: str, pid: int, mountinfo: str, system_ns: int
    ) -> tuple[UsageReader | None, str]:
        """The reader of one container's files, or None and why they are not visible."""
        where = f"{self.proc_root}/{pid}/cgroup"
        text, err = self._read_text(where)
        if err:
            return None, (
                f"{where} (the flow's pid) cannot be read ({err}): the flows' processes are "
                "not visible here"
            )
        if cid not in text:
            # another process of that number (another pid namespace): never its usage
            return None, f"{where} is not the flow's (another pid namespace)"
        paths = find_paths(text, mountinfo, self.fs_root)
        if paths is None:
            return None, f"no cgroup mount of {where}'s groups in {self.proc_root}/self/mountinfo"
        reader = UsageReader(paths, f"{self.proc_root}/{pid}/net/dev", self._host_mem)
        try:
            reader.read(system_ns)
        except (OSError, ValueError) as exc:
            return None, f"the flow's cgroup files cannot be read ({exc})"
        return reader, ""

    @staticmethod
    def _read_text(path: str) -> tuple[str, str]:
        """(text, "") or ("", why not)."""
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read(), ""
        except OSError as err:
            return "", err.strerror or type(err).__name__


def _or_zero(read: Callable[[str], int], proc_root: str) -> int:
    """A host counter, or 0 where /proc does not show it (the samples then lack CPU %)."""
    try:
        return read(proc_root)
    except (OSError, ValueError, IndexError):
        return 0
