"""RemoteBackend: the panel's Backend over Socket.IO (docs/PROTOCOL.md), feeding a local EventBus.
Every payload is encoded and decoded by `server.wire`, the module the server encodes with."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import socketio

from flowmgr_tui.remote_shell import RemoteShell, ShellRoutes
from flowmgr_tui.state.nodes import NodeLink, NodesListed, link_of, node_link
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
    StatsSampled,
    now,
)
from server.core.flow_config import FlowConfig
from server.core.journal.records import HistoryPage
from server.core.log_tail import LogTail
from server.core.models import ContainerSnapshot, ContainerStatus, CreateSpec
from server.core.validation import check_shapes
from server.core.validation.signals import check_signal
from server.wire.answers import (
    ContainerCreatedOut,
    ContainerKilledOut,
    ContainerListOut,
    ContainerLogsOut,
    ContainerPauseOut,
    ContainerStateOut,
    ContainerStatusOut,
    ContainerUpdatedOut,
    HistoryOut,
    LogSubscriptionOut,
    MessageSentOut,
    NodeOut,
    WatchStatsOut,
)
from server.wire.base import MalformedPayload, WireModel
from server.wire.config_answer import ContainerInspectedOut
from server.wire.errors import ErrorOut
from server.wire.pushes import (
    ActivityLogOut,
    ContainerCrashedOut,
    ContainerLogOut,
    ContainerStatsOut,
    EngineStatusOut,
    HealthWarningOut,
    MessageReceivedOut,
    NodeStatusOut,
    Push,
    StatusChangedOut,
    StatusUpdateOut,
)
from server.wire.requests import (
    WATCH_MAX,
    ContainerRef,
    CreateContainerRequest,
    GetHistoryRequest,
    GetLogsRequest,
    KillContainerRequest,
    ListContainersRequest,
    RequestIn,
    SendMessageRequest,
    UpdateContainerRequest,
    WatchStatsRequest,
    body,
)
from server.wire.shell import OpenShellRequest, ShellOpenedOut

__all__ = ["RemoteBackend"]

_Stated = TypeVar("_Stated", ContainerStateOut, ContainerPauseOut)
"""Answers that carry the flow's state after the request."""

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 90.0
"""Seconds a request may take (a stop waits for the flow's own stop timeout)."""
HISTORY_TIMEOUT = 15.0
"""Seconds a `get_history` may take: a journal read is quick, and a server older than the
journal never answers it (no handler), which the history screen then says."""
_RESYNC_ON = ("container_created", "container_deleted")
NODES_LOGGED = 3
"""Malformed `nodes` entries of one list answer named in the log (the rest counted)."""
Reply = TypeVar("Reply", bound=WireModel)
P = TypeVar("P", bound=Push)


def _ref(container_id: str) -> ContainerRef:
    """A request naming one container; built unchecked: the server judges the reference."""
    return ContainerRef.model_construct(container_id=container_id)


