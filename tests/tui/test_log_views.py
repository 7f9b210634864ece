"""The log pane's views: timestamps, "since" presets, save to a file, wrap, and a search that
keeps following. On a recorded session first, then on a real flow through a local and a
remote panel (masked lines saved as shown)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.notifications import Notify
from textual.widgets import Input, Label, RichLog

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.remote import RemoteBackend
from flowmgr_tui.screens.confirm import ConfirmScreen
from flowmgr_tui.screens.path_prompt import PathPrompt
from server.core.config import Settings
from server.core.events import LogLineReceived
from tests.integration.api_harness import TEST_TOKEN, running_service
from tests.integration.leaky_flow import leaky_flow
from tests.tui.helpers import open_log_pane, until
from tests.tui.make_recording import ECHO_ID, ECHO_LOGS, NOW, build
from tests.tui.recording import ReplayBackend

SIZE = (120, 40)
AT = datetime(2026, 12, 4, 20, 1, 2, tzinfo=UTC)


def _notes(seen: list[Message], severity: str) -> list[str]:
    return [
        str(m.notification.message)
        for m in seen
        if isinstance(m, Notify) and m.notification.severity == severity
    ]


async def _save_as(pilot: Any, path: Path) -> None:
    await pilot.press("ctrl+s")
    await until(pilot, lambda: isinstance(pilot.app.screen, PathPrompt), "the path prompt")
    pilot.app.screen.query_one("#path", Input).value = str(path)
    await pilot.click("#ok")


@pytest.mark.tui
async def test_timestamps_since_wrap_and_search_that_follows() -> None:
    backend = ReplayBackend(build(), logs={ECHO_ID: ECHO_LOGS})
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        pane = await open_log_pane(app, pilot, ECHO_ID)
        await until(pilot, lambda: "handled message 29" in pane.shown_text, "the tail")
        assert backend.log_asks[-1] == (100, None, True)  # stamps asked for, shown on demand

        backend.bus.publish(LogLineReceived(container_id=ECHO_ID, line="stamped", at=AT))
        await until(pilot, lambda: "stamped" in pane.shown_text, "a live line")
        await pilot.press("T")
        assert "2026-12-04 20:01:02 stamped" in pane.shown_text
        assert "times UTC" in str(pane.query_one("#log-status", Label).content)
        await pilot.press("T")
        assert "2026-12-04" not in pane.shown_text

        await pilot.press("w")
        assert pane.wrap and pane.query_one(RichLog).wrap

        def asked(want: tuple[int, float | None, bool]) -> Callable[[], bool]:
            return lambda: backend.log_asks[-1] == want

        for since, label in ((60.0, "1 m"), (300.0, "5 m"), (900.0, "15 m"), (3600.0, "1 h")):
            await pilot.press("S")
            await until(pilot, asked((5000, since, True)), label)
            assert f"since {label}" in str(pane.query_one("#log-status", Label).content)
        await pilot.press("S")
        await until(pilot, lambda: backend.log_asks[-1] == (100, None, True), "the tail again")

        # a search keeps following: new matching lines arrive while it is active
        await pilot.press("slash", *"keep", "enter")
        for line in ("keep following 1", "other line", "keep following 2"):
            backend.bus.publish(LogLineReceived(container_id=ECHO_ID, line=line))
        await until(pilot, lambda: "keep following 2" in pane.shown_text, "new matches")
        assert pane.shown_text.splitlines() == ["keep following 1", "keep following 2"]
        await pilot.press("f")  # held (f follows): what arrives is held, and not saved as shown
        backend.bus.publish(LogLineReceived(container_id=ECHO_ID, line="keep held back"))
        await until(pilot, lambda: pane.lines[-1].text == "keep held back", "the held line")
        assert pane.shown_lines() == ["keep following 1", "keep following 2"]


@pytest.mark.tui
async def test_save_asks_before_overwriting_and_says_why_it_cannot(tmp_path: Path) -> None:
    backend = ReplayBackend(build(), logs={ECHO_ID: ECHO_LOGS})
    seen: list[Message] = []
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        pane = await open_log_pane(app, pilot, ECHO_ID)
        await until(pilot, lambda: "handled message 29" in pane.shown_text, "the tail")
        await pilot.press("slash", *"message 2", "enter")  # saved as shown: the matches only
        shown = pane.shown_lines()
        assert shown and all("message 2" in line for line in shown)

        out = tmp_path / "echo.log"
        pane.save_dir = str(tmp_path)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, PathPrompt), "the path prompt")
        proposed = app.screen.query_one("#path", Input).value
        assert proposed.startswith(f"{tmp_path}/flowmgr-logs-") and proposed.endswith(".log")
        await pilot.press("escape")

        await _save_as(pilot, out)
        await until(pilot, out.exists, "the file")
        await until(pilot, lambda: any("saved" in n for n in _notes(seen, "information")), "ok")
        assert out.read_text().splitlines() == shown

        out.write_text("precious\n")
        await _save_as(pilot, out)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("n")
        await pilot.pause(0.2)
        assert out.read_text() == "precious\n"
        await _save_as(pilot, out)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: out.read_text().splitlines() == shown, "overwritten")

        link = tmp_path / "link.log"
        link.symlink_to(tmp_path / "elsewhere.log")
        await _save_as(pilot, link)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the symlink question")
        await pilot.press("n")
        assert not (tmp_path / "elsewhere.log").exists()

        await _save_as(pilot, tmp_path)
        await until(pilot, lambda: any("directory" in n for n in _notes(seen, "error")), "why")
        await _save_as(pilot, Path("/sys/flowmgr-test.log"))
        await until(pilot, lambda: any("/sys/" in n for n in _notes(seen, "error")), "why")
        assert not isinstance(app.screen, ConfirmScreen | PathPrompt)


@pytest.mark.docker
@pytest.mark.tui
async def test_logs_locally_and_remotely_stamped_since_and_saved_masked(
    settings: Settings, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    flow = leaky_flow(unique_name("logview"))
    async with running_service(settings) as svc:
        snap = await svc.manager.create_container(flow.spec)
        await svc.manager.start_container(snap.id)
        local = FlowMgrApp(svc.manager)
        remote = FlowMgrApp(RemoteBackend(svc.url, token=TEST_TOKEN), start_backend=True)
        try:
            for app in (local, remote):
                await _stamped_since_saved(app, snap.id, tmp_path, flow.leaks)
        finally:
            await remote.backend.stop()
            await svc.manager.delete_container(snap.id)


async def _stamped_since_saved(
    app: FlowMgrApp, cid: str, tmp_path: Path, leaks: Callable[[str], list[str]]
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_log_pane(app, pilot, cid)
        await until(pilot, lambda: "DB_PASSWORD=***" in pane.shown_text, "masked lines")
        await until(pilot, lambda: len(pane.lines) > 8, "some lines")
        assert all(line.at is not None for line in pane.lines)  # the tail's and live ones
        await pilot.press("T")
        datetime.strptime(pane.shown_lines()[0][:19], "%Y-%m-%d %H:%M:%S")
        await pilot.press("S")
        status = pane.query_one("#log-status", Label)
        await until(pilot, lambda: "since 1 m" in str(status.content), "since 1 m")
        await until(pilot, lambda: "tick-" in pane.shown_text, "reloaded")
        out = tmp_path / f"{secrets.token_hex(4)}.log"
        await _save_as(pilot, out)
        await until(pilot, lambda: out.exists() and "tick-" in out.read_text(), "saved")
        text = out.read_text()
        assert "DB_PASSWORD=***" in text and leaks(text) == []


@pytest.mark.tui
async def test_the_panel_configs_log_defaults_open_the_pane(tmp_path: Path) -> None:
    """panel.toml's [logs] is how every log pane opens: times shown, wrapped, the last 5 m."""
    from flowmgr_tui.panel_config import parse_panel_config

    cfg = parse_panel_config(
        '[logs]\ntail = 500\nwrap = true\ntimestamps = true\nsince = "5m"\n',
        tmp_path / "panel.toml",
    )
    assert not cfg.problems, cfg.problems
    backend = ReplayBackend(build(), logs={ECHO_ID: ECHO_LOGS})
    app = FlowMgrApp(
        backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01, panel=cfg
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, backend.replayed.is_set, "the replay")
        pane = await open_log_pane(app, pilot, ECHO_ID)
        await until(pilot, lambda: "handled message 29" in pane.shown_text, "the lines")
        assert (pane.tail, pane.wrap, pane.timestamps, pane.since) == (500, True, True, 300.0)
        assert pane.query_one(RichLog).wrap
        assert backend.log_asks[-1][1] == 300.0  # the first load asked for the last 5 m
        status = str(pane.query_one("#log-status", Label).content)
        assert "since 5 m" in status and "times UTC" in status, status
