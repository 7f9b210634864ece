"""HubManager: the cluster hub's core, the API's manager over Docker Swarm and the agents.

It is a ContainerManager whose flows are Swarm services: the registry, journal, outbox, event
bus and every read the API makes work as on one host; what differs is where facts come from.
Swarm's managers say which flows exist, where their tasks run and how they ended (a poll of
services, tasks and nodes, 1 s, sooner when an agent reports a change); the agents say what
only a node can see (the flow's socket, its frames, log lines, resource samples). Mutations are
service calls (create with 0 replicas, scale 1/0, forced update, removal); a flow's frames go
client -> hub -> the agent of its task's node -> socket.

Failures are said: a node whose agent link drops turns its flows `unknown` at once (with the
reason); a flow whose task Swarm shut down (its node died, was marked down for a moment, or was
drained) is started again by a forced update (hub_moves.py: restart condition `none` would leave
it down); a poll that fails leaves the last picture in place and says so (`engine_status`), and
mutations without a Swarm leader are refused with `docker_api_error`, reason `no_quorum` (the
engine's own check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from server.cluster.errors import NodeNotConnected
from server.cluster.events import FlowsUnknown, LinkEvent, NodeStatusChanged
from server.cluster.hub_channels import RemoteChannels
from server.cluster.hub_link import AgentNamespace, HubLinkConfig, HubLinks
from server.cluster.hub_moves import FlowMoves
from server.cluster.hub_volumes import VolumeSweeper
from server.cluster.link_models import AgentEvent, AgentReport
from server.core.bus import EventBus
from server.core.config import Settings
from server.core.container_info import ContainerInfo
from server.core.errors import (
    ConfigError,
    ContainerNotFound,
    DockerApiError,
    FlowMgrError,
    FlowSocketConnectionError,
    InvalidRequest,
)
from server.core.events import (
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    FlowChannelConnected,
    FlowChannelLost,
    FlowFrameRejected,
    FlowMessageReceived,
    LogLineReceived,
    NodeStatusReported,
    StatsSampled,
)
from server.core.flow_config import FlowConfig
from server.core.journal.records import Encoder
from server.core.log_tail import LogTail, check_since
from server.core.manager import ContainerManager
from server.core.models import ContainerSnapshot, ContainerStatus, CreateSpec, State
from server.core.registry import Record
from server.core.swarm.engine import FlowService, FlowTask, NodeInfo, SwarmEngine
from server.core.swarm.spec import SwarmNode, service_spec
from server.core.validation.host import validate_create
from server.core.validation.shapes import PORTS_LABEL, ports_as_written
from server.wire.config_answer import ContainerInspectedOut

__all__ = ["HubManager"]

logger = logging.getLogger(__name__)

POLL_BUSY = 1.0
"""Seconds between polls of the managers while something changes (or was asked)."""
POLL_QUIET = 5.0
"""Seconds between polls when nothing changed for a while."""
POLL_URGENT = 0.3
"""Seconds between polls while a node is not ready or a flow is unknown."""
READ_TIMEOUT = 5.0
"""A poll's calls: without quorum a manager may hold a read for 20 s; the cache answers."""
CRASH_LOG_LINES = 50
REFOLLOW_FOR = 60.0
"""Seconds a moved flow's followed logs are asked of its new container (it may be starting)."""
CRASH_GRACE = 3.0
"""Seconds a failed task waits before it is said to be a crash (a fence's word may come)."""
REFRESH_EVERY = 0.25
"""Seconds between two re-reads of one flow's tasks for agents' claims (what one agent can
make the hub ask the managers, whatever it sends)."""


