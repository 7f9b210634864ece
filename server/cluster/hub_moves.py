"""FlowMoves: the hub starts again a flow whose task ended without the flow ending.

With restart condition `none` (a flow that ends on its own stays ended, as on one host) Swarm
never replaces a task it shut down itself, so the hub does, with a forced update, once per task:

- its node is not `ready` (dead daemon, cut network): the managers shut its task down;
- the managers shut its task down while its node is `ready` again, or never went away (a new
  leader marks a node down for a moment; a drained node): nothing replaces it, and the flow is
  `unknown` (`task_shut_down`) for ORPHAN_GRACE seconds first, said as `container_rescheduled`;
- a node's agent fenced the task (cut off from the hub and the managers) and the cut healed
  before the managers marked the node down: its word (`fenced`) is the only sign.

A move refused while the managers have no leader is retried for MOVE_FOR seconds while the task
is still the flow's: never dropped, never made twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from server.core.swarm.engine import FlowService, FlowTask, NodeInfo, SwarmEngine

__all__ = ["ENDED_ON_ITS_OWN", "TASK_ENDED", "FlowMoves"]

logger = logging.getLogger(__name__)

MOVE_FOR = 120.0
"""Seconds a move is retried while the managers refuse it (no leader after a lost node)."""
MOVE_RETRY = 1.0
TASK_ENDED = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})
"""Swarm task states from which a task never runs again."""
ENDED_ON_ITS_OWN = frozenset({"complete", "failed", "rejected"})
"""Task states of a flow that ended by itself (a crash, an exit): its restart policy decides."""
ORPHAN_GRACE = 2.0
"""Seconds a flow's only task may stay shut down with none in its place before the hub starts
it again (a forced update replaces its task in one step; this is never that)."""


class Acts(Protocol):
    """What of the registry the moves use: whether the hub acts on a flow, and its activity
    log."""

    def is_acted_on(self, container_id: str) -> bool: ...

    def record_activity(
        self, activity_type: str, container_id: str, message: str, details: dict[str, Any]
    ) -> Any: ...


class FlowMoves:
    """The hub's moves; it reads the hub's last picture of services and nodes."""

    def __init__(
        self,
        engine: SwarmEngine,
        registry: Acts,
        *,
        services: Callable[[], dict[str, FlowService]],
        nodes: Callable[[], dict[str, NodeInfo]],
        refresh: Callable[[str], Awaitable[Any]],
        spawn: Callable[[Coroutine[Any, Any, None], str], object],
        poke: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self._services = services
        self._nodes = nodes
        self._refresh = refresh
        self._spawn = spawn
        self._poke = poke
        self._clock = clock
        self.moved: set[str] = set()
        """Tasks the hub replaced (or is replacing): each at most once."""
        self.orphaned: dict[str, float] = {}
        """Task id -> when the hub first saw it shut down by Swarm with nothing in its place."""

    def after_poll(self, service: FlowService, task: FlowTask) -> None:
        """Look at the flow's current task as just read: move it when its node is not ready,
        start it again when Swarm shut it down with nothing in its place."""
        if service.replicas != 1 or task.desired_state in ("running", "ready"):
            return
        node = self._nodes().get(task.node_id or "")
        if node is not None and node.state != "ready" and task.id not in self.moved:
            self.moved.add(task.id)
            logger.warning(
                "%s: its node %s is %s; moving it (forced update)",
                service.name,
                node.hostname,
                node.state,
            )
            self._spawn(self.move(service.id, task.id), "move-flow")
        elif self.shut_down_by_swarm(service, task) and task.id not in self.moved:
            self._start_orphan(service, task)

    def shut_down_by_swarm(self, service: FlowService, task: FlowTask) -> bool:
        """Whether the flow's current task was shut down by the managers, not by itself, and
        nothing replaces it: they do so when its node is marked `down` (even for a moment, as
        a newly elected leader does) or drained, and with restart condition `none` make no
        other. The flow is meant to run (1 replica) and the hub is not acting on it."""
        return (
            service.replicas == 1
            and task.desired_state not in ("running", "ready")
            and task.state not in ENDED_ON_ITS_OWN
            and task.state not in ("running", "starting")  # still being stopped: wait
            and not self.registry.is_acted_on(service.id)
        )

    def _start_orphan(self, service: FlowService, task: FlowTask) -> None:
        """Start again, after ORPHAN_GRACE, a flow whose only task Swarm shut down (said once,
        with where it ran and why)."""
        now = self._clock()
        first = self.orphaned.setdefault(task.id, now)
        if now - first < ORPHAN_GRACE:
            return
        self.moved.add(task.id)
        self.orphaned.pop(task.id, None)
        where = task.node or task.node_id or "its node"
        logger.warning(
            "%s: Swarm shut its task on %s down (%s) and placed none in its place; starting it "
            "again (forced update)",
            service.name,
            where,
            task.message or task.state,
        )
        self.registry.record_activity(
            "container_rescheduled",
            service.id,
            f"{service.name}: Swarm shut its task on {where} down ({task.state}: "
            f"{task.message or 'no message'}) with nothing in its place (its node was marked "
            "down or drained); the hub starts it again",
            {"name": service.name, "node": where, "task_id": task.id, "why": task.message},
        )
        self._spawn(self.move(service.id, task.id), "restart-orphan")

    def fenced(self, flow_id: str, task_id: str, name: str) -> None:
        """A node's agent says its fence stopped `task_id`: start the flow again unless a newer
        task (the hub's move, Swarm's restart) is placing or running, which a second forced
        update would end half-started (the flow would move twice)."""
        service = self._services().get(flow_id)
        if service is None or service.replicas != 1 or task_id in self.moved:
            return
        current = service.current
        if current is not None and current.id != task_id and current.state not in TASK_ENDED:
            return
        # the fence ended the task Swarm still counts on (it healed before the node was marked
        # down): with restart condition none nothing would start it again
        self.moved.add(task_id)
        logger.warning("%s: its task was fenced; starting it again", name)
        self._spawn(self.move(flow_id, task_id), "unfence-flow")

    async def move(self, flow_id: str, task_id: str) -> None:
        """Replace the flow's task `task_id` by a forced update. Retried while the managers
        refuse (a node lost with the leader leaves no quorum until the others elect one) and
        that task is still the flow's: a move is never dropped, nor made twice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MOVE_FOR
        while True:
            try:
                await self.engine.force_restart(flow_id)
                break
            except Exception as err:
                with contextlib.suppress(Exception):
                    await self._refresh(flow_id)
                service = self._services().get(flow_id)
                current = service.current if service is not None else None
                if service is None or service.replicas == 0:
                    return  # deleted or stopped meanwhile: nothing to move
                if (
                    current is not None
                    and current.id != task_id
                    and current.state not in TASK_ENDED
                ):
                    break  # replaced meanwhile (Swarm, a restart): that one runs
                if loop.time() >= deadline:
                    logger.error("could not move %s for %.0f s: %s", service.name, MOVE_FOR, err)
                    self.moved.discard(task_id)  # a later poll may try again
                    return
                logger.warning("could not move %s yet (%s); trying again", service.name, err)
                await asyncio.sleep(MOVE_RETRY)
        self._poke()

    def forget_except(self, listed: set[str]) -> None:
        """Drop what is kept of tasks Swarm no longer lists (it keeps a few per flow)."""
        self.moved &= listed
        for task_id in [t for t in self.orphaned if t not in listed]:
            del self.orphaned[task_id]
