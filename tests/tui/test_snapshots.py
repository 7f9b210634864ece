"""SVG snapshots of the main screen, the detail view and the create form, fed by a recording."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.host_stats import HostSample
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.screens.create_form import CreateForm
from tests.tui.helpers import host_graphs_full, row_names, until
from tests.tui.make_recording import ECHO_ID, ECHO_LOGS, NOW, RECORDING
from tests.tui.recording import ReplayBackend, load

pytestmark = [
    pytest.mark.tui,
]

Compare = Callable[..., bool]


def _host() -> HostSample:
    return HostSample(25.0, 2, 6 * 1024**3, 24 * 1024**3, 25.0)


def recorded_app() -> FlowMgrApp:
    """The panel on a recorded session: real bus, fixed clock, fixed host readings."""
    backend = ReplayBackend(load(RECORDING), logs={ECHO_ID: ECHO_LOGS})
    return FlowMgrApp(
        backend,
        start_backend=True,
        clock=lambda: NOW,
        bridge_interval=0.01,
        host_probe=_host,
        host_interval=0.01,
        default_image="flow:latest",
    )


async def _all_rows(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, FlowMgrApp)
    backend = app.backend
    assert isinstance(backend, ReplayBackend)
    await until(pilot, backend.replayed.is_set, "the replay to finish")
    await until(pilot, lambda: len(row_names(app)) == 7, "seven rows")
    await pilot.pause()


def test_main_screen(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app(), terminal_size=(120, 30), run_before=_all_rows)


def test_main_screen_80x24(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app(), terminal_size=(80, 24), run_before=_all_rows)


async def _open_echo(pilot: Pilot[Any]) -> None:
    await _all_rows(pilot)
    app = pilot.app
    assert isinstance(app, FlowMgrApp)
    app.open_detail(ECHO_ID)
    await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "the detail")
    # A sample in every column of the host graphs: the picture no longer depends on timing.
    await until(pilot, lambda: host_graphs_full(app.screen), "full host graphs")
    await pilot.pause()


def test_detail_view(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app(), terminal_size=(120, 30), run_before=_open_echo)


async def _open_form(pilot: Pilot[Any]) -> None:
    await _all_rows(pilot)
    await pilot.press("n")
    await until(pilot, lambda: isinstance(pilot.app.screen, CreateForm), "the form")
    await pilot.press(*"my-flow", "tab", *"MODE=demo", "tab", *"99999:80", "ctrl+s")
    await pilot.pause()


def test_create_form_with_an_error(snap_compare: Compare) -> None:
    assert snap_compare(recorded_app(), terminal_size=(100, 30), run_before=_open_form)
