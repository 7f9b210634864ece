"""Registry: the manager's in-memory view of its containers, and the events its changes cause."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, cast

from server.core.bus import EventBus
from server.core.container_info import ContainerInfo
from server.core.errors import ContainerNotFound, InvalidRequest
from server.core.events import (
    ActivityLogged,
    ContainerAdded,
    ContainerCrashed,
    ContainerRemoved,
    ContainerStateChanged,
    HealthChanged,
    now,
)
from server.core.flow_channel import FlowChannelHub
from server.core.masking import mask_log_line, mask_text, mask_value
from server.core.models import ContainerSnapshot, ContainerStatus, Health, ResourceSample, State
from server.core.stopped import StoppedSet

__all__ = ["Registry", "Record", "SocketPlace"]


class SocketPlace(Protocol):
    """Where the manager listens for a container's flow, when not in its own state dir (the
    cluster agent: the flow's socket volume on the node). Given to ContainerManager."""

    def socket_path_for(self, info: ContainerInfo) -> str:
        """The flow socket's path for this container (not checked yet: `verify` does)."""
        ...

    async def verify(self, info: ContainerInfo) -> None:
        """FlowSocketError unless the container's socket mount is exactly the place this
        strategy owns for it (checked right before listening there, or a start mounts it)."""
        ...


@dataclass(slots=True)
class Record:
    """Mutable per-container bookkeeping behind each snapshot."""

    info: ContainerInfo
    state: State
    health: Health
    socket_path: str
    resources: ResourceSample | None = None


