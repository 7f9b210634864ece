"""The detail graphs read against fixed, labelled scales; the table shows `flow:latest` whole.

One flow's known memory series (8.4 MiB of a 512 MiB limit, then +0.3 MiB) is replayed through
the real bus into the panel: the snapshot and the rendered text show the scale, and the small
change stays a small bar instead of filling the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from textual.pilot import Pilot

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.graph_scale import BARS
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.widgets.container_table import ContainerTable
from flowmgr_tui.widgets.resource_graph import ResourceGraph, ScalePlot
from server.core.events import ContainerAdded, Event, StatsSampled
from server.core.models import ContainerSnapshot, ResourceSample
from tests.tui.helpers import dashboard, host_graphs_full, replay_app, until
from tests.tui.make_recording import ECHO_ID, NOW, T0
from tests.tui.recording import ReplayBackend
from tests.tui.test_snapshots import recorded_app

pytestmark = pytest.mark.tui

Compare = Callable[..., bool]
MIB = 1024 * 1024
FLOW_ID = "ab" * 32
LIMIT = 512 * MIB


def _sample(i: int, memory: int) -> ResourceSample:
    return ResourceSample(
        cpu_percent=2.0 if i < 40 else 3.0,
        memory_usage=memory,
        memory_limit=LIMIT,
        memory_percent=round(100 * memory / LIMIT, 2),
        network_rx_bytes=0,
        network_tx_bytes=0,
        disk_read_bytes=0,
        disk_write_bytes=0,
        timestamp=NOW - timedelta(seconds=60 - i),
    )


def _events() -> list[Event]:
    snap = ContainerSnapshot(
        id=FLOW_ID,
        name="mem-flow",
        image="flow:latest",
        state="running",
        health="none",
        created=T0,
        started_at=T0,
        socket_path="/tmp/kawaflow/sockets/mem-flow/flow.sock",
    )
    out: list[Event] = [ContainerAdded(snapshot=snap, at=T0)]
    for i in range(60):  # 8.4 MiB for 40 s, then 0.3 MiB more
        s = _sample(i, int((8.4 if i < 40 else 8.7) * MIB))
        out.append(StatsSampled(container_id=FLOW_ID, sample=s, at=s.timestamp))
    return out


def _app(mode: str = "local") -> FlowMgrApp:
    return replay_app(_events(), mode, NOW)


async def _open(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, FlowMgrApp)
    backend = app.backend
    assert isinstance(backend, ReplayBackend)
    await until(pilot, backend.replayed.is_set, "the replay")
    await until(pilot, lambda: len(app.state.history.get(FLOW_ID, ())) == 60, "60 samples")
    app.open_detail(FLOW_ID)
    await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "the detail")
    await until(pilot, lambda: host_graphs_full(app.screen), "full host graphs")
    await pilot.pause()


def test_detail_graphs_snapshot(snap_compare: Compare) -> None:
    assert snap_compare(_app(), terminal_size=(120, 30), run_before=_open)


async def test_memory_graph_is_read_against_the_limit() -> None:
    """Through a remote panel: the flow's graphs come from the same state as a local one's."""
    app = _app(mode="remote http://127.0.0.1:8000")
    async with app.run_test(size=(120, 30)) as pilot:
        await _open(pilot)
        graph = app.screen.query_one("#graph-mem", ResourceGraph)
        assert graph.caption == "Memory: 8.7M (1.7%) of 512.0M limit"
        plot = graph.query_one(ScalePlot)
        drawn = str(plot.render()).splitlines()
        assert drawn[0].startswith("512.0M┤") and drawn[-1].startswith("     0┤")
        rows = plot.rows
        assert all(set(r) == {" "} for r in rows[:-1]), "a 0.3 MiB change filled the graph"
        assert set(rows[-1]) == {BARS[0]}  # 60 samples fill every column at the lowest bar

        cpu = app.screen.query_one("#graph-cpu", ResourceGraph)
        assert cpu.caption == "CPU: 3.0% of 100% (1 core; max 3.0%)"
        assert str(cpu.query_one(ScalePlot).render()).startswith("  100%┤")
        # The probe reads the machine the panel runs on, and a remote panel says so.
        host = app.screen.query_one("#graph-host-mem", ResourceGraph)
        assert host.caption == "This machine memory: 6.0G of 24.0G host total (25%)"
        host_rows = host.query_one(ScalePlot).rows  # 25 % of 4 rows: the bottom one, full
        assert set(host_rows[-1]) == {"█"} and all(set(r) == {" "} for r in host_rows[:-1])


async def test_table_at_120_columns_shows_the_image_whole() -> None:
    app = recorded_app()
    async with app.run_test(size=(120, 30)) as pilot:
        backend = app.backend
        assert isinstance(backend, ReplayBackend)
        await until(pilot, backend.replayed.is_set, "the replay")
        table = dashboard(app).query_one(ContainerTable)
        await until(pilot, lambda: table.row_count == 7, "seven rows")
        await pilot.pause()
        lines = [table.render_line(y).text for y in range(1, 1 + table.row_count)]
        images = {table.cell_text(cid, "image") for cid in table.shown_ids}
        assert "flow:latest" in images
        assert sum("flow:latest " in line for line in lines) == 5, lines
        assert all("flow:lates " not in line for line in lines)
        assert max(len(line.rstrip()) for line in lines) <= 120

        # Widths are computed when rows change, never for a usage update.
        fits = 0
        fit = table._fit_columns

        def counted() -> None:
            nonlocal fits
            fits += 1
            fit()

        table._fit_columns = counted  # type: ignore[method-assign]
        s = _sample(0, 300 * MIB)
        backend.bus.publish(StatsSampled(container_id=ECHO_ID, sample=s, at=s.timestamp))
        await until(pilot, lambda: table.cell_text(ECHO_ID, "mem") == "300.0M", "the new usage")
        assert fits == 0
