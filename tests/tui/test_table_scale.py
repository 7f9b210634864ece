"""The dashboard's table at 1,000 rows: sort, filter and scroll stay right, a row that changes
off screen is drawn right when scrolled to without repainting meanwhile, the fast cell
renderer draws what DataTable draws, and the core is told which rows are on screen.

Fake rows through the real bus and bridge (ReplayBackend); no Docker.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from rich.style import Style
from textual.pilot import Pilot
from textual.widgets import DataTable

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.host_stats import HostSample
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.screens.dashboard import ROWS_EVERY
from flowmgr_tui.state.panel_state import HISTORY_SAMPLES, HISTORY_SPAN, PanelState
from flowmgr_tui.widgets.container_table import ContainerTable
from server.core.events import ContainerAdded, Event, StatsSampled
from server.core.models import ContainerSnapshot, ResourceSample
from tests.tui.helpers import dashboard, until
from tests.tui.recording import ReplayBackend

pytestmark = pytest.mark.tui

ROWS = 1000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIB = 1024 * 1024
ODD_NAME = "wide-名前"
"""A name the fast cell renderer leaves to DataTable (wide characters)."""


def _usage(cpu: float, at: datetime = T0) -> ResourceSample:
    return ResourceSample(
        cpu_percent=cpu,
        memory_usage=8 * MIB,
        memory_limit=512 * MIB,
        memory_percent=1.56,
        network_rx_bytes=0,
        network_tx_bytes=0,
        disk_read_bytes=0,
        disk_write_bytes=0,
        timestamp=at,
    )


def _cid(i: int) -> str:
    return f"{i:04x}" * 16


def _snap(i: int) -> ContainerSnapshot:
    return ContainerSnapshot(
        id=_cid(i),
        name=ODD_NAME if i == 7 else f"flow-{(i * 7919) % ROWS:04d}",  # not in id order
        image="flow:latest" if i % 3 else "busybox:latest",
        state="running",
        health="none",
        created=T0,
        started_at=T0,
        socket_path=f"/tmp/s/{i}/flow.sock",
        resources=_usage(float(i % 97)),
    )


def _app(
    rows: int = ROWS, clock: Callable[[], datetime] = lambda: T0 + timedelta(hours=1)
) -> tuple[FlowMgrApp, ReplayBackend]:
    events: list[Event] = [ContainerAdded(snapshot=_snap(i), at=T0) for i in range(rows)]
    backend = ReplayBackend(events)
    app = FlowMgrApp(
        backend,
        start_backend=True,
        clock=clock,
        bridge_interval=0.01,
        host_probe=lambda: HostSample(25.0, 2, 6 * 1024**3, 24 * 1024**3, 25.0),
        host_interval=60.0,
    )
    return app, backend


@pytest.fixture
async def filled() -> AsyncIterator[tuple[FlowMgrApp, ReplayBackend, Pilot[None]]]:
    app, backend = _app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: table.row_count == ROWS, "1,000 rows")
        yield app, backend, pilot


def _names(table: ContainerTable, ids: list[str]) -> list[str]:
    return [table.cell_text(cid, "name") for cid in ids]


def _line_of(table: ContainerTable, container_id: str) -> str:
    """The text painted on screen for a row (it must be scrolled into view)."""
    y = table.get_row_index(container_id) - table.scroll_offset.y + table.header_height
    return table.render_line(y).text


async def test_sort_filter_and_hostile_filters_at_1000_rows(
    filled: tuple[FlowMgrApp, ReplayBackend, Pilot[None]],
) -> None:
    app, _, pilot = filled
    screen = dashboard(app)
    table = screen.table
    names = _names(table, table.shown_ids)
    assert names == sorted(names, key=str.lower)  # by name, from the start
    screen.sort_by("cpu")
    table.sort_by("cpu", reverse=True)
    cpus = [app.state.containers[cid].resources.cpu_percent for cid in table.shown_ids]  # type: ignore[union-attr]
    assert cpus == sorted(cpus, reverse=True) and len(cpus) == ROWS
    # The cursor follows its container through a filter once the user has moved it.
    await pilot.press("down", "down", "down")
    chosen = table.selected_id
    assert chosen is not None
    text = table.cell_text(chosen, "name")[:7]
    table.set_filter(text)
    await pilot.pause()
    shown = table.shown_ids
    assert shown and all(text in table.cell_text(cid, "name") for cid in shown)
    expected = {cid for cid, s in app.state.containers.items() if text in s.name}
    assert set(shown) == expected
    assert table.selected_id == chosen
    table.set_filter("")
    await pilot.pause()
    assert table.row_count == ROWS and table.selected_id == chosen
    cpus = [app.state.containers[cid].resources.cpu_percent for cid in table.shown_ids]  # type: ignore[union-attr]
    assert cpus == sorted(cpus, reverse=True)
    # Hostile filters: markup, regex, a huge string, wide characters, control characters.
    for hostile in ("[bold]", ".*", "(", "x" * 10_000, "名前", "\x00\x1b[2J", "  "):
        table.set_filter(hostile)
        await pilot.pause()
        want = sum(1 for s in app.state.containers.values() if table._matches(s))
        assert table.row_count == want, hostile
    assert table.row_count == ROWS  # "  " strips to no filter
    table.set_filter("名前")
    assert table.shown_ids == [_cid(7)]


async def test_off_screen_change_no_repaint_then_right_when_scrolled_to(
    filled: tuple[FlowMgrApp, ReplayBackend, Pilot[None]],
) -> None:
    app, backend, pilot = filled
    table = dashboard(app).table
    target = table.shown_ids[3]  # on screen first, so its line is cached
    assert target in table.visible_ids
    before = _line_of(table, target)
    assert "99.9%" not in before
    table.scroll_end(animate=False, immediate=True)
    await pilot.pause()
    assert target not in table.visible_ids
    painted = table._update_count  # DataTable's render caches key on this count
    backend.bus.publish(StatsSampled(container_id=target, sample=_usage(99.9), at=T0))
    await until(pilot, lambda: "99.9%" in table.cell_text(target, "cpu"), "the new sample")
    assert table._update_count == painted, "an off-screen change repainted the table"
    table.scroll_home(animate=False, immediate=True)
    await pilot.pause()
    assert target in table.visible_ids
    assert "99.9%" in _line_of(table, target)
    # And a change on screen is painted at once.
    backend.bus.publish(StatsSampled(container_id=target, sample=_usage(42.0), at=T0))
    await until(pilot, lambda: "42.0%" in _line_of(table, target), "the on-screen change")


async def test_uptime_tick_formats_only_the_uptime_cells_that_change() -> None:
    """The uptime tick at 1,000 rows formats one cell per row whose minute changed, none
    when none did (formatting whole rows made the panel's busiest idle second), and a row
    off screen shows its new uptime when scrolled to."""
    now = [T0 + timedelta(hours=1)]
    app, _ = _app(clock=lambda: now[0])
    async with app.run_test(size=(160, 48)) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: table.row_count == ROWS, "1,000 rows")
        rows = table.shown_ids
        top, bottom = rows[0], rows[-1]
        assert top in table.visible_ids and bottom not in table.visible_ids
        assert "1h00m" in _line_of(table, top)
        formatted: list[str] = []
        whole_row = table._cells_for

        def counted(snap: ContainerSnapshot) -> tuple[object, ...]:
            formatted.append(snap.id)
            return whole_row(snap)

        table._cells_for = counted  # type: ignore[method-assign]
        painted = table._update_count
        table.refresh_clock()  # the same minute: nothing changes, nothing repaints
        assert table._update_count == painted
        now[0] += timedelta(seconds=61)
        table.refresh_clock()
        assert formatted == [], "the tick formatted whole rows"
        assert all(table.cell_text(cid, "uptime") == "1h01m" for cid in rows)
        # only the rows on screen went through DataTable's repaint
        assert table._update_count - painted == len(table.visible_ids)
        await until(pilot, lambda: "1h01m" in _line_of(table, top), "the on-screen row")
        table.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        assert "1h01m" in _line_of(table, bottom) and "1h00m" not in _line_of(table, bottom)


async def test_fast_cells_draw_what_datatable_draws(
    filled: tuple[FlowMgrApp, ReplayBackend, Pilot[None]],
) -> None:
    app, _, pilot = filled
    table = dashboard(app).table
    table.set_filter("")
    table.select(_cid(7))  # the wide name on screen: DataTable renders that cell itself
    await pilot.pause()
    fixed = table.get_component_styles("datatable--fixed").rich_style + Style.from_meta(
        {"fixed": True}
    )
    compared = fast = 0
    top, bottom = table._on_screen()
    for row in range(top, min(bottom, table.row_count)):
        for col, column in enumerate(table.ordered_columns):
            width = column.get_render_width(table)
            base = fixed if col < table.fixed_columns else table.rich_style
            key = table._row_locations.get_key(row)
            assert key is not None
            value = table._data[key][column.key]
            for cursor in (False, True):
                for hover in (False, True):
                    want = DataTable._render_cell(table, row, col, base, width, cursor, hover)
                    got = table._render_text_cell(value, row, col, base, width, cursor, hover)
                    compared += 1
                    if got is not None:
                        fast += 1
                        assert got == want, (row, col, cursor, hover)
    assert fast > 0.9 * compared and fast < compared  # the wide name fell back


async def test_core_is_told_the_rows_on_screen_and_the_detail_view(
    filled: tuple[FlowMgrApp, ReplayBackend, Pilot[None]],
) -> None:
    app, backend, pilot = filled
    table = dashboard(app).table

    def told() -> list[str] | None:
        return backend.watched[-1][1] if backend.watched else None

    await until(pilot, lambda: told() == table.visible_ids, "the first screen's rows")
    assert {owner for owner, _ in backend.watched} == {"panel"}
    assert 30 <= len(table.visible_ids) <= 48  # a screenful, not 1,000
    await pilot.press("pagedown", "pagedown")
    await until(pilot, lambda: told() == table.visible_ids, "the rows scrolled to")
    assert told() != table.shown_ids[: len(table.visible_ids)]
    table.set_filter("flow-09")
    await until(pilot, lambda: told() == table.visible_ids, "the filtered rows")
    assert all("flow-09" in table.cell_text(cid, "name") for cid in told() or [])
    chosen = table.visible_ids[2]
    table.select(chosen)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "the detail")
    await until(pilot, lambda: told() == [chosen], "the detail view's container")
    calls = len(backend.watched)
    await pilot.press("escape")
    await until(pilot, lambda: told() == table.visible_ids, "the rows again")
    assert len(backend.watched) == calls + 1  # one call, not one per step


def test_history_keeps_three_minutes_at_any_rate_and_survives_clock_jumps() -> None:
    state = PanelState([_snap(1)], True)
    cid = _cid(1)
    # Off screen: one sample every 10 s for half an hour, then back to one a second.
    for i in range(180):
        at = T0 + timedelta(seconds=10 * i)
        state.apply([StatsSampled(container_id=cid, sample=_usage(1.0, at), at=at)])
    hist = state.history[cid]
    assert len(hist) == 19 and hist[-1].timestamp - hist[0].timestamp == HISTORY_SPAN
    end = hist[-1].timestamp
    for i in range(1, 400):
        at = end + timedelta(seconds=i)
        state.apply([StatsSampled(container_id=cid, sample=_usage(1.0, at), at=at)])
    assert len(state.history[cid]) == HISTORY_SAMPLES  # the count bound still holds
    # A clock that jumps back or far ahead never empties it nor raises.
    for jump in (timedelta(days=-1), timedelta(days=365)):
        at = end + jump
        state.apply([StatsSampled(container_id=cid, sample=_usage(1.0, at), at=at)])
        assert state.history[cid][-1].timestamp == at
    assert len(state.history[cid]) == 1


async def test_a_burst_of_new_rows_is_drawn_a_few_times_and_a_busy_mark_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Adoption brings rows ten at a time every 40 ms: drawn at most every ROWS_EVERY, not per
    batch (each re-sorts and repaints); a change to shown rows (a key's busy mark) waits for
    nothing."""
    app, _ = _app(rows=0)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = dashboard(app)
        table = screen.table
        draws = 0
        draw = table.show_rows

        def counting(ids: list[str]) -> None:
            nonlocal draws
            draws += 1
            draw(ids)

        monkeypatch.setattr(table, "show_rows", counting)
        started = time.monotonic()
        for first in range(0, 500, 10):
            events: list[Event] = [
                ContainerAdded(snapshot=_snap(i), at=T0) for i in range(first, first + 10)
            ]
            screen.show_changes(app.state.apply(events), events)
            await pilot.pause()
        elapsed = time.monotonic() - started
        await until(pilot, lambda: table.row_count == 500, "every row")
        assert draws <= elapsed / ROWS_EVERY + 2, (draws, elapsed)
        names = _names(table, table.shown_ids)
        assert names == sorted(names, key=str.lower)
        cid = table.shown_ids[0]
        screen.show_changes(app.state.set_busy(cid, "stopping"), ())
        assert "stopping" in table.cell_text(cid, "state")
