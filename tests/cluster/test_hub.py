"""The hub and the agents on the 3-node cluster, through the API as clients use it (issue 16).

One hub (`flowmgr --hub`) over node 1's engine, one agent per node in that node's network
namespace; a real Socket.IO client on the hub's address. The module's flows run through every
test; the drills come last, each putting the cluster back as it found it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.remote import RemoteBackend
from flowmgr_tui.widgets.node_summary import NodeSummary
from server.cluster.agent_link import AgentLink, new_instance
from server.cluster.link_models import AgentEvent, AgentHello, AgentReport, FlowHeld, Request
from tests.cluster.conftest import Cluster, Node, wait_for
from tests.cluster.hub_harness import FLOWMGR, PREFIX, Roles, node_link, swarm_traffic
from tests.integration.api_harness import TEST_TOKEN, client
from tests.tui.helpers import dashboard, until
from tests.tui.test_tmux_e2e import Tmux

log = logging.getLogger(__name__)
FLOWS = 30
DRILL_FLOWS = 5
"""The daemon drill kills a node running at least this many of the module's flows."""
CUT_REASONS = ("agent_link_lost", "heartbeat_timeout", "node_unknown", "node_down")
"""Why a cut node's flows are unknown: its agent's link, or the managers, whichever says first."""
pytestmark = pytest.mark.slow
_EVIDENCE: list[Callable[[str], str]] = []
"""The module's Roles.evidence, for a flow that does not answer."""


