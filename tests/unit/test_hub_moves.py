"""FlowMoves' decisions: which ended tasks the hub starts again, and which it leaves alone.

The moves themselves (forced updates) run against the real 3-node swarm in
tests/cluster/test_hub.py (the drills, the drained node); here only the decision table, from
services and tasks as the managers list them."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest

from server.cluster.hub_moves import ORPHAN_GRACE, FlowMoves
from server.core.swarm.engine import FlowService, FlowTask, NodeInfo


def task(tid: str, state: str, desired: str, node: str = "n2") -> FlowTask:
    return FlowTask(
        id=tid,
        service_id="svc",
        slot=1,
        node_id=node,
        node=f"fmc-{node}",
        state=state,
        desired_state=desired,
        container_id="c-" + tid,
        exit_code=None,
        error=None,
        message="shutdown" if desired == "shutdown" else "started",
        updated=None,
    )


def service(*tasks: FlowTask, replicas: int = 1) -> FlowService:
    return FlowService(
        id="svc", name="f1", labels={}, replicas=replicas, version=1, tasks=tuple(tasks)
    )


def node(nid: str, state: str = "ready") -> NodeInfo:
    return NodeInfo(
        id=nid,
        hostname=f"fmc-{nid}",
        role="manager",
        state=state,
        availability="active",
        addr="",
        labels={},
        leader=False,
        reachability=None,
    )


class Acts:
    def __init__(self) -> None:
        self.acting: set[str] = set()
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def is_acted_on(self, container_id: str) -> bool:
        return container_id in self.acting

    def record_activity(
        self, activity_type: str, container_id: str, message: str, details: dict[str, Any]
    ) -> None:
        self.lines.append((activity_type, container_id, details))


class Hub:
    """The hub's side: its last picture, and the moves it spawned (names, not run)."""

    def __init__(self, svc: FlowService, nodes: list[NodeInfo]) -> None:
        self.now = 1000.0
        self.services = {svc.id: svc}
        self.nodes = {n.id: n for n in nodes}
        self.acts = Acts()
        self.spawned: list[str] = []
        self.moves = FlowMoves(
            None,  # type: ignore[arg-type]  # never called: no move is run here
            self.acts,
            services=lambda: self.services,
            nodes=lambda: self.nodes,
            refresh=self._refresh,
            spawn=self._spawn,
            poke=lambda: None,
            clock=lambda: self.now,
        )

    async def _refresh(self, flow_id: str) -> None:
        raise AssertionError("not reached")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        coro.close()
        self.spawned.append(name)

    def poll(self) -> None:
        svc = self.services["svc"]
        assert svc.current is not None
        self.moves.after_poll(svc, svc.current)


READY = [node("n1"), node("n2"), node("n3")]


@pytest.mark.parametrize(
    ("tasks", "replicas", "shut_down"),
    [
        # drained, or marked down for a moment: shut down, nothing in its place
        ((task("t1", "shutdown", "shutdown"),), 1, True),
        # still being stopped: not yet
        ((task("t1", "running", "shutdown"),), 1, False),
        # ended on its own (a crash, an exit): its restart policy decides
        ((task("t1", "failed", "shutdown"),), 1, False),
        ((task("t1", "complete", "shutdown"),), 1, False),
        ((task("t1", "rejected", "shutdown"),), 1, False),
        # stopped through the hub (0 replicas)
        ((task("t1", "shutdown", "shutdown"),), 0, False),
        # replaced: the new task is the current one
        ((task("t2", "running", "running"), task("t1", "shutdown", "shutdown")), 1, False),
    ],
)
def test_which_tasks_swarm_shut_down_for_good(
    tasks: tuple[FlowTask, ...], replicas: int, shut_down: bool
) -> None:
    svc = service(*tasks, replicas=replicas)
    hub = Hub(svc, READY)
    assert svc.current is not None
    assert hub.moves.shut_down_by_swarm(svc, svc.current) is shut_down


def test_a_flow_the_hub_acts_on_is_left_to_that_action() -> None:
    svc = service(task("t1", "shutdown", "shutdown"))
    hub = Hub(svc, READY)
    hub.acts.acting.add("svc")  # a restart through the hub, between its two tasks
    assert svc.current is not None and not hub.moves.shut_down_by_swarm(svc, svc.current)


def test_a_shut_down_task_is_started_again_once_after_the_grace() -> None:
    hub = Hub(service(task("t1", "shutdown", "shutdown")), READY)
    hub.poll()
    assert hub.spawned == [], "a forced update's two steps may be read in between: wait"
    hub.now += ORPHAN_GRACE
    hub.poll()
    hub.poll()
    assert hub.spawned == ["restart-orphan"]
    assert [(t, d["node"], d["task_id"]) for t, _c, d in hub.acts.lines] == [
        ("container_rescheduled", "fmc-n2", "t1")
    ]
    hub.moves.forget_except(set())  # Swarm lists it no more: nothing kept of it
    assert not hub.moves.moved and not hub.moves.orphaned


def test_a_task_on_a_lost_node_is_moved_at_once_and_once() -> None:
    hub = Hub(service(task("t1", "running", "shutdown")), [node("n1"), node("n2", "down")])
    hub.poll()
    hub.poll()
    assert hub.spawned == ["move-flow"]


def test_a_fenced_task_is_started_again_unless_replaced_or_moved() -> None:
    hub = Hub(service(task("t1", "complete", "shutdown")), READY)
    hub.moves.fenced("svc", "t1", "f1")
    hub.moves.fenced("svc", "t1", "f1")  # said again (a relink): once
    assert hub.spawned == ["unfence-flow"]
    # a newer task placing: a second forced update would end it half-started
    newer = Hub(
        service(task("t2", "preparing", "running"), task("t1", "complete", "shutdown")), READY
    )
    newer.moves.fenced("svc", "t1", "f1")
    assert newer.spawned == []
    # the hub moved it already (its node went down first)
    moved = Hub(service(task("t1", "running", "shutdown")), [node("n2", "down")])
    moved.poll()
    moved.moves.fenced("svc", "t1", "f1")
    assert moved.spawned == ["move-flow"]


def test_a_stopped_flow_is_not_started_by_a_fence_word() -> None:
    hub = Hub(service(task("t1", "complete", "shutdown"), replicas=0), READY)
    hub.moves.fenced("svc", "t1", "f1")
    assert hub.spawned == []
