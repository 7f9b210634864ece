"""The test cluster itself (issue 16, "Testing on one machine"): three managers, services placed
and spread without any pull, and a node whose daemon dies has its task rescheduled."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import docker
import pytest

from tests.cluster.conftest import BUSYBOX, NODES, Cluster, running_tasks, wait_for
from tests.conftest import RUN_ID, TEST_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.slow]

log = logging.getLogger(__name__)

RESCHEDULE_LIMIT = 30.0
"""Seconds from SIGKILL of a node's dockerd to its task running elsewhere (heartbeat 1 s)."""


def test_three_managers_ready_with_one_leader(cluster: Cluster) -> None:
    assert len(cluster.nodes) == NODES
    for node in cluster.nodes:
        info = node.client.info()
        swarm = info["Swarm"]
        assert swarm["LocalNodeState"] == "active", (node.name, swarm)
        assert swarm["ControlAvailable"], f"{node.name} is not a manager"
        assert swarm["NodeID"] == node.node_id
        assert info["Name"] == node.netns, "each node has its own hostname"
    nodes = cluster.swarm_nodes()
    assert sorted(n["ID"] for n in nodes) == sorted(n.node_id for n in cluster.nodes)
    assert all(n["Status"]["State"] == "ready" for n in nodes), nodes
    assert all(n["ManagerStatus"]["Reachability"] == "reachable" for n in nodes), nodes
    assert sum(bool(n["ManagerStatus"].get("Leader")) for n in nodes) == 1
    assert {n["Spec"]["Labels"].get("fmc.node") for n in nodes} == {n.name for n in cluster.nodes}
    spec = cluster.manager().swarm.attrs["Spec"]
    assert spec["Dispatcher"]["HeartbeatPeriod"] == 10**9, "FMC_HEARTBEAT=1s reached the swarm"


def test_nodes_reach_nothing_but_the_cluster_subnet(cluster: Cluster) -> None:
    for node in cluster.nodes:
        routes = subprocess.run(
            ["ip", "-n", node.netns, "-4", "route", "show"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "default" not in routes, f"{node.name} has a default route:\n{routes}"
    # The host's own engine is untouched and still answers.
    host = docker.from_env()
    try:
        assert host.ping()
        assert host.info()["Swarm"]["LocalNodeState"] == "inactive"
    finally:
        host.close()


def test_one_replica_service_runs_without_pulling(
    cluster: Cluster, make_service: Callable[..., Any]
) -> None:
    log_sizes = {n.name: n.log_path.stat().st_size for n in cluster.nodes}
    service = make_service("one")
    tasks = wait_for("a running task", lambda: running_tasks(service) or None, timeout=30)
    assert len(tasks) == 1
    task = tasks[0]
    node = cluster.by_id(task["NodeID"])
    container_id = task["Status"]["ContainerStatus"]["ContainerID"]
    container = node.client.containers.get(container_id)
    assert container.status == "running"
    assert container.labels[TEST_LABEL] == RUN_ID
    assert container.attrs["Config"]["Image"] == BUSYBOX
    for n in cluster.nodes:
        with n.log_path.open(errors="replace") as f:
            f.seek(log_sizes[n.name])
            added = f.read()
        assert "pull" not in added.lower(), f"{n.name} tried to pull:\n{added[-2000:]}"


def test_three_replicas_spread_over_three_nodes(
    cluster: Cluster, make_service: Callable[..., Any]
) -> None:
    service = make_service("spread", replicas=3)
    tasks = wait_for(
        "3 running tasks",
        lambda: t if len(t := running_tasks(service)) == 3 else None,
        timeout=30,
    )
    assert {t["NodeID"] for t in tasks} == {n.node_id for n in cluster.nodes}


def test_killed_node_daemon_has_its_task_rescheduled(
    cluster: Cluster, make_service: Callable[..., Any]
) -> None:
    # Keep the leader alive: the drill is about a node's failure, not a Raft election.
    leader = cluster.leader()
    # Swarm's default restart delay (5 s) would come on top of the node's detection time.
    service = make_service(
        "resched",
        constraints=[f"node.id!={leader.node_id}"],
        restart_policy=docker.types.RestartPolicy(condition="any", delay=0),
    )
    first = wait_for("a running task", lambda: running_tasks(service) or None, timeout=30)[0]
    victim = cluster.by_id(first["NodeID"])
    old_container = first["Status"]["ContainerStatus"]["ContainerID"]
    pid = victim.dockerd_pid()
    assert pid, f"no dockerd pid for {victim.name}"

    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    victim.close()
    manager = leader.client
    wait_for(
        f"{victim.name} marked down",
        lambda: manager.nodes.get(victim.node_id).attrs["Status"]["State"] == "down",
        timeout=RESCHEDULE_LIMIT,
    )
    down_after = time.monotonic() - killed
    moved = wait_for(
        "the task running on another node",
        lambda: [t for t in running_tasks(service) if t["NodeID"] != victim.node_id] or None,
        timeout=RESCHEDULE_LIMIT,
    )
    moved_after = time.monotonic() - killed
    log.info("node down after %.1f s, task running elsewhere after %.1f s", down_after, moved_after)
    assert moved[0]["NodeID"] not in (victim.node_id, leader.node_id)

    # The daemon comes back: the node rejoins and stops its stale copy of the task.
    subprocess.run([str(victim.start_script)], check=True, timeout=10)
    wait_for(f"{victim.name}'s dockerd to answer", victim.answers, timeout=30)
    wait_for(
        f"{victim.name} Ready and reachable again",
        lambda: (
            (a := manager.nodes.get(victim.node_id).attrs)["Status"]["State"] == "ready"
            and a["ManagerStatus"]["Reachability"] == "reachable"
        ),
        timeout=30,
    )

    def stale_copy_gone() -> bool:
        try:
            status: str = victim.client.containers.get(old_container).status
        except docker.errors.NotFound:
            return True
        return status != "running"

    # The copy left on the dead daemon's node ran on (Swarm cannot stop what it cannot reach)
    # until the daemon came back; the managers hear of its end from the node's agent.
    wait_for("the stale copy stopped on the restarted node", stale_copy_gone, timeout=30)
    wait_for(
        "the managers to see one running task",
        lambda: len(running_tasks(service)) == 1,
        timeout=30,
    )
    log.info(
        "node restarted; its stale copy stopped %.1f s after the kill (ran twice for %.1f s)",
        time.monotonic() - killed,
        time.monotonic() - killed - moved_after,
    )
