"""The agent's requests and translations (server/cluster/agent.py) over a fake core: a request
names a flow task container of this node by its full id, or gets ContainerNotFound; payloads
are strict; core events become the link's reports and events. No engine, no hub."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server.cluster.agent import Agent, agent_main
from server.cluster.link_models import AgentEvent, AgentReport, Request
from server.core.config import load_settings
from server.core.container_info import ContainerInfo
from server.core.errors import ContainerNotFound, InvalidRequest
from server.core.events import (
    ContainerRemoved,
    FlowChannelLost,
    FlowMessageReceived,
    LogLineReceived,
    StatsSampled,
)
from server.core.flow_config import FlowConfig
from server.core.log_tail import LogTail
from server.core.models import ResourceSample
from server.core.registry import Record

SERVICE = "a1b2c3d4e5f6g7h8i9j0k1l2m"
TASK = "zyxwvutsrqponmlkjihgfedcb"
CID = "c" * 64
PLAIN = "d" * 64


def _info(cid: str, swarm: bool) -> ContainerInfo:
    labels = {"flowmgr.managed": "true", "flowmgr.instance": "default", "flowmgr.name": "web"}
    if swarm:
        labels |= {"com.docker.swarm.service.id": SERVICE, "com.docker.swarm.task.id": TASK}
    return ContainerInfo(
        id=cid,
        name=f"web.1.{TASK}",
        image="flow:latest",
        status="running",
        health="none",
        created=datetime.now(UTC),
        started_at=None,
        finished_at=None,
        exit_code=0,
        oom_killed=False,
        pid=1,
        labels=labels,
    )


class FakeCore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.registry = SimpleNamespace(
            records={
                CID: Record(_info(CID, True), "running", "none", "/x/flow.sock"),
                PLAIN: Record(_info(PLAIN, False), "running", "none", "/y/flow.sock"),
            }
        )

    async def send_message(self, cid: str, message: dict[str, Any]) -> None:
        self.calls.append(("send", (cid, message)))

    async def get_logs(
        self, cid: str, tail: int, *, since: float | None = None, timestamps: bool = False
    ) -> LogTail:
        if since is not None or timestamps:
            self.calls.append(("logs", (tail, since, timestamps)))
        out = LogTail(["a", "b"])
        out.truncated = True
        return out

    async def follow_logs(self, cid: str) -> str:
        self.calls.append(("follow", cid))
        return cid

    async def unfollow_logs(self, cid: str) -> None:
        self.calls.append(("unfollow", cid))

    def watch_stats(self, owner: str, ids: list[str]) -> None:
        self.calls.append(("watch", (owner, ids)))

    async def inspect_container(self, cid: str) -> FlowConfig:
        self.calls.append(("inspect", cid))
        return FlowConfig(cid, "x", "flow:latest", environment={"DB_PASSWORD": "***"})


@pytest.fixture
def agent() -> Agent:
    a = Agent(load_settings(None, env={}), hub_url="http://127.0.0.1:9", agent_token="t" * 32)
    a.core = FakeCore()  # type: ignore[assignment]
    a.node_id = "n" * 25
    a.hostname = "node-1"
    return a


def _req(op: str, **payload: Any) -> Request:
    return Request(request_id="r" * 16, op=op, deadline=5, payload=payload)  # type: ignore[arg-type]


async def test_send_logs_and_watch_reach_the_core(agent: Agent) -> None:
    assert await agent.handle(_req("send", container_id=CID, message={"command": "ping"})) == {}
    assert await agent.handle(_req("logs", container_id=CID, tail=5)) == {
        "lines": ["a", "b"],
        "truncated": True,
    }
    assert await agent.handle(_req("watch", container_ids=[CID])) == {}
    stamped = _req("logs", container_id=CID, tail=5, since=60.0, timestamps=True)
    assert (await agent.handle(stamped))["lines"] == ["a", "b"]
    inspected = await agent.handle(_req("inspect", container_id=CID))
    assert inspected["environment"] == {"DB_PASSWORD": "***"} and inspected["container_id"] == CID
    assert agent.core.calls == [  # type: ignore[union-attr]
        ("send", (CID, {"command": "ping"})),
        ("watch", ("hub", [CID])),
        ("logs", (5, 60.0, True)),
        ("inspect", CID),
    ]


@pytest.mark.parametrize("ref", [PLAIN, "e" * 64, CID[:12], "web", f"web.1.{TASK}", None, 7, ["x"]])
async def test_anything_but_a_task_container_of_this_node_is_not_found(
    agent: Agent, ref: Any
) -> None:
    extras: list[tuple[str, dict[str, Any]]] = [
        ("send", {"message": {}}),
        ("logs", {}),
        ("follow", {}),
        ("unfollow", {}),
        ("inspect", {}),
    ]
    for op, extra in extras:
        with pytest.raises(ContainerNotFound):
            await agent.handle(_req(op, container_id=ref, **extra))
    with pytest.raises(ContainerNotFound):
        await agent.handle(_req("watch", container_ids=[CID, ref]))
    assert agent.core.calls == []  # type: ignore[union-attr]


async def test_payloads_are_strict(agent: Agent) -> None:
    with pytest.raises(InvalidRequest):
        await agent.handle(_req("send", container_id=CID, message={}, queue=True))
    with pytest.raises(InvalidRequest):
        await agent.handle(_req("send", container_id=CID, message="ping"))
    with pytest.raises(InvalidRequest):
        await agent.handle(_req("watch", container_ids=CID))
    with pytest.raises(InvalidRequest):
        await agent.handle(_req("forget", keep="all"))


def test_core_events_become_reports_and_events(agent: Agent) -> None:
    sample = ResourceSample(
        cpu_percent=1.5,
        memory_usage=10,
        memory_limit=100,
        memory_percent=10.0,
        network_rx_bytes=1,
        network_tx_bytes=2,
        disk_read_bytes=3,
        disk_write_bytes=4,
        timestamp=datetime.now(UTC),
    )
    report = agent._translated(StatsSampled(container_id=CID, sample=sample))
    assert isinstance(report, AgentReport)
    assert (report.flow_id, report.task_id, report.container_id) == (SERVICE, TASK, CID)
    assert report.sample is not None and report.sample.memory_limit == 100
    message = agent._translated(FlowMessageReceived(container_id=CID, message={"pong": True}))
    assert message == AgentEvent(
        flow_id=SERVICE, task_id=TASK, kind="message_received", data={"message": {"pong": True}}
    )
    lost = agent._translated(FlowChannelLost(container_id=CID, reason="closed"))
    assert isinstance(lost, AgentEvent) and lost.data == {"reason": "closed"}
    line = agent._translated(LogLineReceived(container_id=CID, line="hello"))
    assert isinstance(line, AgentEvent) and line.kind == "log_line"
    # not a Swarm task: nothing is said about it
    assert agent._translated(LogLineReceived(container_id=PLAIN, line="x")) is None
    # removed: gone, from the ids remembered while it was there
    del agent.core.registry.records[CID]  # type: ignore[union-attr]
    gone = agent._translated(ContainerRemoved(container_id=CID, name="web"))
    assert isinstance(gone, AgentReport) and gone.gone and gone.flow_id == SERVICE


def test_control_frames_go_to_the_hub_as_control_events(agent: Agent) -> None:
    agent._on_control(CID, {"ack": "m1"})
    item = agent._outgoing.get_nowait()
    assert item == AgentEvent(
        flow_id=SERVICE, task_id=TASK, kind="control", data={"control": {"ack": "m1"}}
    )


@pytest.mark.parametrize(
    "cluster",
    [
        {"mode": "single"},
        {"mode": "swarm", "agent_token_file": "/nonexistent/agent.token"},
        {"mode": "swarm", "hub_url": "http://127.0.0.1:9"},
    ],
)
def test_agent_main_refuses_a_configuration_that_is_not_an_agents(
    tmp_path: Path, cluster: dict[str, Any]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"socket_dir": str(tmp_path / "s"), "cluster": cluster}))
    assert agent_main(["--config", str(config)]) == 2


def test_an_older_task_container_of_a_flow_never_speaks_for_the_flow(agent: Agent) -> None:
    """Swarm keeps the stopped containers of a few older tasks next to the current one."""
    from dataclasses import replace

    older = "f" * 64
    old_task = "oldtaskoldtaskoldtaskoldt"
    info = _info(older, True)
    info = replace(
        info,
        created=datetime(2020, 1, 1, tzinfo=UTC),
        labels={**info.labels, "com.docker.swarm.task.id": old_task},
    )
    records = agent.core.registry.records  # type: ignore[union-attr]
    records[older] = Record(info, "exited", "none", "/x/flow.sock")
    for cid in (older, CID):  # both seen (adopted)
        agent._ids_of(cid)
    stats = StatsSampled(
        container_id=older,
        sample=ResourceSample(1.0, 1, 2, 50.0, 0, 0, 0, 0, datetime.now(UTC)),
    )
    assert agent._translated(stats) is None
    del records[older]
    report = agent._translated(ContainerRemoved(container_id=older, name="old"))
    assert isinstance(report, AgentReport)
    assert not report.gone and (report.task_id, report.container_id) == (TASK, CID)
    assert agent.hello().flows[0].task_id == TASK


async def test_update_is_refused_it_would_end_the_swarm_task(agent: Agent) -> None:
    with pytest.raises(InvalidRequest) as err:
        await agent.handle(_req("update", container_id=CID, code_path="/srv/code"))
    assert err.value.details["reason"] == "update_ends_swarm_task"
    with pytest.raises(ContainerNotFound):
        await agent.handle(_req("update", container_id=PLAIN, code_path="/srv/code"))