class HubManager(ContainerManager):
    """The API's manager in cluster mode (`flowmgr --hub`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        bus: EventBus | None = None,
        journal_encoder: Encoder | None = None,
        engine: SwarmEngine | None = None,
    ) -> None:
        if settings.cluster.mode != "swarm":
            raise ConfigError(
                'the hub runs in cluster mode only: set cluster.mode to "swarm"',
                details={"field": "cluster.mode"},
            )
        super().__init__(settings, bus=bus, journal_encoder=journal_encoder)
        # the flows' channels live on their nodes: the core's hub is replaced before use
        self.channels = RemoteChannels(self.bus, self._send_via_agent)
        self.hub = self.registry.hub = self.outbox._hub = self.channels  # type: ignore[assignment]
        # samples come from the agents; the core's status reporter must not read local files
        self.sampler.ensure_sample = self._sample_from_agent  # type: ignore[method-assign]
        self.engine = engine or SwarmEngine(call_timeout=READ_TIMEOUT)
        self.links = HubLinks(self._known_nodes, places=self._places)
        self.links.on_report = self._on_report
        self.links.on_event = self._on_event
        self.links.refresh = self._refresh_for_agent
        self._refreshed: dict[str, float] = {}
        self._node_said: dict[str, NodeStatusReported] = {}
        self._fenced_tasks: set[str] = set()
        self._refused: dict[str, str] = {}
        """Task id -> why its node's agent stopped it (said with its crash)."""
        self._containers: dict[str, str] = {}
        """Flow -> the container of its current task, as last seen (a new one: ask again)."""
        self.links.subscribe(self._on_link_event)
        self.volumes = VolumeSweeper(
            keep=lambda: sorted({r.info.name for r in self.registry.records.values()}),
            linked=self.links.connected_nodes,
            request=self._request,
            ready=lambda: self._listed_once,
        )
        self.agents: AgentNamespace | None = None
        self.services: dict[str, FlowService] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self._swarm_up = False
        self._listed_once = False
        """A poll of the managers has succeeded since start: the registry lists every flow."""
        self._swarm_change: DockerConnectionLost | DockerConnectionRestored | None = None
        self._polled = asyncio.Event()
        self._poke = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self._crashes_said: set[str] = set()
        self.moves = FlowMoves(
            self.engine,
            self.registry,
            services=lambda: self.services,
            nodes=lambda: self.nodes,
            refresh=self._refresh_one,
            spawn=self._spawn,
            poke=self._poke.set,
        )
        self._watch: dict[str, frozenset[str]] = {}
        self._followed: dict[str, int] = {}
        self._last_change = 0.0

    # -- the API server's hooks

    def register_namespaces(self, sio: Any) -> None:
        """Add the agents' namespace `/agent` to the API's Socket.IO server."""
        from server.cluster.hub_link import register_agent_namespace

        self.agents = register_agent_namespace(
            sio, self.links, HubLinkConfig.from_settings(self.settings)
        )

    def cluster_nodes(self) -> list[dict[str, Any]] | None:
        """`container_list`'s ext `nodes`: every Swarm node with its agent link and flows."""
        out = []
        for node_id, node in sorted(self.nodes.items(), key=lambda kv: kv[1].hostname):
            link = self.links.nodes.get(node_id)
            recs = [r for r in self.registry.records.values() if r.info.node_id == node_id]
            samples = [r.resources for r in recs if r.resources is not None]
            out.append(
                {
                    "node_id": node_id,
                    "node": node.hostname,
                    "state": node.state,
                    "availability": node.availability,
                    "agent": "connected" if link is not None and link.connected else "disconnected",
                    "flows": len(recs),
                    "cpu_percent": round(sum(s.cpu_percent for s in samples), 2),
                    "memory_usage": sum(s.memory_usage for s in samples),
                }
            )
        return out

    def node_states(self) -> list[NodeStatusReported]:
        return [s for s in self._node_said.values() if s.agent == "disconnected"]

    # -- lifecycle

    async def start(self, *, adopt_wait: float | None = None) -> None:
        if self._started:
            return
        self.bus.bind_loop(asyncio.get_running_loop())
        await self.journal.start()
        try:
            await self._recall_history()
            await self.outbox.start(self.journal.store.call if self.journal.enabled else None)
        except BaseException:
            await self.journal.stop()
            raise
        self._started = True
        self._spawn(self._poll_forever(), "swarm-poll")
        wait = self.settings.docker.call_timeout if adopt_wait is None else adopt_wait
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._polled.wait()
        self._spawn(self._report_status(), "status-reporter")
        self._spawn(self.volumes.run_forever(), "volume-sweep")

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.agents is not None:
            await self.agents.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.outbox.stop()
        await self.engine.close()
        await self.adapter.close()
        await self.journal.stop()

    # -- what the API reads

    @property
    def docker_available(self) -> bool:
        return self._swarm_up

    @property
    def docker_change(self) -> DockerConnectionLost | DockerConnectionRestored | None:
        return self._swarm_change

    def adoption(self) -> tuple[int, int | None] | None:
        return None if self._polled.is_set() or not self._started else (0, None)

    def health(self) -> dict[str, str]:
        return {
            "container_manager": "active" if self._started and self._swarm_up else "unavailable",
            "socket_handler": "active" if self._started else "stopped",
            "event_handler": "active" if self._started and self._swarm_up else "unavailable",
            "journal": self.journal.health(),
        }

    def health_reason(self) -> str | None:
        change = self._swarm_change
        if self._swarm_up or not isinstance(change, DockerConnectionLost):
            return None
        return change.reason

    async def get_status(self, ref: str) -> ContainerStatus:
        return self.registry.status_of(self.registry.resolve(ref))

    async def _sample_from_agent(self, rec: Record) -> Any:
        return rec.resources

    # -- mutations: Swarm service calls

    async def create_container(self, spec: CreateSpec) -> ContainerSnapshot:
        if not isinstance(spec, CreateSpec):
            raise InvalidRequest("create_container needs a CreateSpec", field="spec")
        spec = await asyncio.to_thread(validate_create, spec, self.settings)
        if any(r.info.name == spec.name for r in self.registry.records.values()):
            raise InvalidRequest(f"a container named {spec.name!r} already exists", field="name")
        nodes = list(self.nodes.values()) or await self.engine.nodes()
        known = [SwarmNode(n.id, n.hostname) for n in nodes]
        service = service_spec(
            spec, self.settings, labels={}, nodes=known, node=spec.node, replicas=0
        )
        service_id = await self.engine.create_flow_service(service)
        rec = await self._refresh_one(service_id)
        return self.registry.snapshot_of(rec)

    async def start_container(self, ref: str) -> ContainerSnapshot:
        rec = self.registry.resolve(ref)
        with self.registry.acting_on(rec.info.id):
            await self.engine.scale(rec.info.id, 1)
            rec = await self._until(rec.info.id, lambda r: self._task_runs(r.info.id))
        return self.registry.snapshot_of(rec)

    def _task_runs(self, flow_id: str) -> bool:
        service = self.services.get(flow_id)
        task = service.current if service is not None else None
        return task is not None and task.state == "running" and task.desired_state == "running"

    async def stop_container(self, ref: str) -> ContainerSnapshot:
        rec = self.registry.resolve(ref)
        with self.registry.acting_on(rec.info.id):
            await self.engine.scale(rec.info.id, 0)
            rec = await self._until(rec.info.id, lambda r: r.state in ("stopped", "created"))
        return self.registry.snapshot_of(rec)

    async def restart_container(self, ref: str) -> ContainerSnapshot:
        rec = self.registry.resolve(ref)
        old_task = rec.info.task_id
        with self.registry.acting_on(rec.info.id):
            if self.services.get(rec.info.id, None) is not None and (
                self.services[rec.info.id].replicas == 0
            ):
                await self.engine.scale(rec.info.id, 1)
            else:
                await self.engine.force_restart(rec.info.id)
            rec = await self._until(
                rec.info.id,
                lambda r: self._task_runs(r.info.id) and r.info.task_id != old_task,
            )
        return self.registry.snapshot_of(rec)

    async def delete_container(self, ref: str) -> str:
        rec = self.registry.resolve(ref)
        flow_id = rec.info.id
        await self.engine.remove(flow_id)
        self.services.pop(flow_id, None)
        await self.forget(flow_id)
        self._spawn(self.volumes.after_delete(), "volume-sweep")  # its socket volumes
        return flow_id

    async def forget(self, container_id: str) -> None:
        self._containers.pop(container_id, None)
        if self.registry.remove(container_id) is not None:
            await self.hub.close(container_id)
            await self.drop_queue(container_id)

    async def update_container(self, ref: str, code_path: str) -> ContainerSnapshot:
        rec = self.registry.resolve(ref)
        node_id, cid = self._where(rec)
        await self._request(node_id, "update", {"container_id": cid, "code_path": code_path})
        return self.registry.snapshot_of(rec)

    # -- reads that need the node

    async def get_logs(
        self, ref: str, tail: int = 100, *, since: float | None = None, timestamps: bool = False
    ) -> LogTail:
        if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
            raise InvalidRequest("tail must be a non-negative integer", field="tail")
        check_since(since)
        rec = self.registry.resolve(ref)
        node_id, cid = self._where(rec, running=False)
        ask: dict[str, Any] = {"container_id": cid, "tail": tail}
        if since is not None or timestamps:  # an older agent knows neither key
            ask |= {"since": since, "timestamps": timestamps}
        reply = await self._request(node_id, "logs", ask)
        result = reply.result or {}
        lines = LogTail(str(line) for line in result.get("lines") or [])
        lines.truncated = bool(result.get("truncated"))
        return lines

    async def inspect_container(self, ref: str) -> FlowConfig:
        rec = self.registry.resolve(ref)
        node_id, cid = self._where(rec, running=False)
        reply = await self._request(node_id, "inspect", {"container_id": cid})
        cfg = ContainerInspectedOut.decode(reply.result or {}).to_core()
        # the agent names its task's container; the client knows the flow
        snap = self.registry.snapshot_of(rec)
        return replace(cfg, container_id=snap.id, name=snap.name, node=snap.node)

    async def follow_logs(self, ref: str) -> str:
        rec = self.registry.resolve(ref)
        node_id, cid = self._where(rec)
        await self._request(node_id, "follow", {"container_id": cid})
        self._followed[rec.info.id] = self._followed.get(rec.info.id, 0) + 1
        return rec.info.id

    async def unfollow_logs(self, container_id: str) -> None:
        try:
            rec = self.registry.resolve(container_id)
        except ContainerNotFound:
            return
        left = self._followed.get(rec.info.id, 0) - 1
        if left > 0:
            self._followed[rec.info.id] = left
            return
        self._followed.pop(rec.info.id, None)
        with contextlib.suppress(Exception):
            node_id, cid = self._where(rec, running=False)
            await self._request(node_id, "unfollow", {"container_id": cid})

    def watch_stats(self, owner: str, container_ids: Any) -> None:
        ids, _unknown = self.registry.resolve_many(list(container_ids), "container_ids")
        self._watch[owner] = frozenset(ids)
        self._spawn(self._send_watches(), "watch-stats")

    def unwatch_stats(self, owner: str) -> None:
        if self._watch.pop(owner, None) is not None:
            self._spawn(self._send_watches(), "watch-stats")

    async def _send_watches(self) -> None:
        wanted = set().union(*self._watch.values()) if self._watch else set()
        per_node: dict[str, list[str]] = {n: [] for n in self.links.connected_nodes()}
        for flow_id in wanted:
            rec = self.registry.records.get(flow_id)
            if rec is None:
                continue
            with contextlib.suppress(FlowMgrError):  # no task, or its node not linked
                node_id, cid = self._where(rec)
                per_node.setdefault(node_id, []).append(cid)
        for node_id, cids in per_node.items():
            # best effort: the next change (or the node's new link) sends the sets again
            with contextlib.suppress(FlowMgrError):
                await self._request(node_id, "watch", {"container_ids": cids}, timeout=5)

    # -- talking to agents

    def _where(self, rec: Record, *, running: bool = True) -> tuple[str, str]:
        """(node ID, task container ID) of the flow's current task, or a typed error. Swarm's
        current task decides (an agent's word may lag a move or a forced update); a task that
        has no container yet is starting, and the older one is not asked in its place."""
        flow_id = rec.info.id
        service = self.services.get(flow_id)
        task = service.current if service is not None else None
        if task is not None:
            node_id, cid = task.node_id, task.container_id
        else:  # not in the last poll yet: the agent's word
            node_id = self.links.node_of(flow_id) or rec.info.node_id
            link = self.links.nodes.get(node_id or "")
            held = link.flows.get(flow_id) if link is not None else None
            cid = held.container_id if held is not None else None
        if node_id is None or cid is None:
            where = f" on node {task.node or node_id}" if task is not None and node_id else ""
            raise FlowSocketConnectionError(
                f"{rec.info.name} has no running container{where} yet (state {rec.state}"
                + (f", Swarm's task {task.state}" if task is not None else "")
                + ")",
                details={"reason": "no_task", "container_id": flow_id, "node_id": node_id},
            )
        if running and rec.state == "unknown":
            raise NodeNotConnected(
                f"the agent of {rec.info.node or node_id}, where {rec.info.name} runs, is not "
                "linked to the hub",
                details={"reason": "node_not_connected", "node_id": node_id},
            )
        return node_id, cid

    async def _request(
        self, node_id: str, op: str, payload: dict[str, Any], timeout: float | None = None
    ) -> Any:
        if self.agents is None:
            raise NodeNotConnected(
                "the hub serves no agents (no API server registered the /agent namespace)",
                details={"reason": "node_not_connected", "node_id": node_id},
            )
        return await self.agents.request(node_id, op, payload, timeout)

    async def _send_via_agent(self, flow_id: str, message: dict[str, Any]) -> None:
        rec = self.registry.resolve(flow_id)
        node_id, cid = self._where(rec)
        await self._request(
            node_id,
            "send",
            {"container_id": cid, "message": message},
            timeout=self.settings.flow.send_timeout,
        )

    # -- what agents say

    async def _known_nodes(self) -> set[str]:
        if not self.nodes:
            with contextlib.suppress(Exception):
                self.nodes = {n.id: n for n in await self.engine.nodes()}
        return set(self.nodes)

    def _places(self, node_id: str, flow_id: str, task_id: str) -> bool:
        """Whether Swarm (as last read) puts that task of that flow on that node: an agent
        speaks for its own node's tasks only."""
        service = self.services.get(flow_id)
        return service is not None and any(
            t.id == task_id and t.node_id == node_id for t in service.tasks
        )

    async def _refresh_for_agent(self, flow_id: str) -> None:
        """Read one flow's tasks again for an agent's claim the last poll cannot confirm (a
        task just started); at most once a second per flow, whatever an agent sends."""
        if flow_id not in self.registry.records:
            return
        wait = self._refreshed.get(flow_id, 0.0) + REFRESH_EVERY - time.monotonic()
        if wait > 0:  # a claim right after a refresh: wait for the next one, do not drop it
            await asyncio.sleep(wait)
            if self._refreshed.get(flow_id, 0.0) + REFRESH_EVERY > time.monotonic():
                return  # another claim's refresh ran meanwhile
        if len(self._refreshed) > 10_000:
            self._refreshed.clear()
        self._refreshed[flow_id] = time.monotonic()
        with contextlib.suppress(FlowMgrError):
            await self._refresh_one(flow_id)

    def _on_report(self, node_id: str, report: AgentReport) -> None:
        rec = self.registry.records.get(report.flow_id)
        if report.gone or rec is None:
            self._poke.set()
            return
        service = self.services.get(report.flow_id)
        current = service.current if service is not None else None
        if current is None or current.id != report.task_id:
            # an older task's word (a dead engine's copy still sampled on its node, a node
            # coming back): neither its state nor its usage is the flow's any more
            return
        if report.sample is not None and rec.state == "running":
            sample = report.sample.to_core()
            rec.resources = sample
            self.bus.publish(StatsSampled(container_id=rec.info.id, sample=sample))
        if report.state == "unknown" and rec.state == "running":
            self._set_state(rec, "unknown", "node_engine_lost")
        elif report.state != rec.state:
            self._poke.set()

    def _on_event(self, node_id: str, event: AgentEvent) -> None:
        flow_id = event.flow_id
        if flow_id not in self.registry.records:
            return
        data = event.data
        kind = event.kind
        if kind == "message_received" and isinstance(data.get("message"), dict):
            self.channels.spoke(flow_id)
            self.bus.publish(FlowMessageReceived(container_id=flow_id, message=data["message"]))
        elif kind == "control":
            self.channels.spoke(flow_id)
            if self.channels.on_control is not None:
                self.channels.on_control(flow_id, data.get("control"))
        elif kind == "channel_connected":
            self.channels.connected(flow_id, True)
            self.bus.publish(FlowChannelConnected(container_id=flow_id))
        elif kind == "channel_lost":
            self.channels.connected(flow_id, False)
            self.bus.publish(
                FlowChannelLost(container_id=flow_id, reason=str(data.get("reason", ""))[:500])
            )
        elif kind == "frame_rejected":
            reason = str(data.get("reason", ""))[:500]
            self.bus.publish(FlowFrameRejected(container_id=flow_id, reason=reason))
        elif kind == "fenced":
            rec = self.registry.records[flow_id]
            self._fenced_tasks.add(event.task_id)
            self.moves.fenced(flow_id, event.task_id, rec.info.name)
            node = self.nodes.get(node_id)
            where = node.hostname if node is not None else node_id
            raw = data.get("cut_for")
            # the agent's number, not trusted: a plain finite number or nothing
            cut_for = None
            if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 <= raw < 1e9:
                cut_for = round(float(raw), 1)
            self.registry.record_activity(
                "container_fenced",
                flow_id,
                f"{rec.info.name}: its task on {where} was stopped by that node's agent, cut off "
                f"from the hub and the managers for {cut_for} s (so it never ran twice)",
                {
                    "node": where,
                    "task_id": event.task_id,
                    "cut_for": cut_for,
                    "name": rec.info.name,
                },
            )
        elif kind == "refused":
            rec = self.registry.records[flow_id]
            node = self.nodes.get(node_id)
            where = node.hostname if node is not None else node_id
            why = str(data.get("why", ""))[:500]  # the agent's words, capped
            self._refused[event.task_id] = f"refused by the agent of node {where}: {why}"
            self.registry.record_activity(
                "container_refused",
                flow_id,
                f"{rec.info.name}: its task on {where} was stopped by that node's agent: {why}",
                {"node": where, "task_id": event.task_id, "why": why, "name": rec.info.name},
            )
        elif kind == "log_line" and isinstance(data.get("line"), str):
            self.bus.publish(LogLineReceived(container_id=flow_id, line=data["line"][:65536]))

    def _on_link_event(self, event: LinkEvent) -> None:
        if isinstance(event, NodeStatusChanged):
            node = self.nodes.get(event.node_id)
            said = NodeStatusReported(
                node_id=event.node_id,
                node=event.hostname,
                state=node.state if node is not None else "unknown",
                agent=event.agent,
                reason=event.reason,
                down_for=None if event.down_for is None else round(event.down_for, 3),
            )
            self.bus.publish(said)
            if event.agent == "connected":
                self._poke.set()
                # what it missed while cut off: the volumes of flows deleted meanwhile
                self._spawn(self.volumes.sweep([event.node_id]), "volume-sweep")
                if self._watch:
                    self._spawn(self._send_watches(), "watch-stats")
            self._node_said[event.node_id] = said
        elif isinstance(event, FlowsUnknown):
            for rec in list(self.registry.records.values()):
                if rec.info.node_id == event.node_id and rec.state == "running":
                    self._set_state(rec, "unknown", event.reason)
                    self.channels.connected(rec.info.id, False)

    def _set_state(self, rec: Record, state: State, reason: str | None) -> None:
        old = rec.state
        rec.state = state
        rec.info = replace(rec.info, status=state)
        if state != "running":
            rec.resources = None
        self.bus.publish(
            ContainerStateChanged(
                container_id=rec.info.id,
                old_state=old,
                new_state=state,
                snapshot=self.registry.snapshot_of(rec),
                reason=reason,
            )
        )
        self.registry.record_activity(
            "status_change",
            rec.info.id,
            f"{rec.info.name}: {old} -> {state}" + (f" ({reason})" if reason else ""),
            {"old_state": old, "new_state": state, "name": rec.info.name, "reason": reason},
        )

    # -- the poll of Swarm's managers

    async def _poll_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self._poll()
                failures = 0
                if not self._listed_once:
                    self._listed_once = True
                    self._spawn(self.volumes.sweep(), "volume-sweep")  # the links it skipped
                if not self._swarm_up:
                    self._swarm_up = True
                    if self._swarm_change is not None:
                        self._swarm_change = DockerConnectionRestored()
                        self.bus.publish(self._swarm_change)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures += 1
                logger.warning("Swarm poll failed (%d in a row): %s", failures, err)
                if self._swarm_up or self._swarm_change is None:
                    self._swarm_up = False
                    self._swarm_change = DockerConnectionLost(
                        reason=f"the Swarm managers do not answer: {err}"[:500]
                    )
                    self.bus.publish(self._swarm_change)
            self._polled.set()
            busy = time.monotonic() - self._last_change < 30 or bool(self.registry._acting)
            # a node in trouble: Swarm's verdict (down, tasks shut down) is awaited closely
            urgent = (
                any(n.state != "ready" for n in self.nodes.values())
                or any(r.state == "unknown" for r in self.registry.records.values())
                or bool(self.moves.orphaned)
            )
            pause = POLL_URGENT if urgent else POLL_BUSY if busy else POLL_QUIET
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._poke.wait()
                    await asyncio.sleep(0.05)  # gather a burst of pokes into one poll
            self._poke.clear()

    async def _poll(self) -> None:
        async with self._poll_lock:
            nodes = await self.engine.nodes()
            services = await self.engine.list_flow_services(self.settings.docker.instance)
            self.nodes = {n.id: n for n in nodes}
            seen = set()
            for service in services:
                seen.add(service.id)
                await self._apply_service(service)
            for flow_id in [f for f in self.registry.records if f not in seen]:
                self.services.pop(flow_id, None)
                await self.forget(flow_id)
            self._forget_tasks_except({t.id for s in services for t in s.tasks})

    def _forget_tasks_except(self, listed: set[str]) -> None:
        """What the hub remembers per task (moved, fenced, refused, crash said) is dropped
        once Swarm no longer lists the task (it keeps a few per flow): bounded as Swarm's."""
        self._fenced_tasks &= listed
        self.moves.forget_except(listed)
        self._crashes_said &= listed
        for task_id in [t for t in self._refused if t not in listed]:
            del self._refused[task_id]

    async def _refresh_one(self, flow_id: str) -> Record:
        async with self._poll_lock:
            service = await self.engine.flow_service(flow_id)
            return await self._apply_service(service)

    async def _until(self, flow_id: str, done: Any, timeout: float | None = None) -> Record:
        """Poll the flow until `done(record)` (the API answers when it holds), or a typed
        error after `docker.call_timeout` seconds."""
        limit = self.settings.docker.call_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            rec = await self._refresh_one(flow_id)
            if done(rec):
                return rec
            service = self.services.get(flow_id)
            task = service.current if service is not None else None
            if task is not None and task.state == "failed" and task.exit_code is not None:
                return rec  # it ran and ended on its own: a crash, said as one
            if task is not None and task.state in ("failed", "rejected") and task.error:
                raise DockerApiError(
                    f"{rec.info.name}: Swarm's task failed: {task.error}",
                    details={"reason": "task_failed", "task_id": task.id, "node": task.node},
                )
            if loop.time() >= deadline:
                raise DockerApiError(
                    f"{rec.info.name} is {rec.state} after {limit:g} s "
                    f"(Swarm's task: {task.state if task else 'none'})",
                    details={"reason": "timeout", "state": rec.state},
                )
            await asyncio.sleep(0.25)

    async def _apply_service(self, service: FlowService) -> Record:
        old = self.services.get(service.id)
        self.services[service.id] = service
        if old is None or old.version != service.version or old.tasks != service.tasks:
            self._last_change = time.monotonic()
        task = service.current
        before = self.registry.records.get(service.id)
        state, exit_code, why = self._state_of(service, task, before.state if before else None)
        if before is not None and state == "unknown" and before.state != "unknown":
            self._set_state(before, "unknown", why)  # said with its reason
        labels = dict(service.labels)
        ports, problem = ports_as_written(labels.get(PORTS_LABEL), {})
        node = self.nodes.get(task.node_id) if task and task.node_id else None
        info = ContainerInfo(
            id=service.id,
            name=service.name,
            image=service.image,
            status=state,
            health="none",
            created=service.created or datetime.now(UTC),
            started_at=task.updated if task is not None and state == "running" else None,
            finished_at=None,
            exit_code=exit_code,
            oom_killed=False,
            pid=0,
            labels=labels,
            ports=ports,
            ports_problem=problem,
            node=node.hostname if node else (task.node if task else None),
            node_id=task.node_id if task else None,
            task_id=task.id if task else None,
        )
        old_node, old_state = (before.info.node_id, before.state) if before else (None, None)
        rec, _ = self.registry.apply(info)
        if (
            old_node is not None
            and info.node_id is not None
            and old_node != info.node_id
            and old_state == rec.state
            and rec.state in ("running", "unknown")
        ):
            # moved with no state change seen in between: say where it runs now
            self._set_state(rec, rec.state, None)
        if task is not None:
            await self._after(service, task, rec)
            known = self._containers.get(service.id)
            if task.container_id and task.container_id != known:
                self._containers[service.id] = task.container_id
                if known is not None:
                    self._follow_moved(rec)
        return rec

    def _follow_moved(self, rec: Record) -> None:
        """A flow has a new container (moved, restarted): what clients watch or follow of it
        is asked of that container's agent again."""
        if any(rec.info.id in ids for ids in self._watch.values()):
            self._spawn(self._send_watches(), "watch-stats")
        if rec.info.id in self._followed:
            self._spawn(self._refollow(rec), "refollow-logs")

    async def _refollow(self, rec: Record) -> None:
        """Follow the flow's new container once it runs and its node's agent is linked."""
        for _ in range(int(REFOLLOW_FOR / 0.5)):
            if rec.info.id not in self._followed or rec.info.id not in self.registry.records:
                return  # nobody follows it any more, or it is gone
            try:
                node_id, cid = self._where(rec)
                await self._request(node_id, "follow", {"container_id": cid}, timeout=5)
                logger.info("%s: following its logs in its new container", rec.info.name)
                return
            except FlowMgrError:
                await asyncio.sleep(0.5)
        logger.warning("%s: its logs could not be followed on its new node", rec.info.name)

    def _state_of(
        self, service: FlowService, task: FlowTask | None, prev: str | None
    ) -> tuple[str, int, str | None]:
        """The flow's state from its service and current task; while Swarm is between tasks
        (placing, preparing, removing) the flow keeps the state it had, as a container does
        while `docker start` runs: one `status_changed` per real change."""
        before = prev or "created"
        if service.replicas == 0:
            if task is not None and task.state == "running":  # being stopped
                return "running", 0, None
            return ("created" if before == "created" else "stopped"), 0, None
        if task is None:
            return before, 0, None
        if task.state == "running":
            link = self.links.nodes.get(task.node_id or "")
            if link is not None and not link.connected:
                return "unknown", 0, link.reason
            node = self.nodes.get(task.node_id or "")
            if node is not None and node.state != "ready":
                # the managers lost the node (its daemon, its network)
                return "unknown", 0, f"node_{node.state}"
            held = link.flows.get(service.id) if link is not None else None
            if held is not None and held.task_id == task.id and held.state == "unknown":
                return "unknown", 0, "node_engine_lost"  # its agent lost the node's engine
            return "running", 0, None
        if task.state in ("failed", "rejected"):
            return "exited", task.exit_code if task.exit_code is not None else 1, None
        if self.moves.shut_down_by_swarm(service, task):
            return "unknown", 0, "task_shut_down"  # not running; the hub starts it again
        if task.state == "complete":
            return "exited", 0, None
        return before, 0, None

    async def _after(self, service: FlowService, task: FlowTask, rec: Record) -> None:
        """A crash said once per task; a flow whose task ended without it moved (hub_moves)."""
        if (
            task.state == "failed"
            and task.id not in self._crashes_said
            and not self.registry.is_acted_on(rec.info.id)
        ):
            self._crashes_said.add(task.id)
            self._spawn(self._say_crash(rec, task), "crash-report")
        self.moves.after_poll(service, task)

    async def _say_crash(self, rec: Record, task: FlowTask) -> None:
        # a task its node's fence stopped is no crash: the agent says so once its link is back,
        # about when the managers learn the task ended (both wait for the network)
        await asyncio.sleep(CRASH_GRACE)
        if task.id in self._fenced_tasks:
            return
        logs: list[str] = []
        if task.node_id and task.container_id:
            with contextlib.suppress(Exception):
                reply = await self._request(
                    task.node_id,
                    "logs",
                    {"container_id": task.container_id, "tail": CRASH_LOG_LINES},
                    timeout=5,
                )
                logs = [str(x) for x in (reply.result or {}).get("lines") or []]
        exit_code = task.exit_code if task.exit_code is not None else 1
        why = self._refused.pop(task.id, None) or task.error or f"exit code {exit_code}"
        self.registry.crashed(rec, exit_code, why, logs)
