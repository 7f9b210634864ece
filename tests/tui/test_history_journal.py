"""The history screen and the detail's Activity tab on a real journal (SQLite in the test's
state directory): what a manager journalled is there after a restart, locally and remotely."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from textual.app import App

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.host_stats import HostSample
from flowmgr_tui.remote import RemoteBackend
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.screens.history import HistoryScreen
from flowmgr_tui.state.panel_state import PanelState
from flowmgr_tui.widgets.activity_list import ActivityList
from server.core.config import Settings
from server.core.errors import InvalidRequest
from server.core.events import ActivityLogged, ContainerCrashed, Event, FlowMessageReceived, now
from server.core.manager import ContainerManager
from server.wire.journal_encoding import encode_event
from tests.integration.api_harness import TEST_TOKEN, running_service
from tests.tui.helpers import dashboard, until

pytestmark = [pytest.mark.docker, pytest.mark.tui]

GONE = "f00d" * 16
"""A flow deleted before the restart: only the journal remembers it."""
OTHER = "beef" * 16
SIZE = (120, 30)


def _events() -> list[Event]:
    t = now() - timedelta(minutes=5)
    out: list[Event] = [
        ActivityLogged(
            activity_type="note",
            container_id=GONE,
            message=f"before the restart {i}",
            at=t + timedelta(seconds=i),
        )
        for i in range(12)
    ]
    out.append(
        ContainerCrashed(
            container_id=GONE,
            name="gone",
            exit_code=3,
            error="Exited with code 3",
            logs=["step 1 ok", "ValueError: bad input"],
            at=t + timedelta(seconds=20),
        )
    )
    out += [
        FlowMessageReceived(container_id=OTHER, message={"n": i}, at=t + timedelta(seconds=30 + i))
        for i in range(5)
    ]
    return out


async def _journal(mgr: ContainerManager, events: list[Event]) -> None:
    """Publish and wait until all are committed."""
    start = mgr.journal.last_seq
    for event in events:
        mgr.bus.publish(event)
    async with asyncio.timeout(20):
        while mgr.journal.last_seq < start + len(events):
            await asyncio.sleep(0.02)


class _Host(App[None]):
    def __init__(self, screen: ContainerDetailScreen) -> None:
        super().__init__()
        self._first = screen

    def on_mount(self) -> None:
        self.push_screen(self._first)


async def test_history_and_activity_survive_a_manager_restart(settings: Settings) -> None:
    async with ContainerManager(settings, journal_encoder=encode_event) as first:
        await _journal(first, _events())
        journalled = first.journal.last_seq
    # The panel starts its core, as `flowmgr` does: seeded before the core recalled anything.
    mgr = ContainerManager(settings, journal_encoder=encode_event)
    app = FlowMgrApp(mgr, start_backend=True, bridge_interval=0.01)
    try:
        async with app.run_test(size=SIZE) as pilot:
            board = dashboard(app).query_one(ActivityList)
            await until(pilot, lambda: "CRASH f00df00df00d exit 3" in board.shown_text, "recall")
            assert mgr.journal.last_seq >= journalled
            mgr.bus.publish(
                ActivityLogged(activity_type="note", container_id=OTHER, message="live")
            )
            await until(pilot, lambda: "live" in board.shown_text, "a live line")
            text = board.shown_text
            assert text.count("before the restart 11") == 1 and text.count(": live") == 1
            # The history screen: every event, filters, a bad filter said in the screen.
            await pilot.press("h")
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history")
            screen = app.screen
            assert isinstance(screen, HistoryScreen)
            await until(pilot, lambda: len(screen.rows) >= 18, "the journalled events")
            assert [r.seq for r in screen.rows] == sorted(r.seq for r in screen.rows)
            screen.query_one("#history-flow").value = GONE  # type: ignore[attr-defined]
            screen.query_one("#history-types").value = "container_crashed"  # type: ignore[attr-defined]
            screen.query_one("#history-from").value = "1h"  # type: ignore[attr-defined]
            screen.apply_filters()
            await until(pilot, lambda: [r.event for r in screen.rows] == ["container_crashed"], "1")
            screen.query_one("#history-to").value = "noon-ish"  # type: ignore[attr-defined]
            screen.apply_filters()
            assert screen.problem.startswith("to: 'noon-ish' is not a time")
            assert screen.is_current
        # The detail's Activity tab, on a panel that heard nothing live: the journal's lines.
        detail = ContainerDetailScreen(
            GONE,
            state=PanelState([], True),
            backend=mgr,
            clock=now,
            host_probe=lambda: HostSample(1.0, 2, 1, 2, 50.0),
            host_interval=60,
        )
        host = _Host(detail)
        async with host.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: host.screen is detail, "the detail")
            pane = detail.query_one(ActivityList)
            assert "before the restart" not in pane.shown_text  # not read before it is shown
            await pilot.press("4")
            await until(pilot, lambda: "CRASH f00df00df00d exit 3" in pane.shown_text, "the crash")
            text = pane.shown_text
            assert "    | ValueError: bad input" in text
            lines = [ln for ln in text.splitlines() if "before the restart" in ln]
            assert [ln.rsplit(" ", 1)[1] for ln in lines] == [str(i) for i in range(12)]
    finally:
        await mgr.stop()


async def test_remote_history_through_the_service(settings: Settings) -> None:
    mgr = ContainerManager(settings, journal_encoder=encode_event)
    async with running_service(settings, mgr) as service:
        await _journal(mgr, _events())
        backend = RemoteBackend(service.url, token=TEST_TOKEN)
        app = FlowMgrApp(backend, start_backend=True)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: backend.docker_available, "connected")
                local = await mgr.get_history(container_id=OTHER)
                remote = await backend.get_history(container_id=OTHER)
                assert remote == local and len(remote.events) == 5
                with pytest.raises(InvalidRequest):  # the server's verdict, typed
                    await backend.get_history(limit=10**9)
                await pilot.press("h")
                await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history")
                screen = app.screen
                assert isinstance(screen, HistoryScreen)
                await until(pilot, lambda: len(screen.rows) >= 18, "the journalled events")
                assert any("exit 3: Exited with code 3" in r.summary for r in screen.rows)
                # The dashboard's activity: the server's journal, read once connected.
                board = dashboard(app).query_one(ActivityList)
                assert "before the restart 11" in board.shown_text
        finally:
            await backend.stop()


async def test_without_a_journal_the_screens_say_so(settings: Settings) -> None:
    async with ContainerManager(settings.model_copy(deep=True)) as mgr:  # no encoder: no journal
        app = FlowMgrApp(mgr)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("h")
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history")
            screen = app.screen
            assert isinstance(screen, HistoryScreen)
            await until(pilot, lambda: "keeps no journal" in screen.problem, "the reason")
            assert screen.problem.startswith("history unavailable: validation_error: ")
