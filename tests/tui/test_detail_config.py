"""The detail view's Config tab (`5` or `i`): the flow's configuration, secrets masked.

On a recorded session (a made-up inspect masked by the core's code), then on a real flow
through a local panel and a remote one (`--connect`, ext `inspect_container`).
"""

from __future__ import annotations

import operator
import secrets
from collections.abc import Callable
from functools import partial

import pytest
from textual.pilot import Pilot

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.remote import RemoteBackend
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from flowmgr_tui.widgets.config_view import ConfigView, config_text
from server.core.config import Settings
from server.core.flow_config import FlowConfig
from server.core.models import CreateSpec
from tests.integration.api_harness import TEST_TOKEN, running_service
from tests.tui.helpers import BUSYBOX, until
from tests.tui.make_recording import ECHO_ID
from tests.tui.test_snapshots import recorded_app

SIZE = (120, 40)


async def _config(pilot: Pilot[None], app: FlowMgrApp, cid: str, key: str) -> ConfigView:
    app.open_detail(cid)
    await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "the detail")
    await pilot.press(key)
    view = app.screen.query_one(ConfigView)
    await until(pilot, lambda: view.text != "Loading...", "the configuration")
    return view


@pytest.mark.tui
async def test_config_tab_shows_the_recorded_flow_masked() -> None:
    app = recorded_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: ECHO_ID in app.state.containers, "the recording")
        view = await _config(pilot, app, ECHO_ID, "5")
        text = view.text
        assert "hunter2" not in text and "tok-3f9a7c" not in text
        for shown in (
            "DB_PASSWORD=***",
            "DATABASE_URL=postgres://flow:***@db:5432/flows",
            "--api-token ***",
            "memory 512.0M, cpus 1, pids 256, root filesystem read-only",
            "Restart policy  no",
            "volume flowmgr-sock-",
            "-> /app/code (ro)",
        ):
            assert shown in text, shown
        await pilot.press("1", "i")  # the second key of the same binding
        assert app.screen.query_one("TabbedContent").active == "inspect"  # type: ignore[attr-defined]


@pytest.mark.docker
@pytest.mark.tui
async def test_config_tab_locally_and_through_a_remote_panel(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    password = secrets.token_hex(8)
    spec = CreateSpec(
        name=unique_name("cfg"),
        image=BUSYBOX,
        command=["sh", "-c", f"echo {password}; sleep 600"],
        environment={"DB_PASSWORD": password, "MODE": "demo"},
        memory_limit="64m",
    )
    async with running_service(settings) as svc:
        snap = await svc.manager.create_container(spec)
        local = FlowMgrApp(svc.manager)
        remote = FlowMgrApp(RemoteBackend(svc.url, token=TEST_TOKEN), start_backend=True)
        try:
            for app in (local, remote):
                async with app.run_test(size=SIZE) as pilot:
                    rows = app.state.containers
                    await until(pilot, partial(operator.contains, rows, snap.id), "the row")
                    text = (await _config(pilot, app, snap.id, "i")).text
                    assert password not in text
                    assert "DB_PASSWORD=***" in text and "MODE=demo" in text, text
                    assert "echo ***; sleep 600" in text and "memory 64.0M" in text, text
        finally:
            await remote.backend.stop()
            await svc.manager.delete_container(snap.id)


def test_the_node_shows_when_clustered_and_no_limit_reads_none() -> None:
    cfg = FlowConfig("a" * 64, "web", "flow:latest", node="node-2", ports={"53/udp": None})
    text = config_text(cfg).plain
    assert "Node            node-2" in text
    assert "memory none, cpus none, pids none, root filesystem writable" in text
    assert "53/udp -> (none)" in text and "Environment     none" in text
    assert "Node" not in config_text(FlowConfig("a" * 64, "web", "flow:latest")).plain
