"""The panel tells the real core what is on screen: the sampler watches the visible rows, then
only the open detail view's container, then the rows again (real engine, real sampler)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.screens.container_detail import ContainerDetailScreen
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.tui.helpers import BUSYBOX, dashboard, until

pytestmark = [pytest.mark.docker, pytest.mark.tui]


async def test_the_sampler_watches_what_the_panel_shows(
    manager: ContainerManager, unique_name: Callable[[str], str]
) -> None:
    ids = []
    for label in ("watch-a", "watch-b"):
        snap = await manager.create_container(CreateSpec(name=unique_name(label), image=BUSYBOX))
        await manager.start_container(snap.id)
        ids.append(snap.id)
    app = FlowMgrApp(manager)
    async with app.run_test(size=(120, 40)) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: set(ids) <= manager.sampler.watched, "the rows watched")
        assert manager.sampler.watched == set(table.visible_ids)
        table.select(ids[1])
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), "the detail")
        await until(pilot, lambda: manager.sampler.watched == {ids[1]}, "only the detail's")
        await pilot.press("escape")
        await until(pilot, lambda: set(ids) <= manager.sampler.watched, "the rows again")
