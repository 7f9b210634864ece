"""The hub and the agents on the 3-node cluster, through the API as clients use it (issue 16).

One hub (`flowmgr --hub`) over node 1's engine, one agent per node in that node's network
namespace; a real Socket.IO client on the hub's address. The module's flows run through every
test; the drills come last, each putting the cluster back as it found it.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.cluster.conftest import Cluster
from tests.cluster.hub_harness import Roles
from tests.integration.api_harness import client

log = logging.getLogger(__name__)
FLOWS = 30
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def roles(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    """The hub and three agents, linked; everything they made removed at the end."""
    base: Path = tmp_path_factory.mktemp("hub")
    roles = Roles(cluster, base)
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
        # each one answers a message, through the hub and its node's agent
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
