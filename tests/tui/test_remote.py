"""Remote mode: the panel over Socket.IO against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from pathlib import Path

import pytest

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.remote import RemoteBackend
from flowmgr_tui.widgets.docker_banner import DockerBanner
from server.core.config import Settings
from server.core.docker_adapter import DockerAdapter
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.integration.api_harness import TEST_TOKEN, running_service
from tests.integration.engine_relay import Relay
from tests.tui.helpers import BUSYBOX, dashboard, until

pytestmark = [pytest.mark.docker, pytest.mark.tui]

SIZE = (120, 40)
COLUMNS = ("name", "id", "image", "state", "health", "socket")


def _rows(app: FlowMgrApp) -> list[tuple[str, ...]]:
    table = dashboard(app).table
    return [tuple(table.cell_text(cid, col) for col in COLUMNS) for cid in table.shown_ids]


async def test_remote_mode_shows_the_same_rows_as_local_mode(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    async with running_service(settings) as service:
        mgr = service.manager
        names = [unique_name(stem) for stem in ("ra", "rb", "rc")]
        for i, name in enumerate(names):
            snap = await mgr.create_container(CreateSpec(name=name, image=BUSYBOX))
            if i < 2:
                await mgr.start_container(snap.id)
        local = FlowMgrApp(mgr)
        async with local.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(_rows(local)) == 3, "three local rows")
            local_rows = _rows(local)
        remote = FlowMgrApp(RemoteBackend(service.url, token=TEST_TOKEN), start_backend=True)
        try:
            async with remote.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: _rows(remote) == local_rows, f"remote rows {local_rows}")
                # An action travels over the wire and the row follows.
                table = dashboard(remote).table
                first = table.shown_ids[0]
                table.select(first)
                await pilot.press("x")
                await until(
                    pilot, lambda: table.cell_text(first, "state") == "- stopped", "the remote stop"
                )
        finally:
            await remote.backend.stop()


async def test_remote_panel_shows_the_servers_engine_loss(settings: Settings) -> None:
    """The server's engine goes away (a relay to dockerd cut): the remote panel's banner says so
    while its own Socket.IO link stays up, for a panel arriving during the loss and for one that
    was there when it began."""
    relay = Relay(Path(settings.socket_dir) / "engine.sock")
    await relay.open()
    adapter = DockerAdapter(settings.docker.call_timeout, base_url=f"unix://{relay.path}")
    try:
        async with running_service(settings, ContainerManager(settings, adapter=adapter)) as svc:
            await relay.cut()
            async with asyncio.timeout(30):
                while svc.manager.docker_available:
                    await asyncio.sleep(0.05)
            backend = RemoteBackend(svc.url, token=TEST_TOKEN)
            remote = FlowMgrApp(backend, start_backend=True)
            try:
                async with remote.run_test(size=SIZE) as pilot:
                    banner = dashboard(remote).query_one(DockerBanner)
                    await until(
                        pilot,
                        lambda: banner.has_class("-visible"),
                        "the banner, told after the welcome",
                    )
                    await relay.open()
                    await until(
                        pilot,
                        lambda: not banner.has_class("-visible"),
                        "the banner to go when the engine is back",
                    )
                    await relay.cut()
                    await until(
                        pilot,
                        lambda: (
                            banner.has_class("-visible")
                            and "the server's engine" in str(banner.content)
                        ),
                        "the banner on the broadcast loss",
                    )
                    assert backend.status_text().startswith("connected")  # the link held
            finally:
                await backend.stop()
    finally:
        await relay.cut()
    gc.collect()  # a socket left open by a refused connect would warn (an error) here
