"""Answers (server -> the requesting client): each one's shape, encoder and decoder."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import SerializerFunctionWrapHandler, model_serializer

from server.core.events import FlowMessageSent, now
from server.core.journal.records import HistoryPage, JournalRecord
from server.core.log_tail import LogTail
from server.core.models import ContainerSnapshot, ContainerStatus, Health, ResourceSample, State
from server.wire.base import Wire, WireModel
from server.wire.times import from_iso, iso, uptime_of, uptime_text

__all__ = [
    "ContainerCreatedOut",
    "ContainerStateOut",
    "ContainerUpdatedOut",
    "ContainerPauseOut",
    "ContainerKilledOut",
    "MessageSentOut",
    "ResourceUsageOut",
    "ContainerStatusOut",
    "ContainerItemOut",
    "ContainerListOut",
    "NodeOut",
    "ContainerLogsOut",
    "LogSubscriptionOut",
    "WatchStatsOut",
    "ConnectedOut",
    "HistoryEventOut",
    "HistoryOut",
]


class ContainerCreatedOut(WireModel):
    """`container_created`."""

    container_id: str
    name: str
    image: str
    status: Literal["created"] = "created"
    socket_path: str
    ports: dict[str, int | None]

    @staticmethod
    def payload(snap: ContainerSnapshot) -> Wire:
        """From the new container's snapshot."""
        return {
            "container_id": snap.id,
            "name": snap.name,
            "image": snap.image,
            "status": "created",
            "socket_path": snap.socket_path,
            "ports": dict(snap.ports),
        }

    def to_snapshot(self, created: datetime | None = None) -> ContainerSnapshot:
        """The new container as a snapshot (the answer carries no creation time: `created`)."""
        return ContainerSnapshot(
            id=self.container_id,
            name=self.name,
            image=self.image,
            state="created",
            health="none",
            created=created or now(),
            started_at=None,
            socket_path=self.socket_path,
            ports=dict(self.ports),
        )


def _without_none(out: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Dumped as sent: an ext field the answer does not carry has no key (not `null`)."""
    for key in keys:
        if out.get(key) is None:
            out.pop(key, None)
    return out


class ContainerStateOut(WireModel):
    """`container_started` / `_stopped` / `_restarted` / `_deleted`."""

    container_id: str
    status: Literal["running", "stopped", "deleted"]
    queue_dropped: int | None = None
    """ext, `container_deleted` only: how many queued messages were dropped with the flow."""

    @model_serializer(mode="wrap")
    def _ext_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "queue_dropped")

    @staticmethod
    def payload(container_id: str, status: Literal["running", "stopped", "deleted"]) -> Wire:
        """The answer to a lifecycle request."""
        return {"container_id": container_id, "status": status}


class ContainerPauseOut(WireModel):
    """ext `container_paused` (status "paused") / `container_unpaused` (status "running")."""

    container_id: str
    status: Literal["paused", "running"]

    @staticmethod
    def payload(container_id: str, status: Literal["paused", "running"]) -> Wire:
        """The answer to a pause or an unpause."""
        return {"container_id": container_id, "status": status}


class ContainerKilledOut(WireModel):
    """ext `container_killed`: the signal sent, and the flow's state right after it."""

    container_id: str
    signal: str
    status: State
    """`stopped` once the signal ended it; `running` (or `paused`) while it lives on."""

    @staticmethod
    def payload(snap: ContainerSnapshot, signal: str) -> Wire:
        """From the snapshot taken right after the signal."""
        return {"container_id": snap.id, "signal": signal, "status": snap.state}


class ContainerUpdatedOut(WireModel):
    """`container_updated`."""

    container_id: str
    code_path: str
    status: Literal["updated"] = "updated"

    @staticmethod
    def payload(container_id: str, code_path: str) -> Wire:
        """The answer to `update_container`."""
        return {"container_id": container_id, "code_path": code_path, "status": "updated"}


class MessageSentOut(WireModel):
    """`message_sent`."""

    container_id: str
    message: dict[str, Any]
    status: Literal["sent", "queued"] = "sent"
    """ext `"queued"`: a `queue: true` send, committed to the journal, not yet delivered."""
    message_id: str | None = None
    """ext: the queued message's id (`message_delivered` names it); absent on a plain send."""

    @model_serializer(mode="wrap")
    def _ext_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "message_id")

    @staticmethod
    def payload(container_id: str, message: dict[str, Any], message_id: str | None = None) -> Wire:
        """The answer to `send_message` (a plain send: exactly as before the queue existed)."""
        if message_id is None:
            return {"container_id": container_id, "message": message, "status": "sent"}
        return {
            "container_id": container_id,
            "message": message,
            "status": "queued",
            "message_id": message_id,
        }

    def to_core(self) -> FlowMessageSent:
        """The core's fact (stamped now: the answer carries no time)."""
        return FlowMessageSent(container_id=self.container_id, message=dict(self.message))


