"""Network and block I/O graphs: rates between samples, read against a fixed, labelled step.

A flow receiving 8 KiB and sending 2 KiB a second, reading 1 MiB once and then nothing, is
replayed through the real bus into the panel, locally and as a remote panel would hold it.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from textual.pilot import Pilot

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.graph_scale import BARS, RATE_STEPS, counter_rates, rate_scale
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.widgets.resource_graph import ResourceGraph, ScalePlot
from server.core.events import ContainerAdded, Event, StatsSampled
from server.core.models import ContainerSnapshot, ResourceSample
from tests.tui.helpers import replay_app, until
from tests.tui.make_recording import NOW, T0

pytestmark = pytest.mark.tui

FLOW_ID = "cd" * 32
KIB = 1024


def _sample(i: int) -> ResourceSample:
    return ResourceSample(
        cpu_percent=1.0,
        memory_usage=8 * KIB * KIB,
        memory_limit=512 * KIB * KIB,
        memory_percent=1.6,
        network_rx_bytes=8 * KIB * i,
        network_tx_bytes=2 * KIB * i,
        disk_read_bytes=KIB * KIB if i >= 30 else 0,
        disk_write_bytes=0,
        timestamp=NOW - timedelta(seconds=60 - i),
    )


def _app(mode: str) -> FlowMgrApp:
    snap = ContainerSnapshot(
        id=FLOW_ID,
        name="io-flow",
        image="flow:latest",
        state="running",
        health="none",
        created=T0,
        started_at=T0,
        socket_path="/tmp/kawaflow/sockets/io-flow/flow.sock",
    )
    events: list[Event] = [ContainerAdded(snapshot=snap, at=T0)]
    for i in range(60):
        s = _sample(i)
        events.append(StatsSampled(container_id=FLOW_ID, sample=s, at=s.timestamp))
    return replay_app(events, mode, NOW)


async def _open(pilot: Pilot[Any]) -> ContainerDetailScreen:
    app = pilot.app
    assert isinstance(app, FlowMgrApp)
    await until(pilot, lambda: len(app.state.history.get(FLOW_ID, ())) == 60, "60 samples")
    app.open_detail(FLOW_ID)
    await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "the detail")
    await pilot.pause()
    assert isinstance(app.screen, ContainerDetailScreen)
    return app.screen


def test_rates_and_steps_are_pure_and_survive_hostile_counters() -> None:
    assert counter_rates([0.0, 1.0, 3.0], [0, 100, 300]) == [100.0, 100.0]
    assert counter_rates([0.0, 1.0, 2.0], [500, 100, 200]) == [0.0, 100.0]  # a restart
    assert counter_rates([5.0, 5.0, 4.0], [0, 10, 20]) == [0.0, 0.0]  # no time, backwards
    assert counter_rates([], []) == [] and counter_rates([1.0], [1]) == []
    assert rate_scale(0.0).top == 1024.0 and rate_scale(1024.0).top == 1024.0
    assert rate_scale(1025.0).top == 4096.0 and rate_scale(1025.0).top_label == "4.0K"
    for hostile in (math.nan, math.inf, -math.inf, -5.0):
        assert rate_scale(hostile).top in (RATE_STEPS[0], RATE_STEPS[-1])
    assert rate_scale(1e30).top == RATE_STEPS[-1]


@pytest.mark.parametrize("mode", ["local", "remote http://127.0.0.1:8000"])
async def test_network_and_disk_graphs_show_rates_on_a_fixed_scale(mode: str) -> None:
    app = _app(mode)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open(pilot)
        rx = screen.query_one("#graph-net-rx", ResourceGraph)
        tx = screen.query_one("#graph-net-tx", ResourceGraph)
        assert rx.caption == "Net rx: 8.0K/s of 16.0K/s (bytes/s; max 8.0K/s)"
        assert tx.caption == "Net tx: 2.0K/s of 16.0K/s (bytes/s; max 2.0K/s)"
        assert rx.scale == tx.scale  # one scale for both directions
        plot = rx.query_one(ScalePlot)
        drawn = str(plot.render()).splitlines()
        assert drawn[0].startswith(" 16.0K┤") and drawn[-1].startswith("     0┤")
        # 8 of 16 KiB/s: the lower two of four rows full, the upper two empty
        assert all(set(r.strip()) == {"█"} for r in plot.rows[2:])
        assert all(r.strip() == "" for r in plot.rows[:2])

        read = screen.query_one("#graph-blk-read", ResourceGraph)
        write = screen.query_one("#graph-blk-write", ResourceGraph)
        assert read.caption == "Disk read: 0B/s of 1.0M/s (bytes/s; max 1.0M/s)"
        assert write.caption == "Disk write: 0B/s of 1.0M/s (bytes/s; max 0B/s)"
        rows = read.query_one(ScalePlot).rows
        assert rows[0].count("█") == 1  # the one second that read 1 MiB fills its column
        assert set(rows[-1].strip()) == {BARS[0], "█"}  # every other column near zero
