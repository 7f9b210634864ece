"""The table's own choices: stopped flows shown or hidden (a), marked rows (space) that keep
through sorts and filters and go with their container, a bulk verb asked once with each
outcome named (real Docker), and the columns chosen, ordered and saved (c)."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from textual.pilot import Pilot

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.bridge import CoreEvents
from flowmgr_tui.panel_config import PanelConfig, load_panel_config
from flowmgr_tui.screens.columns import ColumnsScreen
from flowmgr_tui.screens.confirm import ConfirmScreen
from flowmgr_tui.widgets.container_table import STOPPED, ContainerTable
from server.core.events import ContainerRemoved
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.tui.helpers import BUSYBOX, dashboard, row_names, until
from tests.tui.make_recording import ECHO_ID, ECHO_LOGS, NOW, build
from tests.tui.recording import ReplayBackend

pytestmark = pytest.mark.tui

SIZE = (120, 40)


def _app(panel: PanelConfig | None = None) -> tuple[FlowMgrApp, ReplayBackend]:
    backend = ReplayBackend(build(), logs={ECHO_ID: ECHO_LOGS})
    app = FlowMgrApp(
        backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01, panel=panel
    )
    return app, backend


async def _all_rows(app: FlowMgrApp, backend: ReplayBackend, pilot: Pilot[None]) -> ContainerTable:
    """The table once the recording's seven flows are in it."""
    await until(pilot, backend.replayed.is_set, "the replay")
    table = dashboard(app).table
    await until(pilot, lambda: table.row_count == 7, "all rows")
    return table


def _summary(app: FlowMgrApp) -> str:
    return str(dashboard(app).query_one("#table-summary").render())


async def test_a_hides_and_shows_the_stopped_flows() -> None:
    app, backend = _app()
    async with app.run_test(size=SIZE) as pilot:
        table = await _all_rows(app, backend, pilot)
        await pilot.press("a")
        await until(pilot, lambda: table.row_count == 4, "the running ones")
        states = {app.state.containers[cid].state for cid in table.shown_ids}
        assert not states & STOPPED
        assert "batch-job" not in row_names(app) and "stopped hidden (a)" in _summary(app)
        await pilot.press("a")
        await until(pilot, lambda: table.row_count == 7, "all rows again")


async def test_the_config_can_start_with_stopped_flows_hidden() -> None:
    app, backend = _app(PanelConfig(show_stopped=False))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        await until(pilot, lambda: "counter" in row_names(app), "the rows")
        assert "batch-job" not in row_names(app)


async def test_marks_keep_through_sort_and_filter_and_go_with_their_container() -> None:
    app, backend = _app()
    async with app.run_test(size=SIZE) as pilot:
        table = await _all_rows(app, backend, pilot)
        first, second = table.shown_ids[:2]
        table.select(first)
        await pilot.press("space", "space")  # marks a row and moves down: two rows marked
        assert table.marked == {first, second}
        assert table.selected_id == table.shown_ids[2]
        assert "2 marked" in _summary(app)
        await pilot.press("O")  # reverse the order
        await pilot.press("slash", *"echo", "enter")  # a filter that hides one of them
        await until(pilot, lambda: table.row_count < 7, "the filter")
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 7, "the filter cleared")
        assert table.marked == {first, second}
        name = app.state.name_of(first)
        app.post_message(CoreEvents([ContainerRemoved(container_id=first, name=name)]))
        await until(pilot, lambda: first not in table.shown_ids, "the row to go")
        assert table.marked == {second} and "1 marked" in _summary(app)
        await pilot.press("M")
        assert table.marked == set() and "marked" not in _summary(app)


async def test_c_chooses_orders_and_saves_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "panel.toml"
    path.write_text('# mine\n[logs]\nwrap = true\n[keys.columns]\nmove_up = "u"\n')
    app, backend = _app(load_panel_config(path))
    async with app.run_test(size=SIZE) as pilot:
        table = await _all_rows(app, backend, pilot)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ColumnsScreen), "the chooser")
        await pilot.press("space")  # name: always shown
        await pilot.press("down", "space")  # hide the id
        hint = str(app.screen.query_one("#column-keys").render())
        assert "u up" in hint and "K" not in hint  # the keys in force, after panel.toml
        await pilot.press("down", "u")  # the image moves above the id
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, ColumnsScreen), "saved")
        expect = ["name", "image", "state", "health", "cpu", "mem", "net", "uptime", "socket"]
        assert table.column_keys == expect  # one host: no node column
        assert table.cell_text(ECHO_ID, "image") and row_names(app)[0]
        await until(pilot, lambda: "columns" in path.read_text(), "the file")
        saved = tomllib.loads(path.read_text())
        assert saved["table"]["columns"] == ["name", "image", "node", *expect[2:]]
        assert saved["logs"] == {"wrap": True} and path.read_text().startswith("# mine\n")
        assert saved["keys"] == {"columns": {"move_up": "u"}}
        await pilot.press("o")  # sorting still works with the id column hidden
        assert table.sort_column == "image"
    again, backend = _app(load_panel_config(path))
    async with again.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        assert dashboard(again).table.column_keys == expect


@pytest.mark.docker
async def test_a_bulk_start_asks_once_and_names_each_failure(
    manager: ContainerManager,
    docker_client: docker.DockerClient,
    unique_name: Callable[[str], str],
) -> None:
    good = await manager.create_container(CreateSpec(name=unique_name("bulk-ok"), image=BUSYBOX))
    bad = await manager.create_container(
        CreateSpec(name=unique_name("bulk-bad"), image=BUSYBOX, command=["/no/such/binary"])
    )
    app = FlowMgrApp(manager)
    async with app.run_test(size=SIZE) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: {good.id, bad.id} <= set(table.shown_ids), "the rows")
        for cid in (good.id, bad.id):
            table.select(cid)
            await pilot.press("space")
        assert table.marked == {good.id, bad.id}
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "one question")
        asked = " ".join(str(w.render()) for w in app.screen.query(".dialog-detail"))
        assert good.name in asked and bad.name in asked
        await pilot.press("y")
        workers = [w for w in app.workers if w.name == "start 2 containers"]
        assert len(workers) == 1
        results = await workers[0].wait()
        assert results[good.id] == "" and results[bad.id]
        notes = [f"{n.title}: {n.message}" for n in app._notifications]
        note = next(n for n in notes if n.startswith("Start: 1 of 2 done"))
        assert f"started: {good.name}" in note and f"failed: {bad.name}: " in note
        await until(pilot, lambda: table.cell_text(good.id, "state") == "+ running", "running")
        container = await asyncio.to_thread(docker_client.containers.get, good.id)
        assert container.status == "running"
