"""The cluster agent (issue 16, server/cluster/agent.py) on the 3-node test cluster.

A real uvicorn serving the hub's `/agent` namespace on 127.0.0.1 (tests/integration's
`running_hub`), and the agent in-process for one node (its DOCKER_HOST is that node's socket;
the agent runs in the host's network namespace: Unix sockets cross it). Flows are Swarm
services made with SwarmEngine + service_spec from `flow:latest` (which answers
{"command": "ping"} with {"pong": true}), pinned to the node. Every name carries this run's id;
every service is removed in finally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from server.cluster.agent import Agent
from server.cluster.link_models import AgentEvent, AgentReport
from server.core.config import Settings, load_settings
from server.core.errors import ContainerNotFound, FlowSocketConnectionError
from server.core.models import CreateSpec
from server.core.swarm.engine import SwarmEngine
from server.core.swarm.spec import SwarmNode, service_spec, socket_volume
from tests.cluster.conftest import FLOW_IMAGE, Cluster, Node, wait_for
from tests.cluster.test_swarm_engine import until
from tests.conftest import RUN_ID, TEST_LABEL
from tests.integration.test_cluster_link import AGENT_TOKEN, Hub, running_hub

pytestmark = [pytest.mark.docker, pytest.mark.slow]

log = logging.getLogger(__name__)

INSTANCE = f"{RUN_ID}ag"
"""The flowmgr.instance label of every flow these tests make (the sweep's key)."""
SOCKET_ROOT = Path(f"/tmp/flowmgr-agent-{RUN_ID}")
START_LIMIT = 40.0
FENCE_SECONDS = 3.0


def _settings(hub_url: str = "http://127.0.0.1:9", **overrides: Any) -> Settings:
    return load_settings(
        None,
        env={},
        socket_dir=str(SOCKET_ROOT),
        docker__instance=INSTANCE,
        docker__default_image=FLOW_IMAGE,
        docker__memory_limit="128m",
        docker__cpu_limit=0.5,
        docker__pids_limit=64,
        docker__stop_timeout=1,
        docker__data_mount=None,
        monitoring__stats_interval=0.5,
        cluster__mode="swarm",
        cluster__hub_url=hub_url,
        cluster__agent_heartbeat=0.5,
        cluster__agent_timeout=2.0,
        cluster__fence_seconds=FENCE_SECONDS,
        **overrides,
    )


class Recorder:
    """What the hub got from the agent."""

    def __init__(self, hub: Hub) -> None:
        self.reports: list[AgentReport] = []
        self.events: list[AgentEvent] = []
        self.changed = asyncio.Event()
        hub.links.on_report = lambda node, r: self._got(self.reports, r)
        hub.links.on_event = lambda node, e: self._got(self.events, e)

    def _got(self, into: list[Any], item: Any) -> None:
        into.append(item)
        self.changed.set()

    async def event(self, match: Callable[[AgentEvent], bool], timeout: float) -> AgentEvent:
        """The first event matching (already here or yet to come); woken, not polled."""
        async with asyncio.timeout(timeout):
            while True:
                found = next((e for e in self.events if match(e)), None)
                if found is not None:
                    return found
                self.changed.clear()
                await self.changed.wait()


class Flows:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.engine = SwarmEngine(cluster.nodes[0].host, call_timeout=30, mutation_timeout=15)
        self.made: list[str] = []

    async def create(
        self, stem: str, node: Node, mounts: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> tuple[str, str]:
        """A flow service pinned to `node` (its socket mount changed by `mounts`, if given)."""
        name = f"{RUN_ID}-ag-{stem}-{uuid.uuid4().hex[:4]}"
        nodes = [SwarmNode(n.id, n.hostname) for n in await self.engine.nodes()]
        body = service_spec(
            CreateSpec(name=name),
            _settings(),
            labels={TEST_LABEL: RUN_ID},
            nodes=nodes,
            node=node.node_id,
        )
        if mounts is not None:
            mounts(body["TaskTemplate"]["ContainerSpec"]["Mounts"])
        service_id = await self.engine.create_flow_service(body)
        self.made.append(service_id)
        return service_id, name

    async def container_of(self, service_id: str) -> str:
        async def check() -> str | None:
            t = (await self.engine.flow_service(service_id)).current
            return t.container_id if t and t.state == "running" and t.container_id else None

        return await until(f"{service_id} running", check, START_LIMIT)

    async def close(self) -> None:
        for service_id in self.made:
            with contextlib.suppress(Exception):
                await self.engine.remove(service_id)
        await self.engine.close()
        await asyncio.to_thread(self._sweep_volumes)

    def _sweep_volumes(self) -> None:
        for node in self.cluster.nodes:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # the tasks' containers go first
                try:
                    if not node.answers():
                        break
                    left = node.client.containers.list(
                        all=True, filters={"label": f"flowmgr.instance={INSTANCE}"}
                    )
                    if not left:
                        node.client.volumes.prune(filters={"label": f"flowmgr.instance={INSTANCE}"})
                        break
                except docker.errors.APIError as err:
                    log.warning("sweeping %s: %s", node.name, err)
                    break
                time.sleep(0.3)


@pytest.fixture
async def flows(cluster: Cluster) -> AsyncIterator[Flows]:
    made = Flows(cluster)
    try:
        yield made
    finally:
        await made.close()


def non_leader(cluster: Cluster) -> Node:
    """n2, unless it leads the swarm (a partitioned leader answers reads from its own store)."""
    leader = cluster.leader()
    return next(n for n in [cluster.node("n2"), *cluster.nodes] if n is not leader)


@contextlib.asynccontextmanager
async def running_agent(hub: Hub, node: Node) -> AsyncIterator[Agent]:
    agent = Agent(
        _settings(hub.url),
        hub_url=hub.url,
        agent_token=AGENT_TOKEN,
        docker_host=node.host,
        backoff_max=0.5,
    )
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def _flow(hub: Hub, node: Node, flow_id: str) -> Any:
    link = hub.links.nodes.get(node.node_id)
    return None if link is None else link.flows.get(flow_id)


async def test_the_agent_reports_relays_messages_logs_and_samples(
    cluster: Cluster, flows: Flows
) -> None:
    node = cluster.node("n2")
    other = cluster.node("n1")
    flow_id, name = await flows.create("ping", node)
    container_id = await flows.container_of(flow_id)

    def forged_bind(mounts: list[dict[str, Any]]) -> None:
        (sock,) = [m for m in mounts if m["Target"] == "/run/flowmgr"]
        mounts[mounts.index(sock)] = {
            "Type": "bind",
            "Source": "/etc",
            "Target": "/run/flowmgr",
            "ReadOnly": True,
        }

    def other_volume(mounts: list[dict[str, Any]]) -> None:
        (sock,) = [m for m in mounts if m["Target"] == "/run/flowmgr"]
        sock["Source"] = socket_volume(f"{RUN_ID}-someone-else")

    forged_id, _ = await flows.create("forged", node, forged_bind)
    renamed_id, _ = await flows.create("renamed", node, other_volume)
    elsewhere_id, _ = await flows.create("elsewhere", other)
    forged_cid = await flows.container_of(forged_id)
    renamed_cid = await flows.container_of(renamed_id)
    elsewhere_cid = await flows.container_of(elsewhere_id)

    async with running_hub({n.node_id for n in cluster.nodes}, agent_timeout=2.0) as hub:
        got = Recorder(hub)
        async with running_agent(hub, node) as agent:
            core = agent.core
            assert core is not None
            await hub.wait_connected(node.node_id)
            link = hub.links.nodes[node.node_id]
            assert link.hostname == node.netns

            async def running() -> Any:
                f = _flow(hub, node, flow_id)
                return f if f and f.state == "running" else None

            held = await until("the flow reported running", running, 10)
            assert held.container_id == container_id and held.task_id

            # the flow connects to its socket in the volume, and answers through hub and agent
            async def connected() -> bool:
                return (
                    any(e.kind == "channel_connected" and e.flow_id == flow_id for e in got.events)
                    or core.registry.snapshot_of(
                        core.registry.records[container_id]
                    ).socket_connected
                )

            await until("the flow's channel", connected, 15)
            started = time.monotonic()
            reply = await hub.ns.request(
                node.node_id, "send", {"container_id": container_id, "message": {"command": "ping"}}
            )
            assert reply.ok and reply.result == {}

            def pong(e: AgentEvent) -> bool:
                return (
                    e.kind == "message_received"
                    and e.flow_id == flow_id
                    and e.data.get("message", {}).get("pong") is True
                )

            answer = await got.event(pong, 5)
            log.info(
                "first send -> pong through hub and agent: %.1f ms",
                1000 * (time.monotonic() - started),
            )
            # round trips once warm (measured, not asserted: the benchmarks' business)
            times = []
            for n in range(20):
                got.events.clear()
                started = time.monotonic()
                await hub.ns.request(
                    node.node_id,
                    "send",
                    {"container_id": container_id, "message": {"command": "ping", "n": n}},
                )
                await got.event(pong, 5)
                times.append(time.monotonic() - started)
            log.info("send -> pong p50 %.1f ms (20 round trips)", 1000 * statistics.median(times))
            assert answer.task_id == held.task_id
            sock = Path(agent.docker_root, "volumes", socket_volume(name), "_data")
            assert (sock.stat().st_mode & 0o777) == 0o711
            assert (sock / "flow.sock").is_socket()

            logs = await hub.ns.request(
                node.node_id, "logs", {"container_id": container_id, "tail": 20}
            )
            assert logs.result is not None and logs.result["truncated"] is False
            assert any("flow runtime started" in line for line in logs.result["lines"])

            await hub.ns.request(node.node_id, "watch", {"container_ids": [container_id]})

            async def sampled() -> Any:
                return hub.links.nodes[node.node_id].samples.get(flow_id)

            sample = await until("a resource sample", sampled, 10)
            assert sample.memory_limit == 128 << 20

            # hostile: not ours, or another node's, or not a container at all
            # (blocking calls in a thread: the hub and the agent share this loop)
            plain = await asyncio.to_thread(
                node.client.containers.run,
                FLOW_IMAGE,
                ["sleep", "60"],
                entrypoint=[],
                detach=True,
                labels={TEST_LABEL: RUN_ID},
            )
            try:
                for bad in (elsewhere_cid, plain.id, "c" * 64, container_id[:12], name):
                    with pytest.raises(ContainerNotFound):
                        await hub.ns.request(
                            node.node_id, "send", {"container_id": bad, "message": {"a": 1}}
                        )
                with pytest.raises(ContainerNotFound):
                    await hub.ns.request(node.node_id, "logs", {"container_id": elsewhere_cid})
            finally:
                await asyncio.to_thread(plain.remove, force=True)

            # hostile: a task container whose socket mount is not its flow's volume
            for bad_cid in (forged_cid, renamed_cid):
                assert bad_cid in core.registry.records, "still managed (reported), no channel"
                assert core.hub.info(bad_cid) is None
                with pytest.raises(FlowSocketConnectionError):
                    await hub.ns.request(
                        node.node_id, "send", {"container_id": bad_cid, "message": {"a": 1}}
                    )
            assert not Path("/etc/flow.sock").exists()
            refused = [
                a.message for a in core.recent_activity() if a.activity_type == "container_error"
            ]
            assert any("bind mount" in m for m in refused), refused
            assert any(f"{RUN_ID}-someone-else" in m for m in refused), refused

            # a removed task: gone (the hub forgets it on that node)
            assert renamed_id in hub.links.nodes[node.node_id].flows
            await flows.engine.remove(renamed_id)

            async def gone() -> bool:
                return renamed_id not in hub.links.nodes[node.node_id].flows

            await until("the removed task reported gone", gone, 20)


async def _not_running(node: Node, container_id: str) -> bool:
    def check() -> bool:
        try:
            return not node.client.api.inspect_container(container_id)["State"]["Running"]
        except docker.errors.NotFound:
            return True

    return await asyncio.to_thread(check)


async def test_a_dead_hub_alone_stops_nothing(cluster: Cluster, flows: Flows) -> None:
    node = non_leader(cluster)
    flow_id, _ = await flows.create("nofence", node)
    container_id = await flows.container_of(flow_id)
    async with running_hub({node.node_id}, agent_timeout=2.0) as hub:
        agent_cm = running_agent(hub, node)
        agent = await agent_cm.__aenter__()
        try:
            await hub.wait_connected(node.node_id)
        except BaseException:
            await agent_cm.__aexit__(None, None, None)
            raise
    try:
        stopped = time.monotonic()
        await asyncio.sleep(FENCE_SECONDS + 2)
        assert agent.link is not None and agent.link.fenced()
        assert agent.managers_reachable is True, agent.managers_why
        assert not agent.fenced
        assert not await _not_running(node, container_id), "a dead hub alone stopped a flow"
        log.info("hub down %.1f s: the flow still runs", time.monotonic() - stopped)
    finally:
        await agent_cm.__aexit__(None, None, None)


async def test_a_partitioned_node_fences_its_flows(cluster: Cluster, flows: Flows) -> None:
    node = non_leader(cluster)
    veth = f"{node.netns}h"
    flow_id, _ = await flows.create("fence", node)
    container_id = await flows.container_of(flow_id)
    cut = False
    try:
        async with running_hub({node.node_id}, agent_timeout=2.0) as hub:
            agent_cm = running_agent(hub, node)
            agent = await agent_cm.__aenter__()
            try:
                await hub.wait_connected(node.node_id)
                subprocess.run(["ip", "link", "set", veth, "down"], check=True, timeout=10)
                cut = True
            except BaseException:
                await agent_cm.__aexit__(None, None, None)
                raise
        gone = time.monotonic()
        try:
            await until(
                "the fenced flow stopped",
                lambda: _not_running(node, container_id),
                FENCE_SECONDS + 1,
            )
            took = time.monotonic() - gone
            log.info("hub and managers out of reach: the flow stopped after %.1f s", took)
            assert agent.fenced and agent.fence_stops >= 1
            assert agent.managers_reachable is False
            await asyncio.sleep(1)
            assert await _not_running(node, container_id), "kept stopped"
        finally:
            await agent_cm.__aexit__(None, None, None)
    finally:
        if cut:
            subprocess.run(["ip", "link", "set", veth, "up"], check=True, timeout=10)
            wait_for(
                "every manager ready and reachable again",
                lambda: all(
                    n["Status"]["State"] == "ready"
                    and n["ManagerStatus"]["Reachability"] == "reachable"
                    for n in cluster.swarm_nodes()
                ),
                timeout=90,
                interval=0.5,
            )


def test_this_module_cleans_after_itself() -> None:
    """A guard for the sweep's key: the instance is this run's own."""
    assert INSTANCE.startswith(RUN_ID) and os.path.isabs(str(SOCKET_ROOT))
