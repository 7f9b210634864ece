"""Screens build without the panel's app and ask it by message; one keymap feeds the bindings,
the help screen and the palette."""

from __future__ import annotations

from typing import Any

import pytest
from textual.app import App
from textual.binding import Binding

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.commands import ContainerCommands
from flowmgr_tui.host_stats import HostSample
from flowmgr_tui.keymap import KEYS, SCOPES, VERBS, key_text, palette_keys
from flowmgr_tui.messages import ContainerActionRequested, CreateFormRequested
from flowmgr_tui.screens.columns import ColumnsScreen
from flowmgr_tui.screens.confirm import ConfirmScreen
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.screens.create_form import CreateForm
from flowmgr_tui.screens.dashboard import DashboardScreen
from flowmgr_tui.screens.help import HelpScreen, help_text
from flowmgr_tui.screens.history import HistoryScreen
from flowmgr_tui.screens.path_prompt import PathPrompt
from flowmgr_tui.screens.signal_prompt import SignalPrompt
from flowmgr_tui.state.panel_state import PanelState
from flowmgr_tui.widgets.log_pane import LogPane
from flowmgr_tui.widgets.message_pane import MessagePane
from tests.tui.helpers import dashboard, row_names, until
from tests.tui.make_recording import ECHO_ID, ECHO_LOGS, NOW, build
from tests.tui.recording import ReplayBackend

pytestmark = pytest.mark.tui

SIZE = (120, 40)


class _Host(App[None]):
    """Not the panel: shows one screen and writes down what it is asked."""

    def __init__(self, screen: Any) -> None:
        super().__init__()
        self._first = screen
        self.asked: list[tuple[str, str]] = []

    def on_mount(self) -> None:
        self.push_screen(self._first)

    def on_container_action_requested(self, message: ContainerActionRequested) -> None:
        self.asked.append((message.verb, message.container_id))

    def on_create_form_requested(self, _: CreateFormRequested) -> None:
        self.asked.append(("create", ""))


def _state() -> PanelState:
    state = PanelState([], True)
    state.apply(build())
    return state


async def test_the_dashboard_builds_from_a_state_and_asks_by_message() -> None:
    host = _Host(DashboardScreen(_state(), clock=lambda: NOW))
    async with host.run_test(size=SIZE) as pilot:
        screen = host.screen
        assert isinstance(screen, DashboardScreen)
        await until(pilot, lambda: screen.table.row_count == 7, "the rows")
        screen.table.select(ECHO_ID)
        await pilot.press("x", "enter", "n")
        await until(pilot, lambda: len(host.asked) == 3, "three requests")
        assert host.asked == [("stop", ECHO_ID), ("open", ECHO_ID), ("create", "")]


async def test_the_detail_view_builds_from_a_state_and_asks_by_message() -> None:
    backend = ReplayBackend([], logs={ECHO_ID: ECHO_LOGS})
    detail = ContainerDetailScreen(
        ECHO_ID,
        state=_state(),
        backend=backend,
        clock=lambda: NOW,
        host_interval=0.05,
        host_probe=lambda: HostSample(25.0, 2, 6 * 1024**3, 24 * 1024**3, 25.0),
    )
    host = _Host(detail)
    async with host.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: host.screen is detail, "the detail view")
        await pilot.press("2")  # the logs tab: loaded through the backend it was handed
        pane = detail.query_one(LogPane)
        await until(pilot, lambda: ECHO_LOGS[-1] in pane.shown_text, "the logs")
        await pilot.press("x")
        await until(pilot, lambda: host.asked == [("stop", ECHO_ID)], "the request")
        await pilot.press("escape")
        await until(pilot, lambda: host.screen is not detail, "the screen to close")


OWNERS: dict[str, Any] = {
    "app": FlowMgrApp,
    "dashboard": DashboardScreen,
    "detail": ContainerDetailScreen,
    "logs": LogPane,
    "messages": MessagePane,
    "create": CreateForm,
    "confirm": ConfirmScreen,
    "path": PathPrompt,
    "signal": SignalPrompt,
    "history": HistoryScreen,
    "help": HelpScreen,
    "columns": ColumnsScreen,
}


def test_every_binding_comes_from_the_keymap_and_help_lists_each() -> None:
    assert set(OWNERS) == set(SCOPES)
    for scope, owner in OWNERS.items():
        bound = [
            (b.key, b.action, b.description, b.show)
            for b in owner.BINDINGS
            if isinstance(b, Binding)
        ]
        assert len(bound) == len(owner.BINDINGS)
        assert bound == [(k.keys, k.action, k.label, k.show) for k in KEYS if k.scope == scope]
    text = help_text()
    for key in KEYS:
        line = next(ln for ln in text.splitlines() if ln.endswith(f" {key.help}"))
        assert key_text(key.keys) in line, key
    # the verbs act from the list and from the detail view (unpause has no key: `p` on a
    # paused flow unpauses it)
    for verb in (v for v in VERBS.values() if v.name != "unpause"):
        for scope in ("dashboard", "detail"):
            assert any(
                k.keys == verb.key and k.action == f"act('{verb.name}')"
                for k in KEYS
                if k.scope == scope
            )


async def test_the_palette_lists_the_keymaps_actions_and_runs_them() -> None:
    backend = ReplayBackend(build(), logs={ECHO_ID: ECHO_LOGS})
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        commands = {text: run for text, _, run in ContainerCommands(app.screen)._commands()}
        bound_actions = {k.action for k in KEYS}
        for key in palette_keys():
            assert key.palette in commands and key.action in bound_actions
        for name in row_names(app):  # none is paused: "Pause x", never "Unpause x"
            for verb in VERBS.values():
                assert (f"{verb.label} {name}" in commands) == (verb.name != "unpause")
        commands["Help: keys"]()
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.press("escape")
        commands["Sort by CPU"]()
        await until(pilot, lambda: dashboard(app).table.sort_column == "cpu", "the sort")
