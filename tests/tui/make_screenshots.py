"""Write docs/screenshots/*.svg from the recorded session (python -m tests.tui.make_screenshots)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from textual.pilot import Pilot

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.screens.columns import ColumnsScreen
from flowmgr_tui.screens.confirm import ConfirmScreen
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.screens.history import HistoryScreen
from flowmgr_tui.screens.signal_prompt import SignalPrompt
from flowmgr_tui.widgets.log_pane import LogPane
from server.core.events import ContainerStateChanged
from tests.tui.helpers import dashboard, host_graphs_full, until
from tests.tui.make_recording import ECHO_ID
from tests.tui.recording import ReplayBackend
from tests.tui.test_snapshots import recorded_app

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


async def _ready(app: FlowMgrApp, pilot: Pilot[None]) -> None:
    backend = app.backend
    assert isinstance(backend, ReplayBackend)
    await until(pilot, backend.replayed.is_set, "the replay")
    await pilot.pause(0.2)


async def shoot(size: tuple[int, int], suffix: str = "") -> None:
    """Every main screen at one terminal size."""
    app = recorded_app()
    async with app.run_test(size=size) as pilot:
        await _ready(app, pilot)
        app.save_screenshot(f"dashboard{suffix}.svg", str(OUT))
        if suffix:
            return
        await pilot.press("slash", *"e")
        await pilot.pause(0.2)
        app.save_screenshot("dashboard-filter.svg", str(OUT))
        await pilot.press("escape")
        app.open_detail(ECHO_ID)
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "detail")
        await until(pilot, lambda: host_graphs_full(app.screen), "full host graphs")
        await pilot.pause()
        app.save_screenshot("detail-graphs.svg", str(OUT))
        for key, name in (("2", "logs"), ("3", "messages"), ("4", "activity"), ("5", "config")):
            await pilot.press(key)
            await pilot.pause(0.3)
            app.save_screenshot(f"detail-{name}.svg", str(OUT))
        await shoot_log_views(app, pilot)
        await pilot.press("escape")
        await shoot_history(app, pilot)
        await pilot.press("n")
        await pilot.pause(0.2)
        await pilot.press(*"my-flow", "tab", *"MODE=demo", "tab", *"99999:80", "ctrl+s")
        await pilot.pause(0.2)
        app.save_screenshot("create-form.svg", str(OUT))
        await pilot.press("escape")
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        app.save_screenshot("help.svg", str(OUT))
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"stop")
        await pilot.pause(0.5)
        app.save_screenshot("command-palette.svg", str(OUT))
        await pilot.press("escape")
        await shoot_kill(app, pilot)


async def shoot_log_views(app: FlowMgrApp, pilot: Pilot[None]) -> None:
    """The logs tab with times shown and a "since" preset, then its save prompt."""
    await pilot.press("2", "T", "S", "S")  # times on, since 5 m
    await pilot.pause(0.3)
    app.save_screenshot("detail-logs-times.svg", str(OUT))
    app.screen.query_one(LogPane).save_dir = "/home/me"
    await pilot.press("ctrl+s")
    await pilot.pause(0.3)
    app.save_screenshot("detail-logs-save.svg", str(OUT))
    await pilot.press("escape", "T", "S", "S", "S", "S")  # back as it was


async def views_only() -> None:
    """Only the issue-17 detail views (python -c 'import asyncio, tests.tui.make_screenshots
    as m; asyncio.run(m.views_only())')."""
    app = recorded_app()
    async with app.run_test(size=(120, 32)) as pilot:
        await _ready(app, pilot)
        app.open_detail(ECHO_ID)
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "detail")
        await until(pilot, lambda: host_graphs_full(app.screen), "full host graphs")
        await pilot.pause()
        app.save_screenshot("detail-graphs.svg", str(OUT))
        await pilot.press("5")
        await pilot.pause(0.3)
        app.save_screenshot("detail-config.svg", str(OUT))
        await shoot_log_views(app, pilot)


async def shoot_history(app: FlowMgrApp, pilot: Pilot[None]) -> None:
    """The history screen (h), every journalled event, then a filter that does not parse."""
    await pilot.press("h")
    await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history")
    screen = app.screen
    assert isinstance(screen, HistoryScreen)
    await until(pilot, lambda: bool(screen.rows) and screen.pager is not None, "its rows")
    await pilot.pause(0.3)
    await pilot.press("up", "up", "up", "up")  # the crash report, its payload shown below
    await pilot.pause(0.3)
    app.save_screenshot("history.svg", str(OUT))
    await pilot.press("slash", "tab", *"crash", "enter")
    await until(pilot, lambda: bool(screen.problem), "the filter's error")
    await pilot.pause(0.3)
    app.save_screenshot("history-bad-filter.svg", str(OUT))
    await pilot.press("escape")


async def shoot_table(app: FlowMgrApp, pilot: Pilot[None]) -> None:
    """Two rows marked (space) and the bulk question (x), then the column chooser (c)."""
    await pilot.press("space", "space", "x")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
    await pilot.pause(0.3)
    app.save_screenshot("dashboard-marked.svg", str(OUT))
    await pilot.press("n", "M", "c")
    await until(pilot, lambda: isinstance(app.screen, ColumnsScreen), "the chooser")
    await pilot.press("down", "space", "down", "down", "K")
    await pilot.pause(0.3)
    app.save_screenshot("columns.svg", str(OUT))
    await pilot.press("escape")


async def only(shots: Callable[[FlowMgrApp, Pilot[None]], Awaitable[None]]) -> None:
    """Only some shots, in a session of their own (python -c 'import asyncio,
    tests.tui.make_screenshots as m; asyncio.run(m.only(m.shoot_table))')."""
    app = recorded_app()
    async with app.run_test(size=(120, 32)) as pilot:
        await _ready(app, pilot)
        await shots(app, pilot)


async def history_only() -> None:
    """Only the history shots."""
    await only(shoot_history)


async def shoot_kill(app: FlowMgrApp, pilot: Pilot[None]) -> None:
    """A paused row (`p`), then `K` on a running one: the signal choice (issue 17)."""
    table, known = dashboard(app).table, app.state.containers
    running = [c for c in table.shown_ids if known[c].state == "running"]
    frozen = known[running[1]]  # above the dialog
    app.backend.bus.publish(
        ContainerStateChanged(
            container_id=frozen.id,
            old_state="running",
            new_state="paused",
            snapshot=replace(frozen, state="paused", resources=None),
        )
    )
    await until(pilot, lambda: table.cell_text(frozen.id, "state") == "= paused", "paused row")
    table.select(running[0])
    await pilot.press("K")
    await until(pilot, lambda: isinstance(app.screen, SignalPrompt), "the signal choice")
    await pilot.pause(0.3)
    app.save_screenshot("kill-signal.svg", str(OUT))
    await pilot.press("escape")


async def kill_only() -> None:
    """Only the pause / kill shot."""
    await only(shoot_kill)


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    await shoot((120, 32))
    await shoot((80, 24), "-80x24")
    await only(shoot_table)  # its own session: marks and the cursor stay out of the other shots


if __name__ == "__main__":
    asyncio.run(main())
