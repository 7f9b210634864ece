"""PanelState folds core events into rows and bounded histories; the table rewrites only changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.formatting import health_text, size, state_text, uptime
from flowmgr_tui.state.panel_state import HISTORY_SAMPLES, PanelState
from flowmgr_tui.widgets.docker_banner import DockerBanner
from server.core.events import (
    ContainerRemoved,
    DockerConnectionLost,
    DockerConnectionRestored,
    FlowChannelConnected,
    StatsSampled,
)
from tests.tui.helpers import dashboard, until
from tests.tui.make_recording import ECHO_ID, NOW, build
from tests.tui.recording import ReplayBackend

pytestmark = pytest.mark.tui


def test_state_follows_events_and_bounds_history() -> None:
    events = build()
    state = PanelState([], True)
    changes = state.apply(events)
    assert len(state.containers) == 7 and ECHO_ID in changes.rows
    assert state.containers[ECHO_ID].socket_connected
    sample = next(e for e in events if isinstance(e, StatsSampled)).sample
    many = [
        StatsSampled(
            container_id=ECHO_ID, sample=replace(sample, timestamp=NOW.replace(microsecond=i))
        )
        for i in range(HISTORY_SAMPLES + 50)
    ]
    state.apply(many)
    assert len(state.history[ECHO_ID]) == HISTORY_SAMPLES
    gone = state.apply([ContainerRemoved(container_id=ECHO_ID, name="echo-1")])
    assert gone.removed == {ECHO_ID} and ECHO_ID not in state.containers
    lost = state.apply([DockerConnectionLost(reason="socket closed")])
    assert lost.docker and not state.docker_available


def test_texts_read_without_colour() -> None:
    assert state_text("running").plain == "+ running"
    assert state_text("exited").plain == "x exited"
    assert state_text("running", "stopping").plain == "* stopping"
    assert health_text("unhealthy").plain == "!! unhealthy"
    assert size(1536) == "1.5K" and size(None) == "-"
    assert uptime(NOW.replace(hour=NOW.hour - 2), NOW) == "2h00m"


async def test_idle_updates_rewrite_no_cell_and_the_banner_follows_docker() -> None:
    backend = ReplayBackend(build())
    app = FlowMgrApp(backend, start_backend=True, clock=lambda: NOW, bridge_interval=0.01)
    async with app.run_test(size=(120, 40)) as pilot:
        table = dashboard(app).table
        await until(pilot, backend.replayed.is_set, "the replay")
        await pilot.pause(0.2)
        before = table._update_count
        last = [e for e in build() if isinstance(e, StatsSampled)][-1]
        backend.bus.publish(replace(last, at=NOW))  # same values again: nothing to redraw
        backend.bus.publish(FlowChannelConnected(container_id=ECHO_ID))
        await pilot.pause(0.2)
        assert table._update_count == before
        banner = dashboard(app).query_one(DockerBanner)
        backend.bus.publish(DockerConnectionLost(reason="engine gone"))
        await until(pilot, lambda: banner.has_class("-visible"), "the banner")
        assert "engine gone" in str(banner.content)
        backend.bus.publish(DockerConnectionRestored())
        await until(pilot, lambda: not banner.has_class("-visible"), "the banner to go")
