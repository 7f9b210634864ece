"""ContainerManager: owns the managed containers' state, the watchers and the lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from server.core.bus import EventBus
from server.core.config import Settings
from server.core.docker_adapter import DockerAdapter
from server.core.errors import ContainerNotFound, DockerApiError, FlowMgrError, InvalidRequest
from server.core.events import ActivityLogged, ContainerCrashed, StatusReported
from server.core.flow_channel import FlowChannelHub
from server.core.inputs import check_code_path, check_spec, code_archive, normalise_ports
from server.core.logs import LogFollowers
from server.core.masking import mask_env
from server.core.models import ContainerSnapshot, ContainerStatus, CreateSpec
from server.core.monitor import DockerMonitor
from server.core.policy import host_config_defaults, validate_code_path, validate_create
from server.core.registry import Record, Registry
from server.core.stats import ResourceSampler
from server.core.stopped import StoppedSet

__all__ = ["ContainerManager"]

logger = logging.getLogger(__name__)


class ContainerManager:
    """The one core object per process: Docker lifecycle, monitoring, flow channels, events."""

    def __init__(self, settings: Settings, *, bus: EventBus | None = None,
                 adapter: DockerAdapter | None = None) -> None:
        self.settings = settings
        self.bus = bus or EventBus()
        self.adapter = adapter or DockerAdapter(settings.docker.call_timeout)
        self.hub = FlowChannelHub(self.bus, settings.flow)
        self._socket_dir = Path(settings.socket_dir)
        self.registry = Registry(self.bus, self.hub, StoppedSet(settings.socket_dir,
                                                                 settings.docker.instance),
                                 settings.socket_dir, settings.docker.socket_mount)
        self.monitor = DockerMonitor(self.adapter, self.registry, settings, self)
        self.sampler = ResourceSampler(self.adapter, self.registry, settings)
        self.logs = LogFollowers(self.adapter, self.bus, self._is_running)
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._network_ready = False
        self._network_lock = asyncio.Lock()
        self._opening: set[asyncio.Future[None]] = set()
        self._sampler_task: asyncio.Task[None] | None = None

    # lifecycle of the manager itself

    @property
    def docker_available(self) -> bool:
        """Whether the engine answered last time (no round trip)."""
        return self.monitor.available

    async def start(self) -> None:
        """Connect, adopt labelled containers, start the watchers (retries when Docker is down)."""
        if self._started:
            return
        self.bus.bind_loop(asyncio.get_running_loop())
        self._socket_dir.mkdir(parents=True, exist_ok=True)
        self.registry.stopped.load()
        self._started = True
        self._spawn(self.monitor.run(), "docker-events")
        try:
            async with asyncio.timeout(self.settings.docker.call_timeout):
                await self.monitor.tried.wait()
        except TimeoutError:
            logger.warning("the Docker Engine did not answer within %.0f s of start",
                           self.settings.docker.call_timeout)
        self.set_sampling(True)
        self._spawn(self._report_status(), "status-reporter")

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
            logger.warning("watcher tasks did not stop within 5 s: %s",
                           ", ".join(t.get_name() for t in pending))
        if self._opening:
            await asyncio.wait(list(self._opening), timeout=5)
        await self.hub.aclose()
        await self.adapter.close()
        self.monitor.available = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

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

    async def _report_status(self) -> None:
        while True:
            await asyncio.sleep(self.settings.monitoring.health_check_interval)
            for rec in list(self.registry.records.values()):
                self.bus.publish(StatusReported(status=self.registry.status_of(rec)))

    # hooks the monitor calls

    async def container_added(self, rec: Record) -> None:
        """Open the flow channel of a new or adopted container."""
        # shielded and tracked: a stop() arriving mid-open must not orphan a listening socket
        opening = asyncio.ensure_future(self.hub.open(rec.info.id, rec.socket_path))
        self._opening.add(opening)
        opening.add_done_callback(self._opening.discard)
        try:
            await asyncio.shield(opening)
        except FlowMgrError as err:
            # the container is still managed; only messaging it is impossible
            logger.warning("no flow channel for %s: %s", rec.info.name, err)
            self.registry.log("container_error", rec.info.id,
                              f"cannot open the flow socket of {rec.info.name}: {err}",
                              {"name": rec.info.name, "error": err.message})

    async def container_removed(self, container_id: str) -> None:
        """Close the channel and log stream of a vanished container."""
        self.logs.forget(container_id)
        await self.hub.close(container_id)

    async def container_started(self, container_id: str) -> None:
        """Resume a followed log stream after a (re)start."""
        self.logs.container_started(container_id)

    def _is_running(self, container_id: str) -> bool:
        rec = self.registry.records.get(container_id)
        return rec is not None and rec.state == "running"

    # reads from memory

    def snapshot(self) -> list[ContainerSnapshot]:
        """Every managed container, sorted by name; no Docker round trip."""
        recs = sorted(self.registry.records.values(), key=lambda r: r.info.name)
        return [self.registry.snapshot_of(r) for r in recs]

    def get(self, ref: str) -> ContainerSnapshot:
        """Full id, exact name or unique id prefix."""
        return self.registry.snapshot_of(self.registry.resolve(ref))

    async def get_status(self, ref: str) -> ContainerStatus:
        """State, health, uptime and cached resource usage; never waits on Docker."""
        return self.registry.status_of(self.registry.resolve(ref))

    def health(self) -> dict[str, str]:
        """The /health components, as last seen."""
        up = self._started and self.monitor.available
        return {
            "container_manager": "active" if up else "unavailable",
            "socket_handler": "active" if self._started else "stopped",
            "event_handler": "active" if up and self.monitor.streaming else "unavailable",
        }

    def recent_activity(self, container_id: str | None = None,
                        limit: int = 200) -> list[ActivityLogged]:
        """The newest activity lines (oldest first), optionally for one container."""
        return _recent(list(self.registry.activity), container_id, limit)

    def recent_crashes(self, container_id: str | None = None,
                       limit: int = 50) -> list[ContainerCrashed]:
        """The newest crash reports (oldest first)."""
        return _recent(list(self.registry.crashes), container_id, limit)

    async def list_containers(self) -> list[ContainerSnapshot]:
        """Same as `snapshot()`."""
        return self.snapshot()

    # actions

    @asynccontextmanager
    async def _checked(self, ref: str) -> AsyncIterator[Record]:
        """Resolve, re-check the labels on the engine right before a mutation, and mark the
        container as in hand, so the monitor leaves the inspect after it to the action."""
        rec = self.registry.resolve(ref)
        cid, acting = rec.info.id, self.registry.acting
        acting[cid] = acting.get(cid, 0) + 1
        try:
            info = await self.adapter.inspect(cid)
            labels = info.labels
            if labels.get("flowmgr.managed") != "true" or \
                    labels.get("flowmgr.instance") != self.settings.docker.instance:
                raise ContainerNotFound(f"no managed container {ref!r}",
                                        details={"container_id": ref})
            yield rec
        except FlowMgrError:
            with contextlib.suppress(FlowMgrError):  # the failed action may have changed it
                await self.monitor.refresh(cid)
            raise
        finally:
            left = acting.get(cid, 1) - 1
            if left > 0:
                acting[cid] = left
            else:
                acting.pop(cid, None)

    async def _refresh(self, container_id: str) -> ContainerSnapshot:
        rec = await self.monitor.refresh(container_id)
        if rec is None:
            raise ContainerNotFound(f"container {container_id[:12]} vanished",
                                    details={"container_id": container_id})
        return self.registry.snapshot_of(rec)

    async def _ensure_network(self) -> None:
        # one at a time: concurrent creates would otherwise make two networks of one name
        async with self._network_lock:
            if not self._network_ready:
                labels = {"flowmgr.managed": "true",
                          "flowmgr.instance": self.settings.docker.instance}
                await self.adapter.ensure_network(self.settings.docker.network, labels)
                self._network_ready = True

    async def create_container(self, spec: CreateSpec) -> ContainerSnapshot:
        """Create (not start) a managed container; state "created"."""
        if not isinstance(spec, CreateSpec):
            raise InvalidRequest("create_container needs a CreateSpec", field="spec")
        check_spec(spec)
        spec = validate_create(spec, self.settings)
        ports = normalise_ports(spec.ports)
        if any(r.info.name == spec.name for r in self.registry.records.values()):
            raise InvalidRequest(f"a container named {spec.name!r} already exists", field="name")
        if ports:
            await self._check_ports(ports)
        dk = self.settings.docker
        image = spec.image or dk.default_image
        sock_dir = self._socket_dir / spec.name
        made_dir = not sock_dir.exists()
        sock_dir.mkdir(parents=True, exist_ok=True)
        env = {**spec.environment, "FLOW_SOCKET": f"{dk.socket_mount}/flow.sock"}
        host_options = host_config_defaults(self.settings)
        if spec.memory_limit:
            host_options["mem_limit"] = spec.memory_limit
        self.registry.creating.add(spec.name)
        try:
            await self._ensure_network()
            cid = await self.adapter.create(
                image=image, name=spec.name, command=spec.command, environment=env,
                labels={"flowmgr.managed": "true", "flowmgr.instance": dk.instance},
                binds={**spec.volumes, str(sock_dir): dk.socket_mount}, ports=ports,
                network=dk.network, host_options=host_options)
            snap = await self._refresh(cid)
        except FlowMgrError:
            self._network_ready = False  # the network may have been removed under us
            if made_dir and spec.name not in {r.info.name for r in self.registry.records.values()}:
                shutil.rmtree(sock_dir, ignore_errors=True)  # nothing may be left behind
            raise
        finally:
            self.registry.creating.discard(spec.name)
        self.registry.log("container_created", cid, f"created {spec.name} from {image}",
                          {"name": spec.name, "image": image, "environment": mask_env(env),
                           "volumes": dict(spec.volumes), "ports": ports})
        return snap

    async def _check_ports(self, ports: dict[str, int]) -> None:
        """Docker only finds a taken host port at start; refuse it at create instead."""
        taken = await self.adapter.published_host_ports()
        for hport in ports.values():
            if hport in taken or (self.adapter.is_local
                                  and not await asyncio.to_thread(_port_free, hport)):
                raise DockerApiError(f"Bind for 0.0.0.0:{hport} failed: port is already "
                                     "allocated", details={"field": "ports", "host_port": hport})

    async def start_container(self, ref: str) -> ContainerSnapshot:
        """Start a created or stopped container."""
        async with self._checked(ref) as rec:
            cid = rec.info.id
            was = cid in self.registry.stopped
            self.registry.stopped.discard(cid)
            try:
                await self.adapter.start(cid)
            except FlowMgrError:
                if was:
                    self.registry.stopped.add(cid)
                raise
            snap = await self._refresh(cid)
        self.logs.container_started(cid)  # the start event came while the state was not yet known
        self.registry.log("container_started", cid, f"started {snap.name}", {"name": snap.name})
        return snap

    async def stop_container(self, ref: str) -> ContainerSnapshot:
        """Stop on request: state "stopped", never a crash."""
        async with self._checked(ref) as rec:
            cid = rec.info.id
            self.registry.stopped.add(cid)
            await self.adapter.stop(cid, self.settings.docker.stop_timeout)
            snap = await self._refresh(cid)
        self.registry.log("container_stopped", cid, f"stopped {snap.name}", {"name": snap.name})
        return snap

    async def restart_container(self, ref: str) -> ContainerSnapshot:
        """Stop (on request) and start again."""
        async with self._checked(ref) as rec:
            cid = rec.info.id
            self.registry.stopped.add(cid)
            try:
                await self.adapter.restart(cid, self.settings.docker.stop_timeout)
            finally:
                self.registry.stopped.discard(cid)
            snap = await self._refresh(cid)
        self.logs.container_started(cid)
        self.registry.log("container_restarted", cid, f"restarted {snap.name}",
                          {"name": snap.name})
        return snap

    async def update_container(self, ref: str, code_path: str) -> ContainerSnapshot:
        """Copy `code_path` into the code directory; restart when it was running."""
        src = check_code_path(validate_code_path(code_path, self.settings))
        async with self._checked(ref) as rec:
            cid, code_dir = rec.info.id, self.settings.docker.code_dir
            archive = await asyncio.to_thread(code_archive, src, code_dir)
            running = rec.state == "running"
            if running:
                # old files must not linger next to the new code
                await self.adapter.exec_run(
                    cid, ["sh", "-c", f"rm -rf {code_dir}/* {code_dir}/.[!.]*"])
            await self.adapter.put_archive(cid, "/", archive)
            snap = await (self.restart_container(cid) if running else self._refresh(cid))
        self.registry.log("container_updated", cid, f"updated {snap.name} from {code_path}",
                          {"name": snap.name, "code_path": code_path, "restarted": running})
        return snap

    async def delete_container(self, ref: str) -> str:
        """Remove the container (running or not) and its socket directory."""
        async with self._checked(ref) as rec:
            cid, name = rec.info.id, rec.info.name
            self.registry.stopped.add(cid)
            await self.adapter.remove(cid)
            sock_dir = Path(rec.socket_path).parent
            await self.monitor.forget(cid)
        if sock_dir.parent == self._socket_dir:
            shutil.rmtree(sock_dir, ignore_errors=True)  # best effort: a leftover dir is harmless
        self.registry.log("container_deleted", cid, f"deleted {name}", {"name": name})
        return cid

    async def get_logs(self, ref: str, tail: int = 100) -> list[str]:
        """The last `tail` lines of output."""
        if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
            raise InvalidRequest("tail must be a non-negative integer", field="tail")
        rec = self.registry.resolve(ref)
        return await self.adapter.logs(rec.info.id, tail)

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

    async def send_message(self, ref: str, message: dict[str, Any]) -> None:
        """Write one frame to the flow's socket."""
        if not isinstance(message, dict):
            raise InvalidRequest("message must be an object", field="message")
        rec = self.registry.resolve(ref)
        await self.hub.send(rec.info.id, message)


_E = TypeVar("_E", ActivityLogged, ContainerCrashed)


def _recent(items: list[_E], container_id: str | None, limit: int) -> list[_E]:
    """The last `limit` items, optionally only those of one container."""
    picked = [i for i in items if container_id is None or i.container_id == container_id]
    return picked[-limit:] if limit > 0 else []


def _port_free(port: int) -> bool:
    """True when nothing on this host listens on TCP `port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