class ResourceUsageOut(WireModel):
    """`resource_usage`: bytes as integers, percents as floats, timestamp ISO 8601."""

    cpu_percent: float
    memory_usage: int
    memory_limit: int
    memory_percent: float
    network_rx_bytes: int
    network_tx_bytes: int
    disk_read_bytes: int
    disk_write_bytes: int
    timestamp: str

    @staticmethod
    def payload(sample: ResourceSample | None) -> Wire | None:
        """From a core sample (None stays None)."""
        if sample is None:
            return None
        return {
            "cpu_percent": float(sample.cpu_percent),
            "memory_usage": int(sample.memory_usage),
            "memory_limit": int(sample.memory_limit),
            "memory_percent": float(sample.memory_percent),
            "network_rx_bytes": int(sample.network_rx_bytes),
            "network_tx_bytes": int(sample.network_tx_bytes),
            "disk_read_bytes": int(sample.disk_read_bytes),
            "disk_write_bytes": int(sample.disk_write_bytes),
            "timestamp": sample.timestamp.isoformat(),
        }

    def to_core(self) -> ResourceSample:
        """The core's sample."""
        return ResourceSample(
            cpu_percent=self.cpu_percent,
            memory_usage=self.memory_usage,
            memory_limit=self.memory_limit,
            memory_percent=self.memory_percent,
            network_rx_bytes=self.network_rx_bytes,
            network_tx_bytes=self.network_tx_bytes,
            disk_read_bytes=self.disk_read_bytes,
            disk_write_bytes=self.disk_write_bytes,
            timestamp=from_iso(self.timestamp),
        )


def sample_of(usage: ResourceUsageOut | None) -> ResourceSample | None:
    """A decoded `resource_usage` (or null) as the core's sample."""
    return None if usage is None else usage.to_core()


class ContainerStatusOut(WireModel):
    """`container_status`."""

    container_id: str
    state: State
    health: Health
    uptime: str | None
    socket_connected: bool
    last_communication: str | None
    resource_usage: ResourceUsageOut | None

    @staticmethod
    def payload(status: ContainerStatus) -> Wire:
        """From the core's status value."""
        return {
            "container_id": status.container_id,
            "state": status.state,
            "health": status.health,
            "uptime": uptime_text(status.uptime),
            "socket_connected": status.socket_connected,
            "last_communication": iso(status.last_communication),
            "resource_usage": ResourceUsageOut.payload(status.resource_usage),
        }

    def to_core(self, name: str) -> ContainerStatus:
        """The core's status value (the answer does not carry the container's `name`)."""
        last = self.last_communication
        return ContainerStatus(
            container_id=self.container_id,
            name=name,
            state=self.state,
            health=self.health,
            uptime=uptime_of(self.uptime),
            socket_connected=self.socket_connected,
            last_communication=None if last is None else from_iso(last),
            resource_usage=sample_of(self.resource_usage),
        )


class ContainerItemOut(WireModel):
    """One `container_list` item; a cluster hub adds (ext) `node`, `node_id`, `task_id`."""

    id: str
    name: str
    status: State
    image: str
    created: str
    socket_path: str
    ports: dict[str, int | None]
    node: str | None = None
    node_id: str | None = None
    task_id: str | None = None

    @model_serializer(mode="wrap")
    def _ext_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "node", "node_id", "task_id")

    @staticmethod
    def payload(snap: ContainerSnapshot) -> Wire:
        """From a snapshot (the cluster fields only when the snapshot is a cluster flow's)."""
        out: Wire = {
            "id": snap.id,
            "name": snap.name,
            "status": snap.state,
            "image": snap.image,
            "created": snap.created.isoformat(),
            "socket_path": snap.socket_path,
            "ports": dict(snap.ports),
        }
        for key, value in (
            ("node", snap.node),
            ("node_id", snap.node_id),
            ("task_id", snap.task_id),
        ):
            if value is not None:
                out[key] = value
        return out

    def to_snapshot(self, old: ContainerSnapshot | None = None) -> ContainerSnapshot:
        """A snapshot; what the item does not carry (health, start, socket, usage) is kept from
        `old`, the client's previous view of the same container."""
        return ContainerSnapshot(
            id=self.id,
            name=self.name,
            image=self.image,
            state=self.status,
            health=old.health if old else "none",
            created=from_iso(self.created),
            started_at=old.started_at if old else None,
            socket_path=self.socket_path,
            ports=dict(self.ports),
            exit_code=old.exit_code if old else None,
            socket_connected=old.socket_connected if old else False,
            last_communication=old.last_communication if old else None,
            resources=old.resources if old else None,
            node=self.node,
            node_id=self.node_id,
            task_id=self.task_id,
        )


