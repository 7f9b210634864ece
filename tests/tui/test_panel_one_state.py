"""One state for the panel: the table and screens render from it, fed by the local core's
events or the remote wire through the same path; a stopped container shows no usage."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Label

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.remote import RemoteBackend
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.widgets.container_table import ContainerTable
from server.core.events import (
    ContainerAdded,
    ContainerStateChanged,
    HealthChanged,
    StatsSampled,
)
from tests.tui.helpers import dashboard, until
from tests.tui.make_recording import ECHO_ID, NOW, build
from tests.tui.recording import ReplayBackend

pytestmark = pytest.mark.tui

SIZE = (120, 40)
USAGE = ("cpu", "mem", "net")


async def _echo_running(
    pilot: Pilot[None], app: FlowMgrApp, backend: ReplayBackend
) -> ContainerTable:
    """The dashboard's table once the recording is replayed and echo shows its usage."""
    await until(pilot, backend.replayed.is_set, "the replay")
    table = dashboard(app).table
    await until(pilot, lambda: table.cell_text(ECHO_ID, "cpu") != "-", "echo's CPU")
    return table


async def test_a_stopped_container_shows_no_usage_as_the_core_reports_none() -> None:
    backend = ReplayBackend(build())
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        table = await _echo_running(pilot, app, backend)
        running = app.state.containers[ECHO_ID]
        # As the core publishes a stop: the snapshot carries no usage (registry.apply).
        backend.bus.publish(
            ContainerStateChanged(
                container_id=ECHO_ID,
                old_state="running",
                new_state="exited",
                snapshot=replace(running, state="exited", exit_code=0, resources=None),
            )
        )
        await until(pilot, lambda: table.cell_text(ECHO_ID, "state") == "x exited", "the stop")
        assert [table.cell_text(ECHO_ID, c) for c in USAGE] == ["-", "-", "-"]
        assert app.state.containers[ECHO_ID].resources is None
        # A sample that was on its way when the container stopped does not bring it back.
        last = [e for e in build() if isinstance(e, StatsSampled)][-1]
        # echo's (the recording's last sample is another container's), taken before the stop
        late = replace(
            last, container_id=ECHO_ID, sample=replace(last.sample, timestamp=NOW), at=NOW
        )
        before = app.state.history[ECHO_ID][-1]
        backend.bus.publish(late)
        await until(pilot, lambda: app.state.history[ECHO_ID][-1] is not before, "the late one")
        await pilot.pause(0.05)
        assert table.cell_text(ECHO_ID, "cpu") == "-"
        assert app.state.containers[ECHO_ID].resources is None


async def _push(backend: RemoteBackend, event: str, data: dict[str, object]) -> None:
    """Deliver a server push as python-socketio would: through the handler the backend
    registered for it (which decodes with the wire module)."""
    await backend._sio.handlers["/"][event](data)


async def test_the_remote_wire_reaches_the_same_state_and_a_stop_clears_usage() -> None:
    backend = RemoteBackend("http://127.0.0.1:9")  # never connected: pushes are fed by hand
    snap = [
        e.snapshot
        for e in build()
        if isinstance(e, ContainerAdded | ContainerStateChanged) and e.snapshot.id == ECHO_ID
    ][-1]
    assert snap.state == "running"
    sample = [e for e in build() if isinstance(e, StatsSampled)][-1].sample
    backend._containers[ECHO_ID] = replace(snap, resources=sample)
    app = FlowMgrApp(backend, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: ECHO_ID in table.shown_ids, "the row")
        assert table.cell_text(ECHO_ID, "cpu") != "-"
        await _push(
            backend,
            "status_changed",
            {
                "container_id": ECHO_ID,
                "old_state": "running",
                "new_state": "exited",
                "timestamp": 0.0,
            },
        )
        await until(pilot, lambda: table.cell_text(ECHO_ID, "state") == "x exited", "the stop")
        assert [table.cell_text(ECHO_ID, c) for c in USAGE] == ["-", "-", "-"]
        # The server's status of a stopped container has no resource_usage: still none.
        await _push(
            backend,
            "container_status_update",
            {
                "container_id": ECHO_ID,
                "status": {
                    "state": "exited",
                    "health": "none",
                    "socket_connected": False,
                    "uptime": None,
                    "resource_usage": None,
                },
            },
        )
        await pilot.pause(0.1)
        assert table.cell_text(ECHO_ID, "cpu") == "-"


