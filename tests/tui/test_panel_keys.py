"""Keys, modals, palette, filter, sort, logs and the message editor, on a recorded session."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.notifications import Notify
from textual.widgets import Input, Label, TextArea

from flowmgr_tui.__main__ import main
from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.commands import ContainerCommands
from flowmgr_tui.screens.confirm import ConfirmScreen
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.screens.help import HelpScreen
from flowmgr_tui.screens.path_prompt import PathPrompt
from flowmgr_tui.widgets.log_pane import LogPane
from flowmgr_tui.widgets.message_pane import MessagePane
from server.core.events import LogLineReceived
from tests.tui.helpers import dashboard, row_names, until
from tests.tui.make_recording import ECHO_ID, ECHO_LOGS, NOW, build
from tests.tui.recording import ReplayBackend

pytestmark = pytest.mark.tui

SIZE = (120, 40)


def _app() -> tuple[FlowMgrApp, ReplayBackend]:
    backend = ReplayBackend(build(), logs={ECHO_ID: ECHO_LOGS})
    return FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01), backend


def _errors(seen: list[Message]) -> list[str]:
    return [
        m.notification.message
        for m in seen
        if isinstance(m, Notify) and m.notification.severity == "error"
    ]


async def test_a_failed_action_says_why_and_clears_the_progress_mark() -> None:
    app, backend = _app()
    seen: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        table = dashboard(app).table
        table.select(ECHO_ID)
        await pilot.press("x")
        await until(pilot, lambda: any("read-only" in e for e in _errors(seen)), "the error")
        assert any(e.startswith("system_error:") for e in _errors(seen))
        await until(
            pilot,
            lambda: table.cell_text(ECHO_ID, "state") == "+ running",
            "the row back to its state",
        )


async def test_delete_asks_first_and_no_means_nothing_happens() -> None:
    app, backend = _app()
    seen: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        dashboard(app).table.select(ECHO_ID)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "it to close")
        await pilot.pause(0.1)
        assert _errors(seen) == []  # nothing was attempted
        await pilot.press("d", "y")
        await until(pilot, lambda: any("read-only" in e for e in _errors(seen)), "the attempt")


async def test_the_palette_lists_every_action_for_every_container() -> None:
    app, backend = _app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        texts = [text for text, _, _ in ContainerCommands(app.screen)._commands()]
        for name in row_names(app):
            for verb in ("Open", "Start", "Stop", "Restart", "Update code of", "Delete"):
                assert f"{verb} {name}" in texts
        assert "Create a container" in texts and "Sort by CPU" in texts


async def test_filter_sort_keep_the_cursor_on_its_container_and_help_opens() -> None:
    app, backend = _app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        table = dashboard(app).table
        assert app.focused is table  # arrows work from the start, no mouse needed
        await pilot.press("slash", *"echo")
        await until(pilot, lambda: row_names(app) == ["echo-1"], "the filtered row")
        await pilot.press("escape")
        await until(pilot, lambda: len(row_names(app)) == 7, "all rows back")
        table.select(ECHO_ID)
        by_name = row_names(app)
        await pilot.press("o", "o", "o", "o", "o")  # name -> id -> image -> state -> health -> cpu
        assert table.sort_column == "cpu"
        assert row_names(app) != by_name
        assert table.selected_id == ECHO_ID
        await pilot.press("O")
        assert table.sort_reverse and table.selected_id == ECHO_ID
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")


async def _detail(app: FlowMgrApp, backend: ReplayBackend, pilot: Any) -> ContainerDetailScreen:
    await until(pilot, backend.replayed.is_set, "the replay")
    dashboard(app).table.select(ECHO_ID)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "the detail")
    assert isinstance(app.screen, ContainerDetailScreen)
    return app.screen


async def test_log_pane_search_pause_and_resume() -> None:
    app, backend = _app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await _detail(app, backend, pilot)
        await pilot.press("2")
        pane = screen.query_one(LogPane)
        await until(pilot, lambda: "handled message 29" in pane.shown_text, "the tail")
        await pilot.press("slash", *"message 2")
        await until(pilot, lambda: "message 1" not in pane.shown_text, "the search")
        assert all("message 2" in line for line in pane.shown_text.splitlines())
        await pilot.press("enter", "f")  # `f`: `p` pauses the flow (issue 17)
        assert pane.paused
        backend.bus.publish(LogLineReceived(container_id=ECHO_ID, line="late message 2x"))
        await until(pilot, lambda: len(pane.lines) == len(ECHO_LOGS) + 1, "the held line")
        assert "late message 2x" not in pane.shown_text
        await pilot.press("f")
        await until(pilot, lambda: "late message 2x" in pane.shown_text, "the line shown")


async def test_message_editor_checks_json_before_sending() -> None:
    app, backend = _app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await _detail(app, backend, pilot)
        await pilot.press("3")
        pane = screen.query_one(MessagePane)
        editor = pane.query_one(TextArea)
        for text, problem in (("[1, 2]", "JSON object"), ("{bad", "not JSON")):
            editor.text = text
            await pilot.press("ctrl+s")
            await until(pilot, lambda p=problem: p in pane.error_text, problem)  # type: ignore[misc]
        editor.text = '{"type": "ping"}'
        await pilot.press("ctrl+s")
        # The recording cannot send: the typed error from the backend lands under the editor.
        await until(pilot, lambda: "system_error" in pane.error_text, "the backend's refusal")


async def test_update_code_asks_for_an_absolute_path_then_runs() -> None:
    app, backend = _app()
    seen: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        dashboard(app).table.select(ECHO_ID)
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, PathPrompt), "the path prompt")
        prompt = app.screen
        await pilot.press(*"relative/code", "enter")
        assert "absolute path" in str(prompt.query_one("#path-error", Label).content)
        assert app.screen is prompt
        prompt.query_one(Input).value = "/srv/new-code"
        await pilot.press("enter")
        await until(pilot, lambda: any("read-only" in e for e in _errors(seen)), "the attempt")


def test_server_only_hands_over_to_the_service_entry_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"server": {"port": "eighty"}}', encoding="utf-8")
    # The service's own start-up check answers: exit code 2 and the key named.
    assert main(["--server-only", "--config", str(bad)]) == 2
    assert "server.port" in capsys.readouterr().out


def test_a_config_error_leaves_the_garbage_collector_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"docker": {"stop_timeout": -1}}', encoding="utf-8")
    assert gc.isenabled()
    try:
        # main() pauses the cyclic GC for start-up; every way out must resume it.
        assert main(["--config", str(bad), "--log-file", str(tmp_path / "panel.log")]) == 2
        assert "docker.stop_timeout" in capsys.readouterr().err
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0, "start-up objects are frozen, not rescanned"
    finally:
        gc.enable()
        gc.unfreeze()
