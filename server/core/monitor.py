"""DockerMonitor: follows the engine's events stream once, for every front end, and reconnects."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

from server.core.config import Settings
from server.core.container_info import ContainerInfo, to_loop
from server.core.docker_adapter import DockerAdapter
from server.core.engine_access import engine_socket_path, socket_access_problem
from server.core.errors import ContainerNotFound, DockerApiError, DockerUnavailable, FlowMgrError
from server.core.events import DockerConnectionLost, DockerConnectionRestored, now
from server.core.registry import Record, Registry

__all__ = [
    "ADOPT_INSPECTS",
    "ADOPTION_WAIT",
    "DockerMonitor",
    "MonitorHooks",
    "adopting_error",
    "adoption_text",
    "crash_cause",
]

logger = logging.getLogger(__name__)

# Actions after which an inspect tells the new truth; others (attach, resize, archive...) change
# nothing the manager shows.
_REFRESH_ON = frozenset(
    {"create", "start", "stop", "restart", "pause", "unpause", "rename", "update"}
)


ADOPT_INSPECTS = 16
"""Inspects in flight during adoption (the adapter's call pool has 24 threads)."""


ADOPTION_WAIT = 10.0
"""Seconds an API request arriving during the first adoption waits for it to end."""


def adoption_text(adopted: int, listed: int | None) -> str:
    """The adoption's progress, said: "adopted 120 of 1000"."""
    if listed is None:
        return "listing the engine's labelled containers"
    return f"adopted {adopted} of {listed}"


def adopting_error(adopted: int, listed: int | None) -> DockerApiError:
    """What a request gets when the first adoption outlasts its wait (reason "adopting")."""
    return DockerApiError(
        f"the manager is still adopting the engine's containers "
        f"({adoption_text(adopted, listed)}); retry in a few seconds",
        details={"reason": "adopting", "adopted": adopted, "total": listed},
    )


def crash_cause(exit_code: int, oom: bool) -> str:
    """A person-readable cause for `crash_details.error`."""
    if oom:
        return "Out of memory"
    if exit_code > 128:
        return f"Killed by signal {exit_code - 128}"
    return f"Exited with code {exit_code}"


class MonitorHooks(Protocol):
    """What the manager does when containers come and go."""

    async def container_added(self, rec: Record) -> None: ...
    async def container_removed(self, container_id: str) -> None: ...
    async def container_started(self, container_id: str) -> None: ...


class _End:
    """The events stream ended (error is None for a clean close)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class DockerMonitor:
    """One task: events stream -> registry; reconnects with backoff and resyncs from labels."""

    def __init__(
        self, adapter: DockerAdapter, registry: Registry, settings: Settings, hooks: MonitorHooks
    ) -> None:
        self.adapter = adapter
        self.registry = registry
        self.settings = settings
        self.hooks = hooks
        self.labels = ["flowmgr.managed=true", f"flowmgr.instance={settings.docker.instance}"]
        self.available = False
        """Whether the engine answered last time we asked (no round trip to read it)."""
        self.streaming = False
        self.synced = asyncio.Event()
        """Set once the first resync (adoption) has finished."""
        self.tried = asyncio.Event()
        """Set once the first connection attempt has succeeded or failed."""
        self._kills: dict[str, float] = {}
        self._ooms: set[str] = set()
        self._crash_seen: dict[str, datetime | None] = {}
        self._lost_reported = False
        self.engine_change: DockerConnectionLost | DockerConnectionRestored | None = None
        """The last loss or return published (None until the engine is first lost)."""
        self._listed: int | None = None
        self._adopted = 0
        self._adopting = False

    async def run(self) -> None:
        """Follow events until cancelled; on loss, retry with capped backoff."""
        delay = 0.5
        while True:
            reason = await self._follow_once()
            self.streaming = False
            self._mark_lost(reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            if self.available:
                delay = 0.5

    async def _follow_once(self) -> str:
        try:
            await self.adapter.ping()
        except DockerUnavailable as err:
            # the socket's owner, group or absence, said with its fix; else the engine's error
            path = engine_socket_path(self.adapter.configured_url or os.environ.get("DOCKER_HOST"))
            problem = None if path is None else await asyncio.to_thread(socket_access_problem, path)
            return problem or str(err)
        except FlowMgrError as err:
            return str(err)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | _End] = asyncio.Queue()
        since = now() - timedelta(seconds=2)

        def on_item(item: dict[str, Any]) -> None:
            to_loop(loop, queue.put_nowait, item)

        def on_end(err: BaseException | None) -> None:
            to_loop(loop, queue.put_nowait, _End(err))

        handle = self.adapter.stream_events(
            {"label": self.labels, "type": ["container"]}, since, on_item, on_end
        )
        try:
            await self.resync()
            self.streaming = True
            self._mark_restored()
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    return f"events stream ended: {item.error or 'closed by the engine'}"
                try:
                    await self.handle(item)
                except ContainerNotFound:
                    continue
                except DockerApiError as err:
                    logger.warning(
                        "could not follow up a Docker event %s: %s", item.get("Action"), err
                    )
        except FlowMgrError as err:
            return str(err)
        except Exception as err:  # a bug here must not end monitoring for good
            logger.exception("the events watcher failed; restarting it")
            return f"events watcher failed: {err!r}"
        finally:
            handle.close()
            if handle.thread is not None:
                await asyncio.to_thread(handle.thread.join, 2.0)

    def _mark_lost(self, reason: str) -> None:
        self.tried.set()
        if self._lost_reported:
            return
        self.available = False
        self._lost_reported = True
        logger.warning("Docker Engine unreachable (%s); retrying in the background", reason)
        self.engine_change = DockerConnectionLost(reason=reason)
        self.registry.bus.publish(self.engine_change)

    def _mark_restored(self) -> None:
        self.available = True
        if self._lost_reported:
            self._lost_reported = False
            logger.info("Docker Engine reachable again; state resynchronised")
            self.engine_change = DockerConnectionRestored()
            self.registry.bus.publish(self.engine_change)

    @property
    def adoption(self) -> tuple[int, int | None] | None:
        """(adopted, listed) until the first adoption is done (listed None until the engine's
        list answered); None once done, or while the engine is away after a first try."""
        if self.synced.is_set() or (self.tried.is_set() and not self._adopting):
            return None
        return self._adopted, self._listed

    async def resync(self) -> None:
        """Make memory match the engine's labelled containers (adoption on start).

        One filtered list, then at most ADOPT_INSPECTS inspects in flight (a few workers, not
        a task per container: the docker-call pool keeps threads for the API's own calls);
        each container is published as soon as it is inspected, so a panel shows its first
        screen of rows without waiting for the last of 1,000 inspects.
        """
        self._adopting = not self.synced.is_set()  # the first: /health says "adopting"
        try:
            await self._adopt()
        finally:
            self._adopting = False
        self.synced.set()
        self.tried.set()

    async def _adopt(self) -> None:
        self._listed, self._adopted = None, 0
        ids = await self.adapter.list_ids(self.labels)
        self._listed = len(ids)
        todo = iter(ids)
        live: set[str] = set()

        async def worker() -> None:
            for cid in todo:  # one shared iterator: each id is taken by one worker
                try:
                    info: ContainerInfo | None = await self.adapter.inspect(cid)
                except ContainerNotFound:  # removed since the list
                    info = None
                if info is not None:
                    live.add(info.id)
                    await self.apply(info)
                self._adopted += 1

        workers = [asyncio.ensure_future(worker()) for _ in range(min(ADOPT_INSPECTS, len(ids)))]
        try:
            await asyncio.gather(*workers)  # the first engine error ends the resync, as itself
        finally:
            for task in workers:
                task.cancel()
        for cid in [c for c in self.registry.records if c not in live]:
            await self.forget(cid)
        self.registry.keep_stops_of(live)

    async def apply(self, info: ContainerInfo) -> Record:
        """Store an inspect result, opening its channel when the container is new."""
        rec, old = self.registry.apply(info)
        if old is None:
            await self.hooks.container_added(rec)
        return rec

    async def forget(self, container_id: str) -> None:
        """The container is gone: drop it and its channel."""
        if self.registry.remove(container_id) is not None:
            await self.hooks.container_removed(container_id)
        self._kills.pop(container_id, None)
        self._crash_seen.pop(container_id, None)

    async def refresh(self, container_id: str) -> Record | None:
        """Inspect one container and apply what changed."""
        try:
            info = await self.adapter.inspect(container_id)
        except ContainerNotFound:
            await self.forget(container_id)
            return None
        return await self.apply(info)

    async def handle(self, event: dict[str, Any]) -> None:
        """React to one event of a labelled container."""
        action = str(event.get("Action") or event.get("status") or "")
        cid = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
        if not cid or action.startswith("exec_"):
            return
        if action.startswith("health_status"):
            rec = self.registry.records.get(cid)
            health = action.partition(":")[2].strip()
            if rec is not None and health in ("healthy", "unhealthy", "starting"):
                self.registry.set_health(rec, health)  # type: ignore[arg-type]
        elif action == "kill":
            # `docker stop` and `docker restart` send the stop signal first and SIGKILL only
            # after the timeout; a kill that starts with SIGKILL is `docker kill`: the flow is
            # killed, not stopped, and dies exited 137 as if killed on the host.
            attrs = (event.get("Actor") or {}).get("Attributes") or {}
            if str(attrs.get("signal", "")) not in ("9", "KILL", "SIGKILL"):
                self._kills[cid] = time.monotonic()
        elif action == "oom":
            self._ooms.add(cid)
        elif action == "destroy":
            await self.forget(cid)
        elif action == "die":
            attrs = (event.get("Actor") or {}).get("Attributes") or {}
            await self._died(cid, attrs, self._fresh(cid, event))
        elif action in _REFRESH_ON:
            if action == "start":
                self.registry.mark_started(cid)
            if self._fresh(cid, event) is None and not self._in_hand(cid, event):
                await self.refresh(cid)
            if action == "start":
                await self.hooks.container_started(cid)

    def _fresh(self, cid: str, event: dict[str, Any]) -> ContainerInfo | None:
        """The stored facts when an inspect already saw this event's effect, or will soon.

        An inspect sent after the event saw it; a manager action in flight on a container it
        stopped on request inspects it itself when done (so a stop costs no extra round trip).
        """
        rec = self.registry.records.get(cid)
        if rec is None:
            return None
        stamp = event.get("timeNano")
        if isinstance(stamp, int) and rec.info.asked_ns > stamp:
            return rec.info
        if self.registry.is_acted_on(cid) and self.registry.stopped_on_request(cid):
            return rec.info
        return None

    def _in_hand(self, cid: str, event: dict[str, Any]) -> bool:
        """True when a manager action in flight will inspect this container afterwards."""
        if self.registry.is_acted_on(cid):
            return True
        name = ((event.get("Actor") or {}).get("Attributes") or {}).get("name")
        return cid not in self.registry.records and self.registry.is_being_created(name)

    def _requested(self, cid: str) -> bool:
        """A stop or kill was asked for (through us, or through Docker) shortly before."""
        # consume the kill even when the stop was ours, or it would mark the next die as asked for
        kill_at = self._kills.pop(cid, None)
        if self.registry.stopped_on_request(cid):
            return True
        window = self.settings.docker.stop_timeout + 15
        return kill_at is not None and time.monotonic() - kill_at < window

    def kill_asked(self, container_id: str, *, asked: bool = True) -> None:
        """A kill is being sent through the manager (asked=False: it failed): an exit within
        the stop window is the kill's, whatever the signal (see `_requested`)."""
        if asked:
            self._kills[container_id] = time.monotonic()
        else:
            self._kills.pop(container_id, None)

    async def _died(self, cid: str, attrs: dict[str, Any], fresh: ContainerInfo | None) -> None:
        requested = self._requested(cid)
        if requested:
            self.registry.mark_stopped_on_request(cid)
        if fresh is not None:
            info = fresh
        else:
            try:
                info = await self.adapter.inspect(cid)
            except ContainerNotFound:
                await self.forget(cid)
                return
        rec = await self.apply(info)
        oom = info.oom_killed or cid in self._ooms
        self._ooms.discard(cid)
        raw_code = str(attrs.get("exitCode", ""))
        exit_code = int(raw_code) if raw_code.lstrip("-").isdigit() else info.exit_code
        if requested or (exit_code == 0 and not oom):
            return
        # a replayed `die` (after a reconnect) must not report the same crash twice
        if cid in self._crash_seen and self._crash_seen[cid] == info.finished_at:
            return
        self._crash_seen[cid] = info.finished_at
        try:
            logs: list[str] = await self.adapter.logs(
                cid,
                self.settings.monitoring.crash_log_lines,
                max_bytes=self.settings.docker.max_log_bytes,
            )
        except FlowMgrError as err:
            logs = [f"(logs unavailable: {err})"]
        self.registry.crashed(rec, exit_code, crash_cause(exit_code, oom), logs)
