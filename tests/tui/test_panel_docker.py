"""The panel against the real core and a real Docker Engine, driven with Pilot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import docker
import pytest

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.screens.create_form import CreateForm
from flowmgr_tui.widgets.activity_list import ActivityList
from server.core.config import Settings
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.tui.helpers import BUSYBOX, dashboard, open_log_pane, row_names, until

pytestmark = [pytest.mark.docker, pytest.mark.tui]

SIZE = (120, 40)


async def _running(manager: ContainerManager, name: str, command: list[str] | None = None) -> str:
    snap = await manager.create_container(CreateSpec(name=name, image=BUSYBOX, command=command))
    await manager.start_container(snap.id)
    return snap.id


async def test_container_created_behind_the_panels_back_appears(
    manager: ContainerManager,
    settings: Settings,
    docker_client: docker.DockerClient,
    unique_name: Callable[[str], str],
) -> None:
    name = unique_name("behind")
    app = FlowMgrApp(manager)
    async with app.run_test(size=SIZE) as pilot:
        assert name not in row_names(app)
        await asyncio.to_thread(
            docker_client.containers.run,
            BUSYBOX,
            name=name,
            detach=True,
            network_mode="none",
            labels={"flowmgr.managed": "true", "flowmgr.instance": settings.docker.instance},
        )
        await until(pilot, lambda: name in row_names(app), f"row {name}")
        table = dashboard(app).table
        cid = next(c for c in table.shown_ids if table.cell_text(c, "name") == name)
        await until(pilot, lambda: table.cell_text(cid, "state") == "+ running", "running state")


async def test_stop_key_stops_the_real_container(
    manager: ContainerManager, docker_client: docker.DockerClient, unique_name: Callable[[str], str]
) -> None:
    cid = await _running(manager, unique_name("stopme"))
    app = FlowMgrApp(manager)
    async with app.run_test(size=SIZE) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: cid in table.shown_ids, "the row")
        table.select(cid)
        await pilot.press("x")
        await until(pilot, lambda: table.cell_text(cid, "state") == "- stopped", "stopped row")
        container = await asyncio.to_thread(docker_client.containers.get, cid)
        assert container.status == "exited"  # Docker's word; the panel says "stopped"


async def test_crash_shows_in_the_activity_pane(
    manager: ContainerManager, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("crash")
    app = FlowMgrApp(manager)
    async with app.run_test(size=SIZE) as pilot:
        activity = dashboard(app).query_one(ActivityList)
        await _running(manager, name, ["sh", "-c", "echo about-to-fail; sleep 1; exit 3"])
        await until(pilot, lambda: f"CRASH {name} exit 3" in activity.shown_text, "crash line")
        assert "about-to-fail" in activity.shown_text  # the log tail comes with it


async def test_log_pane_shows_what_the_container_printed(
    manager: ContainerManager, unique_name: Callable[[str], str]
) -> None:
    cid = await _running(
        manager,
        unique_name("talker"),
        ["sh", "-c", "i=0; while true; do echo talker-line-$i; i=$((i+1)); sleep 0.2; done"],
    )
    app = FlowMgrApp(manager)
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_log_pane(app, pilot, cid)
        await until(pilot, lambda: "talker-line-" in pane.shown_text, "a log line")
        seen = pane.shown_text.count("talker-line-")
        await until(pilot, lambda: pane.shown_text.count("talker-line-") > seen, "live lines")


async def test_create_form_rejects_a_bad_port_and_creates_nothing(
    manager: ContainerManager,
    settings: Settings,
    docker_client: docker.DockerClient,
    unique_name: Callable[[str], str],
) -> None:
    name = unique_name("badport")
    app = FlowMgrApp(manager, default_image=BUSYBOX)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, CreateForm), "the form")
        form = app.screen
        assert isinstance(form, CreateForm)
        await pilot.press(*name)  # the name field has focus
        await pilot.press("tab", "tab", *"99999:80", "ctrl+s")
        await until(pilot, lambda: "not a port" in form.errors()["ports"], "the port error")
        assert form.query_one("#error-ports").has_class("-visible")
        assert form.errors()["name"] == ""
        assert isinstance(app.screen, CreateForm)  # still open to fix it
    found = await asyncio.to_thread(docker_client.containers.list, all=True, filters={"name": name})
    assert found == []
    assert all(s.name != name for s in manager.snapshot())
