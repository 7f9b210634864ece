"""The panel's activity and log panes never show a secret in clear text (Pilot, real core and
engine)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from flowmgr_tui.app import FlowMgrApp
from flowmgr_tui.widgets.activity_list import ActivityList
from server.core.config import Settings
from server.core.frames import encode_frame
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.integration.leaky_flow import leaky_flow
from tests.tui.helpers import BUSYBOX, dashboard, open_log_pane, until

pytestmark = [pytest.mark.docker, pytest.mark.tui]

SECRETS = [f"pn-s3cr3t-{i}-zz" for i in range(5)]


async def test_activity_pane_masks_secrets(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    s = SECRETS
    async with ContainerManager(settings) as manager:
        app = FlowMgrApp(manager)
        async with app.run_test(size=(160, 50)) as pilot:
            activity = dashboard(app).query_one(ActivityList)
            quiet = await manager.create_container(
                CreateSpec(
                    name=unique_name("pquiet"),
                    image=BUSYBOX,
                    environment={"DB_PASSWORD": s[0], "DSN": f"postgres://u:{s[1]}@db/x"},
                )
            )
            reader, writer = await asyncio.open_unix_connection(quiet.socket_path)
            writer.write(encode_frame({"api_token": s[2], "hello": "world"}, 1 << 20))
            name = unique_name("pleaky")
            leaky = await manager.create_container(
                CreateSpec(
                    name=name,
                    image=BUSYBOX,
                    command=[
                        "sh",
                        "-c",
                        f"echo SECRET_KEY={s[3]}; echo amqp://a:{s[4]}@mq; sleep 1; exit 4",
                    ],
                )
            )
            await manager.start_container(leaky.id)
            await until(pilot, lambda: f"CRASH {name} exit 4" in activity.shown_text, "crash")
            await until(pilot, lambda: "message_received" in activity.shown_text, "message")
            writer.close()
            shown = activity.shown_text
            assert "SECRET_KEY=***" in shown  # the crash's log tail is there, masked
            assert [x for x in s if x in shown] == []


async def test_log_pane_masks_the_flows_secrets(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    flow = leaky_flow(unique_name("plog"))
    async with ContainerManager(settings) as manager:
        snap = await manager.create_container(flow.spec)
        await manager.start_container(snap.id)
        app = FlowMgrApp(manager)
        async with app.run_test(size=(160, 50)) as pilot:
            pane = await open_log_pane(app, pilot, snap.id)
            await until(pilot, lambda: "tick-" in pane.shown_text, "the loaded tail")
            ticks = pane.shown_text.count("tick-")
            # live lines come from the followed stream, not the tail loaded on opening
            await until(pilot, lambda: pane.shown_text.count("tick-") > ticks + 1, "live lines")
            shown = pane.shown_text.splitlines()
            assert flow.leaks(pane.shown_text) == []
            assert set(flow.masked_lines()) <= set(shown), shown