class NodeOut(WireModel):
    """ext, cluster hub: one Swarm node in `container_list`'s `nodes` (so a list is never
    silently partial) and in `node_status`."""

    node_id: str
    node: str
    state: str
    """Swarm's view: ready, down, unknown, disconnected."""
    availability: str
    agent: Literal["connected", "disconnected"]
    flows: int
    cpu_percent: float | None = None
    """Sum over the node's flows' last samples."""
    memory_usage: int | None = None


class ContainerListOut(WireModel):
    """`container_list` (a cluster hub adds ext `nodes`)."""

    containers: list[ContainerItemOut]
    count: int
    nodes: list[NodeOut] | None = None

    @model_serializer(mode="wrap")
    def _ext_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self), "nodes")

    @staticmethod
    def payload(snaps: list[ContainerSnapshot], nodes: list[Wire] | None = None) -> Wire:
        """From the manager's snapshot (and a hub's node list)."""
        out: Wire = {
            "containers": [ContainerItemOut.payload(s) for s in snaps],
            "count": len(snaps),
        }
        if nodes is not None:
            out["nodes"] = nodes
        return out


class ContainerLogsOut(WireModel):
    """ext `container_logs`."""

    container_id: str
    lines: list[str]
    truncated: bool = False
    """ext: older lines were left out to keep the answer within `docker.max_log_bytes`."""

    @staticmethod
    def payload(container_id: str, lines: list[str], truncated: bool = False) -> Wire:
        """The answer to `get_container_logs`."""
        return {"container_id": container_id, "lines": list(lines), "truncated": truncated}

    def to_core(self) -> LogTail:
        """The lines as the core's log tail."""
        tail = LogTail(self.lines)
        tail.truncated = self.truncated
        return tail


class LogSubscriptionOut(WireModel):
    """ext: the ack of `subscribe_logs` / `unsubscribe_logs` (lines come as `container_log`)."""

    container_id: str
    status: Literal["subscribed", "unsubscribed"]

    @staticmethod
    def payload(container_id: str, status: Literal["subscribed", "unsubscribed"]) -> Wire:
        """The ack of a log (un)subscription."""
        return {"container_id": container_id, "status": status}


class WatchStatsOut(WireModel):
    """ext: the ack of `watch_stats` (samples then come as `container_stats`)."""

    container_ids: list[str]
    """The full ids now watched (the references that name a managed container)."""
    unknown: list[str]
    """The references that name none (not an error: a flow may just have gone)."""

    @staticmethod
    def payload(container_ids: list[str], unknown: list[str]) -> Wire:
        """The ack of a `watch_stats`."""
        return {"container_ids": container_ids, "unknown": unknown}


class ConnectedOut(WireModel):
    """`connected`: the welcome (ext: `version`, `server_id`)."""

    message: str
    version: str
    server_id: str

    @staticmethod
    def payload(message: str, version: str, server_id: str) -> Wire:
        """The welcome a new client gets."""
        return {"message": message, "version": version, "server_id": server_id}


class HistoryEventOut(WireModel):
    """ext: one journalled push in `history`: its `seq`, its name and its payload as pushed."""

    seq: int
    event: str
    data: dict[str, Any]

    @staticmethod
    def payload(rec: JournalRecord) -> Wire:
        """From a journal record (always journalled: its seq is set)."""
        return {"seq": rec.seq, "event": rec.event, "data": rec.data}

    def to_record(self) -> JournalRecord:
        """The core's record (its container id read from the payload, as the journal did)."""
        cid = self.data.get("container_id")
        return JournalRecord(
            seq=self.seq,
            event=self.event,
            data=dict(self.data),
            container_id=cid if isinstance(cid, str) else None,
        )


class HistoryOut(WireModel):
    """ext `history`: a page of the journal, oldest first; `last_seq` is the newest seq held
    (ask again with `since_seq` = the last event's seq until a page comes back short)."""

    events: list[HistoryEventOut]
    last_seq: int
    oldest_seq: int
    """ext of ext: the oldest seq still held (older ones fell to retention); 0 when empty."""

    @staticmethod
    def payload(page: HistoryPage) -> Wire:
        """From a page of the journal."""
        return {
            "events": [HistoryEventOut.payload(rec) for rec in page.events],
            "last_seq": page.last_seq,
            "oldest_seq": page.oldest_seq,
        }

    def to_page(self) -> HistoryPage:
        """The core's page."""
        return HistoryPage(
            events=[e.to_record() for e in self.events],
            last_seq=self.last_seq,
            oldest_seq=self.oldest_seq,
        )
