"""Helpers for panel tests: wait for a condition on the screen, read rows, make containers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.pilot import Pilot

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.screens.dashboard import DashboardScreen

__all__ = ["until", "dashboard", "row_names", "BUSYBOX", "WAIT"]

BUSYBOX = "flowmgr-test-busybox:latest"
WAIT = 40.0
"""Seconds a condition may take on a busy machine (Docker plus other helpers' tests)."""


async def until(pilot: Pilot[None], cond: Callable[[], bool], what: str,
                timeout: float = WAIT) -> None:
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
