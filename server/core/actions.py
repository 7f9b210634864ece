"""ContainerActions: create, start, stop, restart, update and delete, each checked and logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.core.code_update import (
    archive_chunks,
    check_code_mounts,
    open_code_tree,
    scan_code_tree,
)
from server.core.config import Settings
from server.core.docker_adapter import BindMount, DockerAdapter
from server.core.errors import ContainerNotFound, DockerApiError, FlowMgrError, InvalidRequest
from server.core.fd_budget import CHANNEL_FDS, FdBudget
from server.core.host_paths import BindPins, HostPathError, nesting_problem
from server.core.logs import LogFollowers
from server.core.masking import mask_env
from server.core.models import ContainerSnapshot, CreateSpec
from server.core.monitor import DockerMonitor
from server.core.policy import host_config_defaults
from server.core.registry import Record, Registry
from server.core.state_dir import StateDir
from server.core.validation import port_bindings
from server.core.validation.host import adopted_pins, validate_create
from server.core.validation.shapes import MANAGER_LABEL_PREFIX, PORTS_LABEL, ports_label
from server.core.validation.signals import DEFAULT_SIGNAL, check_signal

__all__ = ["ContainerActions"]

logger = logging.getLogger(__name__)


class ContainerActions:
    """The mutating half of ContainerManager (kept apart so each file stays readable)."""

    settings: Settings
    adapter: DockerAdapter
    registry: Registry
    monitor: DockerMonitor
    logs: LogFollowers
    state: StateDir
    _network_ready: bool
    _network_lock: asyncio.Lock
    bind_pins: BindPins
    fd_budget: FdBudget

    @asynccontextmanager
    async def _checked(self, ref: str) -> AsyncIterator[Record]:
        """Resolve, re-check the labels on the engine right before a mutation, and mark the
        container as in hand, so the monitor leaves the inspect after it to the action."""
        rec = self.registry.resolve(ref)
        cid = rec.info.id
        with self.registry.acting_on(cid):
            try:
                info = await self.adapter.inspect(cid)
                labels = info.labels
                if (
                    labels.get("flowmgr.managed") != "true"
                    or labels.get("flowmgr.instance") != self.settings.docker.instance
                ):
                    raise ContainerNotFound(
                        f"no managed container {ref!r}", details={"container_id": ref}
                    )
                yield rec
            except FlowMgrError:
                with contextlib.suppress(FlowMgrError):  # the failed action may have changed it
                    await self.monitor.refresh(cid)
                raise

    async def _refresh(self, container_id: str) -> ContainerSnapshot:
        rec = await self.monitor.refresh(container_id)
        if rec is None:
            raise ContainerNotFound(
                f"container {container_id[:12]} vanished", details={"container_id": container_id}
            )
        return self.registry.snapshot_of(rec)

    async def _ensure_network(self) -> None:
        # one at a time: concurrent creates would otherwise make two networks of one name
        async with self._network_lock:
            if not self._network_ready:
                labels = {
                    "flowmgr.managed": "true",
                    "flowmgr.instance": self.settings.docker.instance,
                }
                await self.adapter.ensure_network(self.settings.docker.network, labels)
                self._network_ready = True

    async def create_container(self, spec: CreateSpec) -> ContainerSnapshot:
        """Create (not start) a managed container; state "created"."""
        if not isinstance(spec, CreateSpec):
            raise InvalidRequest("create_container needs a CreateSpec", field="spec")
        # the one set of create rules (server/core/validation); host binds are walked on
        # disk: not on the loop
        spec = (
            await asyncio.to_thread(validate_create, spec, self.settings)
            if spec.volumes
            else validate_create(spec, self.settings)
        )
        ports = port_bindings(spec.ports)
        if any(
            r.info.name == spec.name for r in self.registry.records.values()
        ) or self.registry.is_being_created(spec.name):
            raise InvalidRequest(f"a container named {spec.name!r} already exists", field="name")
        self._check_flow_quota()
        self._check_dir_unused(spec.name)
        if ports:
            await self._check_ports(ports)
        dk = self.settings.docker
        image = spec.image or dk.default_image
        env = {**spec.environment, "FLOW_SOCKET": f"{dk.socket_mount}/flow.sock"}
        host_options = host_config_defaults(self.settings)
        if spec.memory_limit:
            host_options["mem_limit"] = spec.memory_limit
        self._check_flow_quota()  # again: no await from here to the reservation
        reserved = self._reserve_channel(spec.name)
        labels = {"flowmgr.managed": "true", "flowmgr.instance": dk.instance}
        # the ports as the client wrote them, echoed so after a restart of the manager too
        own = {**labels, PORTS_LABEL: ports_label(spec.ports)} if spec.ports else labels
        if spec.labels or spec.flow_meta:  # the caller's first: the manager's own always win
            meta = {f"{MANAGER_LABEL_PREFIX}{k}": v for k, v in spec.flow_meta.items()}
            own = {**spec.labels, **meta, **own}
        binds = [BindMount(p.source, p.target, p.mode == "ro") for p in spec.binds]
        data = {_data_volume(spec.name): dk.data_mount} if dk.data_mount else {}
        made_volume = False
        with self.registry.creating(spec.name):
            try:
                sock_dir = await asyncio.to_thread(self.state.make_flow_dir, spec.name)
                # one bind-creating create at a time: the nesting rule sees every other's binds
                async with self.bind_pins.lock if spec.binds else contextlib.nullcontext():
                    problem = nesting_problem(spec.binds, self.bind_pins.others())
                    if problem:
                        raise InvalidRequest(problem, field="volumes")
                    await self._ensure_network()
                    for volume in data:
                        made_volume = await self.adapter.ensure_volume(
                            volume, dk.volume_driver, labels
                        )
                    cid = await self.adapter.create(
                        image=image,
                        name=spec.name,
                        command=spec.command,
                        environment=env,
                        labels=own,
                        binds=[*binds, BindMount(sock_dir, dk.socket_mount, False)],
                        volumes=data,
                        ports=ports,
                        network=dk.network,
                        host_options=host_options,
                    )
                    self.bind_pins.record(cid, spec.binds)
                self.fd_budget.release(reserved)  # the channel opened by the refresh takes its own
                snap = await self._refresh(cid)
            except FlowMgrError:
                self._network_ready = False  # the network may have been removed under us
                if spec.name not in {r.info.name for r in self.registry.records.values()}:
                    # nothing may be left behind
                    await asyncio.to_thread(self.state.remove_flow_dir, spec.name)
                if made_volume:
                    with contextlib.suppress(FlowMgrError):
                        await self.adapter.remove_volume(_data_volume(spec.name), labels)
                raise
            finally:
                self.fd_budget.release(reserved)
        self.registry.record_activity(
            "container_created",
            cid,
            f"created {spec.name} from {image}",
            {
                "name": spec.name,
                "image": image,
                "environment": mask_env(env),
                "volumes": dict(spec.volumes),
                "ports": ports,
            },
        )
        return snap

    def _check_dir_unused(self, name: str) -> None:
        """No live flow may share the new flow's socket directory (one renamed behind the
        manager's back keeps the old name's directory)."""
        path = self.state.flow_dir(name)
        for rec in self.registry.records.values():
            if os.path.normpath(rec.info.mounts.get(self.settings.docker.socket_mount, "")) == path:
                raise InvalidRequest(
                    f"the socket directory of {name!r} is in use by container {rec.info.name}",
                    field="name",
                )

    async def _verify_flow_dir(self, rec: Record) -> None:
        """Right before the engine mounts it: the flow's socket directory is the manager's own
        for this flow, reached through directories only root or the manager can change (or
        the registry's `socket_place` says the container's mount is its own)."""
        if self.registry.socket_place is not None:
            await self.registry.socket_place.verify(rec.info)
            return
        await asyncio.to_thread(
            self.state.verify_flow_dir,
            rec.info.mounts.get(self.settings.docker.socket_mount),
            rec.info.name,
        )

    def _reserve_channel(self, name: str) -> str:
        """Hold a new flow's channel descriptors while it is created (concurrent creates at the
        budget's edge cannot all pass); refused with a typed error and a log line when the
        budget is out (fd_budget.py). Returns the reservation's owner, released by the caller."""
        owner = f"create:{name}"
        if not self.fd_budget.try_take(owner, CHANNEL_FDS):
            err = self.fd_budget.refusal(f"new flow {name!r}", CHANNEL_FDS)
            logger.warning("create refused: %s", err)
            raise err
        return owner

    def _check_flow_quota(self) -> None:
        """At most docker.max_flows managed containers, creates in flight included."""
        limit = self.settings.docker.max_flows
        count = self.registry.flow_count()
        if count >= limit:
            raise InvalidRequest(
                f"this manager has {count} flows, its limit (docker.max_flows "
                f"= {limit}): delete one first",
                details={"limit": limit, "setting": "docker.max_flows"},
            )

    async def _check_ports(self, ports: dict[str, int]) -> None:
        """Docker only finds a taken host port at start; refuse it at create instead."""
        taken = await self.adapter.published_host_ports()
        for hport in ports.values():
            if hport in taken or (
                self.adapter.is_local and not await asyncio.to_thread(_port_free, hport)
            ):
                raise DockerApiError(
                    f"Bind for 0.0.0.0:{hport} failed: port is already allocated",
                    details={"field": "ports", "host_port": hport},
                )

    async def start_container(self, ref: str) -> ContainerSnapshot:
        """Start a created or stopped container."""
        async with self._checked(ref) as rec:
            cid = rec.info.id
            was = self.registry.stopped_on_request(cid)
            await self._verify_flow_dir(rec)
            await self._recheck_binds(rec)
            self.registry.mark_started(cid)
            try:
                await self.adapter.start(cid)
            except FlowMgrError:
                if was:
                    self.registry.mark_stopped_on_request(cid)
                raise
            snap = await self._refresh(cid)
        self.logs.container_started(cid)  # the start event came while the state was not yet known
        self.registry.record_activity(
            "container_started", cid, f"started {snap.name}", {"name": snap.name}
        )
        return snap

    async def stop_container(self, ref: str) -> ContainerSnapshot:
        """Stop on request: state "stopped", never a crash."""
        async with self._checked(ref) as rec:
            cid = rec.info.id
            self.registry.mark_stopped_on_request(cid)
            await self.adapter.stop(cid, self.settings.docker.stop_timeout)
            snap = await self._refresh(cid)
        self.registry.record_activity(
            "container_stopped", cid, f"stopped {snap.name}", {"name": snap.name}
        )
        return snap

    async def restart_container(self, ref: str) -> ContainerSnapshot:
        """Stop (on request) and start again."""
        async with self._checked(ref) as rec:
            cid = rec.info.id
            await self._verify_flow_dir(rec)
            await self._recheck_binds(rec)
            self.registry.mark_stopped_on_request(cid)
            try:
                await self.adapter.restart(cid, self.settings.docker.stop_timeout)
            finally:
                self.registry.mark_started(cid)
            snap = await self._refresh(cid)
        self.logs.container_started(cid)
        self.registry.record_activity(
            "container_restarted", cid, f"restarted {snap.name}", {"name": snap.name}
        )
        return snap

    async def pause_container(self, ref: str) -> ContainerSnapshot:
        """Freeze a running flow: state "paused"; its channel and its data stay."""
        return await self._set_paused(ref, True)

    async def unpause_container(self, ref: str) -> ContainerSnapshot:
        """Thaw a paused flow: state "running" again."""
        return await self._set_paused(ref, False)

    async def _set_paused(self, ref: str, pause: bool) -> ContainerSnapshot:
        verb, was, reason = ("paused", "running", "not_running") if pause else _UNPAUSE
        async with self._checked(self._on_one_host(ref)) as rec:
            _require_state(rec, (was,), verb, reason)
            await (self.adapter.pause if pause else self.adapter.unpause)(rec.info.id)
            snap = await self._refresh(rec.info.id)
        self._acted(f"container_{verb}", snap, verb)
        return snap

    async def kill_container(self, ref: str, signal: object = DEFAULT_SIGNAL) -> ContainerSnapshot:
        """Send an allowed signal (validation/signals.py) to a running or paused flow.

        A kill asked for is never a crash: the engine itself treats it as a manual stop (no
        restart policy brings the flow back), so an exit it causes shows as "stopped", also
        one that comes later (a flow finishing its work on SIGTERM), within the window the
        monitor gives a stop. A signal the flow survives (SIGHUP, SIGUSR1) leaves it running,
        and a later exit of its own is a crash again."""
        name = check_signal(signal)
        async with self._checked(self._on_one_host(ref)) as rec:
            cid = rec.info.id
            _require_state(rec, ("running", "paused"), "killed", "not_running")
            was = self.registry.stopped_on_request(cid)
            self.registry.mark_stopped_on_request(cid)
            self.monitor.kill_asked(cid)
            try:
                await self.adapter.kill(cid, name)
            except FlowMgrError:
                self.monitor.kill_asked(cid, asked=False)
                if not was:  # nothing was sent: an exit now is no one's request
                    self.registry.mark_started(cid)
                raise
            info = await self.adapter.inspect(cid)
            if info.status in ("running", "paused", "restarting"):
                self.registry.mark_started(cid)  # it lives on: its next exit is its own
            snap = self.registry.snapshot_of(await self.monitor.apply(info))
        self._acted("container_killed", snap, f"sent {name} to", {"signal": name})
        return snap

    def _on_one_host(self, ref: str) -> str:
        """Pause and kill act on one engine's container; a Swarm service has none to act on
        (its task's node does), so a hub refuses them, typed, before any lookup."""
        if self.settings.cluster.mode != "single":
            raise InvalidRequest(
                "pause, unpause and kill are not available in cluster mode: stop or restart "
                "the flow instead",
                details={"reason": "not_in_cluster_mode", "container_id": ref},
            )
        return ref

    def _acted(
        self, kind: str, snap: ContainerSnapshot, did: str, more: dict[str, str] | None = None
    ) -> None:
        """The activity line of a pause, unpause or kill ("paused web-1")."""
        details = {"name": snap.name, **(more or {})}
        self.registry.record_activity(kind, snap.id, f"{did} {snap.name}", details)

    async def update_container(self, ref: str, code_path: str) -> ContainerSnapshot:
        """Copy the tree at `code_path` (beneath a code root) into the code directory. A
        running flow has its old code removed, is stopped for the copy and started again."""
        dk = self.settings.docker
        # the path first (policy before lookup), opened: from here on it is used by descriptor
        tree = await asyncio.to_thread(open_code_tree, code_path, self.settings)
        try:
            async with self._checked(ref) as rec:
                cid = rec.info.id
                check_code_mounts(await self.adapter.mount_destinations(cid), dk.code_dir)
                entries = await asyncio.to_thread(
                    scan_code_tree, tree, dk.max_code_bytes, dk.max_code_files
                )
                running = rec.state == "running"
                if running:
                    # As the flow itself (its user, no capabilities), so no more than it could
                    # do; no mount is at, over or beneath the code dir, and rm does not follow
                    # an operand that is a link.
                    await self.adapter.exec_run(cid, ["rm", "-rf", "--", dk.code_dir])
                    # The engine extracts as root: with no flow process left, none can swap a
                    # link into the path it writes while it writes.
                    self.registry.mark_stopped_on_request(cid)
                    await self.adapter.stop(cid, dk.stop_timeout)
                await self.adapter.put_archive(cid, "/", archive_chunks(tree, entries, dk.code_dir))
                snap = await (self.start_container(cid) if running else self._refresh(cid))
        finally:
            tree.close()
        self.registry.record_activity(
            "container_updated",
            cid,
            f"updated {snap.name} from {tree.path}",
            {
                "name": snap.name,
                "code_path": tree.path,
                "restarted": running,
                "entries": len(entries),
            },
        )
        return snap

    async def delete_container(self, ref: str) -> str:
        """Remove the container (running or not) and its socket directory."""
        async with self._checked(ref) as rec:
            cid, name = rec.info.id, rec.info.name
            self.registry.mark_stopped_on_request(cid)
            await self.adapter.remove(cid)
            mounted = rec.info.mounts.get(self.settings.docker.socket_mount)
            await self.monitor.forget(cid)
            await self._remove_data_volume(name)
        if mounted is not None and os.path.normpath(mounted) == self.state.flow_dir(name):
            # best effort: a leftover is replaced at the next create of that name
            await asyncio.to_thread(self.state.remove_flow_dir, name)
        self.registry.record_activity("container_deleted", cid, f"deleted {name}", {"name": name})
        return cid

    async def _recheck_binds(self, rec: Record) -> None:
        """Walk the container's host binds again right before the engine mounts them: each
        must still be reached through no symlink and be the inode that was checked."""
        cid = rec.info.id
        await self._adopt_binds(rec)  # a start may come before the adoption finished
        if not self.bind_pins.knows(cid):
            return
        try:
            await asyncio.to_thread(self.bind_pins.recheck, cid)
            problem = self.bind_pins.nesting(cid)
            if problem:
                raise HostPathError(problem)
        except HostPathError as err:
            self.registry.record_activity(
                "container_error",
                cid,
                f"{rec.info.name} not started: {err}",
                {"name": rec.info.name, "error": str(err)},
            )
            raise InvalidRequest(
                f"{rec.info.name} was not started: {err}",
                field="volumes",
                details={"container_id": cid},
            ) from None

    async def _adopt_binds(self, rec: Record) -> None:
        """Pin the host binds of a container found on the engine (walked again now); when the
        walk fails, the container is kept but never started by this manager."""
        cid = rec.info.id
        host = tuple(b for b in rec.info.binds if b.target != self.settings.docker.socket_mount)
        if not host or self.bind_pins.knows(cid):
            return
        try:
            pins = await asyncio.to_thread(adopted_pins, host, self.settings)
        except (HostPathError, OSError) as err:
            logger.warning(
                "%s: its host binds fail their check, it will not be started: %s",
                rec.info.name,
                err,
            )
            self.bind_pins.mark_broken(
                cid, f"its host binds failed their check when it was adopted: {err}"
            )
            self.registry.record_activity(
                "container_error",
                cid,
                f"{rec.info.name}: host binds refused on adoption: {err}",
                {"name": rec.info.name, "error": str(err)},
            )
            return
        if not self.bind_pins.knows(cid):
            self.bind_pins.record(cid, pins)

    async def _remove_data_volume(self, name: str) -> None:
        """Remove the flow's own data volume (best effort: a leftover is reused by a flow of
        the same name, and only if it still carries this manager's labels)."""
        labels = {"flowmgr.managed": "true", "flowmgr.instance": self.settings.docker.instance}
        try:
            await self.adapter.remove_volume(_data_volume(name), labels)
        except FlowMgrError as err:
            logger.warning("could not remove the data volume of %s: %s", name, err)


_UNPAUSE = ("unpaused", "paused", "not_paused")
"""What an unpause does, wants and says when it cannot (the pause's are inline)."""


def _require_state(rec: Record, allowed: tuple[str, ...], verb: str, reason: str) -> None:
    """InvalidRequest naming the flow's state unless it is one of `allowed`."""
    if rec.state not in allowed:
        raise InvalidRequest(
            f"{rec.info.name} is {rec.state}: only a {' or '.join(allowed)} flow can be {verb}",
            field="container_id",
            details={"reason": reason, "state": rec.state, "container_id": rec.info.id},
        )


def _data_volume(name: str) -> str:
    """The named volume every flow gets at `docker.data_mount`."""
    return f"flowmgr-data-{name}"


def _port_free(port: int) -> bool:
    """True when nothing on this host listens on TCP `port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
