"""The Node column at 1,000 rows (cluster mode): added once when the core turns out to be a hub
(each row formatted once then), sortable and filterable, an idle sample formats nothing, a
node's change rewrites that cell only, and the uptime tick still finds its column.

Fake rows through the real bus and bridge (ReplayBackend); no Docker.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.host_stats import HostSample
from flowmgr_tui.state.nodes import NodeLink, NodesListed
from flowmgr_tui.widgets.container_table import COLUMNS
from flowmgr_tui.widgets.node_summary import NodeSummary
from server.core.events import ContainerAdded, ContainerStateChanged, Event, StatsSampled
from server.core.models import ContainerSnapshot
from tests.tui.helpers import dashboard, until
from tests.tui.recording import ReplayBackend
from tests.tui.test_table_scale import T0, _usage

pytestmark = pytest.mark.tui

ROWS = 1000
HOSTS = ("node-a", "node-b", "node-c", "node-d")


def _snap(i: int, *, cluster: bool) -> ContainerSnapshot:
    node = HOSTS[i % 4] if cluster and i % 50 else None  # every 50th: no task yet
    return ContainerSnapshot(
        id=f"{i:04x}" * 16,
        name=f"flow-{(i * 7919) % ROWS:04d}",
        image="flow:latest",
        state="running",
        health="none",
        created=T0,
        started_at=T0,
        socket_path=f"/tmp/s/{i}/flow.sock",
        resources=_usage(float(i % 97)),
        node=node,
        node_id=None if node is None else f"id-{node}",
        task_id=None if node is None else f"task-{i}",
    )


def _app(events: list[Event], now: list[datetime]) -> tuple[FlowMgrApp, ReplayBackend]:
    backend = ReplayBackend(events)
    app = FlowMgrApp(
        backend,
        start_backend=True,
        clock=lambda: now[0],
        bridge_interval=0.01,
        host_probe=lambda: HostSample(25.0, 2, 6 * 1024**3, 24 * 1024**3, 25.0),
        host_interval=60.0,
    )
    return app, backend


async def test_the_node_column_at_1000_rows_formats_each_cell_once() -> None:
    now = [T0 + timedelta(hours=1)]
    # The rows first carry no node (a list before the hub's nodes are known) ...
    events: list[Event] = [ContainerAdded(snapshot=_snap(i, cluster=False)) for i in range(ROWS)]
    app, backend = _app(events, now)
    async with app.run_test(size=(160, 48)) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: table.row_count == ROWS, "1,000 rows")
        assert not table.shows_nodes
        assert table.column_keys == [c[0] for c in COLUMNS]
        formatted: list[str] = []
        whole_row = table._cells_for

        def counted(snap: ContainerSnapshot) -> tuple[object, ...]:
            formatted.append(snap.id)
            return whole_row(snap)

        table._cells_for = counted  # type: ignore[method-assign]
        # ... then the hub's list says it is one: the column comes, every row laid once.
        links = tuple(NodeLink(f"id-{h}", h, "ready", "connected") for h in HOSTS)
        backend.bus.publish(NodesListed(nodes=links))
        await until(pilot, lambda: table.shows_nodes, "the Node column")
        assert sorted(formatted) == sorted(app.state.containers), "each row formatted once"
        assert table.column_keys.index("node") == 3 and table.row_count == ROWS
        # The rows learn their nodes: only those cells change.
        formatted.clear()
        for i in range(ROWS):
            snap = _snap(i, cluster=True)
            backend.bus.publish(
                ContainerStateChanged(
                    container_id=snap.id, old_state="running", new_state="running", snapshot=snap
                )
            )
        await until(
            pilot,
            lambda: table.cell_text(_snap(1, cluster=True).id, "node") == "node-b",
            "the nodes",
        )
        with_node = ROWS - ROWS // 50  # the others read the same: not formatted again
        await until(pilot, lambda: len(formatted) >= with_node, "every row's node")
        await pilot.pause(0.1)
        assert sorted(formatted) == sorted(s.id for s in app.state.containers.values() if s.node)
        assert table.cell_text(_snap(50, cluster=True).id, "node") == "-"
        # An idle sample (within the table's tolerance) formats nothing.
        formatted.clear()
        backend.bus.publish(
            StatsSampled(container_id=_snap(3, cluster=True).id, sample=_usage(3.1))
        )
        await pilot.pause(0.1)
        assert formatted == []
        # Sort by node (no task last), filter by hostname.
        dashboard(app).sort_by("node")
        nodes = [table.cell_text(cid, "node") for cid in table.shown_ids]
        assert nodes == sorted(nodes, key=lambda n: (n == "-", n))
        table.set_filter("node-c")
        await pilot.pause()
        assert table.row_count == sum(1 for i in range(ROWS) if i % 4 == 2 and i % 50)
        table.set_filter("")
        await pilot.pause()
        # The uptime tick still finds its column (it moved right by one).
        formatted.clear()
        now[0] += timedelta(seconds=61)
        table.refresh_clock()
        assert formatted == []
        assert all(table.cell_text(cid, "uptime") == "1h01m" for cid in table.shown_ids)
        # The summary counts every node's flows.
        summary = dashboard(app).query_one(NodeSummary)
        await until(pilot, lambda: summary.has_class("-visible"), "the summary")
        lines = str(summary.content).splitlines()
        per_node = {line.split()[0]: line.split()[3] for line in lines[1:]}
        assert per_node == {
            h: str(sum(1 for i in range(ROWS) if i % 4 == k and i % 50))
            for k, h in enumerate(HOSTS)
        }


async def test_a_flow_rescheduled_to_another_node_moves_in_the_table() -> None:
    now = [T0 + timedelta(hours=1)]
    snaps = [_snap(i, cluster=True) for i in range(1, 9)]
    app, backend = _app([ContainerAdded(snapshot=s) for s in snaps], now)
    async with app.run_test(size=(160, 48)) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: table.row_count == 8 and table.shows_nodes, "8 rows, nodes")
        moved = replace(snaps[0], node="node-d", node_id="id-node-d")
        backend.bus.publish(
            ContainerStateChanged(
                container_id=moved.id, old_state="running", new_state="running", snapshot=moved
            )
        )
        await until(pilot, lambda: table.cell_text(moved.id, "node") == "node-d", "the move")
