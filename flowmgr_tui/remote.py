"""RemoteBackend: the panel's Backend over Socket.IO (PROTOCOL.md), feeding a local EventBus."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import socketio

from flowmgr_tui.remote_wire import error_of, sample_of, snapshot_of, uptime_of, when
from flowmgr_tui.state.rules import settle
from server.core.bus import EventBus
from server.core.errors import ContainerNotFound, FlowMgrError, ServerUnreachable
from server.core.events import (
    ActivityLogged,
    ContainerAdded,
    ContainerCrashed,
    ContainerRemoved,
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    FlowMessageReceived,
    FlowMessageSent,
    HealthChanged,
    LogLineReceived,
    StatsSampled,
)
from server.core.models import ContainerSnapshot, CreateSpec

__all__ = ["RemoteBackend"]

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 90.0
"""Seconds a request may take (a stop waits for the flow's own stop timeout)."""
_RESYNC_ON = ("container_created", "container_deleted")


class RemoteBackend:
    """Speaks PROTOCOL.md as a client; keeps a snapshot from list/status answers and pushes."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = url
        self.bus = EventBus()
        self._token = token
        self._sio = socketio.AsyncClient(reconnection=True, reconnection_delay=1,
                                         reconnection_delay_max=10, logger=False,
                                         engineio_logger=False)
        self._containers: dict[str, ContainerSnapshot] = {}
        self._activity: deque[ActivityLogged] = deque(maxlen=500)
        self._crashes: deque[ContainerCrashed] = deque(maxlen=100)
        self._connected = False
        self._engine = True
        """The server's Docker Engine, as its last `engine_status` said."""
        self._engine_reason = ""
        self._shown = True
        """What the bus last said: the panel's banner follows these two links together."""
        self._resync_task: asyncio.Task[None] | None = None
        self._register()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def docker_available(self) -> bool:
        """Whether the server answers and says its Docker Engine does (ext `engine_status`)."""
        return self._connected and self._engine

    def status_text(self) -> str:
        """For the header."""
        if not self._connected:
            return "not connected, retrying"
        return "connected" if self._engine else "connected; its Docker Engine is unreachable"

    async def start(self) -> None:
        """Connect (raises ServerUnreachable when the server cannot be reached) and load rows."""
        self.bus.bind_loop(asyncio.get_running_loop())
        auth = {"token": self._token} if self._token else None
        try:
            await self._sio.connect(self.url, auth=auth, wait_timeout=10)
        except socketio.exceptions.ConnectionError as err:
            raise ServerUnreachable(f"cannot reach {self.url}: {err}") from err
        self._connected = True  # the connect handler may run after connect() returns
        await self._resync()

    async def stop(self) -> None:
        """Disconnect."""
        if self._resync_task is not None:
            self._resync_task.cancel()
        await self._sio.disconnect()
        self.bus.close()

    # --- reads ---------------------------------------------------------------------------

    def snapshot(self) -> list[ContainerSnapshot]:
        """Rows as last heard, by name."""
        return sorted(self._containers.values(), key=lambda s: s.name)

    def get(self, ref: str) -> ContainerSnapshot:
        """By full id, unique prefix or name."""
        hits = [s for s in self._containers.values()
                if s.id == ref or s.name == ref or s.id.startswith(ref)]
        if len(hits) != 1:
            raise ContainerNotFound(f"no managed container {ref!r}", details={"ref": ref})
        return hits[0]

    def recent_activity(self, container_id: str | None = None,
                        limit: int = 200) -> list[ActivityLogged]:
        """Activity heard since connecting (the protocol has no history request)."""
        items = [a for a in self._activity if container_id in (None, a.container_id)]
        return items[-limit:]

    def recent_crashes(self, container_id: str | None = None,
                       limit: int = 50) -> list[ContainerCrashed]:
        """Crashes heard since connecting."""
        items = [c for c in self._crashes if container_id in (None, c.container_id)]
        return items[-limit:]

    # --- requests ------------------------------------------------------------------------

    async def _call(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        if not self._connected:
            raise ServerUnreachable(f"not connected to {self.url}")
        try:
            answer = await self._sio.call(event, payload, timeout=CALL_TIMEOUT)
        except socketio.exceptions.TimeoutError as err:
            raise ServerUnreachable(f"{self.url} did not answer {event}") from err
        if not isinstance(answer, dict):
            raise FlowMgrError(f"unexpected answer to {event}: {answer!r}")
        if answer.get("error") is True:
            raise error_of(answer)
        return answer

    async def create_container(self, spec: CreateSpec) -> ContainerSnapshot:
        """`create_container` -> `container_created`."""
        body: dict[str, Any] = {"name": spec.name, "environment": spec.environment,
                                "volumes": spec.volumes, "ports": spec.ports}
        if spec.image:
            body["image"] = spec.image
        answer = await self._call("create_container", body)
        snap = snapshot_of({**answer, "created": datetime.now(UTC).isoformat()})
        self._put(snap, added=True)
        return snap

    async def _state_call(self, event: str, ref: str) -> ContainerSnapshot:
        answer = await self._call(event, {"container_id": ref})
        cid = str(answer.get("container_id", ref))
        self._set_state(cid, str(answer.get("status", "")), when(None))
        return self._containers.get(cid) or self.get(ref)

    async def start_container(self, ref: str) -> ContainerSnapshot:
        return await self._state_call("start_container", ref)

    async def stop_container(self, ref: str) -> ContainerSnapshot:
        return await self._state_call("stop_container", ref)

    async def restart_container(self, ref: str) -> ContainerSnapshot:
        return await self._state_call("restart_container", ref)

    async def update_container(self, ref: str, code_path: str) -> ContainerSnapshot:
        await self._call("update_container", {"container_id": ref, "code_path": code_path})
        return self.get(ref)

    async def delete_container(self, ref: str) -> str:
        answer = await self._call("delete_container", {"container_id": ref})
        cid = str(answer.get("container_id", ref))
        self._drop(cid)
        return cid

    async def get_logs(self, ref: str, tail: int = 100) -> list[str]:
        answer = await self._call("get_container_logs", {"container_id": ref, "tail": tail})
        return [str(line) for line in answer.get("lines", [])]

    async def follow_logs(self, ref: str) -> str:
        answer = await self._call("subscribe_logs", {"container_id": ref})
        return str(answer.get("container_id", ref))

    async def unfollow_logs(self, container_id: str) -> None:
        if self._connected:
            await self._call("unsubscribe_logs", {"container_id": container_id})

    async def send_message(self, ref: str, message: dict[str, Any]) -> None:
        answer = await self._call("send_message", {"container_id": ref, "message": message})
        self.bus.publish(FlowMessageSent(container_id=str(answer.get("container_id", ref)),
                                         message=message))

    # --- pushes --------------------------------------------------------------------------

    def _register(self) -> None:
        on = self._sio.on
        on("connect", self._on_connect)
        on("disconnect", self._on_disconnect)
        on("status_changed", self._on_status_changed)
        on("container_health_warning", self._on_health)
        on("container_crashed", self._on_crashed)
        on("container_status_update", self._on_status_update)
        on("activity_log", self._on_activity)
        on("message_received", self._on_message)
        on("container_log", self._on_log)
        on("engine_status", self._on_engine_status)

    async def _on_connect(self) -> None:
        was = self._connected
        self._connected = True
        if not was and self._containers:  # a reconnect: catch up on what we missed
            self._tell(self._engine_reason)
            self._schedule_resync()

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._connected = False
        self._tell(f"lost {self.url} ({reason or 'closed'})")

    async def _on_engine_status(self, data: dict[str, Any]) -> None:
        """ext: the server's engine went away or came back (also sent after each welcome)."""
        self._engine = data.get("available") is not False
        self._engine_reason = f"the server's engine: {data.get('reason') or 'unreachable'}"
        self._tell(self._engine_reason)

    def _tell(self, reason: str) -> None:
        """Publish a loss (with `reason`) or a return when the server or its engine changed."""
        up = self.docker_available
        if not up:
            self.bus.publish(DockerConnectionLost(reason=reason))
        elif not self._shown:
            self.bus.publish(DockerConnectionRestored())
        self._shown = up

    async def _on_status_changed(self, data: dict[str, Any]) -> None:
        self._set_state(str(data.get("container_id")), str(data.get("new_state")),
                        when(data.get("timestamp")))

    async def _on_health(self, data: dict[str, Any]) -> None:
        cid, health = str(data.get("container_id")), str(data.get("health"))
        snap = self._containers.get(cid)
        if snap is not None and snap.health != health:
            self._containers[cid] = replace(snap, health=health)  # type: ignore[arg-type]
            self.bus.publish(HealthChanged(container_id=cid, old_health=snap.health,
                                           new_health=health, at=when(data.get("timestamp"))))

    async def _on_crashed(self, data: dict[str, Any]) -> None:
        cid = str(data.get("container_id"))
        details = data.get("crash_details") or {}
        logs = details.get("logs") or ""
        snap = self._containers.get(cid)
        crash = ContainerCrashed(
            container_id=cid, name=snap.name if snap else cid[:12],
            exit_code=int(data.get("exit_code", -1)), error=str(details.get("error", "")),
            logs=logs.splitlines() if isinstance(logs, str) else [str(x) for x in logs],
            at=when(data.get("timestamp")))
        self._crashes.append(crash)
        self.bus.publish(crash)

    async def _on_status_update(self, data: dict[str, Any]) -> None:
        self._apply_status(str(data.get("container_id")), data.get("status") or {})

    async def _on_activity(self, data: dict[str, Any]) -> None:
        cid = data.get("container_id")
        ev = ActivityLogged(activity_type=str(data.get("activity_type")),
                            container_id=None if cid is None else str(cid),
                            message=str(data.get("message", "")),
                            details=dict(data.get("details") or {}),
                            at=when(data.get("timestamp")))
        self._activity.append(ev)
        self.bus.publish(ev)
        if ev.activity_type in _RESYNC_ON:
            self._schedule_resync()

    async def _on_message(self, data: dict[str, Any]) -> None:
        self.bus.publish(FlowMessageReceived(container_id=str(data.get("container_id")),
                                             message=dict(data.get("message") or {}),
                                             at=when(data.get("timestamp"))))

    async def _on_log(self, data: dict[str, Any]) -> None:
        self.bus.publish(LogLineReceived(container_id=str(data.get("container_id")),
                                         line=str(data.get("line", "")),
                                         at=when(data.get("timestamp"))))

    # --- state ---------------------------------------------------------------------------

    def _schedule_resync(self) -> None:
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.create_task(self._resync(), name="remote-resync")

    async def _resync(self) -> None:
        """List, then ask each container's status; publish what differs from what we had."""
        try:
            answer = await self._call("list_containers", {})
            items = {str(i["id"]): i for i in answer.get("containers", [])}
            for cid in set(self._containers) - set(items):
                self._drop(cid)
            for cid, item in items.items():
                old = self._containers.get(cid)
                self._put(snapshot_of(item, old), added=old is None)
            sem = asyncio.Semaphore(16)
            await asyncio.gather(*(self._status(cid, sem) for cid in items))
        except FlowMgrError as err:
            logger.warning("could not resynchronise with %s: %s", self.url, err)

    async def _status(self, cid: str, sem: asyncio.Semaphore) -> None:
        async with sem:
            try:
                status = await self._call("get_container_status", {"container_id": cid})
            except ContainerNotFound:
                self._drop(cid)
                return
        self._apply_status(cid, status)

    def _apply_status(self, cid: str, status: dict[str, Any]) -> None:
        snap = self._containers.get(cid)
        if snap is None:
            self._schedule_resync()
            return
        up = uptime_of(status.get("uptime"))
        sample = sample_of(status.get("resource_usage"))
        new = replace(snap, state=status.get("state", snap.state),
                      health=status.get("health", snap.health),
                      socket_connected=bool(status.get("socket_connected", False)),
                      started_at=(datetime.now(UTC) - up) if up is not None else snap.started_at,
                      resources=sample)
        if status.get("last_communication"):
            new = replace(new, last_communication=when(status["last_communication"]))
        self._put(new, added=False, old_state=snap.state)
        if sample is not None:
            self.bus.publish(StatsSampled(container_id=cid, sample=sample))

    def _set_state(self, cid: str, state: str, at: datetime) -> None:
        snap = self._containers.get(cid)
        if snap is None:
            self._schedule_resync()
            return
        if state in ("deleted",):
            self._drop(cid)
            return
        started = at if state == "running" and snap.state != "running" else snap.started_at
        self._put(replace(snap, state=state, started_at=started),  # type: ignore[arg-type]
                  added=False, old_state=snap.state)

    def _put(self, snap: ContainerSnapshot, *, added: bool, old_state: str | None = None) -> None:
        # Settled as the panel's state settles it: what a stopped container reports is no usage.
        snap = settle(snap, self._containers.get(snap.id))
        self._containers[snap.id] = snap
        if added:
            self.bus.publish(ContainerAdded(snapshot=snap))
        else:
            self.bus.publish(ContainerStateChanged(
                container_id=snap.id, old_state=old_state or snap.state,
                new_state=snap.state, snapshot=snap))

    def _drop(self, cid: str) -> None:
        snap = self._containers.pop(cid, None)
        if snap is not None:
            self.bus.publish(ContainerRemoved(container_id=cid, name=snap.name))
