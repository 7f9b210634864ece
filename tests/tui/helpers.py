"""Helpers for panel tests: wait for a condition on the screen, read rows, make containers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from textual.pilot import Pilot
from textual.screen import Screen

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.host_stats import HostSample
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.screens.dashboard import DashboardScreen
from flowmgr_tui.widgets.log_pane import LogPane
from flowmgr_tui.widgets.resource_graph import ScalePlot
from server.core.events import Event
from tests.tui.recording import ReplayBackend

__all__ = [
    "until",
    "dashboard",
    "row_names",
    "open_log_pane",
    "host_graphs_full",
    "replay_app",
    "BUSYBOX",
    "WAIT",
]

BUSYBOX = "flowmgr-test-busybox:latest"
WAIT = 40.0
"""Seconds a condition may take on a busy machine (Docker plus other helpers' tests)."""


async def until(
    pilot: Pilot[None], cond: Callable[[], bool], what: str, timeout: float = WAIT
) -> None:
    """Let the app run until `cond()` holds; fail naming `what` after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await pilot.pause(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def dashboard(app: FlowMgrApp) -> DashboardScreen:
    """The dashboard, wherever it is in the stack."""
    for screen in app.screen_stack:
        if isinstance(screen, DashboardScreen):
            return screen
    raise AssertionError("no dashboard on the screen stack")


def row_names(app: FlowMgrApp) -> list[str]:
    """Names in the table, in display order."""
    table = dashboard(app).table
    return [table.cell_text(cid, "name") for cid in table.shown_ids]


async def open_log_pane(app: FlowMgrApp, pilot: Pilot[None], container_id: str) -> LogPane:
    """Select the container's row, open its detail view and switch to the Logs tab."""
    table = dashboard(app).table
    await until(pilot, lambda: container_id in table.shown_ids, "the row")
    table.select(container_id)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "detail")
    await pilot.press("2")
    return app.screen.query_one(LogPane)


def host_graphs_full(screen: Screen[object]) -> bool:
    """Whether the detail's host graphs have a sample in every column: from then on a fixed
    host reading draws the same picture however many samples arrived (snapshots rely on it)."""
    plots = list(screen.query("#graph-host-cpu ScalePlot, #graph-host-mem ScalePlot"))
    rows = [p.rows for p in plots if isinstance(p, ScalePlot)]
    return len(rows) == 2 and all(r and r[-1] and " " not in r[-1] for r in rows)


def replay_app(events: list[Event], mode: str = "local", now: datetime | None = None) -> FlowMgrApp:
    """A panel fed by replaying `events` through the real bus, with a fixed host reading."""
    return FlowMgrApp(
        ReplayBackend(events),
        mode=mode,
        start_backend=True,
        clock=lambda: now or datetime.now(UTC),
        bridge_interval=0.01,
        host_probe=lambda: HostSample(25.0, 2, 6 * 1024**3, 24 * 1024**3, 25.0),
        host_interval=0.01,
    )