class Registry:
    """Records keyed by full id; every change is published once on the bus.

    It also owns the crash-versus-stop bookkeeping: which containers were stopped on request
    (an exit of theirs is no crash), which have a manager action in flight and which names are
    being created (the action inspects those itself, so the monitor leaves them alone).
    """

    def __init__(
        self,
        bus: EventBus,
        hub: FlowChannelHub,
        stopped: StoppedSet,
        state_dir: str,
        socket_mount: str,
        socket_place: SocketPlace | None = None,
    ) -> None:
        self.bus = bus
        self.socket_place = socket_place
        """None: flows' sockets are in the state dir (one host)."""
        self.hub = hub
        self._stopped = stopped
        self._state_dir = state_dir
        self._socket_mount = socket_mount
        self.records: dict[str, Record] = {}
        self._acting: dict[str, int] = {}
        """Ids with a manager action in flight (a count: actions may nest)."""
        self._creating: set[str] = set()
        """Names being created by the manager right now."""
        self.activity: deque[ActivityLogged] = deque(maxlen=2000)
        self.crashes: deque[ContainerCrashed] = deque(maxlen=500)

    # crash versus stop

    def load_stops(self) -> None:
        """Read which containers were stopped on request before this manager started."""
        self._stopped.load()

    def stopped_on_request(self, container_id: str) -> bool:
        """Whether the container's last exit was (or its next one will be) asked for."""
        return container_id in self._stopped

    def mark_stopped_on_request(self, container_id: str) -> None:
        """The container is stopped on request (by us, or asked through Docker): its exit is
        no crash, and it shows as `stopped`, not `exited`."""
        self._stopped.add(container_id)

    def mark_started(self, container_id: str) -> None:
        """The container starts (again): a later exit is its own (a crash unless code 0)."""
        self._stopped.discard(container_id)

    def keep_stops_of(self, live_ids: set[str]) -> None:
        """Forget the stops of containers that no longer exist."""
        self._stopped.retain(live_ids)

    @contextmanager
    def acting_on(self, container_id: str) -> Iterator[None]:
        """Mark a manager action in flight on the container for the duration of the block."""
        acting = self._acting
        acting[container_id] = acting.get(container_id, 0) + 1
        try:
            yield
        finally:
            left = acting.get(container_id, 1) - 1
            if left > 0:
                acting[container_id] = left
            else:
                acting.pop(container_id, None)

    def is_acted_on(self, container_id: str) -> bool:
        """Whether a manager action in flight will inspect the container itself afterwards."""
        return container_id in self._acting

    @contextmanager
    def creating(self, name: str) -> Iterator[None]:
        """Reserve `name` for a create in flight for the duration of the block."""
        self._creating.add(name)
        try:
            yield
        finally:
            self._creating.discard(name)

    def is_being_created(self, name: object) -> bool:
        """Whether the manager is creating a container of that name right now."""
        return name in self._creating

    def flow_count(self) -> int:
        """Managed containers, creates in flight included."""
        names = {r.info.name for r in self.records.values()}
        return len(self.records) + len(self._creating - names)

    # reads

    def snapshot_of(self, rec: Record) -> ContainerSnapshot:
        """A frozen view of one record, with the channel's state."""
        chan = self.hub.info(rec.info.id)
        return ContainerSnapshot(
            id=rec.info.id,
            name=rec.info.name,
            image=rec.info.image,
            state=rec.state,
            health=rec.health,
            created=rec.info.created,
            started_at=rec.info.started_at,
            socket_path=rec.socket_path,
            ports=dict(rec.info.ports),
            exit_code=rec.info.exit_code if rec.state in ("exited", "stopped", "dead") else None,
            socket_connected=bool(chan and chan.connected),
            last_communication=chan.last_communication if chan else None,
            resources=rec.resources,
            node=rec.info.node,
            node_id=rec.info.node_id,
            task_id=rec.info.task_id,
        )

    def status_of(self, rec: Record) -> ContainerStatus:
        """The status answer for one record, from memory."""
        snap = self.snapshot_of(rec)
        uptime: timedelta | None = None
        if rec.state == "running" and rec.info.started_at is not None:
            uptime = max(now() - rec.info.started_at, timedelta(0))
        return ContainerStatus(
            container_id=snap.id,
            name=snap.name,
            state=snap.state,
            health=snap.health,
            uptime=uptime,
            socket_connected=snap.socket_connected,
            last_communication=snap.last_communication,
            resource_usage=rec.resources,
        )

    def resolve(self, ref: object) -> Record:
        """Full id, then exact name, then unique id prefix; unmanaged ids are never found."""
        if not isinstance(ref, str) or not ref.strip():
            raise InvalidRequest("container_id must be a non-empty string", field="container_id")
        rec = self.records.get(ref)
        if rec is not None:
            return rec
        for rec in self.records.values():
            if rec.info.name == ref:
                return rec
        hits = [r for cid, r in self.records.items() if cid.startswith(ref.lower())]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InvalidRequest(
                f"id prefix {ref!r} matches {len(hits)} containers; give more characters",
                field="container_id",
                details={"container_id": ref},
            )
        raise ContainerNotFound(f"no managed container {ref!r}", details={"container_id": ref})

    def resolve_many(self, refs: list[str], field: str) -> tuple[list[str], list[str]]:
        """`resolve` for a list (a client's `watch_stats`): (the full ids, in order, once
        each; the references that name none). A name index and the sorted ids are built once,
        so 1,000 names or prefixes cost what 1,000 full ids do, not 1,000 scans. InvalidRequest
        naming `<field>.<n>` for a blank reference or an ambiguous prefix, as `resolve`."""
        found: dict[str, None] = {}
        unknown: list[str] = []
        names: dict[str, str] | None = None
        ids: list[str] = []
        for n, ref in enumerate(refs):
            if ref in self.records:
                found[ref] = None
                continue
            if not ref.strip():
                raise InvalidRequest(
                    "a container reference must not be blank", field=f"{field}.{n}"
                )
            if names is None:
                names = {rec.info.name: cid for cid, rec in self.records.items()}
                ids = sorted(self.records)
            cid = names.get(ref)
            if cid is None:
                prefix = ref.lower()
                at = bisect_left(ids, prefix)
                hits = [i for i in ids[at : at + 2] if i.startswith(prefix)]
                if len(hits) > 1:
                    raise InvalidRequest(
                        f"id prefix {ref!r} matches several containers; give more characters",
                        field=f"{field}.{n}",
                    )
                cid = hits[0] if hits else None
            if cid is None:
                unknown.append(ref)
            else:
                found[cid] = None
        return list(found), unknown

    # changes

    def map_state(self, info: ContainerInfo) -> State:
        """Docker's state word, with `exited` split into stopped (on request) and exited."""
        if info.status == "exited" and info.id in self._stopped:
            return "stopped"
        if info.status in (
            "created",
            "running",
            "paused",
            "restarting",
            "removing",
            "exited",
            "dead",
            "stopped",  # the two below come only from the cluster hub (no engine says them)
            "unknown",
        ):
            return cast(State, info.status)
        return "dead"

    def socket_path_for(self, info: ContainerInfo) -> str:
        """Where the manager listens for the container's flow: always in its own state dir,
        whatever the container mounts (an adopted one mounting elsewhere gets no channel); or
        where the `socket_place` given says."""
        if self.socket_place is not None:
            return self.socket_place.socket_path_for(info)
        return os.path.join(self._state_dir, info.name, "flow.sock")

    def apply(self, info: ContainerInfo) -> tuple[Record, str | None]:
        """Store fresh facts; publish Added / StateChanged / HealthChanged; return old state."""
        state = self.map_state(info)
        health = cast(Health, info.health)
        rec = self.records.get(info.id)
        if rec is None:
            rec = Record(info, state, health, self.socket_path_for(info))
            self.records[info.id] = rec
            self.bus.publish(ContainerAdded(snapshot=self.snapshot_of(rec)))
            return rec, None
        old_state, old_health = rec.state, rec.health
        rec.info, rec.state, rec.health = info, state, health
        if state != "running":
            rec.resources = None
        if old_state != state:
            self.publish_state(rec, old_state)
        if old_health != health:
            self.set_health(rec, health, old_health)
        return rec, old_state

    def publish_state(self, rec: Record, old_state: str) -> None:
        """Announce a state change (event + status_change activity)."""
        self.bus.publish(
            ContainerStateChanged(
                container_id=rec.info.id,
                old_state=old_state,
                new_state=rec.state,
                snapshot=self.snapshot_of(rec),
            )
        )
        self.record_activity(
            "status_change",
            rec.info.id,
            f"{rec.info.name}: {old_state} -> {rec.state}",
            {"old_state": old_state, "new_state": rec.state, "name": rec.info.name},
        )

    def set_health(self, rec: Record, health: Health, old_health: str | None = None) -> None:
        """Record a health transition; turning unhealthy is a warning."""
        old = old_health if old_health is not None else rec.health
        rec.health = health
        if old == health:
            return
        self.bus.publish(HealthChanged(container_id=rec.info.id, old_health=old, new_health=health))
        if health == "unhealthy":
            self.record_activity(
                "health_warning",
                rec.info.id,
                f"{rec.info.name} is unhealthy",
                {"health": health, "previous": old, "name": rec.info.name},
            )

    def remove(self, container_id: str) -> Record | None:
        """Forget a container that is gone."""
        rec = self.records.pop(container_id, None)
        self._stopped.discard(container_id)
        if rec is not None:
            self.bus.publish(ContainerRemoved(container_id=container_id, name=rec.info.name))
        return rec

    def crashed(self, rec: Record, exit_code: int, error: str, logs: list[str]) -> None:
        """Publish one crash and its activity line."""
        logs = [mask_log_line(line, rec.info.secret_values) for line in logs]
        event = ContainerCrashed(
            container_id=rec.info.id,
            name=rec.info.name,
            exit_code=exit_code,
            error=error,
            logs=logs,
        )
        self.crashes.append(event)
        self.bus.publish(event)
        self.record_activity(
            "container_crash",
            rec.info.id,
            f"{rec.info.name} crashed: {error}",
            {"exit_code": exit_code, "error": error, "logs": logs, "name": rec.info.name},
        )

    def record_activity(
        self,
        activity_type: str,
        container_id: str | None,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Publish one activity line, secrets masked."""
        event = ActivityLogged(
            activity_type=activity_type,
            container_id=container_id,
            message=mask_text(message),
            details=mask_value(dict(details or {})),
        )
        self.activity.append(event)
        self.bus.publish(event)