async def test_one_busy_mark_shows_in_the_row_and_the_detail_view() -> None:
    backend = ReplayBackend(build())
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        app.open_detail(ECHO_ID)
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "the detail")
        await pilot.pause(0.1)
        table = dashboard(app).table
        app._mark_busy(ECHO_ID, "stopping")
        assert app.state.busy == {ECHO_ID: "stopping"}
        summary = app.screen.query_one("#detail-summary", Label)
        assert table.cell_text(ECHO_ID, "state") == "* stopping"
        assert "* stopping" in str(summary.content)
        app._mark_busy(ECHO_ID, None)
        assert app.state.busy == {} and table.cell_text(ECHO_ID, "state") == "+ running"
        assert "+ running" in str(summary.content)


async def test_an_idle_sample_leaves_the_row_and_any_other_change_redraws_it() -> None:
    """The table skips a batch that would change no cell without copying or formatting; a
    change elsewhere in the row (health here) still shows, with the usage drawn so far."""
    backend = ReplayBackend(build())
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        table = await _echo_running(pilot, app, backend)
        shown = app.state.containers[ECHO_ID].resources
        assert shown is not None
        cpu, mem = table.cell_text(ECHO_ID, "cpu"), table.cell_text(ECHO_ID, "mem")
        last = [e for e in build() if isinstance(e, StatsSampled)][-1]

        def sample(cpu_delta: float, mem_delta: int) -> StatsSampled:
            assert shown is not None
            moved = replace(
                shown,
                cpu_percent=shown.cpu_percent + cpu_delta,
                memory_usage=shown.memory_usage + mem_delta,
                timestamp=NOW,
            )
            return replace(last, container_id=ECHO_ID, sample=moved, at=NOW)

        backend.bus.publish(sample(0.1, 4096))  # jitter: nothing on screen changes
        await until(
            pilot, lambda: app.state.containers[ECHO_ID].resources is not shown, "the sample"
        )
        await pilot.pause(0.05)
        assert (table.cell_text(ECHO_ID, "cpu"), table.cell_text(ECHO_ID, "mem")) == (cpu, mem)
        backend.bus.publish(
            HealthChanged(container_id=ECHO_ID, old_health="healthy", new_health="unhealthy")
        )
        await until(pilot, lambda: "unhealthy" in table.cell_text(ECHO_ID, "health"), "the health")
        assert table.cell_text(ECHO_ID, "cpu") == cpu  # the jitter is still held back
        backend.bus.publish(sample(25.0, 64 * 2**20))  # a real move
        await until(pilot, lambda: table.cell_text(ECHO_ID, "cpu") != cpu, "the new CPU")
        assert table.cell_text(ECHO_ID, "mem") != mem


async def test_a_cell_update_repaints_from_the_rendered_cells_of_the_other_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DataTable drops every rendered cell on any update; the table renders again only the
    cells whose value changed (one repaint per second at 200 idle containers was the panel's
    main idle cost)."""
    backend = ReplayBackend(build())
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        table = await _echo_running(pilot, app, backend)
        await pilot.pause(0.1)
        rendered: list[tuple[int, int]] = []
        plain = DataTable._render_cell

        def counting(self: DataTable[Any], row: int, column: int, *args: Any, **kwargs: Any) -> Any:
            rendered.append((row, column))
            return plain(self, row, column, *args, **kwargs)

        monkeypatch.setattr(DataTable, "_render_cell", counting)
        fast = ContainerTable._render_text_cell  # one-line Text cells: the table's own path

        def counting_fast(
            self: ContainerTable, value: Any, row: int, column: int, *args: Any
        ) -> Any:
            rendered.append((row, column))
            return fast(self, value, row, column, *args)

        monkeypatch.setattr(ContainerTable, "_render_text_cell", counting_fast)
        cpu = table.cell_text(ECHO_ID, "cpu")
        shown = app.state.containers[ECHO_ID].resources
        assert shown is not None
        last = [e for e in build() if isinstance(e, StatsSampled)][-1]
        moved = replace(shown, cpu_percent=shown.cpu_percent + 30.0, timestamp=NOW)
        backend.bus.publish(replace(last, container_id=ECHO_ID, sample=moved, at=NOW))
        await until(pilot, lambda: table.cell_text(ECHO_ID, "cpu") != cpu, "the new CPU")
        await until(pilot, lambda: any(row >= 0 for row, _ in rendered), "the repaint")
        await pilot.pause(0.05)
        body = [(r, c) for r, c in rendered if r >= 0]
        row = table.get_row_index(ECHO_ID)
        assert set(body) <= {(row, c) for c in range(len(table.columns))}, body
