"""ResourceSampler: one background task keeps every running container's usage fresh and cached.

Each container is read from its cgroup files (microseconds) when the manager can see them: its
pid's `/proc/<pid>/cgroup` must name the container, and the files it points to must be
readable. Run in a container, the manager sees them only with `--pid=host` (the flows' pids) and
`-v /sys/fs/cgroup:/sys/fs/cgroup:ro` (the host's cgroup tree; Docker's own mount shows the
manager's cgroup only): either alone is not enough (checked in bench/RESULTS.md). A container
whose files are not visible, or any container of a remote engine, is sampled through the
Docker stats API instead (`stats_api.py`, a bounded budget), and the first time that happens
the log says why, once.

Cost (issue 15): each flow's cgroup files and `/proc/<pid>/net/dev` stay open while the
descriptor budget allows (`sample_files.py`; re-opened when the pid changes, closed when the
flow stops or goes) and are read with positioned reads. Flows someone watches (`watch`: the
panel's rows on screen and detail view, an API client's `watch_stats`) are read every
`stats_interval`, the others every `background_stats_interval`; each flow has its own slice of
the interval and its own round of the background period, so the work is spread, not a burst.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable

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
from server.core.errors import FlowMgrError, InvalidRequest
from server.core.events import StatsSampled, now
from server.core.fd_budget import FdBudget
from server.core.models import ResourceSample
from server.core.registry import Record, Registry
from server.core.stats_api import StatsApiFallback, sample_from_api

__all__ = ["ResourceSampler", "sample_from_api", "MAX_WATCHED"]

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
    """Cgroup files where visible (watched flows every `stats_interval`, the others every
    `background_stats_interval`, spread over the interval); else the stats API, within budget."""

    SLICES = 10
    """A round (one `stats_interval`) is cut in up to this many slices; each flow is read in
    its own (its phase, from its id), so a round is small reads spread over it, not a burst."""
    SLICE_READS = 64
    """...but a slice reads at least this many flows (1-2.5 ms of reads of kept files): each
    slice is a wake-up and a thread hop, 0.2-0.5 ms of CPU on a VM (bench/RESULTS.md). The
    spread that shows in one-second windows is the background flows' over the rounds."""

    def __init__(
        self,
        adapter: DockerAdapter,
        registry: Registry,
        settings: Settings,
        proc_root: str = "/proc",
        fs_root: str = "",
        fd_budget: FdBudget | None = None,
    ) -> None:
        self.adapter = adapter
        self.registry = registry
        self.settings = settings
        self.proc_root = proc_root
        self.fs_root = fs_root
        """Prefix of the cgroup mount points (tests point both roots at recorded files)."""
        self.fd_budget = fd_budget if fd_budget is not None else FdBudget()
        """Kept-open sample files are counted here under the flow's id (the manager's own)."""
        self._paths: dict[str, tuple[int, UsageReader | None]] = {}
        """Container -> (pid, its reader, or None when its files are not visible here)."""
        self._hidden: dict[str, str] = {}
        """Container -> why its files are not visible (it goes to the stats API)."""
        self._prev: dict[str, RawUsage] = {}
        self._online_cpus = os.cpu_count() or 1
        self._host_mem = 0
        self._read_lock = threading.Lock()
        """The rounds and an on-demand read share the readers: one thread at a time."""
        mon = settings.monitoring
        self.api = StatsApiFallback(
            adapter, mon.stats_api_concurrency, mon.resource_check_interval, self._store
        )
        self.why_api: str | None = None
        """Why the first container went to the stats API (logged once), None until then."""
        self.rounds = 0
        self._local: bool | None = None
        self._watch: dict[str, frozenset[str]] = {}
        self.watched: frozenset[str] = frozenset()
        """Containers someone looks at (any owner's): sampled every `stats_interval`."""
        self._due: set[str] = set()
        """Newly watched: read in the next slice, not after their background turn."""
        self._short_said = -60.0
        self._closed = False
        """Closed (the sampling task ended): no file is kept open until it runs again."""

    # rates

    def watch(self, owner: str, container_ids: Iterable[str]) -> None:
        """`owner` (the panel, an API client) looks at these containers now: its set is
        replaced (empty: none). Ids of no running container cost nothing and are kept.
        InvalidRequest (nothing changed) for an owner or id that is not a short string, a
        bare string or mapping instead of a list, or more than MAX_WATCHED ids."""
        ids = _checked_ids(owner, container_ids)
        if ids:
            self._watch[owner] = ids
        else:
            self._watch.pop(owner, None)
        before = self.watched
        self.watched = frozenset().union(*self._watch.values())
        self._due |= self.watched - before

    def unwatch(self, owner: str) -> None:
        """`owner` looks at nothing any more (a client left)."""
        self.watch(owner, ())

    async def run(self) -> None:
        """Sample forever, one round per `stats_interval`; the API fallback runs beside it."""
        api_task = asyncio.create_task(self.api.run(), name="stats-api-fallback")
        self._closed = False
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.sample_round()
                except Exception:  # one bad round must not end sampling for good
                    logger.exception("resource sampling failed; retrying next interval")
                interval = self.settings.monitoring.stats_interval
                await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))
        finally:
            api_task.cancel()
            self.close()  # a paused or stopped sampler keeps no descriptor

    def close(self) -> None:
        """Close every kept-open file and give it back to the budget; until `run` starts
        again, reads (a late one of the cancelled round, `ensure_sample`) keep none."""
        with self._read_lock:
            self._closed = True
            for cid in list(self._paths):
                self._drop(cid)

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

    async def sample_round(self) -> None:
        """One `stats_interval`: each watched flow once, the background flows whose turn it
        is, each in its slice; a new or restarted flow at once (first slice), a newly watched
        one in the next slice."""
        running = self._running()
        if running and not self._is_local():
            self._all_remote(running)
            self.rounds += 1
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        plan = self._plan(running)
        step = self.settings.monitoring.stats_interval / len(plan)
        live = {cid for cid, _ in running}
        for n, batch in enumerate(plan):
            if n:
                await asyncio.sleep(max(0.0, start + n * step - loop.time()))
            batch = self._with_due(batch)
            if n == 0 and (batch or len(self._paths) != len(live)):
                # (no new flow and as many readers as flows: none is gone, nothing to close)
                _, hidden = await self._read(batch, live)
                self._to_api(hidden)
            elif batch:
                await self._read(batch, None)
        self.rounds += 1

    def _plan(self, running: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
        """Who is read in which slice of this round (the first: new and restarted flows)."""
        mon = self.settings.monitoring
        every = max(1, round(mon.background_stats_interval / mon.stats_interval))
        turn = self.rounds % every
        watched = self.watched
        fresh: list[tuple[str, int]] = []
        due: list[tuple[str, int, int]] = []
        for cid, pid in running:
            known = self._paths.get(cid)
            if known is None or known[0] != pid:
                fresh.append((cid, pid))  # new or restarted: located and read at once
            elif known[1] is not None:  # (None: not visible, the stats API samples it)
                phase = _phase(cid)
                if cid in watched or phase // self.SLICES % every == turn:
                    due.append((cid, pid, phase))
        count = max(1, min(self.SLICES, len(due) // self.SLICE_READS))
        slices: list[list[tuple[str, int]]] = [fresh, *([] for _ in range(count - 1))]
        for cid, pid, phase in due:
            slices[phase % count].append((cid, pid))
        return slices

    def _with_due(self, batch: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """`batch` plus the running containers watched since the last slice."""
        if not self._due:
            return batch
        due, self._due = self._due, set()
        have = {cid for cid, _ in batch}
        records = self.registry.records
        extra = [
            (cid, rec.info.pid)
            for cid in due
            if cid not in have
            and (rec := records.get(cid)) is not None
            and rec.state == "running"
            and rec.info.pid > 0
        ]
        return batch + extra

    async def _read(
        self, batch: list[tuple[str, int]], live: set[str] | None
    ) -> tuple[dict[str, ResourceSample], dict[str, str]]:
        samples, hidden = await asyncio.to_thread(self._read_all, batch, live)
        for cid, sample in samples.items():
            self._store(cid, sample)
        return samples, hidden

    def _all_remote(self, running: list[tuple[str, int]]) -> None:
        why = f"the Docker Engine ({self.adapter.base_url}) is not on this host"
        self._to_api({cid: why for cid, _ in running})

    async def sample_all(self) -> dict[str, ResourceSample]:
        """Every running container read now, in one batch (benchmarks, tests); caches and
        publishes the samples."""
        running = self._running()
        # (records exist only once the engine answered: its client is made, no call here)
        if running and not self._is_local():
            self._all_remote(running)
            return {}
        samples, hidden = await self._read(running, {cid for cid, _ in running})
        self._to_api(hidden)
        self.rounds += 1
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
        self, running: list[tuple[str, int]], live: set[str] | None = None
    ) -> tuple[dict[str, ResourceSample], dict[str, str]]:
        """Runs in a worker thread: plain file reads, microseconds per container. With `live`
        (every running container), first forgets the others (closes their files) and returns
        every hidden one; else the containers of `running` whose files are not visible (->
        why)."""
        with self._read_lock:
            if live is not None:
                # _paths too: a container whose files were never readable has no _prev entry
                for gone in [c for c in {*self._prev, *self._paths} if c not in live]:
                    self._drop(gone)
            samples, hidden = self._read_locked(running)
            return samples, (dict(self._hidden) if live is not None else hidden)

    def _drop(self, cid: str) -> None:
        """Forget one container; its kept files are closed and given back."""
        known = self._paths.pop(cid, None)
        if known is not None and known[1] is not None:
            known[1].files.release(self.fd_budget, cid)
        self._prev.pop(cid, None)
        self._hidden.pop(cid, None)

    def _hold(self, cid: str, reader: UsageReader) -> None:
        """Keep the reader's files open if the budget allows: they never take what the
        sockets of `docker.max_flows` flows (or of as many as there are) would need."""
        if self._closed:
            return
        spare = 2 * max(self.settings.docker.max_flows, len(self.registry.records))
        reader.files.hold(self.fd_budget, cid, spare)

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
                self._drop(cid)  # restarted: the old pid's files are closed
                try:
                    if mountinfo is None:
                        mountinfo = self._read_text(f"{self.proc_root}/self/mountinfo")[0]
                    opened = self._open(cid, pid, mountinfo, system_ns)
                except OSError as exc:  # out of descriptors: not the flow's fault, next round
                    self._short_of_descriptors(exc)
                    continue
                if isinstance(opened, str):
                    self._paths[cid] = (pid, None)
                    self._hidden[cid] = hidden[cid] = opened
                    continue
                reader, cur = opened
                self._paths[cid] = (pid, reader)
                self._hold(cid, reader)
            elif known[1] is None:
                hidden[cid] = self._hidden.get(cid, "its cgroup files are not visible")
                continue
            else:
                reader = known[1]
                try:
                    cur = reader.read(system_ns)
                except (OSError, ValueError):
                    # readable before: it has just exited (or restarted); located again later
                    self._drop(cid)
                    continue
                if not reader.files.kept:  # refused before (~1 us): the budget may have room
                    self._hold(cid, reader)
            samples[cid] = compute_sample(self._prev.get(cid), cur, self._online_cpus, when)
            self._prev[cid] = cur
        return samples, hidden

    def _open(
        self, cid: str, pid: int, mountinfo: str, system_ns: int
    ) -> tuple[UsageReader, RawUsage] | str:
        """A located reader and its first reading, or why the files cannot be read."""
        reader, why = self._locate(cid, pid, mountinfo)
        if reader is None:
            return why
        try:
            return reader, reader.read(system_ns)
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno in _NO_DESCRIPTORS:
                raise
            return f"the flow's cgroup files cannot be read ({exc})"

    def _locate(self, cid: str, pid: int, mountinfo: str) -> tuple[UsageReader | None, str]:
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
        net_dev = f"{self.proc_root}/{pid}/net/dev"
        return UsageReader(paths, net_dev, self._host_mem, _phase(cid)), ""

    @staticmethod
    def _read_text(path: str) -> tuple[str, str]:
        """(text, "") or ("", why not)."""
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read(), ""
        except OSError as err:
            if err.errno in _NO_DESCRIPTORS:
                raise  # the files are there: the flow is not to be sent to the stats API
            return "", err.strerror or type(err).__name__

    def _short_of_descriptors(self, exc: OSError) -> None:
        """Say so, at most once a minute; the flow is located again next round."""
        if time.monotonic() - self._short_said < 60:
            return
        self._short_said = time.monotonic()
        logger.warning(
            "resource sampling skipped flows: %s (the descriptor budget's reserve was "
            "exhausted by something else; raise LimitNOFILE / ulimit -n)",
            exc.strerror,
        )


_NO_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)

MAX_WATCHED = 1000
"""The most containers one owner may watch (a screen shows ~40; the API allows 1,000)."""


def _checked_ids(owner: object, container_ids: object) -> frozenset[str]:
    if not isinstance(owner, str) or not owner or len(owner) > 256:
        raise InvalidRequest("the watcher must be a non-empty string", field="owner")
    if isinstance(container_ids, (str, bytes, dict)) or not isinstance(container_ids, Iterable):
        raise InvalidRequest("container_ids must be a list of ids", field="container_ids")
    ids: set[str] = set()
    for cid in container_ids:
        if not isinstance(cid, str) or not 0 < len(cid) <= 128:
            raise InvalidRequest("each container id must be a string", field="container_ids")
        ids.add(cid)
        if len(ids) > MAX_WATCHED:
            raise InvalidRequest(
                f"at most {MAX_WATCHED} containers may be watched", field="container_ids"
            )
    return frozenset(ids)


def _phase(cid: str) -> int:
    """A container's fixed place in the rounds and slices (ids are spread evenly)."""
    return zlib.crc32(cid.encode())


def _or_zero(read: Callable[[str], int], proc_root: str) -> int:
    """A host counter, or 0 where /proc does not show it (the samples then lack CPU %)."""
    try:
        return read(proc_root)
    except (OSError, ValueError, IndexError):
        return 0
