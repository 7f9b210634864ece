"""The cluster agent (`flowmgr --agent`, docs/CLUSTER.md "Roles"): one per node.

It runs today's per-host core (ContainerManager) over the node's own engine (DOCKER_HOST),
adopting the task containers of flow services (our labels plus Swarm's service and task ids),
listening for each in its flow's socket volume (agent_place.py), and links out to the hub
(AgentLink) to:

- report: every state change of a task's container, every resource sample, a container gone
  (AgentReport; the hello lists what the core holds);
- forward: flow frames, control frames, channel up/down, rejected frames, followed log lines
  (AgentEvent); crashes are NOT reported (the hub derives them from Swarm's task states and
  asks for `logs`);
- answer the hub's requests: send, logs, follow, unfollow, watch, update, forget (payloads in
  `Agent.handle`), each for a task container of THIS node only (else ContainerNotFound);
- fence: cut from the hub for `cluster.fence_seconds` AND from the swarm's managers (the node
  list does not answer, or lists half or fewer managers reachable; or `docker info` says the
  node is not an active swarm member), it stops every running flow container here and keeps
  them stopped while that lasts. A dead hub alone never stops a flow.

The core runs in "agent mode": a copy of the settings with `cluster.mode` "single" (it serves
this engine alone), the journal off (the hub keeps the journal; the agent keeps no durable
state) and its state directory under `<socket_dir>/agent-<node id>` (apart from a hub's on
the same host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from server import __version__
from server.cluster.agent_docker import AgentAdapter
from server.cluster.agent_guard import guard
from server.cluster.agent_link import AgentLink, new_instance
from server.cluster.agent_place import (
    SERVICE_LABEL,
    TASK_LABEL,
    VolumePlace,
    flow_name_of,
)
from server.cluster.hub_link import agent_token_from_file
from server.cluster.link_models import (
    MAX_FLOWS_PER_NODE,
    AgentEvent,
    AgentHello,
    AgentReport,
    FlowHeld,
    FlowState,
    Request,
)
from server.core.bus import EventBus
from server.core.config import Settings, load_cli_settings
from server.core.container_info import ContainerInfo
from server.core.errors import (
    ConfigError,
    ContainerNotFound,
    DockerApiError,
    FlowMgrError,
    InvalidRequest,
)
from server.core.events import (
    ContainerAdded,
    ContainerRemoved,
    ContainerStateChanged,
    DockerConnectionLost,
    DockerConnectionRestored,
    Event,
    FlowChannelConnected,
    FlowChannelLost,
    FlowFrameRejected,
    FlowMessageReceived,
    LogLineReceived,
    StatsSampled,
)
from server.core.manager import ContainerManager
from server.core.registry import Record
from server.core.swarm.spec import SOCKET_VOLUME_PREFIX
from server.logging_setup import setup_logging
from server.wire.answers import ResourceUsageOut
from server.wire.config_answer import ContainerInspectedOut

__all__ = ["Agent", "agent_core_settings", "run_agent", "agent_main", "WATCH_OWNER"]

logger = logging.getLogger(__name__)

WATCH_OWNER = "hub"
"""The core's stats watcher the hub's `watch` requests set."""
PROBE_TIMEOUT = 1.0
"""Seconds the managers have to answer the fence's probe (`docker info`, the node list)."""
FENCE_TICK = 0.1
"""How often the fence looks (it acts at most this late)."""
LINKED_TICK = 1.0
"""How often the fence loop looks while the hub is linked."""
FENCE_STOP_TIMEOUT = 1
"""Seconds a fenced flow has between SIGTERM and SIGKILL."""
_FORWARDED = (
    ContainerAdded,
    ContainerStateChanged,
    ContainerRemoved,
    StatsSampled,
    FlowMessageReceived,
    FlowChannelConnected,
    FlowChannelLost,
    FlowFrameRejected,
    LogLineReceived,
)


