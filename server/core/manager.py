"""ContainerManager: owns the managed containers' state, the watchers and the lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

from server.core.actions import ContainerActions
from server.core.bus import EventBus
from server.core.config import Settings, require_single_host
from server.core.docker_adapter import DockerAdapter
from server.core.errors import ContainerNotFound, FlowMgrError, InvalidRequest
from server.core.events import (
    ActivityLogged,
    ContainerCrashed,
    DockerConnectionLost,
    DockerConnectionRestored,
    NodeStatusReported,
    StatusReported,
)
from server.core.fd_budget import CHANNEL_FDS, FdBudget, reserve_for
from server.core.flow_channel import FlowChannelHub
from server.core.flow_config import FlowConfig
from server.core.host_paths import BindPins
from server.core.journal.journal import Journal
from server.core.journal.outbox import Outbox
from server.core.journal.records import Encoder, HistoryPage
from server.core.journal.replay import activity_from, crashes_from
from server.core.log_tail import LogTail, check_since
from server.core.logs import LogFollowers
from server.core.masking import mask_log_line
from server.core.models import ContainerSnapshot, ContainerStatus
from server.core.monitor import ADOPTION_WAIT, DockerMonitor, adopting_error
from server.core.policy import validate_code_settings
from server.core.registry import Record, Registry, SocketPlace
from server.core.shell import ShellSession
from server.core.shell_limits import check_size
from server.core.state_dir import StateDir
from server.core.stats import ResourceSampler
from server.core.status_phases import slot_count, slot_of
from server.core.stopped import StoppedSet
from server.core.validation.host import validate_bind_roots

__all__ = ["ContainerManager"]

logger = logging.getLogger(__name__)


class ContainerManager(ContainerActions):
    """The one core object per process: Docker lifecycle, monitoring, flow channels, events."""

    def __init__(
        self,
        settings: Settings,
        *,
        bus: EventBus | None = None,
        adapter: DockerAdapter | None = None,
        journal_encoder: Encoder | None = None,
        socket_place: SocketPlace | None = None,
    ) -> None:
        """`socket_place`: where flows' sockets are, when not in the state dir (the cluster
        agent's flow volumes); None on one host."""
        self.settings = settings
        self.bus = bus or EventBus()
        self.journal = Journal(settings, self.bus, journal_encoder)
        """Every pushed event with its seq (the front end gives the encoder; none: no journal)."""
        self.adapter = adapter or DockerAdapter(settings.docker.call_timeout)
        self.fd_budget = FdBudget(reserve=reserve_for(settings))
        """Descriptors each flow holds (sockets, kept-open sample files), under its id."""
        self.hub = FlowChannelHub(self.bus, settings.flow, budget=self.fd_budget)
        self.outbox = Outbox(self.hub, self.bus, max_per_flow=settings.journal.queue_max_per_flow)
        self.outbox.journal_flushed = self.journal.flushed
        self._recalled = False
        """The activity and crash memory hold what the journal had at start."""
        self.journal.on_reopen(self._journal_reopened)
        """Messages sent with `queue=True`, until their flow acknowledges them."""
        self._queue_dropped: dict[str, int] = {}
        """Queued messages dropped with a removed container, for the delete's answer."""
        self.state = StateDir(settings)
        self.registry = Registry(
            self.bus,
            self.hub,
            StoppedSet(self.state.path),
            self.state.path,
            settings.docker.socket_mount,
            socket_place,
        )
        self.monitor = DockerMonitor(self.adapter, self.registry, settings, self)
        self.sampler = ResourceSampler(
            self.adapter, self.registry, settings, fd_budget=self.fd_budget
        )
        self.logs = LogFollowers(
            self.adapter, self.bus, self._is_running, self._secret_values, self.fd_budget
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._network_ready = False
        self._network_lock = asyncio.Lock()
        self.bind_pins = BindPins()
        self._opening: set[asyncio.Future[None]] = set()
        self._sampler_task: asyncio.Task[None] | None = None

    # lifecycle of the manager itself

    @property
    def docker_available(self) -> bool:
        """Whether the engine answered last time (no round trip)."""
        return self.monitor.available

    @property
    def docker_change(self) -> DockerConnectionLost | DockerConnectionRestored | None:
        """The last engine loss or return published (None until the engine is first lost)."""
        return self.monitor.engine_change

    async def start(self, *, adopt_wait: float | None = None) -> None:
        """Connect, adopt labelled containers, start the watchers (retries when Docker is down).

        Waits for the first adoption (or the engine's first failure) up to `docker.call_timeout`,
        or up to `adopt_wait` seconds when given: the API listens while 1,000 flows are adopted.
        """
        if self._started:
            return
        require_single_host(self.settings)  # ConfigError: configured for a cluster
        validate_code_settings(self.settings)  # ConfigError: an unsafe code root stops the start
        # a bad bind root is a configuration error: stop here, before anything is adopted
        await asyncio.to_thread(validate_bind_roots, self.settings)
        self.bus.bind_loop(asyncio.get_running_loop())
        await asyncio.to_thread(self.state.prepare)  # ConfigError when not safe
        # ConfigError: another manager holds the journal, or the file is not a journal
        await self.journal.start()
        try:
            await self._recall_history()
            # queued messages live in the journal's database (in memory only when it is off)
            await self.outbox.start(self.journal.store.call if self.journal.enabled else None)
            self.registry.load_stops()
        except BaseException:
            await self.journal.stop()  # a failed start holds no lock: the next one may run
            raise
        self._started = True
        self._spawn(self.monitor.run(), "docker-events")
        wait = self.settings.docker.call_timeout
        try:
            async with asyncio.timeout(wait if adopt_wait is None else min(adopt_wait, wait)):
                await self.monitor.tried.wait()
        except TimeoutError:
            if adopt_wait is None:
                logger.warning("the Docker Engine did not answer within %.0f s of start", wait)
        self.set_sampling(True)
        self._spawn(self._report_status(), "status-reporter")
        self._spawn(self._drop_orphan_queues(), "outbox-orphans")

    async def _drop_orphan_queues(self) -> None:
        """Once the engine's containers are known: drop the queues of flows deleted while this
        manager was not running (no removal event will ever name them)."""
        await self.monitor.synced.wait()
        for container_id in self.outbox.queued_flows():
            if container_id not in self.registry.records:
                await self.drop_queue(container_id)

    async def stop(self) -> None:
        """Stop watchers and channels; the managed containers keep running."""
        if not self._started:
            return
        self._started = False
        self.logs.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=5) if tasks else (set(), set())
        if pending:
            logger.warning(
                "watcher tasks did not stop within 5 s: %s",
                ", ".join(t.get_name() for t in pending),
            )
        if self._opening:
            await asyncio.wait(list(self._opening), timeout=5)
        await self.outbox.stop()
        await self.hub.aclose()
        await self.adapter.close()
        self.monitor.available = False
        await self.journal.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _recall_history(self, upto: int = 2**63 - 1) -> None:
        """Refill the activity and crash memory from the journal (they outlive a restart):
        what it held up to seq `upto` goes before what is in memory already."""
        if not (self.journal.enabled and self.journal.store.is_open):
            return  # unavailable now: read when it opens (_journal_reopened)
        reg = self.registry
        activity = activity_from(
            await self.journal.newest("activity_log", reg.activity.maxlen or 2000, upto)
        )
        crashes = crashes_from(
            await self.journal.newest("container_crashed", reg.crashes.maxlen or 500, upto),
            activity,
        )
        for memory, older in ((reg.activity, activity), (reg.crashes, crashes)):
            merged = [*older, *memory]  # the newest kept when both do not fit
            memory.clear()
            memory.extend(merged[-(memory.maxlen or len(merged)) :])
        self._recalled = True

    async def _journal_reopened(self, upto: int) -> None:
        """The journal was unavailable at start and opened since: read what it held then."""
        if not self._recalled:
            await self._recall_history(upto)
        await self.outbox.reload()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def set_sampling(self, enabled: bool) -> None:
        """Run or pause the background resource sampler (benchmarks measure its cost)."""
        running = self._sampler_task is not None and not self._sampler_task.done()
        if enabled and not running and self._started:
            self._sampler_task = self._spawn(self.sampler.run(), "resource-sampler")
        elif not enabled and running and self._sampler_task is not None:
            self._sampler_task.cancel()

    def watch_stats(self, owner: str, container_ids: Iterable[str]) -> None:
        """`owner` (the panel, an API client) looks at these containers: their samples come
        every `stats_interval`, the others' every `background_stats_interval`. Replaces the
        owner's set (empty: none); InvalidRequest for ids that are not strings, or too many."""
        self.sampler.watch(owner, container_ids)

    def unwatch_stats(self, owner: str) -> None:
        """`owner` looks at nothing any more (a client disconnected, the panel closed)."""
        self.sampler.unwatch(owner)

    async def _report_status(self) -> None:
        """Every flow's status once per `monitoring.health_check_interval`, each in its own
        slot of it (status_phases.py): 1,000 flows at 30 s are ~33 reports a second, not a
        burst of 1,000 every 30 s."""
        interval = self.settings.monitoring.health_check_interval
        slots = slot_count(interval)
        loop = asyncio.get_running_loop()
        began, tick = loop.time(), 0
        while True:
            tick += 1
            # by the clock, not a sleep after the work: a flow's phase does not drift
            await asyncio.sleep(max(0.0, began + tick * interval / slots - loop.time()))
            slot = tick % slots
            recs = [r for r in self.registry.records.values() if slot_of(r.info.id, slots) == slot]
            # a running flow's usage is never null here either (read now when none is cached)
            await asyncio.gather(
                *(self.sampler.ensure_sample(r) for r in recs), return_exceptions=True
            )
            for rec in recs:
                self.bus.publish(StatusReported(status=self.registry.status_of(rec)))

    # hooks the monitor calls

    async def container_added(self, rec: Record) -> None:
        """Open the flow channel of a new or adopted container; pin its host binds."""
        if rec.info.ports_problem:
            logger.warning(
                "%s: its ports show in the engine's spelling (8080/tcp): %s",
                rec.info.name,
                rec.info.ports_problem,
            )
        await self._adopt_binds(rec)
        try:
            # an adopted container's mount comes from the engine: listen only in our own dir
            await self._verify_flow_dir(rec)
        except FlowMgrError as err:
            self._no_channel(rec, f"not listening for {rec.info.name}", err)
            return
        # shielded and tracked: a stop() arriving mid-open must not orphan a listening socket
        opening = asyncio.ensure_future(self.hub.open(rec.info.id, rec.socket_path))
        self._opening.add(opening)
        opening.add_done_callback(self._opening.discard)
        try:
            await asyncio.shield(opening)
        except FlowMgrError as err:
            self._no_channel(rec, f"cannot open the flow socket of {rec.info.name}", err)

    def _no_channel(self, rec: Record, why: str, err: FlowMgrError) -> None:
        """The container is still managed; only messaging it is impossible."""
        logger.warning("no flow channel for %s: %s", rec.info.name, err)
        self.registry.record_activity(
            "container_error",
            rec.info.id,
            f"{why}: {err}",
            {"name": rec.info.name, "error": err.message},
        )

    async def container_removed(self, container_id: str) -> None:
        """Close the channel and log stream of a vanished container; drop its queue."""
        self.logs.forget(container_id)
        self.bind_pins.forget(container_id)
        await self.hub.close(container_id)
        await self.drop_queue(container_id)

    async def delete_container_counted(self, ref: str) -> tuple[str, int]:
        """`delete_container`, and how many queued messages went with the flow."""
        container_id = await self.delete_container(ref)
        return container_id, self._queue_dropped.pop(container_id, 0)

    async def drop_queue(self, container_id: str) -> int:
        """Forget the queued messages of a container that is gone; how many (an activity line
        says so when there were any)."""
        try:
            dropped = await self.outbox.drop(container_id)
        except Exception as err:  # the journal is failing: the rows go at the next start
            logger.warning("queued messages of %s not dropped: %s", container_id[:12], err)
            return 0
        if dropped:
            if len(self._queue_dropped) > 1000:  # counts of removals nobody asked about
                self._queue_dropped.clear()
            self._queue_dropped[container_id] = dropped
            self.registry.record_activity(
                "container_deleted",
                container_id,
                f"{dropped} queued messages of {container_id[:12]} dropped: the flow is gone",
                {"queue_dropped": dropped},
            )
        return dropped

    async def container_started(self, container_id: str) -> None:
        """Resume a followed log stream after a (re)start; listen for a flow refused its
        channel earlier for want of descriptors once the budget has room again."""
        self.logs.container_started(container_id)
        rec = self.registry.records.get(container_id)
        if rec is not None and self.hub.info(container_id) is None:
            if self.fd_budget.available >= CHANNEL_FDS:
                await self.container_added(rec)

    def _is_running(self, container_id: str) -> bool:
        rec = self.registry.records.get(container_id)
        return rec is not None and rec.state == "running"

    def _secret_values(self, container_id: str) -> tuple[str, ...]:
        rec = self.registry.records.get(container_id)
        return rec.info.secret_values if rec is not None else ()

    # reads from memory

    def snapshot(self) -> list[ContainerSnapshot]:
        """Every managed container, sorted by name; no Docker round trip."""
        recs = sorted(self.registry.records.values(), key=lambda r: r.info.name)
        return [self.registry.snapshot_of(r) for r in recs]

    def get(self, ref: str) -> ContainerSnapshot:
        """Full id, exact name or unique id prefix."""
        return self.registry.snapshot_of(self.registry.resolve(ref))

    async def get_status(self, ref: str) -> ContainerStatus:
        """State, health, uptime and resource usage: the cached sample, or, for a running
        container with none yet (just started), one read now (cgroup files: microseconds; the
        stats API when they are not visible: about a second, within its budget)."""
        rec = self.registry.resolve(ref)
        await self.sampler.ensure_sample(rec)
        return self.registry.status_of(rec)

    def health(self) -> dict[str, str]:
        """The /health components, as last seen."""
        up = self._started and self.monitor.available
        return {
            "container_manager": "active" if up else "unavailable",
            "socket_handler": "active" if self._started else "stopped",
            "event_handler": "active" if up and self.monitor.streaming else "unavailable",
            "journal": self.journal.health(),
        }

    def adoption(self) -> tuple[int, int | None] | None:
        """(adopted, listed) while the first adoption runs (listed None until the engine's list
        answered); None once done, while the engine is away (health_reason says why), or
        before start (a front end serving a manager it does not start)."""
        return self.monitor.adoption if self._started else None

    async def until_adopted(self, timeout: float = ADOPTION_WAIT) -> None:
        """Return once the first adoption is done (at once when none runs); a request arriving
        meanwhile waits, then gets DockerApiError with reason "adopting" after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (progress := self.adoption()) is not None:
            if loop.time() >= deadline:
                raise adopting_error(*progress)
            await asyncio.sleep(0.05)

    def health_reason(self) -> str | None:
        """Why the engine is not in use, as last logged (the socket's group and its fix, ...);
        None while it answers or before the first attempt."""
        change = self.monitor.engine_change
        if self.monitor.available or not isinstance(change, DockerConnectionLost):
            return None
        return change.reason

    def recent_activity(
        self, container_id: str | None = None, limit: int = 200
    ) -> list[ActivityLogged]:
        """The newest activity lines (oldest first), optionally for one container."""
        return _recent(list(self.registry.activity), container_id, limit)

    def recent_crashes(
        self, container_id: str | None = None, limit: int = 50
    ) -> list[ContainerCrashed]:
        """The newest crash reports (oldest first)."""
        return _recent(list(self.registry.crashes), container_id, limit)

    async def get_history(
        self,
        since_seq: int | None = None,
        container_id: str | None = None,
        types: list[str] | None = None,
        limit: int = 100,
    ) -> HistoryPage:
        """Journalled events with seq > since_seq, oldest first, at most `limit` (1..1000);
        `container_id` a managed container's reference or the full id of a deleted one."""
        if since_seq is not None and (
            isinstance(since_seq, bool) or not isinstance(since_seq, int) or since_seq < 0
        ):
            raise InvalidRequest("since_seq must be a non-negative integer", field="since_seq")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidRequest("limit must be an integer from 1 to 1000", field="limit")
        if types is not None and (
            not isinstance(types, list) or not all(isinstance(t, str) for t in types)
        ):
            raise InvalidRequest("types must be a list of event names", field="types")
        if container_id is not None:
            if not isinstance(container_id, str) or not container_id:
                raise InvalidRequest("container_id must be a string", field="container_id")
            try:
                container_id = self.registry.resolve(container_id).info.id
            except ContainerNotFound:
                pass  # a deleted flow's full id: its history outlives it
        return await self.journal.history(
            min(since_seq or 0, 2**63 - 1), container_id, types, limit
        )

    async def list_containers(self) -> list[ContainerSnapshot]:
        """Same as `snapshot()`."""
        return self.snapshot()

    def cluster_nodes(self) -> list[dict[str, Any]] | None:
        """The `nodes` of a `container_list` answer (docs/PROTOCOL.md, NodeOut-shaped dicts):
        None on one host (no Swarm, no nodes key); a cluster hub lists its Swarm nodes."""
        return None

    def node_states(self) -> list[NodeStatusReported]:
        """The last `node_status` of every node whose agent link is down, for a client that
        just connected (so it knows why and since when); none on one host."""
        return []

    async def get_logs(
        self, ref: str, tail: int = 100, *, since: float | None = None, timestamps: bool = False
    ) -> LogTail:
        """The last `tail` lines of output, secrets masked, at most `docker.max_log_bytes` of
        them (the newest; `.truncated` tells when older ones were left out). ext: `since`
        seconds back from now only; `timestamps` starts each line with the engine's RFC 3339
        time and a space (`docker logs -t`), the text after it masked."""
        if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
            raise InvalidRequest("tail must be a non-negative integer", field="tail")
        check_since(since)
        if not isinstance(timestamps, bool):
            raise InvalidRequest("timestamps must be true or false", field="timestamps")
        rec = self.registry.resolve(ref)
        mask = partial(mask_log_line, secret_values=rec.info.secret_values)
        return await self.adapter.logs(
            rec.info.id,
            tail,
            partial(_after_stamp, mask) if timestamps else mask,
            max_bytes=self.settings.docker.max_log_bytes,
            since=None if since is None else time.time() - since,
            timestamps=timestamps,
        )

    async def inspect_container(self, ref: str) -> FlowConfig:
        """ext: the flow's configuration, secrets masked (never the raw inspect), with the
        node it runs on when clustered."""
        snap = self.get(ref)
        cfg = await self.adapter.inspect_config(snap.id)
        return replace(cfg, node=snap.node)

    async def follow_logs(self, ref: str) -> str:
        """Start (or share) the log stream; lines arrive as LogLineReceived."""
        rec = self.registry.resolve(ref)
        self.logs.follow(rec.info.id)
        return rec.info.id

    async def unfollow_logs(self, container_id: str) -> None:
        """Drop one follower of the stream."""
        try:
            cid = self.registry.resolve(container_id).info.id
        except ContainerNotFound:
            cid = container_id
        self.logs.unfollow(cid)

    async def open_shell(self, ref: str, cols: int, rows: int) -> ShellSession:
        """A shell on a pseudo-terminal in a running managed flow's container (one host only:
        a cluster hub's flows run on other nodes' engines)."""
        if self.cluster_nodes() is not None:
            raise InvalidRequest(
                "shells are not available in cluster mode",
                details={"reason": "not_in_cluster_mode"},
            )
        check_size(cols, rows)
        rec = self.registry.resolve(ref)
        info = await self.adapter.inspect(rec.info.id)  # the engine's word, not our memory
        labels = info.labels
        if (
            labels.get("flowmgr.managed") != "true"
            or labels.get("flowmgr.instance") != self.settings.docker.instance
        ):
            raise ContainerNotFound(f"no managed container {ref!r}", details={"container_id": ref})
        if info.status != "running":
            raise InvalidRequest(
                f"{info.name} is not running ({info.status}): start it to open a shell",
                field="container_id",
                details={"reason": "not_running", "state": info.status},
            )
        return await ShellSession.open(self.adapter, info.id, cols, rows)

    async def send_message(
        self, ref: str, message: dict[str, Any], *, queue: bool = False
    ) -> str | None:
        """Write one frame to the flow's socket (None); with `queue`, journal it and return its
        message id once committed: delivered in order, at least once, when the flow is (or
        gets) connected, until it acknowledges (QueueFull at `journal.queue_max_per_flow`)."""
        if not isinstance(message, dict):
            raise InvalidRequest("message must be an object", field="message")
        if not isinstance(queue, bool):
            raise InvalidRequest("queue must be true or false", field="queue")
        rec = self.registry.resolve(ref)
        if queue:
            return await self.outbox.put(rec.info.id, message, self.settings.flow.max_frame_bytes)
        await self.hub.send(rec.info.id, message)
        return None


_E = TypeVar("_E", ActivityLogged, ContainerCrashed)


def _recent(items: list[_E], container_id: str | None, limit: int) -> list[_E]:
    """The last `limit` items, optionally only those of one container."""
    picked = [i for i in items if container_id is None or i.container_id == container_id]
    return picked[-limit:] if limit > 0 else []


def _after_stamp(mask: Callable[[str], str], line: str) -> str:
    """Mask a timestamped line's text, not its leading timestamp."""
    stamp, sep, text = line.partition(" ")
    return f"{stamp}{sep}{mask(text)}"
