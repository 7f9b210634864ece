"""`e` in the panel (Pilot): a flow that is not running gets a notice and nothing is opened;
the real hand-over of the terminal is tests/tui/test_tmux_shell.py's."""

from __future__ import annotations

import pytest
from textual.message import Message
from textual.notifications import Notify

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.commands import ContainerCommands
from flowmgr_tui.screens.dashboard import DashboardScreen
from tests.tui.helpers import dashboard, until
from tests.tui.make_recording import ECHO_ID, NOW, _id, build
from tests.tui.recording import ReplayBackend

pytestmark = pytest.mark.tui

SIZE = (120, 40)
CRASHER = _id(7)
"""Exited by the end of the recording."""


def _notes(seen: list[Message], severity: str) -> list[str]:
    return [
        m.notification.message
        for m in seen
        if isinstance(m, Notify) and m.notification.severity == severity
    ]


async def test_e_on_a_flow_that_is_not_running_says_so_and_opens_nothing() -> None:
    backend = ReplayBackend(build())
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    seen: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        await until(pilot, lambda: app.state.containers[CRASHER].state == "exited", "the crash")
        dashboard(app).table.select(CRASHER)
        await pilot.press("e")
        await until(pilot, lambda: bool(_notes(seen, "warning")), "the notice")
        assert _notes(seen, "warning") == [
            "crasher is not running (exited): start it to open a shell"
        ]
        # the replay backend refuses every call: an attempt would have said so as an error
        assert _notes(seen, "error") == [] and isinstance(app.screen, DashboardScreen)


async def test_the_palette_offers_a_shell_in_running_flows_only() -> None:
    backend = ReplayBackend(build())
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        await until(pilot, lambda: app.state.containers[CRASHER].state == "exited", "the crash")
        texts = [text for text, _, _ in ContainerCommands(app.screen)._commands()]
        assert "Shell in echo-1" in texts and "Shell in crasher" not in texts
        assert app.state.containers[ECHO_ID].state == "running"