@pytest.fixture(scope="module")
def roles(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    """The hub and three agents, linked; everything they made removed at the end."""
    keep = os.environ.get("FLOWMGR_HUB_TEST_DIR")  # logs that outlive pytest's tmp rotation
    base: Path = Path(tempfile.mkdtemp(dir=keep)) if keep else tmp_path_factory.mktemp("hub")
    roles = Roles(cluster, base)
    _EVIDENCE[:] = [roles.evidence]
    try:
        roles.start_hub()
        for node in cluster.nodes:
            roles.start_agent(node)
        yield roles
    finally:
        roles.stop_all()
        roles.remove_services()


async def call(sio: Any, event: str, data: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    answer: dict[str, Any] = await sio.call(event, data, timeout=timeout)
    return answer


async def linked(sio: Any, nodes: int = 3, timeout: float = 30) -> dict[str, Any]:
    """The list answer once every node's agent is linked."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await call(sio, "list_containers", {})
        if sum(n["agent"] == "connected" for n in answer.get("nodes") or []) >= nodes:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"agents not linked: {answer.get('nodes')}")
        await asyncio.sleep(0.3)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def flows(roles: Roles) -> AsyncIterator[list[str]]:
    """FLOWS flows created and started through the hub (ids), running."""
    async with client(roles.url) as (sio, _rec):
        await linked(sio)
        ids = []
        for i in range(FLOWS):
            created = await call(sio, "create_container", {"name": f"{roles.instance}-f{i:02d}"})
            assert "error" not in created, created
            ids.append(created["container_id"])
        started = await asyncio.gather(
            *(call(sio, "start_container", {"container_id": cid}) for cid in ids)
        )
        assert all(a.get("status") == "running" for a in started), [
            a for a in started if a.get("status") != "running"
        ]
    yield ids


def _pong_of(cid: str) -> Callable[[Any], bool]:
    return lambda d: d["container_id"] == cid and d["message"].get("pong") is True


def _by_id(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in answer["containers"]}


@pytest.mark.asyncio(loop_scope="module")
async def test_thirty_flows_spread_over_the_nodes_and_each_answers(
    roles: Roles, flows: list[str]
) -> None:
    async with client(roles.url) as (sio, rec):
        listed = _by_id(await linked(sio))
        mine = [listed[cid] for cid in flows]
        assert all(c["status"] == "running" for c in mine), [
            c for c in mine if c["status"] != "running"
        ]
        spread = Counter(c["node"] for c in mine)
        assert len(spread) == 3 and min(spread.values()) >= 5, spread
        names = {n.name for n in roles.cluster.nodes}
        assert {h.split("-")[-1] for h in spread} <= names, spread
        # each one answers a message, through the hub and its node's agent (once its runtime
        # has connected to its socket: a start does not wait for that, on one host either)
        for cid in flows:
            await _answers(sio, rec, cid, timeout=20)
        rtts = []
        for cid in flows:
            began = time.perf_counter()
            sent = await call(
                sio, "send_message", {"container_id": cid, "message": {"command": "ping"}}
            )
            assert sent.get("status") == "sent", sent
            await rec.wait_for("message_received", _pong_of(cid), timeout=15)
            rtts.append((time.perf_counter() - began) * 1000)
        log.info("send_message round trip through the hub: p50 %.1f ms", statistics.median(rtts))


@pytest.mark.asyncio(loop_scope="module")
async def test_every_task_container_is_held_to_the_isolation_rules(
    roles: Roles, flows: list[str]
) -> None:
    """What a service spec cannot ask for, each node's agent holds (agent_guard): no swap
    beyond the memory limit (the engine's default allows as much again), no new privileges."""
    from server.cluster.agent_guard import no_new_privs

    def loose() -> list[str]:
        found = []
        for node in roles.cluster.nodes:
            for c in node.client.containers.list(
                filters={"label": f"flowmgr.instance={roles.instance}"}
            ):
                host = c.attrs["HostConfig"]
                if host["Memory"] <= 0 or host["MemorySwap"] != host["Memory"]:
                    found.append(f"{c.name}: Memory {host['Memory']} Swap {host['MemorySwap']}")
                if no_new_privs(c.attrs["State"]["Pid"], c.id) is not True:
                    found.append(f"{c.name}: NoNewPrivs not 1")
        return found

    deadline = time.monotonic() + 20
    while (problems := await asyncio.to_thread(loose)) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert not problems, problems
    running = sum(
        len(n.client.containers.list(filters={"label": f"flowmgr.instance={roles.instance}"}))
        for n in roles.cluster.nodes
    )
    assert running >= len(flows), running


@pytest.mark.asyncio(loop_scope="module")
async def test_logs_and_usage_of_a_flow_on_another_node(roles: Roles, flows: list[str]) -> None:
    async with client(roles.url) as (sio, rec):
        listed = _by_id(await call(sio, "list_containers", {}))
        hub_node = roles.cluster.nodes[0].name
        remote = next(cid for cid in flows if not listed[cid]["node"].endswith(hub_node))
        logs = await call(sio, "get_container_logs", {"container_id": remote, "tail": 20})
        assert "error" not in logs, logs
        assert logs["container_id"] == remote and isinstance(logs["lines"], list)
        watched = await call(sio, "watch_stats", {"container_ids": [remote]})
        assert watched["container_ids"] == [remote], watched
        stats = await rec.wait_for(
            "container_stats", lambda d: d["container_id"] == remote, timeout=15
        )
        assert stats["resource_usage"]["memory_usage"] > 0, stats
        status = await call(sio, "get_container_status", {"container_id": remote})
        assert status["state"] == "running" and status["resource_usage"] is not None, status
        sub = await call(sio, "subscribe_logs", {"container_id": remote})
        assert sub.get("status") == "subscribed", sub
        # issue 17's reads through the hub and the node's agent: the Config tab's inspect (the
        # flow's own id and node, secrets masked by the node's core) and logs with times
        cfg = await call(sio, "inspect_container", {"container_id": remote})
        assert "error" not in cfg, cfg
        assert cfg["container_id"] == remote and cfg["node"] == listed[remote]["node"], cfg
        assert cfg["memory_limit"] and cfg["pids_limit"] and cfg["image"], cfg
        stamped = await call(
            sio,
            "get_container_logs",
            {"container_id": remote, "tail": 5, "since": 3600, "timestamps": True},
        )
        assert "error" not in stamped, stamped
        assert all(re.match(r"\d{4}-\d\d-\d\dT", line) for line in stamped["lines"]), stamped
        bad = await call(sio, "get_container_logs", {"container_id": remote, "since": -1})
        assert bad.get("error_type") == "validation_error", bad
        for verb in ("pause_container", "kill_container"):  # a Swarm task: stop/restart instead
            refused = await call(sio, verb, {"container_id": remote})
            assert refused["details"]["reason"] == "not_in_cluster_mode", refused
        shell = await call(sio, "open_shell", {"container_id": remote, "cols": 80, "rows": 24})
        assert shell["details"]["reason"] == "not_in_cluster_mode", shell


async def _answers(sio: Any, rec: Any, cid: str, timeout: float = 10) -> None:
    """`cid` answers a ping through the hub (retried while its channel comes up)."""
    deadline = time.monotonic() + timeout
    while True:
        sent = await call(
            sio, "send_message", {"container_id": cid, "message": {"command": "ping"}}
        )
        if sent.get("status") == "sent":
            try:
                await rec.wait_for("message_received", _pong_after(cid, time.time() - 0.05), 3)
                return
            except TimeoutError:
                pass
        if time.monotonic() > deadline:
            item = _by_id(await call(sio, "list_containers", {})).get(cid)
            seen = await asyncio.to_thread(_EVIDENCE[0], cid) if _EVIDENCE else ""
            raise AssertionError(f"{cid} does not answer: {sent}; listed as {item}\n{seen}")
        await asyncio.sleep(0.2)


def _rescheduled(cid: str) -> Callable[[Any], bool]:
    return lambda d: d["activity_type"] == "container_rescheduled" and d["container_id"] == cid


def _pong_after(cid: str, since: float) -> Callable[[Any], bool]:
    def match(d: Any) -> bool:
        if d["container_id"] != cid or d["message"].get("pong") is not True:
            return False
        stamp = datetime.fromisoformat(d["timestamp"]).timestamp()
        return stamp >= since

    return match


def _changed(cid: str, state: str, away_from: str | None = None) -> Callable[[Any], bool]:
    """A `status_changed` of `cid` to `state` (on a node other than `away_from`)."""

    def match(d: Any) -> bool:
        if d["container_id"] != cid or d["new_state"] != state:
            return False
        return away_from is None or not str(d.get("node", "")).endswith(f"-{away_from}")

    return match


async def _all_running(sio: Any, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        listed = _by_id(await call(sio, "list_containers", {}))
        left = [(cid, listed[cid]["status"]) for cid in ids if listed[cid]["status"] != "running"]
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not running again: {left}")
        await asyncio.sleep(0.5)


def _all_managers_back(cluster: Cluster) -> bool:
    nodes = cluster.swarm_nodes()
    return len(nodes) == 3 and all(
        n["Status"]["State"] == "ready" and n["ManagerStatus"]["Reachability"] == "reachable"
        for n in nodes
    )


def _settled(cluster: Cluster, hold: float = 5.0, timeout: float = 90) -> Node:
    """The Raft leader, once every node is ready, every manager reachable and the leader the
    same for `hold` seconds. After a healed cut or a restarted daemon Swarm elects and its
    new leader's dispatcher may mark a healthy node down for a moment (and shut its tasks
    down): a drill started in that churn measures Swarm settling, not the hub."""
    since: tuple[str, float] | None = None
    deadline = time.monotonic() + timeout
    while True:
        try:
            leader = cluster.leader().node_id if _all_managers_back(cluster) else None
        except AssertionError:
            leader = None
        now = time.monotonic()
        if leader is None or since is None or since[0] != leader:
            since = (leader, now) if leader is not None else None
        elif now - since[1] >= hold:
            return cluster.by_id(leader)
        assert now < deadline, f"the swarm did not settle in {timeout:.0f} s"
        time.sleep(0.3)


def _not_leader(cluster: Cluster, names: tuple[str, ...] = ("n2", "n3")) -> list[Node]:
    """The nodes among `names` that do not lead the Raft group (after `_settled`). A drill
    on the leader's node measures the election first (15-24 s here, docs/CLUSTER.md), and
    the new leader's dispatcher then marks nodes down that are not: each drill takes a
    follower, and the hub's node n1 never."""
    leader = _settled(cluster)
    return [cluster.node(n) for n in names if cluster.node(n).node_id != leader.node_id]


async def _busy_follower(
    sio: Any, rec: Any, roles: Roles, flows: list[str], timeout: float = 120
) -> tuple[Node, dict[str, dict[str, Any]], list[str]]:
    """(node, listed, its flows): a follower (n2 or n3, not the Raft leader) running at least
    DRILL_FLOWS of the module's flows, once every flow runs and answers from its current
    container. The earlier drills moved flows about (after a healed partition Swarm may mark
    a healthy node down and its flows move again, docs/CLUSTER.md): that settling is waited
    for, bounded, not timed. A drill may empty the one follower the leader leaves: flows of
    the other nodes restarted through the hub go where Swarm places a task, the least loaded
    node."""
    deadline = time.monotonic() + timeout
    spread = 0
    while True:
        await _all_running(sio, flows, timeout=60)
        try:
            for cid in flows:
                await _answers(sio, rec, cid, timeout=30)
        except AssertionError as err:
            assert time.monotonic() < deadline, f"the cluster did not settle: {err}"
            log.warning("waiting for a settled cluster: %s", err)
            continue
        followers = await asyncio.to_thread(_not_leader, roles.cluster)
        listed = _by_id(await call(sio, "list_containers", {}))
        node = max(followers, key=lambda n: len(_on(listed, flows, n)))
        hit = _on(listed, flows, node)
        on_node = {
            c.labels.get("com.docker.swarm.task.id")
            for c in node.client.containers.list(
                filters={"label": f"flowmgr.instance={roles.instance}"}
            )
        }
        if len(hit) >= DRILL_FLOWS and all(listed[c]["task_id"] in on_node for c in hit):
            return node, listed, hit
        assert time.monotonic() < deadline and spread < 3, (node.name, hit, spread)
        if len(hit) < DRILL_FLOWS:
            spread += 1
            others = [cid for cid in flows if cid not in hit][: 2 * DRILL_FLOWS]
            log.info("%d flows on %s; restarting %d", len(hit), node.name, len(others))
            restarted = await asyncio.gather(
                *(call(sio, "restart_container", {"container_id": cid}) for cid in others)
            )
            assert all(a.get("status") == "running" for a in restarted), restarted
        else:
            await asyncio.sleep(1)  # listed before its node runs the new task: a moment


async def _when_dead(pids: list[int], timeout: float) -> float:
    """time.monotonic() when none of `pids` runs any more (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"still running after {timeout:.0f} s: {pids}")
        await asyncio.sleep(0.1)
    return time.monotonic()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its shim's reap does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


def _on(
    listed: dict[str, dict[str, Any]],
    flows: list[str],
    node: Node,
    leave_out: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    return [
        cid
        for cid in flows
        if cid not in leave_out and (listed[cid].get("node") or "").endswith(f"-{node.name}")
    ]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_request_may_name_the_node(roles: Roles, flows: list[str]) -> None:
    async with client(roles.url) as (sio, _rec):
        n2 = f"{PREFIX}-n2"  # its hostname (cluster-up.sh)
        bad = await call(sio, "create_container", {"name": f"{roles.instance}-x", "node": "nope"})
        assert bad["error_type"] == "validation_error" and bad["details"]["field"] == "node", bad
        assert n2 in bad["message"], bad  # says which nodes there are
        made = await call(sio, "create_container", {"name": f"{roles.instance}-on2", "node": n2})
        assert "error" not in made, made
        try:
            await call(sio, "start_container", {"container_id": made["container_id"]})
            item = _by_id(await call(sio, "list_containers", {}))[made["container_id"]]
            assert item["node"] == n2 and item["status"] == "running", item
        finally:
            await call(sio, "delete_container", {"container_id": made["container_id"]})


@pytest.mark.asyncio(loop_scope="module")
async def test_a_deleted_flows_socket_volumes_leave_every_node(
    roles: Roles, flows: list[str]
) -> None:
    """Swarm removes a service's tasks, not the volumes they made: the hub has the agents
    remove the socket volume of a deleted flow, and only of flows that are gone."""

    def volumes(name: str) -> list[str]:
        return [
            n.name
            for n in roles.cluster.nodes
            if n.client.volumes.list(filters={"name": f"flowmgr-sock-{name}"})
        ]

    async with client(roles.url) as (sio, rec):
        name = f"{roles.instance}-gone"
        made = await call(sio, "create_container", {"name": name})
        assert "error" not in made, made
        await call(sio, "start_container", {"container_id": made["container_id"]})
        await _answers(sio, rec, made["container_id"], timeout=30)
        assert volumes(name), "no socket volume made"
        # a foreign volume with the same prefix but not this instance's: never touched
        foreign = roles.cluster.nodes[1].client.volumes.create(
            f"flowmgr-sock-{roles.instance}-foreign",
            labels={"flowmgr.managed": "true", "flowmgr.instance": "someone-else"},
        )
        try:
            gone = await call(sio, "delete_container", {"container_id": made["container_id"]})
            assert gone.get("status") == "deleted", gone
            deadline = time.monotonic() + 20
            while (left := await asyncio.to_thread(volumes, name)) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            assert not left, f"socket volume of {name} left on {left}"
            listed = _by_id(await call(sio, "list_containers", {}))
            for cid in flows:  # every flow still here keeps its own
                flow = listed[cid]["name"]
                assert await asyncio.to_thread(volumes, flow), f"{flow} lost its socket volume"
            foreign.reload()  # still there (NotFound otherwise)
        finally:
            foreign.remove(force=True)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_panel_lists_every_flow_with_its_node(roles: Roles, flows: list[str]) -> None:
    """Pilot: `flowmgr --connect` to the hub shows the 30 flows, each with its node's hostname,
    and a summary line per node."""
    backend = RemoteBackend(roles.url, token=TEST_TOKEN)
    app = FlowMgrApp(backend, start_backend=True, mode=f"remote {roles.url}")
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            table = dashboard(app).table
            await until(pilot, lambda: set(flows) <= set(table.shown_ids), "every flow", 30)
            for cid in flows:
                node = table.cell_text(cid, "node")
                assert re.fullmatch(r"[a-z0-9]+-n[123]", node), (cid, node)
            summary = str(dashboard(app).query_one(NodeSummary).content).splitlines()
            assert sum(1 for line in summary if re.match(r"[a-z0-9]+-n[123]\b", line)) == 3, summary
    finally:
        await backend.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_panel_in_tmux_lists_every_flow_with_its_node(
    roles: Roles, flows: list[str]
) -> None:
    """The real terminal: `flowmgr --connect URL` in tmux lists all the flows and their nodes."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed")
    token_file = roles.base / "api.token"
    token_file.write_text(TEST_TOKEN)
    token_file.chmod(0o600)
    tmux = Tmux(f"flowmgr-hub-{roles.instance}")
    cmd = (
        f"env TERM=xterm-256color {FLOWMGR} --connect {roles.url} --token-file {token_file} "
        f"--log-file {roles.base / 'panel.log'}"
    )
    try:
        tmux.run("new-session", "-d", "-s", "panel", "-x", "170", "-y", "50", cmd)
        tmux.run("resize-window", "-t", "panel", "-x", "170", "-y", "50")
        screen = await tmux.wait_for(lambda s: f"{FLOWS} of {FLOWS} containers" in s, "the count")
        rows = [line for line in screen.splitlines() if "flow:latest" in line]
        assert rows, screen  # the rows that fit the table's height, each with its node
        assert all(re.search(r"\b[a-z0-9]+-n[123]\b", row) for row in rows), screen
        summary = [line for line in screen.splitlines() if re.match(r"\s*[a-z0-9]+-n[123] ", line)]
        assert len(summary) == 3 and all(" connected" in line for line in summary), screen
        (roles.base / "panel-tmux.txt").write_text(screen)
    finally:
        tmux.run("kill-server")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_flow_that_ends_on_its_own_is_a_crash_with_its_logs(
    roles: Roles, flows: list[str]
) -> None:
    """A flow service made behind the hub's back (as another hub of the same instance would)
    is adopted; its task fails: one `container_crashed`, its output fetched from its node."""
    name = f"{roles.instance}-crash"
    labels = {"flowmgr.managed": "true", "flowmgr.instance": roles.instance, "flowmgr.name": name}
    async with client(roles.url) as (sio, rec):
        service = roles.cluster.manager().services.create(
            "flowmgr-test-busybox:latest",
            ["sh", "-c", "echo boom-from-the-flow; sleep 2; exit 3"],
            name=name,
            labels=labels,
            container_labels=labels,
            restart_policy=docker.types.RestartPolicy(condition="none"),
        )
        try:
            crash = await rec.wait_for(
                "container_crashed", lambda d: d["container_id"] == service.id, timeout=30
            )
            assert crash["exit_code"] == 3, crash
            assert "boom-from-the-flow" in crash["crash_details"]["logs"], crash
            status = await call(sio, "get_container_status", {"container_id": service.id})
            assert status["state"] == "exited", status
        finally:
            service.remove()


@pytest.mark.asyncio(loop_scope="module")
async def test_a_flows_output_streams_to_a_client_and_follows_a_restart(
    roles: Roles, flows: list[str]
) -> None:
    """`subscribe_logs` through the hub: the lines a flow prints on its node reach the client
    as `container_log`, and keep coming from its new container after a restart (a new task,
    perhaps on another node). A busybox flow made behind the hub's back prints a numbered line
    every 0.2 s (the API's create takes no command)."""
    name = f"{roles.instance}-talker"
    labels = {"flowmgr.managed": "true", "flowmgr.instance": roles.instance, "flowmgr.name": name}
    script = 'i=0; while true; do i=$((i+1)); echo "line $i of $HOSTNAME"; sleep 0.2; done'
    service = roles.cluster.manager().services.create(
        "flowmgr-test-busybox:latest",
        ["sh", "-c", script],
        name=name,
        labels=labels,
        container_labels=labels,
        restart_policy=docker.types.RestartPolicy(condition="none"),
    )
    try:
        async with client(roles.url) as (sio, rec):
            deadline = time.monotonic() + 30
            while (await call(sio, "get_container_status", {"container_id": service.id})).get(
                "state"
            ) != "running":
                assert time.monotonic() < deadline, "the talker never ran"
                await asyncio.sleep(0.3)
            sub = await call(sio, "subscribe_logs", {"container_id": service.id})
            assert sub.get("status") == "subscribed", sub
            first = await rec.wait_for(
                "container_log", lambda d: d["container_id"] == service.id, timeout=20
            )
            host = first["line"].rsplit(" ", 1)[-1]
            restarted = await call(sio, "restart_container", {"container_id": service.id})
            assert restarted.get("status") == "running", restarted
            # lines of the new container (another hostname: its container id) come too
            await rec.wait_for(
                "container_log",
                lambda d: d["container_id"] == service.id and not d["line"].endswith(host),
                timeout=30,
            )
    finally:
        service.remove()


@pytest.mark.asyncio(loop_scope="module")
async def test_an_agent_speaks_only_for_its_own_nodes_flows(roles: Roles, flows: list[str]) -> None:
    """A process holding the agent token, taking over node 3 (its agent stopped), forges a
    frame of a flow that runs on node 1, with that flow's real task and with a made-up one:
    no client sees either, and the flow stays node 1's."""
    n1, n3 = roles.cluster.node("n1"), roles.cluster.node("n3")
    roles.stop_agent(n3)
    token = (roles.base / "agent.token").read_text().strip()
    async with client(roles.url) as (sio, rec):
        listed = _by_id(await call(sio, "list_containers", {}))
        victim = _on(listed, flows, n1)[0]
        real_task = listed[victim]["task_id"]

        async def nothing(request: Request) -> dict[str, Any]:
            return {}

        def hello() -> AgentHello:
            held = FlowHeld(flow_id=victim, task_id=real_task, state="running")
            return AgentHello(
                node_id=n3.node_id,
                hostname="fmc-n3",
                version="0",
                instance=new_instance(),
                flows=[held],
            )

        rogue = AgentLink(roles.url, token, hello, nothing, heartbeat=0.5, agent_timeout=2)
        rogue.start()
        try:
            await rogue.wait_linked(15)
            for task_id in (real_task, "madeuptask0123456789abcd"):
                await rogue.event(
                    AgentEvent(
                        flow_id=victim,
                        task_id=task_id,
                        kind="message_received",
                        data={"message": {"forged": True}},
                    )
                )
                await rogue.report(AgentReport(flow_id=victim, task_id=task_id, state="unknown"))
            await asyncio.sleep(2.5)  # past a poll and a refresh
            assert not [m for m in rec.events["message_received"] if m["message"].get("forged")]
            after = _by_id(await call(sio, "list_containers", {}))[victim]
            assert after["status"] == "running" and after["node"].endswith("-n1"), after
            await _answers(sio, rec, victim)
        finally:
            await rogue.stop()
            roles.start_agent(n3)
        await linked(sio, timeout=30)


@pytest.mark.asyncio(loop_scope="module")
async def test_lost_quorum_refuses_mutations_while_flows_answer(
    roles: Roles, flows: list[str]
) -> None:
    async with client(roles.url) as (sio, rec):
        swarm_traffic(blocked=True)
        try:
            deadline = time.monotonic() + 40
            while True:  # the managers notice the lost peers within seconds
                answer = await call(sio, "create_container", {"name": f"{roles.instance}-nq"})
                if answer.get("details", {}).get("reason") == "no_quorum":
                    break
                assert "error" in answer or time.monotonic() < deadline, answer
                if "error" not in answer:  # still accepted: undo, try again
                    await call(sio, "delete_container", {"container_id": answer["container_id"]})
                assert time.monotonic() < deadline, f"never refused: {answer}"
                await asyncio.sleep(1)
            assert answer["error_type"] == "docker_api_error", answer
            stop = await call(sio, "stop_container", {"container_id": flows[0]})
            assert stop.get("error_type") == "docker_api_error", stop
            # every flow still listed and answering, on every node
            listed = _by_id(await call(sio, "list_containers", {}))
            assert all(listed[cid]["status"] == "running" for cid in flows)
            for node in roles.cluster.nodes:
                await _answers(sio, rec, _on(listed, flows, node)[0])
        finally:
            swarm_traffic(blocked=False)
        wait_for("a leader again", roles.cluster.leader, 60)
        wait_for("three reachable managers", lambda: _all_managers_back(roles.cluster), 60)


@pytest.mark.asyncio(loop_scope="module")
async def test_killed_hub_comes_back_and_lists_everything(roles: Roles, flows: list[str]) -> None:
    roles.kill_hub()
    roles.start_hub()
    async with client(roles.url) as (sio, rec):
        listed = _by_id(await linked(sio, timeout=30))
        assert not [cid for cid in flows if cid not in listed], listed.keys()
        # every one running and answering: the quorum drill just before may have had a new
        # leader mark a node down for a moment and shut its tasks down, which the restarted
        # hub must see and undo (it did not, once: a flow listed running for good, its task
        # shut down; docs/CLUSTER.md)
        await _all_running(sio, flows, timeout=30)
        for cid in flows:
            await _answers(sio, rec, cid, timeout=30)


@pytest.mark.asyncio(loop_scope="module")
async def test_partitioned_node_fences_its_flows(roles: Roles, flows: list[str]) -> None:
    node = (await asyncio.to_thread(_not_leader, roles.cluster))[0]
    async with client(roles.url) as (sio, rec):
        listed = _by_id(await linked(sio))
        cut = _on(listed, flows, node)
        assert cut, f"no flow on {node.name}"
        tasks = {listed[cid]["task_id"] for cid in cut}
        began = time.monotonic()
        node_link(node, up=False)
        try:
            unknown = await asyncio.gather(
                *(
                    rec.wait_for(
                        "status_changed",
                        _changed(cid, "unknown"),
                        timeout=10,
                    )
                    for cid in cut
                )
            )
            assert all(u["reason"] in CUT_REASONS for u in unknown), unknown
            link_lost = time.monotonic() - began

            def local_copies() -> list[str]:
                running = node.client.containers.list(
                    filters={"label": f"flowmgr.instance={roles.instance}"}
                )
                return [c.id for c in running if c.labels.get("com.docker.swarm.task.id") in tasks]

            # the node's agent, cut from the hub and the managers, stops its copies
            fenced_after = wait_for("the fence", lambda: not local_copies() or None, 30)
            fenced = time.monotonic() - began
            assert fenced_after is True
            assert fenced <= roles.fence_seconds + 4, f"fenced after {fenced:.1f} s"
            log.info("partition: unknown after %.1f s, fenced after %.1f s", link_lost, fenced)
        finally:
            node_link(node, up=True)
        # once it hears the hub again, the agent says what its fence stopped
        fenced_said = await rec.wait_for(
            "activity_log",
            lambda d: d["activity_type"] == "container_fenced" and d["container_id"] in cut,
            timeout=30,
        )
        assert fenced_said["details"]["node"].endswith(f"-{node.name}"), fenced_said
        # and every one runs again: moved by the managers (the hub forces it, restart
        # condition none) or, when the cut healed before Swarm marked the node down, started
        # again by the hub once the agent said it fenced them
        await _all_running(sio, cut, timeout=60)
        for cid in cut:
            await _answers(sio, rec, cid, timeout=30)
        await linked(sio, timeout=40)


@pytest.mark.asyncio(loop_scope="module")
async def test_killed_node_daemon_flows_unknown_then_moved(roles: Roles, flows: list[str]) -> None:
    wait_for("three reachable managers", lambda: _all_managers_back(roles.cluster), 60)
    async with client(roles.url) as (sio, rec):
        await linked(sio)
        # a follower (never the Raft leader, nor the hub's node) with flows, once settled
        node, listed, hit = await _busy_follower(sio, rec, roles, flows)
        tasks = {listed[cid]["task_id"] for cid in hit}
        old_pids = [
            c.attrs["State"]["Pid"]
            for c in node.client.containers.list(
                filters={"label": f"flowmgr.instance={roles.instance}"}
            )
            if c.labels.get("com.docker.swarm.task.id") in tasks
        ]
        assert len(old_pids) == len(hit), (hit, old_pids)
        # a client watches one of them: its samples follow it to its new node
        followed = hit[0]
        sub = await call(sio, "subscribe_logs", {"container_id": followed})
        assert sub.get("status") == "subscribed", sub
        await call(sio, "watch_stats", {"container_ids": [followed]})
        manager = roles.cluster.node("n1").client

        def forced(cid: str) -> int:
            spec = manager.api.inspect_service(cid)["Spec"]["TaskTemplate"]
            return int(spec.get("ForceUpdate") or 0)

        forced_before = {cid: forced(cid) for cid in hit}
        pid = node.dockerd_pid()
        assert pid is not None
        node.close()
        mark = len(rec.events["status_changed"])
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        copies_gone = asyncio.ensure_future(_when_dead(old_pids, 60))
        try:
            await asyncio.gather(
                *(
                    rec.wait_for(
                        "status_changed",
                        _changed(cid, "unknown"),
                        timeout=10,
                    )
                    for cid in hit
                )
            )
            unknown_after = time.monotonic() - began
            assert unknown_after <= 2.0, f"unknown only after {unknown_after:.2f} s"
            # in a thread: the loop keeps timing the old copies (and receiving pushes)
            down = await asyncio.to_thread(
                wait_for,
                f"{node.name} down in Swarm",
                lambda: next(
                    (
                        time.monotonic()
                        for n in roles.cluster.swarm_nodes()
                        if n["ID"] == node.node_id and n["Status"]["State"] == "down"
                    ),
                    None,
                ),
                60,
                0.1,
            )

            async def back(cid: str) -> None:
                try:
                    await rec.wait_for(
                        "status_changed", _changed(cid, "running", away_from=node.name), timeout=30
                    )
                except TimeoutError:
                    seen = [
                        (d["old_state"], d["new_state"], d.get("node"), d.get("reason"))
                        for d in rec.events["status_changed"]
                        if d["container_id"] == cid
                    ]
                    listed = _by_id(await call(sio, "list_containers", {})).get(cid)
                    raise AssertionError(f"{cid} not moved: said {seen}; listed {listed}") from None
                await _answers(sio, rec, cid, timeout=30)

            await asyncio.gather(*(back(cid) for cid in hit))  # all at once, as clients would
            moved = time.monotonic() - down
            # nothing said it ran on the dead node again (its cgroups still give samples)
            relapsed = [
                d
                for d in rec.events["status_changed"][mark:]
                if d["container_id"] in hit
                and d["new_state"] == "running"
                and str(d.get("node", "")).endswith(f"-{node.name}")
            ]
            assert not relapsed, relapsed
            rec.events["container_stats"].clear()
            await _answers(sio, rec, followed, timeout=30)
            await rec.wait_for("container_stats", lambda d: d["container_id"] == followed, 20)
            log.info(
                "daemon kill: unknown after %.2f s; down in Swarm after %.1f s; "
                "moved and answering %.1f s later",
                unknown_after,
                down - began,
                moved,
            )
            assert moved <= 5.0, f"moved and answering {moved:.1f} s after Swarm's detection"
            # the old copies, under their shims with no engine to stop them, are ended by the
            # node's agent past fence_seconds: the flows never run twice for longer
            ended = await copies_gone - began
            assert ended <= roles.fence_seconds + 3, f"old copies ran {ended:.1f} s"
            said = await rec.wait_for(
                "activity_log",
                lambda d: d["activity_type"] == "container_fenced" and d["container_id"] in hit,
                timeout=10,
            )
            assert said["details"]["node"].endswith(f"-{node.name}"), said
            # each moved once: the fence's word about a task the hub had already replaced did
            # not replace the half-started new one again (that doubled the move's time); 0 is
            # Swarm having placed the task again itself
            await asyncio.sleep(1)
            counts = {cid: forced(cid) - forced_before[cid] for cid in hit}
            twice = {cid: n for cid, n in counts.items() if n > 1}
            assert not twice, f"forced updates per flow (at most 1): {twice}"
            log.info("daemon kill: the old copies ended %.1f s after the kill", ended)
        finally:
            subprocess.run(["bash", str(node.start_script)], check=False, timeout=60)
            wait_for("n3's daemon", node.answers, 60)
        await linked(sio, timeout=60)
        await asyncio.sleep(2)  # the node back: its agent reports its old, ended copies
        said = rec.events["status_changed"][mark:]
        for cid in hit:
            landed = next(
                i for i, d in enumerate(said) if _changed(cid, "running", away_from=node.name)(d)
            )
            # the old copies' words (samples without an engine, the node's return) are not
            # the moved flow's: it stays running where it is
            later = [d for d in said[landed + 1 :] if d["container_id"] == cid]
            assert not later, f"{cid} after its move: {later}"


@pytest.mark.asyncio(loop_scope="module")
async def test_a_drained_nodes_flows_are_started_elsewhere(roles: Roles, flows: list[str]) -> None:
    """An operator drains a node (`docker node update --availability drain`): the managers
    shut its tasks down and, restart condition `none`, place none elsewhere, while the node
    stays `ready`. A newly elected leader does the same to a node it marks down for a second
    (seen after the hub-kill drill: a flow listed `running` whose task was shut down, for
    good). The hub starts each such flow again and says why. Runs last: it leaves the node
    active but empty."""
    manager = roles.cluster.node("n1").client
    async with client(roles.url) as (sio, rec):
        node, _listed, drained = await _busy_follower(sio, rec, roles, flows)
        swarm_node = manager.nodes.get(node.node_id)
        spec = dict(swarm_node.attrs["Spec"], Availability="drain")
        assert swarm_node.update(spec)
        try:
            said = await asyncio.gather(
                *(rec.wait_for("activity_log", _rescheduled(cid), timeout=30) for cid in drained)
            )
            assert all(d["details"]["node"].endswith(f"-{node.name}") for d in said), said
            await asyncio.gather(
                *(
                    rec.wait_for(
                        "status_changed", _changed(cid, "running", away_from=node.name), 30
                    )
                    for cid in drained
                )
            )
            for cid in drained:
                await _answers(sio, rec, cid, timeout=30)
            unknown = [
                d
                for d in rec.events["status_changed"]
                if d["container_id"] in drained
                and d["new_state"] == "unknown"
                and d["old_state"] != "unknown"  # not the same state said with its new node
            ]
            assert all(d.get("reason") == "task_shut_down" for d in unknown), unknown
        finally:
            swarm_node.reload()
            assert swarm_node.update(dict(swarm_node.attrs["Spec"], Availability="active"))