def agent_core_settings(settings: Settings, node_id: str) -> Settings:
    """The agent's core's settings: one engine (mode single), no journal, its own state dir
    (`<socket_dir>/agent-<node id>`: apart from a hub's, and from other nodes' agents on a
    test host sharing one configuration)."""
    return settings.model_copy(
        update={
            "cluster": settings.cluster.model_copy(update={"mode": "single"}),
            "journal": settings.journal.model_copy(update={"enabled": False}),
            "socket_dir": os.path.join(settings.socket_dir, f"agent-{node_id}"),
        }
    )


def task_ids(rec: Record) -> tuple[str, str] | None:
    """(flow_id, task_id) of a Swarm task's container of ours, else None."""
    labels = rec.info.labels
    flow_id, task_id = labels.get(SERVICE_LABEL), labels.get(TASK_LABEL)
    if not flow_id or not task_id or flow_name_of(labels) is None:
        return None
    return flow_id, task_id


class Agent:
    """One node's agent: `await start()`, `await stop()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        hub_url: str,
        agent_token: str,
        docker_host: str | None = None,
        backoff_max: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.core_settings: Settings | None = None
        self.hub_url = hub_url
        self._token = agent_token
        self.docker_host = docker_host
        self.clock = clock
        self.adapter = AgentAdapter(settings.docker.call_timeout, base_url=docker_host)
        self.probe = AgentAdapter(PROBE_TIMEOUT + 1, base_url=docker_host)
        """The fence's engine client: short HTTP timeouts (a probe stuck on a lost quorum
        holds one thread for ~2 s, not for docker.call_timeout)."""
        self.bus = EventBus()
        self.instance = new_instance()
        self.node_id = ""
        self.hostname = ""
        self.docker_root = ""
        self.core: ContainerManager | None = None
        self.link: AgentLink | None = None
        self._backoff_max = backoff_max
        self._untap: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._known: dict[str, tuple[str, str]] = {}
        self._fenced_flows: list[tuple[str, str, float]] = []
        """(flow, task, seconds cut off) the fence stopped, said to the hub when it is back."""
        """Container id -> (flow_id, task_id) of the tasks reported (for `gone`)."""
        self._by_flow: dict[str, set[str]] = {}
        """Flow id -> its task containers here (the current one and a few stopped older)."""
        self._outgoing: asyncio.Queue[AgentReport | AgentEvent] = asyncio.Queue(maxsize=10_000)
        self.managers_reachable: bool | None = None
        """The fence probe's last answer (None: not asked since the link went down)."""
        self.managers_why = ""
        self.fenced = False
        self.fence_stops = 0
        """Flow containers stopped by the fence (since start)."""
        self._guarding: set[str] = set()
        self.engine_lost = False
        """The node's engine is gone (the core's monitor lost it): its flows are `unknown`."""
        self.swap_limited = 0
        """Task containers whose swap the guard limited to their memory (since start)."""
        self.refused = 0
        """Task containers the guard stopped (since start)."""

    # -- lifecycle

    async def start(self) -> None:
        """Ask the engine who this node is, start the core, link to the hub, start the fence."""
        info = await self._engine_info()
        swarm = info.get("Swarm") or {}
        self.node_id = str(swarm.get("NodeID") or "")
        self.hostname = str(info.get("Name") or "")
        self.docker_root = str(info.get("DockerRootDir") or "")
        if not self.node_id:
            raise ConfigError(
                "this engine is not a Swarm node (docker info: Swarm.NodeID is empty): an "
                "agent serves a node of the cluster; join it to the swarm first"
            )
        if not os.path.isabs(self.docker_root):
            raise ConfigError(f"docker info gives no usable DockerRootDir ({self.docker_root!r})")
        place = VolumePlace(
            self.adapter,
            docker_root=self.docker_root,
            socket_mount=self.settings.docker.socket_mount,
            instance=self.settings.docker.instance,
            newest=self._is_newest,
        )
        # a tap, not a subscription: called as each event is published, in order, while the
        # registry still holds the container (a removal's ids are remembered from before)
        self._untap = self.bus.add_tap(self._tap)
        self.core_settings = agent_core_settings(self.settings, self.node_id)
        self.core = ContainerManager(
            self.core_settings, bus=self.bus, adapter=self.adapter, socket_place=place
        )
        # the tasks of a flow on this node share its volume's path: the newest holds it, and
        # the check is made at the moment of the bind (verify's earlier one can be overtaken);
        # the channel hub closes the older one's channel when the newer one binds
        self.core.hub.may_listen = self._may_listen
        await self.core.start()
        self.core.hub.on_control = self._on_control  # the agent keeps no outbox of its own
        cl = self.settings.cluster
        self.link = AgentLink(
            self.hub_url,
            self._token,
            self.hello,
            self.handle,
            heartbeat=cl.agent_heartbeat,
            agent_timeout=cl.agent_timeout,
            fence_seconds=cl.fence_seconds,
            backoff_max=self._backoff_max,
        )
        self.link.start()
        self._spawn(self._send(), "agent-send")
        self._spawn(self._fence_loop(), "agent-fence")
        logger.info(
            "agent of node %s (%s) started: %d flow tasks here, hub %s",
            self.node_id,
            self.hostname,
            len(self.hello().flows),
            self.hub_url,
        )

    async def _engine_info(self) -> dict[str, Any]:
        """`docker info`, waiting (capped back-off, said in the log) while the engine is down:
        an agent started before its node's daemon waits for it."""
        delay = 0.5
        while True:
            try:
                return await self.adapter.info()
            except DockerApiError as err:
                logger.warning("agent: the node's engine does not answer (%s); retrying", err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        """Unlink, stop the core (the flows keep running), close the engine clients."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self.link is not None:
            await self.link.stop()
        if self._untap is not None:
            self._untap()
        if self.core is not None:
            await self.core.stop()  # closes self.adapter too
        else:
            await self.adapter.close()
        await self.probe.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what the hub is told

    def _records(self) -> list[tuple[Record, str, str]]:
        core = self.core
        if core is None:
            return []
        out = []
        for rec in core.registry.records.values():
            ids = task_ids(rec)
            if ids is not None:
                out.append((rec, *ids))
        return out

    def _current(self, flow_id: str) -> tuple[Record, str] | None:
        """The flow's newest task container here, and its task id (Swarm keeps the containers
        of a few older tasks, stopped, next to the current one)."""
        core = self.core
        best: tuple[Record, str] | None = None
        for cid in self._by_flow.get(flow_id, ()):
            rec = None if core is None else core.registry.records.get(cid)
            ids = None if rec is None else task_ids(rec)
            if rec is not None and ids is not None and ids[0] == flow_id:
                if best is None or rec.info.created > best[0].info.created:
                    best = (rec, ids[1])
        return best

    def _said(self, rec: Record) -> FlowState:
        """The state told to the hub: without the engine the registry still says running and
        the cgroup samples go on (the processes run under their shims), but nobody can say
        the flow runs: `unknown`."""
        return "unknown" if self.engine_lost and rec.state == "running" else rec.state

    def hello(self) -> AgentHello:
        """The node and the flow tasks the core holds (one per flow: the newest task)."""
        flows: dict[str, FlowHeld] = {}
        for rec, flow_id, task_id in sorted(self._records(), key=lambda r: r[0].info.created):
            flows[flow_id] = FlowHeld(
                flow_id=flow_id, task_id=task_id, container_id=rec.info.id, state=self._said(rec)
            )
        return AgentHello(
            node_id=self.node_id,
            hostname=self.hostname,
            version=__version__,
            instance=self.instance,
            flows=list(flows.values())[:MAX_FLOWS_PER_NODE],
        )

    def _on_control(self, container_id: str, value: Any) -> None:
        ids = self._ids_of(container_id)
        if ids is not None:
            self._queue(
                AgentEvent(flow_id=ids[0], task_id=ids[1], kind="control", data={"control": value})
            )

    def _ids_of(self, container_id: str) -> tuple[str, str] | None:
        core = self.core
        rec = None if core is None else core.registry.records.get(container_id)
        if rec is not None:
            ids = task_ids(rec)
            if ids is not None:
                self._known[container_id] = ids
                self._by_flow.setdefault(ids[0], set()).add(container_id)
            return ids
        return self._known.get(container_id)

    def _queue(self, item: AgentReport | AgentEvent) -> None:
        try:
            self._outgoing.put_nowait(item)
        except asyncio.QueueFull:
            logger.warning("agent: the hub falls behind; dropped a %s", type(item).__name__)

    def _tap(self, event: Event) -> None:
        if isinstance(event, DockerConnectionLost | DockerConnectionRestored):
            self._engine_changed(lost=isinstance(event, DockerConnectionLost))
            return
        runs = (
            event.snapshot.id
            if isinstance(event, ContainerAdded) and event.snapshot.state == "running"
            else event.container_id
            if isinstance(event, ContainerStateChanged) and event.new_state == "running"
            else None
        )
        if runs is not None and runs not in self._guarding and self._ids_of(runs) is not None:
            self._guarding.add(runs)
            self._spawn(self._guard(runs), "isolation-guard")
        if not isinstance(event, _FORWARDED):
            return
        try:
            item = self._translated(event)
        except Exception as err:  # never into the core's publish: a value the models refuse
            logger.warning("agent: not forwarded (%s): %s", type(event).__name__, err)
            return
        if item is not None:
            self._queue(item)

    async def _guard(self, container_id: str) -> None:
        """Hold a task container that just started to what its spec could not ask for
        (agent_guard); a refusal is told to the hub, which says it with the crash."""
        try:
            verdict = await guard(self.adapter, container_id)
        finally:
            self._guarding.discard(container_id)
        if verdict.swap_limited:
            self.swap_limited += 1
        ids = self._ids_of(container_id)
        if verdict.refused is not None and ids is not None:
            self.refused += 1
            self._queue(
                AgentEvent(
                    flow_id=ids[0], task_id=ids[1], kind="refused", data={"why": verdict.refused}
                )
            )

    def _is_newest(self, info: ContainerInfo) -> bool:
        """Whether no other task container of the same flow here is newer (the core's
        registry: it holds `info` already when the socket place is asked)."""
        flow_id = info.labels.get(SERVICE_LABEL)
        if not flow_id or self.core is None:
            return True
        return not any(
            rec.info.labels.get(SERVICE_LABEL) == flow_id and rec.info.created > info.created
            for rec in self.core.registry.records.values()
        )

    def _may_listen(self, container_id: str) -> bool:
        core = self.core
        rec = None if core is None else core.registry.records.get(container_id)
        return rec is not None and self._is_newest(rec.info)

    def _engine_changed(self, *, lost: bool) -> None:
        """The node's engine died (or is back): what this node runs is `unknown` to the hub at
        once, rather than when the managers notice the node is gone (seconds later)."""
        self.engine_lost = lost
        for flow_id in {flow for _rec, flow, _task in self._records()}:
            current = self._current(flow_id)
            if current is None:
                continue
            rec, task_id = current
            if rec.state != "running":
                continue
            self._queue(
                AgentReport(
                    flow_id=flow_id,
                    task_id=task_id,
                    container_id=rec.info.id,
                    state="unknown" if lost else rec.state,
                )
            )
        if lost:
            self._spawn(self._fence_without_engine(), "engine-fence")

    async def _fence_without_engine(self) -> None:
        """The engine is dead and its containers run on under their shims, where neither Swarm
        nor the engine can stop them, while Swarm starts the flows elsewhere: past
        `fence_seconds` without the engine, end them here by their pids (each checked to be
        still that container's process), so no flow runs twice for longer."""
        core = self.core
        if core is None:
            return
        await asyncio.sleep(self.settings.cluster.fence_seconds)
        if core.docker_available:
            return
        for rec, flow_id, task_id in self._records():
            if rec.state != "running" or rec.info.pid <= 0:
                continue
            if not await asyncio.to_thread(_is_process_of, rec.info.pid, rec.info.id):
                continue
            try:
                os.kill(rec.info.pid, signal.SIGKILL)
            except OSError as err:
                logger.error("agent: engine fence: cannot end %s: %s", rec.info.name, err)
                continue
            self.fence_stops += 1
            self._fenced_flows.append((flow_id, task_id, self.settings.cluster.fence_seconds))
            logger.warning(
                "agent: FENCED without an engine: ended %s (pid %d): the engine has been gone "
                "for %.0f s and Swarm runs the flow elsewhere",
                rec.info.name,
                rec.info.pid,
                self.settings.cluster.fence_seconds,
            )
        self._say_fenced()  # the link is up: the hub hears it now

    def _translated(self, event: Event) -> AgentReport | AgentEvent | None:
        core = self.core
        assert core is not None
        if isinstance(event, ContainerRemoved):
            ids = self._known.pop(event.container_id, None)
            if ids is None:
                return None
            held = self._by_flow.get(ids[0])
            if held is not None:
                held.discard(event.container_id)
                if not held:
                    del self._by_flow[ids[0]]
            current = self._current(ids[0])
            if current is not None:
                # an older task's container of a flow that still has a task here: the flow is
                # not gone from this node, its current task is what the hub holds
                rec, task_id = current
                return AgentReport(
                    flow_id=ids[0], task_id=task_id, container_id=rec.info.id, state=self._said(rec)
                )
            return AgentReport(
                flow_id=ids[0],
                task_id=ids[1],
                container_id=event.container_id,
                state="removing",
                gone=True,
            )
        cid = str(
            event.snapshot.id
            if isinstance(event, ContainerAdded)
            else getattr(event, "container_id", "")
        )
        ids = self._ids_of(cid)
        if ids is None:
            return None
        flow_id, task_id = ids
        if isinstance(event, (ContainerAdded, ContainerStateChanged, StatsSampled)):
            current = self._current(flow_id)
            if current is None or current[0].info.id != cid:
                return None  # an older task's container (Swarm keeps a few): not the flow's
            rec = current[0]
            sample = None
            if isinstance(event, StatsSampled):
                sample = ResourceUsageOut.model_validate(ResourceUsageOut.payload(event.sample))
            return AgentReport(
                flow_id=flow_id,
                task_id=task_id,
                container_id=cid,
                state=self._said(rec),
                sample=sample,
            )
        kind: Any
        data: dict[str, Any]
        if isinstance(event, FlowMessageReceived):
            kind, data = "message_received", {"message": event.message}
        elif isinstance(event, FlowChannelConnected):
            kind, data = "channel_connected", {}
        elif isinstance(event, FlowChannelLost):
            kind, data = "channel_lost", {"reason": event.reason}
        elif isinstance(event, FlowFrameRejected):
            kind, data = "frame_rejected", {"reason": event.reason}
        elif isinstance(event, LogLineReceived):
            kind, data = "log_line", {"line": event.line}
        else:
            return None
        return AgentEvent(flow_id=flow_id, task_id=task_id, kind=kind, data=data)

    async def _send(self) -> None:
        while True:
            item = await self._outgoing.get()
            link = self.link
            if link is None:
                continue
            if isinstance(item, AgentReport):
                await link.report(item)
            else:
                await link.event(item)

    # -- the hub's requests

    def _ours(self, value: object) -> str:
        """The full id of a flow task's container on this node, or ContainerNotFound."""
        core = self.core
        rec = (
            core.registry.records.get(value)
            if core is not None and isinstance(value, str)
            else None
        )
        if rec is None or task_ids(rec) is None:
            shown = value[:80] if isinstance(value, str) else type(value).__name__
            raise ContainerNotFound(
                f"no flow task container {shown!r} on node {self.hostname or self.node_id}",
                details={"container_id": shown, "node_id": self.node_id},
            )
        return rec.info.id

    async def handle(self, request: Request) -> dict[str, Any]:
        """One hub request (AgentLink's handler). Payloads and results:

        - send {container_id, message: object} -> {}  (the frame written to the flow's socket)
        - logs {container_id, tail: int = 100, since?, timestamps?} -> {lines: [str], truncated}
        - follow / unfollow {container_id} -> {}  (lines then come as `log_line` events)
        - watch {container_ids: [str]} -> {}  (the hub's watched set: those sampled fast)
        - update {container_id, code_path} -> refused (validation_error, details.reason
          "update_ends_swarm_task"): the core's stop-copy-start would end the Swarm task
        - forget {keep: [flow id or flow name]} -> {removed: [volume names]}
        - inspect {container_id} -> the masked configuration (`container_inspected`-shaped)
        """
        core = self.core
        if core is None:
            raise ContainerNotFound("the agent's core is not started")
        p = request.payload
        allowed = _PAYLOAD_KEYS[request.op]
        extra = sorted(set(p) - allowed)
        if extra:
            raise InvalidRequest(
                f"{request.op}: unknown payload key {extra[0][:40]!r}", field=extra[0][:40]
            )
        if request.op == "send":
            cid = self._ours(p.get("container_id"))
            message = p.get("message")
            if not isinstance(message, dict):
                raise InvalidRequest("message must be an object", field="message")
            await core.send_message(cid, message)
            return {}
        if request.op == "logs":
            cid = self._ours(p.get("container_id"))
            tail, since = p.get("tail", 100), p.get("since")
            lines = await core.get_logs(
                cid, tail, since=since, timestamps=p.get("timestamps", False)
            )
            return {"lines": list(lines), "truncated": bool(lines.truncated)}
        if request.op == "inspect":
            cfg = await core.inspect_container(self._ours(p.get("container_id")))
            return ContainerInspectedOut.payload(cfg)  # masked by the agent's core
        if request.op == "follow":
            await core.follow_logs(self._ours(p.get("container_id")))
            return {}
        if request.op == "unfollow":
            await core.unfollow_logs(self._ours(p.get("container_id")))
            return {}
        if request.op == "watch":
            ids = p.get("container_ids")
            if not isinstance(ids, list) or len(ids) > MAX_FLOWS_PER_NODE:
                raise InvalidRequest(
                    f"container_ids must be a list of at most {MAX_FLOWS_PER_NODE} ids",
                    field="container_ids",
                )
            core.watch_stats(WATCH_OWNER, [self._ours(c) for c in ids])
            return {}
        if request.op == "update":
            cid = self._ours(p.get("container_id"))
            if not isinstance(p.get("code_path"), str):
                raise InvalidRequest("code_path must be a string", field="code_path")
            # The core's update stops the container for the copy (no flow process may race the
            # root extraction) and starts it again. For a Swarm task that is the task's end:
            # Swarm marked it complete/shutdown while the agent ran the container again outside
            # its control (measured on the test cluster), a copy Swarm does not know of and
            # that a restart policy `any` would run twice. Refused, said as such.
            raise InvalidRequest(
                "update_container is not available for a flow on a Swarm cluster: stopping its "
                "task's container for the copy ends the task for Swarm; put the flow's code in "
                "its image or in a volume its nodes share (docs/CLUSTER.md)",
                field="code_path",
                details={"container_id": cid, "reason": "update_ends_swarm_task"},
            )
        if request.op == "forget":
            keep = p.get("keep")
            if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
                raise InvalidRequest("keep must be a list of flow ids", field="keep")
            return {"removed": await self.forget(set(keep))}
        raise InvalidRequest(f"op {request.op!r} is not served", field="op")

    async def forget(self, keep: set[str]) -> list[str]:
        """Remove this instance's socket volumes of flows neither in `keep` (flow ids or
        names) nor held here, and not in use (the engine refuses to remove one in use)."""
        held: set[str] = set()
        for rec, flow_id, _ in self._records():
            name = flow_name_of(rec.info.labels)
            if flow_id in keep and name is not None:
                held.add(name)
        labels = ["flowmgr.managed=true", f"flowmgr.instance={self.settings.docker.instance}"]
        removed = []
        for volume in await self.adapter.volumes(labels):
            vname = str(volume.get("Name") or "")
            flow = (volume.get("Labels") or {}).get("flowmgr.name")
            if (
                not vname.startswith(SOCKET_VOLUME_PREFIX)
                or vname != f"{SOCKET_VOLUME_PREFIX}{flow}"
            ):
                continue
            if flow in keep or flow in held:
                continue
            if await self.adapter.remove_unused_volume(vname):
                removed.append(vname)
        if removed:
            logger.info("agent: removed the socket volumes of flows gone: %s", ", ".join(removed))
        return removed

    # -- the fence

    async def check_managers(self) -> tuple[bool, str]:
        """Whether this node reaches the swarm's managers now, and why not."""
        try:
            info = await self.probe.info(timeout=PROBE_TIMEOUT)
        except FlowMgrError as err:
            return False, f"docker info: {err}"
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active":
            return False, f"the node's swarm state is {swarm.get('LocalNodeState')!r}"
        if swarm.get("Error"):
            return False, f"the node's swarm error: {str(swarm.get('Error'))[:200]}"
        if not swarm.get("ControlAvailable"):
            return True, ""  # a worker: docker info is all it can say
        try:
            nodes = await self.probe.nodes(timeout=PROBE_TIMEOUT)
        except FlowMgrError as err:
            return False, f"the node list: {err}"
        managers = [n for n in nodes if (n.get("Spec") or {}).get("Role") == "manager"]
        reachable = sum(
            (n.get("ManagerStatus") or {}).get("Reachability") == "reachable" for n in managers
        )
        if managers and 2 * reachable <= len(managers):
            return False, f"{reachable} of {len(managers)} managers are reachable"
        return True, ""

    async def _fence_loop(self) -> None:
        prober: asyncio.Task[None] | None = None
        try:
            while True:
                # while linked nothing can be fenced: look once a second (an idle agent's CPU);
                # once cut, every FENCE_TICK (the fence counts from the link's loss, not from
                # when this loop notices it)
                linked = self.link is not None and self.link.connected
                await asyncio.sleep(LINKED_TICK if linked else FENCE_TICK)
                link = self.link
                if link is None:
                    continue
                if link.connected:
                    if prober is not None:
                        prober.cancel()
                        prober = None
                    self.managers_reachable = None
                    if self.fenced:
                        self.fenced = False
                        logger.warning(
                            "agent: the hub is back; fence lifted (%d flow containers were "
                            "stopped; Swarm decides where they run now)",
                            self.fence_stops,
                        )
                        self._say_fenced()
                    continue
                if prober is None or prober.done():
                    prober = asyncio.create_task(self._probe_managers(), name="agent-probe")
                if link.fenced() and self.managers_reachable is False:
                    await self._fence()
        finally:
            if prober is not None:
                prober.cancel()

    def _say_fenced(self) -> None:
        """Tell the hub, now that it hears us again, which flows the fence stopped here."""
        for flow_id, task_id, cut_for in self._fenced_flows:
            self._queue(
                AgentEvent(
                    flow_id=flow_id,
                    task_id=task_id,
                    kind="fenced",
                    data={"cut_for": round(cut_for, 1), "why": self.managers_why[:300]},
                )
            )
        self._fenced_flows.clear()

    async def _probe_managers(self) -> None:
        """Ask once; the loop asks again when this is done (one probe at a time)."""
        ok, why = await self.check_managers()
        self.managers_reachable, self.managers_why = ok, why

    async def _fence(self) -> None:
        """Stop every running flow task container here (and any that runs again while fenced)."""
        core = self.core
        if core is None:
            return
        running = [
            rec for rec, _, _ in self._records() if rec.state in ("running", "restarting", "paused")
        ]
        if not self.fenced:
            self.fenced = True
            assert self.link is not None
            lost = self.link.link_lost_since
            logger.warning(
                "agent: FENCED: the hub has been out of reach for %.1f s and the managers too "
                "(%s): stopping the %d flow containers of this node so no flow runs twice",
                self.clock() - lost if lost is not None else -1.0,
                self.managers_why,
                len(running),
            )
        if not running:
            return

        async def stop(rec: Record) -> None:
            cid = rec.info.id
            core.registry.mark_stopped_on_request(cid)
            try:
                await self.adapter.stop(cid, FENCE_STOP_TIMEOUT)
                self.fence_stops += 1
                ids = task_ids(rec)
                lost = self.link.link_lost_since if self.link is not None else None
                if ids is not None:
                    cut = self.clock() - lost if lost is not None else 0.0
                    self._fenced_flows.append((ids[0], ids[1], cut))
                logger.warning("agent: fenced: stopped %s (%s)", rec.info.name, cid[:12])
                with contextlib.suppress(FlowMgrError):
                    await core.monitor.refresh(cid)
            except FlowMgrError as err:
                logger.error("agent: fenced: could not stop %s: %s", rec.info.name, err)

        await asyncio.gather(*(stop(r) for r in running))


_PAYLOAD_KEYS: dict[str, frozenset[str]] = {
    "send": frozenset({"container_id", "message"}),
    "logs": frozenset({"container_id", "tail", "since", "timestamps"}),
    "follow": frozenset({"container_id"}),
    "unfollow": frozenset({"container_id"}),
    "watch": frozenset({"container_ids"}),
    "update": frozenset({"container_id", "code_path"}),
    "forget": frozenset({"keep"}),
    "inspect": frozenset({"container_id"}),
}


def _is_process_of(pid: int, container_id: str) -> bool:
    """Whether `pid` is (still) a process of that container: its cgroup path names the
    container's id (cgroup v1 and v2, systemd or cgroupfs drivers), so a reused pid is never
    killed."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as f:
            return container_id in f.read()
    except OSError:
        return False


def _agent_settings_problem(settings: Settings) -> str | None:
    cl = settings.cluster
    if cl.mode != "swarm":
        return f'cluster.mode is {cl.mode!r}: the agent runs in cluster mode only ("swarm")'
    if not cl.hub_url:
        return "the agent needs cluster.hub_url (where the hub listens)"
    if not cl.agent_token_file:
        return "the agent needs cluster.agent_token_file (the agents' token)"
    return None


async def run_agent(settings: Settings) -> None:
    """Run the agent of this node (DOCKER_HOST's engine) until cancelled or SIGTERM/SIGINT.
    ConfigError when the settings are not an agent's or the engine is not a swarm node."""
    problem = _agent_settings_problem(settings)
    if problem:
        raise ConfigError(problem)
    assert settings.cluster.hub_url and settings.cluster.agent_token_file
    token = await asyncio.to_thread(agent_token_from_file, settings.cluster.agent_token_file)
    agent = Agent(settings, hub_url=settings.cluster.hub_url, agent_token=token)
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    assert this is not None
    signalled: list[int] = []

    def on_signal(sig: int) -> None:
        signalled.append(sig)
        this.cancel()  # also ends a start still waiting for the node's engine

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        await agent.start()
        await asyncio.Event().wait()  # until cancelled
    except asyncio.CancelledError:
        logger.info("agent: stopping (the flows keep running)")
        if not signalled:
            raise
        this.uncancel()
    finally:
        await agent.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def agent_main(argv: list[str]) -> int:
    """`flowmgr --agent [--config FILE]`: 0 on a clean stop, 2 on a bad configuration."""
    parser = argparse.ArgumentParser(
        prog="flowmgr --agent", description="Flow Manager cluster agent (one per node)"
    )
    parser.add_argument("--config", help="config.json (default: CONFIG_FILE, ./config.json)")
    args = parser.parse_args(argv)
    try:
        settings = load_cli_settings(args.config, None, None)
        problem = _agent_settings_problem(settings)
        if problem:
            raise ConfigError(problem)
    except ConfigError as err:
        setup_logging("INFO")
        logger.error("cannot start the agent: %s", err)
        return 2
    setup_logging(settings.log_level)
    try:
        asyncio.run(run_agent(settings))
    except ConfigError as err:
        logger.error("cannot start the agent: %s", err)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(agent_main(sys.argv[1:]))
