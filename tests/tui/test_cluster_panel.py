"""Cluster mode in the panel (issue 16): a remote panel against a real server (uvicorn, the real
Socket.IO namespace) whose manager answers as a cluster hub would: flows with nodes, the
`nodes` of `container_list`, `node_status` and `status_changed` to `unknown` pushes.

The manager is the real ContainerManager, started on the real engine, with its reads of flows
(`snapshot`, `get`, `get_status`) and `cluster_nodes` answered from memory: the hub itself is
another engineer's (server/cluster/hub*.py); this checks what the panel makes of its answers.

`python -m tests.tui.test_cluster_panel` writes docs/screenshots/panel-cluster.svg."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.remote import RemoteBackend
from flowmgr_tui.widgets.node_summary import NAME_WIDTH, NodeSummary
from server.core.config import Settings, load_settings
from server.core.errors import ContainerNotFound
from server.core.events import ContainerStateChanged, NodeStatusReported
from server.core.manager import ContainerManager
from server.core.models import ContainerSnapshot, ContainerStatus, ResourceSample
from tests.integration.api_harness import TEST_TOKEN, Service, running_service
from tests.tui.helpers import dashboard, until

pytestmark = [pytest.mark.docker, pytest.mark.tui]

SIZE = (120, 40)
NODES = ("manager-1", "worker-2", "worker-3")
FLOWS = 30
MIB = 1024 * 1024
SHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "panel-cluster.svg"
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _sample(i: int) -> ResourceSample:
    return ResourceSample(
        cpu_percent=1.0 + i % 3,
        memory_usage=(10 + i % 3) * MIB,
        memory_limit=1024 * MIB,
        memory_percent=1.0,
        network_rx_bytes=1000 * i,
        network_tx_bytes=500 * i,
        disk_read_bytes=0,
        disk_write_bytes=0,
        timestamp=datetime.now(UTC),
    )


def _flows() -> list[ContainerSnapshot]:
    """FLOWS running flows spread over NODES (i % 3), and one waiting for a task (no node)."""
    snaps = [
        ContainerSnapshot(
            id=f"{i:02d}" + "c" * 62,
            name=f"flow-{i:02d}",
            image="flowmgr-flow:latest",
            state="running",
            health="none",
            created=T0,
            started_at=T0,
            socket_path=f"/run/flowmgr/flow-{i:02d}.sock",
            socket_connected=True,
            resources=_sample(i),
            node=NODES[i % 3],
            node_id=f"nid{i % 3}",
            task_id=f"task{i:02d}",
        )
        for i in range(FLOWS)
    ]
    pending = replace(snaps[0], id="ff" + "c" * 62, name="flow-pending", state="created")
    return [*snaps, replace(pending, node=None, node_id=None, task_id=None, resources=None)]


def _node(i: int, name: str | None = None, **extra: Any) -> dict[str, Any]:
    """One `nodes` entry of `container_list` (NodeOut's shape)."""
    return {
        "node_id": f"nid{i}",
        "node": NODES[i] if name is None else name,
        "state": "ready",
        "availability": "active",
        "agent": "connected",
        "flows": 10,
        "cpu_percent": 20.0,
        "memory_usage": 110 * MIB,
        **extra,
    }


class FakeHub(ContainerManager):
    """The real manager (engine, journal, bus: the server's pushes) answering flows and nodes
    from memory as a hub would."""

    def __init__(
        self,
        settings: Settings,
        flows: list[ContainerSnapshot],
        nodes: list[dict[str, Any]] | None,
    ) -> None:
        super().__init__(settings)
        self.flows = {s.id: s for s in flows}
        self.nodes = nodes

    def snapshot(self) -> list[ContainerSnapshot]:
        return sorted(self.flows.values(), key=lambda s: s.name)

    def get(self, ref: str) -> ContainerSnapshot:
        hits = [s for s in self.flows.values() if ref in (s.id, s.name) or s.id.startswith(ref)]
        if len(hits) != 1:
            raise ContainerNotFound(f"no managed container {ref!r}", details={"ref": ref})
        return hits[0]

    async def get_status(self, ref: str) -> ContainerStatus:
        snap = self.get(ref)
        return ContainerStatus(
            container_id=snap.id,
            name=snap.name,
            state=snap.state,
            health=snap.health,
            uptime=timedelta(minutes=5) if snap.state == "running" else None,
            socket_connected=snap.socket_connected,
            last_communication=None,
            resource_usage=snap.resources,
        )

    def cluster_nodes(self) -> list[dict[str, Any]] | None:
        return self.nodes

    def lose_node(self, index: int) -> None:
        """What the hub does when a node's agent link drops: node_status, then its flows
        `unknown` with the reason."""
        self.bus.publish(
            NodeStatusReported(
                node_id=f"nid{index}",
                node=NODES[index],
                state="down",
                agent="disconnected",
                reason="heartbeat_timeout",
                down_for=3.0,
            )
        )
        for cid, snap in list(self.flows.items()):
            if snap.node_id == f"nid{index}":
                new = self.flows[cid] = replace(snap, state="unknown", resources=None)
                self.bus.publish(
                    ContainerStateChanged(
                        container_id=cid,
                        old_state=snap.state,
                        new_state="unknown",
                        snapshot=new,
                        reason="heartbeat_timeout",
                    )
                )


@contextlib.asynccontextmanager
async def _panel(
    settings: Settings, nodes: list[dict[str, Any]] | None, flows: list[ContainerSnapshot]
) -> AsyncIterator[tuple[Service, FlowMgrApp, Pilot[None]]]:
    async with running_service(settings, FakeHub(settings, flows, nodes)) as service:
        backend = RemoteBackend(service.url, token=TEST_TOKEN)
        app = FlowMgrApp(backend, start_backend=True, mode=f"remote {service.url}")
        try:
            async with app.run_test(size=SIZE) as pilot:
                table = dashboard(app).table
                await until(pilot, lambda: len(table.shown_ids) == len(flows), "every flow")
                yield service, app, pilot
        finally:
            await backend.stop()


def _summary(app: FlowMgrApp) -> NodeSummary:
    return dashboard(app).query_one(NodeSummary)


def _summary_lines(app: FlowMgrApp) -> list[str]:
    return str(_summary(app).content).splitlines()


def _line_of(app: FlowMgrApp, node: str) -> str:
    lines = [line for line in _summary_lines(app) if line.startswith(node)]
    assert len(lines) == 1, _summary_lines(app)
    return lines[0]


async def test_a_hub_panel_shows_each_flows_node_and_a_summary_per_node(
    settings: Settings, tmp_path: Path
) -> None:
    flows = _flows()
    async with _panel(settings, [_node(i) for i in range(3)], flows) as (service, app, pilot):
        table = dashboard(app).table
        await until(pilot, lambda: table.shows_nodes, "the Node column")
        assert table.column_keys[:5] == ["name", "id", "image", "node", "state"]
        for snap in flows:
            await until(
                pilot,
                lambda s=snap: table.cell_text(s.id, "node") == (s.node or "-"),  # type: ignore[misc]
                f"{snap.name} on {snap.node}",
            )
        summary = _summary(app)
        await until(pilot, lambda: summary.has_class("-visible"), "the node summary")
        # 10 flows a node, whose samples are 1 % CPU and 10 MiB on manager-1, 2 and 11 on ...
        want = {
            node: ["ready", "connected", "10", f"{10 * (1.0 + i):.1f}%", f"{10 * (10 + i)}.0M"]
            for i, node in enumerate(NODES)
        }  # CPU and memory: the sums of its flows' samples (each arrives with its status)
        await until(
            pilot,
            lambda: all(_line_of(app, node).split()[1:] == w for node, w in want.items()),
            f"the summary {want}",
        )
        assert "3 nodes" in _summary_lines(app)[0]

        # Sortable like the others: by node, the flow without a task last.
        table.sort_by("node", reverse=False)
        await pilot.pause()
        order = [table.cell_text(cid, "node") for cid in table.shown_ids]
        assert order == sorted(order[:-1]) + ["-"]

        # N hides and shows the summary.
        table.focus()
        await pilot.press("N")
        await until(pilot, lambda: not summary.has_class("-visible"), "the summary hidden")
        await pilot.press("N")
        await until(pilot, lambda: summary.has_class("-visible"), "the summary back")

        # The hub loses worker-2's agent: node_status, then its flows unknown.
        manager = service.manager
        assert isinstance(manager, FakeHub)
        manager.lose_node(1)
        lost = [s.id for s in flows if s.node_id == "nid1"]
        await until(
            pilot,
            lambda: all(table.cell_text(cid, "state") == "? unknown" for cid in lost),
            "worker-2's flows unknown",
        )
        await until(
            pilot, lambda: "DISCONNECTED" in _line_of(app, "worker-2"), "worker-2's line down"
        )
        down_line = _line_of(app, "worker-2")
        assert "heartbeat_timeout" in down_line and " 10 " in down_line, down_line
        assert _summary_lines(app)[1].startswith("worker-2"), "a node down is listed first"
        assert "(3 nodes, 1 down)" in _summary_lines(app)[0]
        content = summary.content
        assert isinstance(content, Text)
        down = [span for span in content.spans if "red" in str(span.style)]
        assert down, "worker-2's line is red"
        notices = [n.message for n in app._notifications]
        assert any("worker-2 lost its agent link (heartbeat_timeout)" in m for m in notices)
        # unknown flows have no usage: worker-2's CPU and memory read "-"
        assert _line_of(app, "worker-2").split()[-2:] == ["-", "-"]

        # The table's state cell keeps formatting.py's style for unknown.
        cell = table._cells[lost[0]][table.column_keys.index("state")]
        assert "yellow" in str(cell.style)
        # Swarm reschedules one of them onto worker-3: status_changed carries the new node.
        moved = manager.flows[lost[0]] = replace(
            manager.flows[lost[0]], state="running", node="worker-3", node_id="nid2"
        )
        manager.bus.publish(
            ContainerStateChanged(
                container_id=moved.id, old_state="unknown", new_state="running", snapshot=moved
            )
        )
        await until(pilot, lambda: table.cell_text(moved.id, "node") == "worker-3", "the move")
        await until(pilot, lambda: " 11 " in _line_of(app, "worker-3"), "worker-3 has 11")
        await until(pilot, lambda: " 9 " in _line_of(app, "worker-2"), "worker-2 has 9")
        path = app.save_screenshot("panel-cluster.svg", str(tmp_path))
        svg = Path(path).read_text()
        assert "worker-2" in svg and "Node" in svg


async def test_a_single_host_panel_has_no_node_column_nor_summary(settings: Settings) -> None:
    flows = [
        replace(s, node=None, node_id=None, task_id=None) for s in _flows() if s.node is not None
    ]
    async with _panel(settings, None, flows[:5]) as (_, app, pilot):
        table = dashboard(app).table
        await pilot.pause(0.5)
        assert not table.shows_nodes
        assert "node" not in table.column_keys
        assert not _summary(app).has_class("-visible")
        await pilot.press("N")  # nothing to show: said, nothing breaks
        await pilot.pause(0.2)
        assert not _summary(app).has_class("-visible")
        assert not app.backend.nodes()  # type: ignore[attr-defined]


async def test_a_hostile_hub_does_not_crash_the_panel(settings: Settings) -> None:
    """Huge and badly typed `nodes` entries, 10,000 nodes, and `node_status` pushes with bad
    types, unknown fields and impossible numbers: logged and left out, the panel goes on."""
    nodes: list[Any] = [_node(i) for i in range(3)]
    nodes.append(_node(3, name="h" * 10_000))
    nodes.append(_node(4, name=5))  # type: ignore[arg-type]
    nodes.append({"node_id": "nid5"})
    nodes.append("not a node")
    nodes.extend(_node(10 + i, name=f"extra-{i:05d}") for i in range(10_000))
    nodes.append(_node(9, name="[bold red]markup[/]\x1b[2J\x00"))
    flows = _flows()
    async with _panel(settings, nodes, flows) as (service, app, pilot):
        table = dashboard(app).table
        await until(pilot, lambda: table.shows_nodes, "the Node column")
        summary = _summary(app)
        await until(pilot, lambda: "more nodes" in str(summary.content), "the node count")
        lines = _summary_lines(app)
        assert "10005 nodes" in lines[0], lines[0]  # 3 + the long one + the markup + 10,000
        assert len(lines) <= 8, lines
        assert all(len(line) < 200 for line in lines), "a hostname is cut to its column"
        assert len(app.backend.nodes()) == 10_005  # type: ignore[attr-defined]

        sio = service.app.sio
        bad: list[Any] = [
            {"node_id": 1, "node": [], "state": None, "agent": 5, "reason": {}, "timestamp": "x"},
            {"node_id": "nid0"},
            "a string",
            None,
            [1, 2],
            {**_status("nid0", "manager-1"), "timestamp": 1e300},
            {**_status("nid0", "manager-1"), "timestamp": float("nan")},
            {**_status("nid0", "manager-1"), "down_for": 1e308},
            {**_status("nid0", "manager-1"), "down_for": -5.0, "extra": {"x": [1] * 100}},
            {**_status("nid0", "h" * 10_000)},
        ]
        for payload in bad:
            await sio.emit("node_status", payload)
        await sio.emit("container_list", {"nodes": "junk"})  # unasked: no handler, ignored
        # A well-formed one after them all still arrives: the handler survived.
        await sio.emit("node_status", _status("nid2", "worker-3", reason="agent_link_lost"))
        await until(
            pilot, lambda: "agent_link_lost" in str(summary.content), "the good push after them"
        )
        assert app.is_running
        assert len(table.shown_ids) == len(flows)
        for line in _summary_lines(app):
            assert len(line) < 200
        # The long hostname fits its column (cut with ~).
        assert any(line.startswith("h" * (NAME_WIDTH - 1) + "~") for line in _summary_lines(app))


def _status(node_id: str, node: str, *, reason: str = "heartbeat_timeout") -> dict[str, Any]:
    return {
        "node_id": node_id,
        "node": node,
        "state": "down",
        "agent": "disconnected",
        "reason": reason,
        "down_for": 2.0,
        "timestamp": datetime.now(UTC).timestamp(),
    }


async def _shoot(settings: Settings) -> None:
    """docs/screenshots/panel-cluster.svg: 30 flows on 3 nodes, worker-2's agent lost."""
    flows = _flows()
    async with _panel(settings, [_node(i) for i in range(3)], flows) as (service, app, pilot):
        table = dashboard(app).table
        await until(pilot, lambda: table.shows_nodes, "the Node column")
        manager = service.manager
        assert isinstance(manager, FakeHub)
        manager.lose_node(1)
        await until(
            pilot, lambda: "DISCONNECTED" in str(_summary(app).content), "worker-2's line down"
        )
        dashboard(app).sort_by("node")
        await pilot.pause(1.0)
        app.save_screenshot(SHOT.name, str(SHOT.parent))


def main() -> None:
    """Write the screenshot against the local engine (its own instance label and socket dir)."""
    sock = Path(tempfile.mkdtemp(prefix="shot", dir="/tmp"))
    run = f"shot{uuid.uuid4().hex[:6]}"
    try:
        settings = load_settings(
            env={}, socket_dir=str(sock), docker__instance=run, docker__network=f"flowmgr-{run}"
        )
        asyncio.run(_shoot(settings))
    finally:
        shutil.rmtree(sock, ignore_errors=True)


if __name__ == "__main__":
    main()