class RemoteBackend:
    """Speaks docs/PROTOCOL.md as a client; keeps a snapshot from list/status answers and pushes."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = url
        self.bus = EventBus()
        self._token = token
        self._sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=1,
            reconnection_delay_max=10,
            logger=False,
            engineio_logger=False,
        )
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
        self._watch: dict[str, frozenset[str]] = {}
        """Owner (the table's rows, a detail view) -> the ids it shows; the server gets the
        union (one set per client), again after each reconnect."""
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_dirty = False
        self._nodes: dict[str, NodeLink] = {}
        self._shells = ShellRoutes()
        """Cluster hub only: its Swarm nodes by id, from the last list and `node_status` since."""
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
        for task in (self._resync_task, self._watch_task):
            if task is not None:
                task.cancel()
        await self._sio.disconnect()
        self.bus.close()

    # --- reads ---------------------------------------------------------------------------

    def snapshot(self) -> list[ContainerSnapshot]:
        """Rows as last heard, by name."""
        return sorted(self._containers.values(), key=lambda s: s.name)

    def get(self, ref: str) -> ContainerSnapshot:
        """By full id, unique prefix or name."""
        hits = [
            s
            for s in self._containers.values()
            if s.id == ref or s.name == ref or s.id.startswith(ref)
        ]
        if len(hits) != 1:
            raise ContainerNotFound(f"no managed container {ref!r}", details={"ref": ref})
        return hits[0]

    def nodes(self) -> list[NodeLink]:
        """A cluster hub's nodes as last heard, by hostname (empty from a single-host server)."""
        return sorted(self._nodes.values(), key=lambda n: (n.node, n.node_id))

    def recent_activity(
        self, container_id: str | None = None, limit: int = 200
    ) -> list[ActivityLogged]:
        """Activity heard since connecting (older lines: `get_history`, which the panel reads
        once connected and whenever a screen asks)."""
        items = [a for a in self._activity if container_id in (None, a.container_id)]
        return items[-limit:]

    def recent_crashes(
        self, container_id: str | None = None, limit: int = 50
    ) -> list[ContainerCrashed]:
        """Crashes heard since connecting."""
        items = [c for c in self._crashes if container_id in (None, c.container_id)]
        return items[-limit:]

    async def get_history(
        self,
        since_seq: int | None = None,
        container_id: str | None = None,
        types: list[str] | None = None,
        limit: int = 100,
    ) -> HistoryPage:
        """ext `get_history` -> `history`: the server's journal, oldest first."""
        request = GetHistoryRequest.model_construct(
            since_seq=since_seq, container_id=container_id, types=types, limit=limit
        )
        answer = await self._ask("get_history", request, HistoryOut, HISTORY_TIMEOUT)
        return answer.to_page()

    # --- requests ------------------------------------------------------------------------

    async def _ask(
        self, event: str, request: RequestIn, reply: type[Reply], timeout: float = CALL_TIMEOUT
    ) -> Reply:
        """Send `request` as `event`: its answer decoded, or its `error` raised as the core's."""
        answer = await self._call(event, request, timeout)
        try:
            return reply.decode(answer)
        except MalformedPayload as err:
            raise FlowMgrError(f"unexpected answer to {event}: {err}") from None

    async def _call(self, event: str, request: RequestIn, timeout: float = CALL_TIMEOUT) -> Any:
        """Send `request` as `event`: its answer as received, or its `error` raised."""
        if not self._connected:
            raise ServerUnreachable(f"not connected to {self.url}")
        try:
            answer = await self._sio.call(event, body(request), timeout=timeout)
        except socketio.exceptions.TimeoutError as err:
            raise ServerUnreachable(f"{self.url} did not answer {event}") from err
        if isinstance(answer, dict) and answer.get("error") is True:
            raise ErrorOut.decode(answer).to_core()
        return answer

    async def create_container(self, spec: CreateSpec) -> ContainerSnapshot:
        """`create_container` -> `container_created`: the validator's shapes first (the same
        answer the server would give, without the round trip), the server's host rules then."""
        check_shapes(spec)
        request = CreateContainerRequest.model_construct(
            name=spec.name,
            image=spec.image,
            environment=spec.environment,
            volumes=spec.volumes,
            ports=spec.ports,
        )
        answer = await self._ask("create_container", request, ContainerCreatedOut)
        snap = answer.to_snapshot(now())
        self._put(snap, added=True)
        return snap

    async def _state_call(
        self,
        event: str,
        ref: str,
        reply: type[_Stated],
    ) -> ContainerSnapshot:
        """A request whose answer says the flow's new state: applied at once (the push
        `status_changed` may come later)."""
        answer = await self._ask(event, _ref(ref), reply)
        self._set_state(answer.container_id, answer.status, now())
        return self._containers.get(answer.container_id) or self.get(ref)

    async def start_container(self, ref: str) -> ContainerSnapshot:
        return await self._state_call("start_container", ref, ContainerStateOut)

    async def stop_container(self, ref: str) -> ContainerSnapshot:
        return await self._state_call("stop_container", ref, ContainerStateOut)

    async def restart_container(self, ref: str) -> ContainerSnapshot:
        return await self._state_call("restart_container", ref, ContainerStateOut)

    async def pause_container(self, ref: str) -> ContainerSnapshot:
        """ext `pause_container` -> `container_paused`."""
        return await self._state_call("pause_container", ref, ContainerPauseOut)

    async def unpause_container(self, ref: str) -> ContainerSnapshot:
        """ext `unpause_container` -> `container_unpaused`."""
        return await self._state_call("unpause_container", ref, ContainerPauseOut)

    async def kill_container(self, ref: str, signal: str) -> ContainerSnapshot:
        """ext `kill_container` -> `container_killed`: the allow-list checked here first (the
        server's own answer, without the round trip)."""
        request = KillContainerRequest.model_construct(
            container_id=ref, signal=check_signal(signal)
        )
        answer = await self._ask("kill_container", request, ContainerKilledOut)
        # Not applied to the row: the state right after the signal may be older than a
        # `status_changed` already received (a flow ending on SIGTERM); the pushes keep order.
        snap = self._containers.get(answer.container_id) or self.get(ref)
        return replace(snap, state=answer.status)

    async def update_container(self, ref: str, code_path: str) -> ContainerSnapshot:
        request = UpdateContainerRequest.model_construct(container_id=ref, code_path=code_path)
        await self._ask("update_container", request, ContainerUpdatedOut)
        return self.get(ref)

    async def delete_container(self, ref: str) -> str:
        answer = await self._ask("delete_container", _ref(ref), ContainerStateOut)
        self._drop(answer.container_id)
        return answer.container_id

    async def get_logs(
        self, ref: str, tail: int = 100, *, since: float | None = None, timestamps: bool = False
    ) -> LogTail:
        request = GetLogsRequest.model_construct(
            container_id=ref, tail=tail, since=since, timestamps=timestamps
        )
        return (await self._ask("get_container_logs", request, ContainerLogsOut)).to_core()

    async def inspect_container(self, ref: str) -> FlowConfig:
        answer = await self._ask("inspect_container", _ref(ref), ContainerInspectedOut)
        return answer.to_core()

    async def follow_logs(self, ref: str) -> str:
        answer = await self._ask("subscribe_logs", _ref(ref), LogSubscriptionOut)
        return answer.container_id

    async def unfollow_logs(self, container_id: str) -> None:
        if self._connected:
            await self._ask("unsubscribe_logs", _ref(container_id), LogSubscriptionOut)

    async def send_message(self, ref: str, message: dict[str, Any]) -> None:
        request = SendMessageRequest.model_construct(container_id=ref, message=message)
        answer = await self._ask("send_message", request, MessageSentOut)
        self.bus.publish(answer.to_core())

    async def open_shell(self, ref: str, cols: int, rows: int) -> RemoteShell:
        """ext `open_shell`: a shell in the flow's container, driven over this link."""
        request = OpenShellRequest.model_construct(container_id=ref, cols=cols, rows=rows)
        answer = await self._ask("open_shell", request, ShellOpenedOut)
        shell = RemoteShell(answer.session_id, answer.container_id, self._emit, self._call)
        await self._shells.add(shell)
        return shell

    async def _emit(self, event: str, payload: dict[str, Any]) -> None:
        await self._sio.emit(event, payload)

    def watch_stats(self, owner: str, container_ids: list[str]) -> None:
        """ext `watch_stats`, sent in the background (the newest set wins): the server samples
        what this panel shows at full rate and pushes it as `container_stats`; the other rows
        keep the periodic `container_status_update`."""
        ids = frozenset(container_ids)
        if ids:
            self._watch[owner] = ids
        else:
            self._watch.pop(owner, None)
        self._send_watch()

    def _send_watch(self) -> None:
        self._watch_dirty = True
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.create_task(self._watch_sender(), name="remote-watch")

    async def _watch_sender(self) -> None:
        """One request at a time; a set changed meanwhile goes next (scrolling sends few)."""
        while self._watch_dirty and self._connected:
            self._watch_dirty = False
            ids = sorted(frozenset[str]().union(*self._watch.values()))[:WATCH_MAX]
            try:
                request = WatchStatsRequest.model_construct(container_ids=ids)
                await self._ask("watch_stats", request, WatchStatsOut)
            except FlowMgrError as err:  # a server older than watch_stats: periodic only
                logger.info("%s: watch_stats not taken (%s)", self.url, err)
                return

    # --- pushes --------------------------------------------------------------------------

    def _register(self) -> None:
        on = self._sio.on
        on("connect", self._on_connect)
        on("disconnect", self._on_disconnect)
        self._on_push(StatusChangedOut, self._on_status_changed)
        self._on_push(HealthWarningOut, self._on_health)
        self._on_push(ContainerCrashedOut, self._on_crashed)
        self._on_push(StatusUpdateOut, self._on_status_update)
        self._on_push(ActivityLogOut, self._on_activity)
        self._on_push(MessageReceivedOut, lambda msg: self.bus.publish(msg.to_core()))
        self._on_push(ContainerLogOut, lambda msg: self.bus.publish(msg.to_core()))
        self._on_push(EngineStatusOut, self._on_engine_status)
        self._on_push(ContainerStatsOut, self._on_stats)
        self._on_push(NodeStatusOut, self._on_node_status)
        on("shell_output", self._shells.on_output)
        on("shell_exited", self._shells.on_exited)

    def _on_push(self, model: type[P], handle: Callable[[P], None]) -> None:
        """Handle `model.event`, decoded; a payload without its shape is logged and dropped."""

        async def handler(data: Any) -> None:
            try:
                value = model.decode(data)
            except MalformedPayload as err:
                logger.warning("ignored a malformed %s from %s: %s", model.event, self.url, err)
                return
            try:
                handle(value)
            except (ValueError, OverflowError, OSError) as err:  # a timestamp past any date
                logger.warning("ignored a %s from %s: %s", model.event, self.url, err)

        self._sio.on(model.event, handler)

    async def _on_connect(self) -> None:
        was = self._connected
        self._connected = True
        if not was and self._containers:  # a reconnect: catch up on what we missed
            self._tell(self._engine_reason)
            self._schedule_resync()
        if self._watch:  # the server forgot this client's set when it left
            self._send_watch()

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._connected = False
        await self._shells.link_lost()
        self._tell(f"lost {self.url} ({reason or 'closed'})")

    def _on_engine_status(self, msg: EngineStatusOut) -> None:
        """ext: the server's engine went away or came back (also sent after each welcome)."""
        self._engine = msg.available
        self._engine_reason = f"the server's engine: {msg.reason or 'unreachable'}"
        self._tell(self._engine_reason)

    def _tell(self, reason: str) -> None:
        """Publish a loss (with `reason`) or a return when the server or its engine changed."""
        up = self.docker_available
        if not up:
            self.bus.publish(DockerConnectionLost(reason=reason))
        elif not self._shown:
            self.bus.publish(DockerConnectionRestored())
        self._shown = up

    def _on_status_changed(self, msg: StatusChangedOut) -> None:
        """A cluster hub adds where the flow runs now (a reschedule) and why it is `unknown`."""
        self._set_state(msg.container_id, msg.new_state, msg.at, node=msg.node, reason=msg.reason)

    def _on_node_status(self, msg: NodeStatusOut) -> None:
        """ext, cluster hub: a node's agent link went up or down (its flows' `unknown` come as
        `status_changed`); the panel's node summary and notice follow the core event."""
        ev = msg.to_core()
        self._nodes[ev.node_id] = node_link(ev, self._nodes.get(ev.node_id))
        self.bus.publish(ev)

    def _on_health(self, msg: HealthWarningOut) -> None:
        snap = self._containers.get(msg.container_id)
        if snap is not None and snap.health != msg.health:
            self._containers[msg.container_id] = replace(snap, health=msg.health)
            self.bus.publish(msg.to_core(old_health=snap.health))

    def _on_crashed(self, msg: ContainerCrashedOut) -> None:
        crash = msg.to_core(name=self._name(msg.container_id))
        self._crashes.append(crash)
        self.bus.publish(crash)

    def _on_status_update(self, msg: StatusUpdateOut) -> None:
        self._apply_status(msg.to_core(name=self._name(msg.container_id)))

    def _on_stats(self, msg: ContainerStatsOut) -> None:
        """ext: a fresh sample of a row this panel shows."""
        snap = self._containers.get(msg.container_id)
        if snap is None or snap.state != "running":
            return
        ev = msg.to_core()
        self._containers[snap.id] = replace(snap, resources=ev.sample)
        self.bus.publish(ev)

    def _on_activity(self, msg: ActivityLogOut) -> None:
        ev = msg.to_core()
        self._activity.append(ev)
        self.bus.publish(ev)
        if ev.activity_type in _RESYNC_ON:
            self._schedule_resync()

    # --- state ---------------------------------------------------------------------------

    def _name(self, cid: str) -> str:
        """The container's name as last heard (its short id when it is not known yet)."""
        snap = self._containers.get(cid)
        return snap.name if snap else cid[:12]

    def _schedule_resync(self) -> None:
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.create_task(self._resync(), name="remote-resync")

    async def _resync(self) -> None:
        """List, then ask each container's status; publish what differs from what we had."""
        try:
            raw = await self._call("list_containers", ListContainersRequest.model_construct())
            answer = self._decode_list(raw)
            if answer.nodes is not None:
                self._listed(answer.nodes)
            items = {item.id: item for item in answer.containers}
            for cid in set(self._containers) - set(items):
                self._drop(cid)
            for cid, item in items.items():
                old = self._containers.get(cid)
                self._put(item.to_snapshot(old), added=old is None)
            sem = asyncio.Semaphore(16)
            await asyncio.gather(*(self._status(cid, sem) for cid in items))
        except FlowMgrError as err:
            logger.warning("could not resynchronise with %s: %s", self.url, err)

    def _decode_list(self, raw: Any) -> ContainerListOut:
        """`container_list`; a malformed entry of a hub's `nodes` is logged and left out (the
        rows still show), anything else malformed is FlowMgrError as for any answer."""
        try:
            return ContainerListOut.decode(raw)
        except MalformedPayload as err:
            nodes = raw.get("nodes") if isinstance(raw, dict) else None
            if not isinstance(nodes, list):
                raise FlowMgrError(f"unexpected answer to list_containers: {err}") from None
        try:
            answer = ContainerListOut.decode({k: v for k, v in raw.items() if k != "nodes"})
        except MalformedPayload as err:
            raise FlowMgrError(f"unexpected answer to list_containers: {err}") from None
        good: list[NodeOut] = []
        bad: list[str] = []
        for entry in nodes:
            try:
                good.append(NodeOut.decode(entry))
            except MalformedPayload as node_err:
                bad.append(str(node_err)[:200])
        logger.warning(
            "%s: ignored %d malformed node(s) of %d in container_list: %s",
            self.url,
            len(bad),
            len(nodes),
            "; ".join(bad[:NODES_LOGGED]),
        )
        return answer.model_copy(update={"nodes": good})

    def _listed(self, nodes: list[NodeOut]) -> None:
        """A hub's node list: kept, and published for the panel's summary."""
        links = tuple(
            NodeLink(n.node_id, n.node, n.state, n.agent, "", None)
            for n in {n.node_id: n for n in nodes}.values()
        )
        old = self._nodes
        self._nodes = {n.node_id: link_of(n, old.get(n.node_id)) for n in links}
        self.bus.publish(NodesListed(nodes=links))

    async def _status(self, cid: str, sem: asyncio.Semaphore) -> None:
        async with sem:
            try:
                answer = await self._ask("get_container_status", _ref(cid), ContainerStatusOut)
            except ContainerNotFound:
                self._drop(cid)
                return
        self._apply_status(answer.to_core(name=self._name(cid)))

    def _apply_status(self, status: ContainerStatus) -> None:
        cid = status.container_id
        snap = self._containers.get(cid)
        if snap is None:
            self._schedule_resync()
            return
        up = status.uptime
        sample = status.resource_usage
        new = replace(
            snap,
            state=status.state,
            health=status.health,
            socket_connected=status.socket_connected,
            started_at=(now() - up) if up is not None else snap.started_at,
            resources=sample,
        )
        if status.last_communication is not None:
            new = replace(new, last_communication=status.last_communication)
        self._put(new, added=False, old_state=snap.state)
        if sample is not None:
            self.bus.publish(StatsSampled(container_id=cid, sample=sample))

    def _set_state(
        self,
        cid: str,
        state: str,
        at: datetime,
        *,
        node: str | None = None,
        reason: str | None = None,
    ) -> None:
        snap = self._containers.get(cid)
        if snap is None:
            self._schedule_resync()
            return
        if state in ("deleted",):
            self._drop(cid)
            return
        started = at if state == "running" and snap.state != "running" else snap.started_at
        new = replace(snap, state=state, started_at=started)  # type: ignore[arg-type]
        if node is not None and node != snap.node:  # rescheduled: its node id comes with a list
            new = replace(new, node=node, node_id=None)
            self._schedule_resync()
        self._put(new, added=False, old_state=snap.state, reason=reason)

    def _put(
        self,
        snap: ContainerSnapshot,
        *,
        added: bool,
        old_state: str | None = None,
        reason: str | None = None,
    ) -> None:
        # Settled as the panel's state settles it: what a stopped container reports is no usage.
        snap = settle(snap, self._containers.get(snap.id))
        self._containers[snap.id] = snap
        if added:
            self.bus.publish(ContainerAdded(snapshot=snap))
        else:
            self.bus.publish(
                ContainerStateChanged(
                    container_id=snap.id,
                    old_state=old_state or snap.state,
                    new_state=snap.state,
                    snapshot=snap,
                    reason=reason,
                )
            )

    def _drop(self, cid: str) -> None:
        snap = self._containers.pop(cid, None)
        if snap is not None:
            self.bus.publish(ContainerRemoved(container_id=cid, name=snap.name))
