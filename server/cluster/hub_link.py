"""The hub's side of the agent link: the Socket.IO namespace `/agent` and the nodes' state.

`register_agent_namespace(sio, hub_state, config)` adds the namespace to the API's
`socketio.AsyncServer`. An agent connects with `auth = {"agent_token": ..., "hello": AgentHello}`:
the token is compared in constant time with the agent token (never the API token), the hello is
validated (strict, size-capped) and its node must be one `known_nodes()` lists. Everything is
decided in the connect, so a refused agent never counts as connected and gets a reason.

One live link per node. A second connect for a node whose link is live:
- from the same agent process (the hello's `instance`), e.g. its reconnect after a network blip
  while the hub still holds the half-open old socket: it **replaces** the old link (reason
  "replaced"; the flows stay known, the old socket is closed);
- from another process: **refused** ("node_already_connected") while the live link's heartbeats
  are fresh, so two agents claiming one node cannot take it from each other in turn; once the
  old link is stale (no heartbeat within `agent_timeout`) it is declared down and the new one
  is accepted.

A node's link goes down when its transport closes ("agent_link_lost") or when no heartbeat came
within `agent_timeout` ("heartbeat_timeout", checked every `check_every`): the hub then publishes
NodeStatusChanged(disconnected) and FlowsUnknown (its flows' state is "unknown" from then on),
fails the node's pending requests and closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import socketio

from server.cluster.errors import AgentTimeout, NodeNotConnected, agent_error
from server.cluster.events import FlowsUnknown, LinkEvent, NodeStatusChanged, Reason
from server.cluster.link_models import (
    ALLOWED_OPS,
    MAX_FLOWS_PER_NODE,
    MAX_HELLO_BYTES,
    MAX_REQUEST_BYTES,
    AgentEvent,
    AgentHello,
    AgentReport,
    FlowHeld,
    Heartbeat,
    Reply,
    Request,
    json_size,
)
from server.core.errors import ConfigError, FlowMgrError, InvalidRequest
from server.core.token_file import MAX_TOKEN_CHARS, load_or_create
from server.wire.answers import ResourceUsageOut

__all__ = [
    "AGENT_NAMESPACE",
    "HubLinkConfig",
    "NodeLink",
    "HubLinks",
    "AgentNamespace",
    "register_agent_namespace",
    "agent_token_from_file",
]

logger = logging.getLogger(__name__)

AGENT_NAMESPACE = "/agent"

KnownNodes = Callable[[], set[str] | frozenset[str] | Awaitable[set[str] | frozenset[str]]]
"""The nodes an agent may speak for (on Swarm: `docker node ls`); sync or async."""
Places = Callable[[str, str, str], bool]
"""(node_id, flow_id, task_id) -> whether that task runs on that node (the hub's task list)."""


def agent_token_from_file(path: str) -> str:
    """The agent token kept at `path` (`cluster.agent_token_file`), made there 0600 on first use,
    with the same ownership checks as the API token file."""
    try:
        return load_or_create(path)[0]
    except ConfigError as err:
        raise ConfigError(
            err.message.replace("API token", "agent token"),
            details={**err.details, "field": "cluster.agent_token_file"},
        ) from None


@dataclass(frozen=True)
class HubLinkConfig:
    """The hub side's settings (from the `cluster` config section once it exists)."""

    agent_token: str
    agent_timeout: float = 2.0
    """Seconds without a heartbeat after which a node's link is declared down."""
    check_every: float = 0.1
    """How often the watchdog looks (detection is at most agent_timeout + check_every late)."""
    request_timeout: float = 5.0
    """Default deadline of `request()`."""
    max_hello_bytes: int = MAX_HELLO_BYTES
    max_request_bytes: int = MAX_REQUEST_BYTES
    refused_grace: float = 2.0
    """Seconds a refused agent has to read its refusal before its engine.io session is closed."""

    @classmethod
    def from_settings(cls, settings: Any) -> HubLinkConfig:
        """From the `cluster` config section (`agent_token_file`, `agent_timeout`); blocking
        (reads or makes the token file): call it before the loop runs, like the API token's."""
        cluster = getattr(settings, "cluster", None)
        path = getattr(cluster, "agent_token_file", None)
        if not isinstance(path, str) or not path:
            raise ConfigError(
                "cluster mode needs cluster.agent_token_file (the agents' token)",
                details={"field": "cluster.agent_token_file"},
            )
        timeout = float(getattr(cluster, "agent_timeout", 2.0))
        return cls(
            agent_token=agent_token_from_file(path),
            agent_timeout=timeout,
            check_every=min(0.1, timeout / 4),
        )

    def __post_init__(self) -> None:
        if not self.agent_token or len(self.agent_token) > MAX_TOKEN_CHARS:
            raise ConfigError(
                f"the agent token must have 1 to {MAX_TOKEN_CHARS} characters",
                details={"field": "cluster.agent_token_file"},
            )
        if not (0 < self.check_every < self.agent_timeout):
            raise ConfigError(
                "check_every must be positive and less than agent_timeout",
                details={"field": "cluster.agent_timeout"},
            )


@dataclass
class NodeLink:
    """What the hub knows of one node's agent."""

    node_id: str
    hostname: str
    version: str
    instance: str
    connected: bool
    last_heartbeat: float
    """time.monotonic() of the last heartbeat (or of the hello)."""
    since: float
    """When `connected` last changed."""
    reason: Reason
    sid: str | None
    flows: dict[str, FlowHeld] = field(default_factory=dict)
    samples: dict[str, ResourceUsageOut] = field(default_factory=dict)
    heartbeats: int = 0


class HubLinks:
    """Per node: connected, last heartbeat, its flows; publishes every change of a link."""

    def __init__(
        self,
        known_nodes: KnownNodes,
        *,
        places: Places | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._known_nodes = known_nodes
        self._places = places
        self.clock = clock
        self.nodes: dict[str, NodeLink] = {}
        self._subscribers: list[Callable[[LinkEvent], None]] = []
        self.on_report: Callable[[str, AgentReport], None] | None = None
        """The hub's hook for every accepted report (node_id, report)."""
        self.on_event: Callable[[str, AgentEvent], None] | None = None
        """The hub's hook for every accepted flow event (node_id, event)."""
        self.refresh: Callable[[str], Awaitable[None]] | None = None
        """The hub's re-read of one flow's tasks, for a task its last list did not have yet."""

    def subscribe(self, callback: Callable[[LinkEvent], None]) -> Callable[[], None]:
        """Call `callback` with every NodeStatusChanged / FlowsUnknown; returns the unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    async def known(self) -> frozenset[str]:
        """The nodes agents may speak for, now."""
        result = self._known_nodes()
        if inspect.isawaitable(result):
            result = await result
        return frozenset(result)

    def connected_nodes(self) -> list[str]:
        """The node IDs whose agent link is up."""
        return sorted(n for n, link in self.nodes.items() if link.connected)

    def node_of(self, flow_id: str) -> str | None:
        """The connected node whose agent holds `flow_id` (where to send its requests)."""
        for node_id, link in self.nodes.items():
            if link.connected and flow_id in link.flows:
                return node_id
        return None

    def places(self, node_id: str, flow_id: str, task_id: str) -> bool:
        """Whether the task list puts `task_id` of `flow_id` on `node_id` (always, with no list)."""
        return self._places is None or self._places(node_id, flow_id, task_id)

    async def confirm(self, node_id: str, flow_id: str, task_id: str) -> None:
        """Before a report or event: when the task list does not (yet) place the task on the
        node, read the flow's tasks again once (a task started since the last list)."""
        if not self.places(node_id, flow_id, task_id) and self.refresh is not None:
            await self.refresh(flow_id)

    def _publish(self, event: LinkEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                logger.exception("a node status subscriber failed on %r", event)

    def up(self, hello: AgentHello, sid: str, *, reason: Reason = "agent_connected") -> NodeLink:
        """Record a node's new link from its hello (its flow list replaces the old one)."""
        now = self.clock()
        flows = {}
        for flow in hello.flows:
            if self.places(hello.node_id, flow.flow_id, flow.task_id):
                flows[flow.flow_id] = flow
            else:
                logger.warning(
                    "agent of node %s claims flow %s (task %s) that is not placed there: ignored",
                    hello.node_id,
                    flow.flow_id,
                    flow.task_id,
                )
        link = NodeLink(
            node_id=hello.node_id,
            hostname=hello.hostname,
            version=hello.version,
            instance=hello.instance,
            connected=True,
            last_heartbeat=now,
            since=now,
            reason=reason,
            sid=sid,
            flows=flows,
        )
        self.nodes[hello.node_id] = link
        self._publish(NodeStatusChanged(link.node_id, link.hostname, "connected", reason, now))
        return link

    def down(self, node_id: str, reason: Reason) -> NodeLink | None:
        """Declare a node's link down: its flows become unknown; both facts are published."""
        link = self.nodes.get(node_id)
        if link is None or not link.connected:
            return None
        now = self.clock()
        link.connected, link.sid, link.since, link.reason = False, None, now, reason
        link.flows = {
            fid: flow.model_copy(update={"state": "unknown"}) for fid, flow in link.flows.items()
        }
        self._publish(
            NodeStatusChanged(
                node_id, link.hostname, "disconnected", reason, now, now - link.last_heartbeat
            )
        )
        self._publish(FlowsUnknown(node_id, tuple(link.flows), reason, now))
        return link

    def beat(self, node_id: str) -> None:
        """A heartbeat from the node's live link."""
        link = self.nodes[node_id]
        link.last_heartbeat = self.clock()
        link.heartbeats += 1

    def report(self, node_id: str, report: AgentReport) -> None:
        """A flow's state or sample from the node's agent; InvalidRequest when the agent speaks
        for a task not placed on its node or holds too many flows."""
        link = self.nodes[node_id]
        if report.gone:
            held = link.flows.get(report.flow_id)
            if held is not None and held.task_id == report.task_id:  # not an older task's
                link.flows.pop(report.flow_id, None)
                link.samples.pop(report.flow_id, None)
            if self.on_report is not None:
                self.on_report(node_id, report)
            return
        if not self.places(node_id, report.flow_id, report.task_id):
            raise InvalidRequest(
                f"task {report.task_id} of flow {report.flow_id} is not placed on node {node_id}",
                field="task_id",
            )
        if report.flow_id not in link.flows and len(link.flows) >= MAX_FLOWS_PER_NODE:
            raise InvalidRequest(f"node {node_id} already holds {MAX_FLOWS_PER_NODE} flows")
        link.flows[report.flow_id] = FlowHeld(
            flow_id=report.flow_id,
            task_id=report.task_id,
            container_id=report.container_id,
            state=report.state,
        )
        if report.sample is not None:
            link.samples[report.flow_id] = report.sample
        if self.on_report is not None:
            self.on_report(node_id, report)

    def event(self, node_id: str, event: AgentEvent) -> None:
        """A flow's event from the node's agent; InvalidRequest when its task is not placed
        on that node (an agent speaks for its own node's flows only)."""
        if not self.places(node_id, event.flow_id, event.task_id):
            raise InvalidRequest(
                f"task {event.task_id} of flow {event.flow_id} is not placed on node {node_id}",
                field="task_id",
            )
        if self.on_event is not None:
            self.on_event(node_id, event)

    def stale(self, timeout: float) -> Iterator[NodeLink]:
        """The connected links whose last heartbeat is older than `timeout`."""
        now = self.clock()
        for link in list(self.nodes.values()):
            if link.connected and now - link.last_heartbeat > timeout:
                yield link


def _refusal(message: str, error_type: str = "validation_error", **details: Any) -> Exception:
    refusal: Exception = socketio.exceptions.ConnectionRefusedError(
        message, {"error_type": error_type, "message": message, **details}
    )
    return refusal


class AgentNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """`/agent`: agents' connects, heartbeats, reports and replies; `request()` for the hub."""

    def __init__(
        self, hub: HubLinks, config: HubLinkConfig, namespace: str = AGENT_NAMESPACE
    ) -> None:
        super().__init__(namespace)
        self.hub = hub
        self.config = config
        self._token = config.agent_token.encode("utf-8")
        self._sid_node: dict[str, str] = {}
        self._pending: dict[str, tuple[str, asyncio.Future[Reply]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self.refused = 0

    # -- lifecycle

    def start(self) -> None:
        """Start the heartbeat watchdog (done by the first connect when not called)."""
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="agent-link-watchdog")

    async def close(self) -> None:
        """Stop the watchdog; every link is declared down ("stopped") and requests fail."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for node_id in self.hub.connected_nodes():
            self._link_down(node_id, "stopped")
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- Socket.IO handlers

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Connect errors refuse (never leave an agent pending); other events need a live link."""
        sid = args[0]
        # python-socketio also routes an agent's own `42/agent,["connect", ...]` here; only the
        # real connect and disconnect come while the sid is not (or no longer) connected.
        real = event in ("connect", "disconnect") and not self.server.manager.is_connected(
            sid, self.namespace
        )
        if real and event == "connect":
            try:
                return await super().trigger_event(event, *args)
            except socketio.exceptions.ConnectionRefusedError:
                self._hang_up_later(sid)
                raise
            except Exception:
                logger.exception("agent connect handler failed; refusing the agent")
                self._hang_up_later(sid)
                raise _refusal("the hub failed to take the agent", "system_error") from None
        if real:
            return await super().trigger_event(event, *args)
        if sid not in self._sid_node:
            return {"ok": False, "error": "no live link for this session"}
        handler = getattr(self, f"on_{event}", None) if event in _EVENTS else None
        if handler is None:
            return {"ok": False, "error": f"unknown event {str(event)[:40]!r}"}
        data = args[1] if len(args) > 1 else None
        try:
            return await handler(sid, data)
        except FlowMgrError as err:
            return {"ok": False, "error_type": err.error_type, "error": err.message}

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Token, then hello, then node allow-list, then one live link per node."""
        if not self._token_ok(auth):
            self.refused += 1
            logger.warning("refused an agent without the agent token (%s)", _remote(environ))
            raise _refusal("authentication failed", "authentication_failed")
        try:
            hello = AgentHello.decode(auth.get("hello"), max_bytes=self.config.max_hello_bytes)
        except InvalidRequest as err:
            self.refused += 1
            logger.warning("refused an agent's hello (%s): %s", _remote(environ), err.message)
            raise _refusal(f"invalid hello: {err.message}", field=err.field) from None
        known = await self.hub.known()
        if hello.node_id not in known:
            self.refused += 1
            logger.warning("refused an agent claiming unknown node %s", hello.node_id)
            raise _refusal(
                f"node {hello.node_id} is not a node of this cluster",
                reason="unknown_node",
                node_id=hello.node_id,
            )
        reason: Reason = "agent_connected"
        old = self.hub.nodes.get(hello.node_id)
        if old is not None and old.connected:
            fresh = self.hub.clock() - old.last_heartbeat <= self.config.agent_timeout
            if fresh and old.instance != hello.instance:
                self.refused += 1
                logger.warning(
                    "refused a second agent for node %s while its link is live", hello.node_id
                )
                raise _refusal(
                    f"node {hello.node_id} already has a live agent link",
                    reason="node_already_connected",
                    node_id=hello.node_id,
                )
            old_sid = old.sid
            if fresh:  # the same agent's new connection takes over: the flows stay known
                reason = "replaced"
                self._sid_node.pop(old_sid or "", None)
                self._fail_pending(hello.node_id, "replaced")
            else:
                self._link_down(hello.node_id, "heartbeat_timeout")
            if old_sid is not None:
                self._spawn(self._disconnect_quietly(old_sid))
        self._sid_node[sid] = hello.node_id
        self.hub.up(hello, sid, reason=reason)
        self.start()
        logger.info(
            "agent of node %s (%s) linked, %d flows",
            hello.node_id,
            hello.hostname,
            len(hello.flows),
        )

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """The transport closed: the node's link is down at once ("agent_link_lost")."""
        node_id = self._sid_node.pop(sid, None)
        if node_id is None:
            return
        link = self.hub.nodes.get(node_id)
        if link is not None and link.sid == sid:
            self._link_down(node_id, "agent_link_lost")

    async def on_heartbeat(self, sid: str, data: Any) -> dict[str, Any]:
        """Ack with the heartbeat's seq: the agent's proof the hub is there."""
        beat = Heartbeat.decode(data, max_bytes=256)
        node_id = self._sid_node[sid]
        self.hub.beat(node_id)
        return {"ok": True, "seq": beat.seq}

    async def on_report(self, sid: str, data: Any) -> dict[str, Any]:
        """A flow's state or sample."""
        report = AgentReport.decode(data, max_bytes=16_384)
        node_id = self._sid_node[sid]
        if not report.gone:
            await self.hub.confirm(node_id, report.flow_id, report.task_id)
        self.hub.report(node_id, report)
        return {"ok": True}

    async def on_event(self, sid: str, data: Any) -> dict[str, Any]:
        """A flow's event (a frame it sent, a log line, its channel); the frame's own cap plus
        room for the envelope."""
        event = AgentEvent.decode(data, max_bytes=self.config.max_request_bytes)
        node_id = self._sid_node[sid]
        await self.hub.confirm(node_id, event.flow_id, event.task_id)
        self.hub.event(node_id, event)
        return {"ok": True}

    async def on_reply(self, sid: str, data: Any) -> None:
        """The outcome of a request; one for a request this node was not sent is dropped."""
        reply = Reply.decode(data, max_bytes=self.config.max_request_bytes)
        pending = self._pending.get(reply.request_id)
        if pending is None or pending[0] != self._sid_node[sid]:
            return
        if not pending[1].done():
            pending[1].set_result(reply)

    # -- hub -> agent

    async def request(
        self, node_id: str, op: str, payload: dict[str, Any], timeout: float | None = None
    ) -> Reply:
        """Ask `node_id`'s agent to do `op`; its ok Reply, else a typed error: InvalidRequest
        (op not allowed, payload too large), NodeNotConnected, AgentTimeout, or the agent's
        own error (its error_type kept: socket_timeout_error from the flow stays that)."""
        if op not in ALLOWED_OPS:
            raise InvalidRequest(
                f"op {op[:40]!r} is not one the hub may ask an agent "
                f"({', '.join(sorted(ALLOWED_OPS))})",
                field="op",
            )
        timeout = self.config.request_timeout if timeout is None else timeout
        link = self.hub.nodes.get(node_id)
        if link is None or not link.connected or link.sid is None:
            raise NodeNotConnected(
                f"node {node_id} has no live agent link",
                details={
                    "reason": "node_not_connected",
                    "node_id": node_id,
                    "link": None if link is None else link.reason,
                },
            )
        request_id = secrets.token_urlsafe(12)
        try:
            message = Request(request_id=request_id, op=op, deadline=timeout, payload=payload)  # type: ignore[arg-type]
        except ValueError as err:
            raise InvalidRequest(f"request: {err}", field="payload") from None
        wire = message.wire()
        if json_size(wire) > self.config.max_request_bytes:
            raise InvalidRequest(
                f"request payload larger than {self.config.max_request_bytes} bytes",
                field="payload",
            )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (node_id, future)
        try:
            await self.emit("request", wire, to=link.sid)
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError:
            raise AgentTimeout(
                f"the agent of node {node_id} did not reply to {op} within {timeout:g} s",
                details={"reason": "agent_timeout", "node_id": node_id, "op": op},
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if not reply.ok:
            assert reply.error is not None  # the model's rule
            raise agent_error(
                reply.error.error_type, reply.error.message, dict(reply.error.details), node_id
            )
        return reply

    # -- inside

    def _token_ok(self, auth: Any) -> bool:
        try:
            if type(auth) is not dict or not set(auth) <= {"agent_token", "hello"}:
                return False
            given = auth.get("agent_token")
            if type(given) is not str or not given or len(given) > MAX_TOKEN_CHARS:
                return False
            return hmac.compare_digest(given.encode("utf-8"), self._token)
        except Exception:  # a lone surrogate cannot be encoded
            return False

    def _link_down(self, node_id: str, reason: Reason) -> None:
        link = self.hub.nodes.get(node_id)
        sid = None if link is None else link.sid
        if self.hub.down(node_id, reason) is None:
            return
        logger.warning("agent link of node %s down: %s", node_id, reason)
        self._fail_pending(node_id, reason)
        if sid is not None:
            self._sid_node.pop(sid, None)
            if reason != "agent_link_lost":  # the transport is still open: close it
                self._spawn(self._disconnect_quietly(sid))

    def _fail_pending(self, node_id: str, reason: str) -> None:
        for request_id, (node, future) in list(self._pending.items()):
            if node == node_id and not future.done():
                future.set_exception(
                    NodeNotConnected(
                        f"the agent link of node {node_id} went down ({reason}) before it replied",
                        details={
                            "reason": "node_not_connected",
                            "node_id": node_id,
                            "link": reason,
                            "request_id": request_id,
                        },
                    )
                )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_every)
            for link in list(self.hub.stale(self.config.agent_timeout)):
                self._link_down(link.node_id, "heartbeat_timeout")

    async def _disconnect_quietly(self, sid: str) -> None:
        with contextlib.suppress(Exception):
            await self.disconnect(sid)

    def _hang_up_later(self, sid: str) -> None:
        """Close a refused agent's engine.io session once its refusal has left (left open, each
        would hold memory until engine.io's ping timeout)."""
        eio_sid = self.server.manager.eio_sid_from_sid(sid, self.namespace)
        if eio_sid is not None:
            self._spawn(self._hang_up(eio_sid))

    async def _hang_up(self, eio_sid: str) -> None:
        sock = self.server.eio.sockets.get(eio_sid)
        if sock is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.refused_grace):
                await asyncio.sleep(0)
                await sock.queue.join()
        try:
            if not sock.closed:
                await sock.close(wait=False)
        finally:
            self.server.eio.sockets.pop(eio_sid, None)


_EVENTS = frozenset({"heartbeat", "report", "event", "reply"})


def _remote(environ: dict[str, Any]) -> str:
    return str(environ.get("REMOTE_ADDR", "?"))


def register_agent_namespace(
    sio: socketio.AsyncServer, hub_state: HubLinks, settings: HubLinkConfig
) -> AgentNamespace:
    """Add `/agent` to the API's server (its engine.io `max_http_buffer_size` must admit a hello:
    MAX_HELLO_BYTES for a node of 10,000 flows); returns the namespace (`request()`, `close()`)."""
    namespace = AgentNamespace(hub_state, settings)
    sio.register_namespace(namespace)
    return namespace
