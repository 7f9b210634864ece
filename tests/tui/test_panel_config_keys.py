"""panel.toml in the running panel: rebound keys act and show in the help and the footer, a bad
file is named on the first screen, the theme chosen in the app is saved, `m` frees the mouse."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.message import Message
from textual.widgets import Static
from textual.widgets._footer import FooterKey

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.messages import ContainerActionRequested
from flowmgr_tui.panel_config import PanelConfig, load_panel_config
from flowmgr_tui.screens.help import HelpScreen
from tests.tui.helpers import dashboard, until
from tests.tui.make_recording import ECHO_ID, ECHO_LOGS, NOW, build
from tests.tui.recording import ReplayBackend

pytestmark = pytest.mark.tui

SIZE = (120, 40)


def _app(panel: PanelConfig) -> tuple[FlowMgrApp, ReplayBackend]:
    backend = ReplayBackend(build(), logs={ECHO_ID: ECHO_LOGS})
    app = FlowMgrApp(
        backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01, panel=panel
    )
    return app, backend


def _config(tmp_path: Path, text: str) -> PanelConfig:
    path = tmp_path / "panel.toml"
    path.write_text(text, encoding="utf-8")
    return load_panel_config(path)


def _notes(app: FlowMgrApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def test_a_rebound_key_acts_and_shows_in_the_help_and_the_footer(tmp_path: Path) -> None:
    panel = _config(tmp_path, '[keys]\n"dashboard.stop" = "X"\n"app.help" = "f1"\n')
    assert panel.problems == ()
    app, backend = _app(panel)
    seen: list[Message] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        table = dashboard(app).table
        await until(pilot, lambda: ECHO_ID in table.shown_ids, "the row")
        table.select(ECHO_ID)

        def stops() -> list[str]:
            return [
                m.container_id
                for m in seen
                if isinstance(m, ContainerActionRequested) and m.verb == "stop"
            ]

        await pilot.press("x")  # the default key no longer stops
        await pilot.pause(0.1)
        assert stops() == []
        await pilot.press("X")
        await until(pilot, lambda: set(stops()) == {ECHO_ID}, "the stop asked with X")

        def footer() -> dict[str, str]:
            return {k.description: k.key_display for k in app.screen.query(FooterKey)}

        await until(pilot, lambda: "Stop" in footer(), "the footer")
        assert footer()["Stop"] == "X"

        await pilot.press("question_mark")  # the old help key is unbound
        await pilot.pause(0.1)
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        text = "\n".join(str(w.render()) for w in app.screen.query(Static))
        dash = text.split("Containers (dashboard)")[1].split("\n\n")[0]
        stop_line = next(ln for ln in dash.splitlines() if ln.endswith(" stop it"))
        assert stop_line.split()[0] == "X"
        help_line = next(ln for ln in text.splitlines() if ln.endswith(" every key of the panel"))
        assert help_line.split()[0] == "f1"


async def test_a_bad_file_is_named_on_the_first_screen_and_defaults_hold(tmp_path: Path) -> None:
    panel = _config(tmp_path, '# mine\n[keys]\n"dashboard.stop" = "r"\nbogus = 1\n')
    app, backend = _app(panel)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        await until(pilot, lambda: any("panel.toml" in n for n in _notes(app)), "the notice")
        (note,) = [n for n in _notes(app) if "panel.toml" in n]
        assert f"{tmp_path / 'panel.toml'}:3: keys.dashboard.stop" in note
        assert f"{tmp_path / 'panel.toml'}:4: keys.bogus: no such action" in note
        stop = next(k for k in app.keys if k.name == "dashboard.stop")
        assert stop.in_force == "x"  # the clash was not applied


async def test_the_theme_chosen_in_the_app_is_saved_keeping_the_file(tmp_path: Path) -> None:
    panel = _config(tmp_path, '# my comment\ntheme = "nord"\n\n[logs]\ntail = 500\n')
    app, backend = _app(panel)
    path = tmp_path / "panel.toml"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        assert app.theme == "nord"
        app.theme = "dracula"  # what Textual's theme switcher (ctrl+p, "Change theme") sets
        await until(pilot, lambda: 'theme = "dracula"' in path.read_text(), "the saved theme")
    assert path.read_text() == '# my comment\ntheme = "dracula"\n\n[logs]\ntail = 500\n'


async def test_a_file_that_cannot_be_kept_is_not_written_and_the_user_is_told(
    tmp_path: Path,
) -> None:
    path = tmp_path / "panel.toml"
    path.write_bytes(b"theme = nord-without-quotes\n")
    app, backend = _app(load_panel_config(path))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        app.theme = "dracula"
        await until(pilot, lambda: any("theme not saved" in n for n in _notes(app)), "notice")
    assert path.read_bytes() == b"theme = nord-without-quotes\n"


async def test_m_releases_the_mouse_and_m_again_takes_it_back() -> None:
    app, backend = _app(PanelConfig())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        await pilot.press("m")
        assert app.prefs.mouse_released
        assert any("m gives the mouse back" in n for n in _notes(app))
        await pilot.press("m")
        assert not app.prefs.mouse_released
